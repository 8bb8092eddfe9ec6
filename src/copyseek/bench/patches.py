"""`copyseek bench patches`: the patch benchmark (HPatches-like) for the local branch's describers.

Pairs of a photo and an edited version with known geometry (`copyseek.local.patch_pairs`), SIFT
frames of the photo and the same frames mapped into the edit. Each describer describes both sides;
per pair:
- matching AP (HPatches' matching task): every photo descriptor's nearest neighbour among the edit's
  descriptors, ranked by distance; AP of that ranking with the true correspondences as positives
  (every photo frame has one);
- NN accuracy: the fraction of photo frames whose nearest neighbour is the true correspondence.
mAP and accuracy are averaged over pairs, for each misregistration condition (noise on the edit's
frames): 'clean'; HPatches' affine jitter levels 'easy', 'hard', 'tough' (rotation, scale and
translation noise together), whose mean mAP is the headline as in HPatches; or position jitter and
orientation noise alone. One markdown table, describers side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.describers import MKD, PatchDescriber
from copyseek.local.patch_pairs import HPATCHES_LEVELS, AffineJitter, Misregistration, PatchPair
from copyseek.local.patches import extract_patches
from copyseek.progress import progress_bar

DESCRIBERS = ("rootsift", "mkd:raw", "mkd:pcawt", "mkd:lw", "kdp:cart", "kdp:polar", "kdp:fc")
"""The describers compared by default, baselines first."""

Noise = Misregistration | AffineJitter
"""What a condition does to the edit's frames (both have `apply(frames, rng) -> frames`)."""

CONDITIONS: dict[str, Noise] = {
    "clean": Misregistration(),
    **HPATCHES_LEVELS,
    "position": Misregistration(position=0.4),
    "orientation": Misregistration(orientation=20.0),
}
"""Misregistration conditions by name: HPatches' jitter levels (copyseek.local.patch_pairs), position
std 0.4 keypoint sizes (SIFT's window spans ~6), orientation std 20 degrees."""
DEFAULT_CONDITIONS = ("clean", "easy", "hard", "tough")
HPATCHES_MEAN = ("easy", "hard", "tough")
"""The levels HPatches averages into its headline mAP."""


def default_conditions() -> dict[str, Noise]:
    return {name: CONDITIONS[name] for name in DEFAULT_CONDITIONS}


def parse_condition(text: str) -> tuple[str, Noise]:
    """'clean', 'easy' / 'hard' / 'tough', 'position:S' (std S keypoint sizes) or 'orientation:D'
    (std D degrees) -> (name, noise); a bare 'position' / 'orientation' is the default level of
    CONDITIONS."""
    if text in CONDITIONS:
        return text, CONDITIONS[text]
    kind, _, level = text.partition(":")
    try:
        value = float(level)
    except ValueError:
        value = None
    if kind not in ("position", "orientation") or value is None or not value > 0:
        raise CopyseekError(
            f"unknown misregistration condition {text!r}; use clean, easy, hard, tough, position:SIZES or orientation:DEGREES"
        )
    return text, Misregistration(**{kind: value})


def pair_scores(desc: np.ndarray, edited: np.ndarray) -> tuple[float, float]:
    """(n, d) descriptors of a photo's frames and (n, d) of the same frames in the edit, unit norm
    -> (matching AP, NN accuracy)."""
    if desc.shape != edited.shape or desc.ndim != 2:
        raise CopyseekError(f"pair descriptors must have equal (n, d) shapes, got {desc.shape} and {edited.shape}")
    n = len(desc)
    if n == 0:
        return float("nan"), float("nan")
    similarity = desc @ edited.T
    nearest = similarity.argmax(axis=1)
    correct = nearest == np.arange(n)
    order = np.argsort(-similarity[np.arange(n), nearest], kind="stable")
    hits = correct[order]
    precision = np.cumsum(hits) / np.arange(1, n + 1)
    return float((precision * hits).sum() / n), float(correct.mean())


@dataclass
class PatchResult:
    """Per describer: AP and NN accuracy of every pair, per condition."""

    name: str
    ap: dict[str, list[float]] = field(default_factory=dict)
    accuracy: dict[str, list[float]] = field(default_factory=dict)

    def mean_ap(self, condition: str) -> float:
        return float(np.nanmean(self.ap[condition]))

    def mean_accuracy(self, condition: str) -> float:
        return float(np.nanmean(self.accuracy[condition]))


def load_pairs(images: str, photos: int, holdout: float, seed: int = 0, progress: bool = True) -> list[PatchPair]:
    """The benchmark's pairs: the first `photos` photos (by name) that `bench build --holdout
    holdout` would not hold out, each with every edit kind; pairs with fewer than 2 frames dropped."""
    from copyseek.bench.plan import collect_photos, is_held_out, relative_name
    from copyseek.io.images import load_rgb
    from copyseek.local.patch_pairs import KINDS, make_pairs

    root, paths = collect_photos(images if not str(images).endswith(".txt") else _read_list(images))
    chosen = [p for p in paths if not is_held_out(relative_name(p, root), holdout)][:photos]
    if not chosen:
        raise CopyseekError(f"no photos left for the patch benchmark in {images}")
    bar = progress_bar(len(chosen), "making pairs", disable=not progress)
    pairs = []
    for index, path in enumerate(chosen):
        pairs.extend(p for p in make_pairs([load_rgb(path)], KINDS, seed=seed * 100003 + index) if len(p.frames) >= 2)
        bar.update(1)
    bar.close()
    return pairs


def _read_list(path: str) -> list[str]:
    return [line.strip() for line in open(path, encoding="utf-8") if line.strip()]


def run_patch_benchmark(
    pairs: list[PatchPair],
    describers: dict[str, PatchDescriber],
    conditions: dict[str, Noise] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[PatchResult]:
    """Every describer on every pair under every condition (default: DEFAULT_CONDITIONS; the same
    noise for every describer)."""
    conditions = default_conditions() if conditions is None else conditions
    if not pairs or min(len(p.frames) for p in pairs) < 2:
        raise CopyseekError("the patch benchmark needs pairs, each with at least 2 frames")
    results = {name: PatchResult(name) for name in describers}
    bar = progress_bar(len(pairs) * len(describers), "patch benchmark", disable=not progress, unit="pair")
    for index, pair in enumerate(pairs):
        noisy = {
            cond: misreg.apply(pair.edited_frames, np.random.default_rng([seed, index, c]))
            for c, (cond, misreg) in enumerate(conditions.items())
        }
        desc = describe_all(describers, pair.gray, pair.frames)
        edited = {cond: describe_all(describers, pair.edited, frames) for cond, frames in noisy.items()}
        for name in describers:
            for cond in conditions:
                ap, accuracy = pair_scores(desc[name], edited[cond][name])
                results[name].ap.setdefault(cond, []).append(ap)
                results[name].accuracy.setdefault(cond, []).append(accuracy)
            bar.update(1)
    bar.close()
    return list(results.values())


def describe_all(describers: dict[str, PatchDescriber], gray: np.ndarray, frames) -> dict[str, np.ndarray]:
    """Every describer's descriptors of `frames`; MKD variants of one support share one raw MKD
    (the kernel is most of their cost; describe times are measured end to end elsewhere:
    benchmarks/bench_local_descriptors.py)."""
    out, raw = {}, {}
    for name, describer in describers.items():
        if isinstance(describer, MKD):
            if describer.support not in raw:
                raw[describer.support] = describer.raw(extract_patches(gray, frames, describer.support))
            x = raw[describer.support]
            out[name] = x if describer.whitening is None else describer.whitening.transform(x)
        else:
            out[name] = describer.describe(gray, frames)[0]
    return out


def results_table(results: list[PatchResult], conditions=DEFAULT_CONDITIONS) -> str:
    """Markdown: mAP and NN accuracy per condition; first, when the three HPatches levels were run,
    their mean mAP (HPatches' headline)."""
    headline = all(level in conditions for level in HPATCHES_MEAN)
    head = ["describer"] + ["mAP HPatches mean (easy, hard, tough)"] * headline
    head += [f"mAP {c}" for c in conditions] + [f"NN acc {c}" for c in conditions]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r.name] + ([f"{np.mean([r.mean_ap(c) for c in HPATCHES_MEAN]):.3f}"] if headline else [])
        cells += [f"{r.mean_ap(c):.3f}" for c in conditions] + [f"{r.mean_accuracy(c):.3f}" for c in conditions]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kind_table(results: list[PatchResult], kinds: list[str], condition: str = "clean") -> str:
    """Markdown: mAP per edit kind (pairs in the order they were run)."""
    unique = list(dict.fromkeys(kinds))
    lines = ["| describer | " + " | ".join(unique) + " |", "|---|" + "---|" * len(unique)]
    for r in results:
        ap = np.array(r.ap[condition])
        cells = [f"{np.nanmean(ap[[k == kind for k in kinds]]):.3f}" for kind in unique]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
