"""Distractor references: images added to a benchmark's references to measure how accuracy holds as
the collection grows (`benchmarks/bench_growth.py`).

Distractor i is a function of (i, recipe): the same file whatever the run, so a larger run extends a
smaller one. Even i are drawn from photos disjoint from the benchmark's, odd i are procedural images
(`copyseek.synthetic`). How the photos are edited is the recipe's `edits`:

- `none`: each photo once, as it is (640 px); once they are used up, every distractor is procedural.
- `light` (the default): a random crop keeping 60-100% of each side, a random size (320-640 px), a
  left-right flip half of the time and a mild colour jitter; no overlays, no collages. A real
  collection (DISC21's million references) holds unedited photos; these are its stand-in when there
  are fewer photos than distractors.
- `heavy`: DISC21-style query chains at severity 0.4-1.6 (emoji, text, pixelization, grey filters,
  pastes and collages of other photos): an adversarial bank of edited near-copies, edited the way the
  queries are. A heavily edited query can resemble such a distractor more than its own unedited
  source, so this measures robustness to edit-alike references, not to a larger collection.

A small photo collection holds series: several shots of one scene (a solar array, a windmill, one
nebula), and a spare photo can be another shot of a benchmark photo's scene. Such a distractor is a
near-duplicate of part of a query (of a donor it was pasted into, say), not a look-alike. In a large
random collection they are rare; reused ~28 times each at 10k distractors, they dominate the false
matches. `scene_mates` finds them by the global descriptor, so a run can leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.edits import random_edits
from copyseek.edits.geometric import crop, hflip
from copyseek.edits.photometric import color_jitter
from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import GroundTruth, Prediction
from copyseek.io.images import ImageFile, find_images
from copyseek.progress import progress_bar
from copyseek.synthetic import synthetic_photo

DISTRACTOR_EDITS = ("none", "light", "heavy")
DISTRACTOR_KINDS = ("photo", "procedural")
ID_PREFIX = "D"


@dataclass(frozen=True)
class DistractorRecipe:
    """How distractor images are made.

    edits: `none`, `light` or `heavy` (module docstring). seed: with the index, fixes every random
    choice. max_side: photos are downscaled to this many pixels (longest side) before editing
    (editing a 1024-px photo costs 3x more and changes nothing a 448-px local branch or a 256-px
    global one sees)."""

    edits: str = "light"
    seed: int = 13
    max_side: int = 640

    def __post_init__(self) -> None:
        if self.edits not in DISTRACTOR_EDITS:
            raise CopyseekError(f"distractor edits {self.edits!r}: expected one of {', '.join(DISTRACTOR_EDITS)}")
        if self.max_side < 32:
            raise CopyseekError(f"distractor max_side {self.max_side}: expected at least 32 pixels")

    def photo_of(self, i: int, n_photos: int) -> int | None:
        """Which of n_photos source photos distractor i is made from; None for a procedural one."""
        if i % 2 or n_photos == 0 or (self.edits == "none" and i // 2 >= n_photos):
            return None
        return (i // 2) % n_photos

    def kind(self, i: int, n_photos: int) -> str:
        """`photo` or `procedural`: what distractor i is made from, given n_photos source photos."""
        return "procedural" if self.photo_of(i, n_photos) is None else "photo"

    def make(self, photos: list[Path], i: int) -> Image.Image:
        """Distractor i (RGB) from the source photos."""
        rng = np.random.default_rng([self.seed, i])
        source = self.photo_of(i, len(photos))
        if source is None:
            width, height = (int(v) for v in rng.integers(320, 720, size=2))
            return synthetic_photo(rng, width, height)
        photo = self.load_photo(photos[source])
        if self.edits == "none":
            return photo
        if self.edits == "light":
            return self._light(photo, rng)
        donors = [self.load_photo(photos[j]) for j in rng.choice(len(photos), size=min(2, len(photos)), replace=False)]
        edited, _ = random_edits(photo, rng, severity=float(rng.uniform(0.4, 1.6)), donors=donors)
        return edited.convert("RGB")

    def load_photo(self, path: Path) -> Image.Image:
        """A source photo as distractors start from it: RGB, at most max_side pixels."""
        image = Image.open(path).convert("RGB")
        image.thumbnail((self.max_side, self.max_side))
        return image

    def _light(self, photo: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Crop, rescale, maybe flip, mild colour jitter: what a re-post of a photo does, no overlays."""
        image = crop(photo, rng, float(rng.uniform(0.0, 1.0))).image
        side = int(rng.integers(self.max_side // 2, self.max_side + 1))
        image.thumbnail((side, side))
        if rng.random() < 0.5:
            image = hflip(image, rng, 1.0).image
        return color_jitter(image, rng, float(rng.uniform(0.0, 0.5))).convert("RGB")


def benchmark_photos(bench: Path) -> list[Path]:
    """The photo files a built benchmark is made of: its references' photos, its queries' source
    photos, its donors and its background set (benchmark.json and edits.csv), sorted."""
    import csv
    import json

    meta = json.loads((bench / "benchmark.json").read_text(encoding="utf-8"))
    names = {*meta["references"].values(), *meta["background"].values(), *meta["donors"]}
    with open(bench / "edits.csv", newline="", encoding="utf-8") as handle:
        names |= {row["source"] for row in csv.DictReader(handle)}
    return sorted(Path(meta["images"]) / name for name in names)


def scene_mates(candidates: np.ndarray, benchmark: np.ndarray, threshold: float) -> np.ndarray:
    """(n,) bool: which candidate photos have a cosine of at least `threshold` to some benchmark photo.

    candidates: (n, d), benchmark: (m, d) L2-normalised global descriptors of the unedited photos."""
    candidates, benchmark = np.asarray(candidates, np.float32), np.asarray(benchmark, np.float32)
    if candidates.ndim != 2 or benchmark.ndim != 2 or candidates.shape[1] != benchmark.shape[1]:
        raise CopyseekError(f"scene_mates needs (n, d) and (m, d) descriptors, got {candidates.shape} and {benchmark.shape}")
    if not len(candidates) or not len(benchmark):
        return np.zeros(len(candidates), bool)
    return (candidates @ benchmark.T).max(axis=1) >= threshold


def read_photo_list(source: Path) -> list[Path]:
    """Photo paths from a folder (recursive) or from a text file of paths (one a line)."""
    if source.is_dir():
        return [f.path for f in find_images(source)[0]]
    if not source.is_file():
        raise CopyseekError(f"distractor photos {source}: not a folder nor a list file")
    return [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]


def distractor_index(reference_id: str) -> int | None:
    """i of a distractor id (`D0000042` -> 42), None for any other reference id."""
    digits = reference_id[len(ID_PREFIX):]
    return int(digits) if reference_id.startswith(ID_PREFIX) and digits.isdigit() else None


def false_match_kinds(
    predictions: list[Prediction], ground_truth: GroundTruth, threshold: float | None, recipe: DistractorRecipe, n_photos: int
) -> dict[str, int]:
    """Predictions scoring at least `threshold` that are not copies, counted by what their reference
    is: `reference` (the benchmark's own), or the distractor kind (`photo`, `procedural`)."""
    counts = dict.fromkeys(("reference", *DISTRACTOR_KINDS), 0)
    if threshold is None:
        return counts
    for p in predictions:
        if p.score >= threshold and (p.query_id, p.reference_id) not in ground_truth.pairs:
            i = distractor_index(p.reference_id)
            counts["reference" if i is None else recipe.kind(i, n_photos)] += 1
    return counts


def one_per_source(predictions: list[Prediction], recipe: DistractorRecipe, n_photos: int) -> list[Prediction]:
    """Each query's predictions with only the best-scoring distractor made from each source photo:
    what the predictions would be if every spare photo were in the collection once (an estimate of
    how much the recipe's reuse of a few hundred photos costs; procedural images are all distinct)."""
    best: dict[tuple[str, object], Prediction] = {}
    for p in predictions:
        i = distractor_index(p.reference_id)
        source = None if i is None else recipe.photo_of(i, n_photos)
        key = (p.query_id, p.reference_id if source is None else source)
        if key not in best or best[key].score < p.score:
            best[key] = p
    return list(best.values())


def make_distractors(photos: list[Path], n: int, out: Path, recipe: DistractorRecipe = DistractorRecipe(), progress: bool = True) -> list[ImageFile]:
    """The first n distractor files in `out` (JPEG, made where missing), in order. A file is renamed
    into place once written, so an interrupted run leaves no half-written distractor."""
    out.mkdir(parents=True, exist_ok=True)
    files = [ImageFile(f"{ID_PREFIX}{i:07d}", out / f"{ID_PREFIX}{i:07d}.jpg") for i in range(n)]
    missing = [i for i, f in enumerate(files) if not f.path.exists()]
    with progress_bar(len(missing), "distractors", disable=not progress) as bar:
        for i in missing:
            target = files[i].path
            recipe.make(photos, i).save(target.with_suffix(".tmp.jpg"), quality=90)
            target.with_suffix(".tmp.jpg").rename(target)
            bar.update(1)
    return files
