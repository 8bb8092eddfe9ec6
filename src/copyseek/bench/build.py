"""Building a DISC21-style copy-detection benchmark from a folder of photos.

Written under `out`:

    references/R*.jpg  reference photos: the copied ones and never-copied distractors
    queries/Q*.jpg     edited copies of references, and distractor queries: photos that are not
                       references, edited the same way (so edits alone give nothing away)
    background/B*.jpg  untouched photos in no other pool (DISC21's "training" set), for score
                       normalization
    gt.csv             query_id,reference_id (empty reference for distractor queries)
    edits.csv          query_id,is_copy,edits,source: the edits applied, in order, '|'-separated
    layouts.json       query_id -> where the edited photo and the overlays lie in the query
                       (pixel boxes, `copyseek.edits.Layout.to_dict`): detector training/test labels
    families.csv       reference_id,family,edits: with variants_per_reference, each reference's
                       original (references that are edited versions of one photo share it)
    benchmark.json     the configuration and which photo went where
    holdout.txt        absolute paths of the photos held out of the benchmark (for training)

Ids are shuffled, so neither ids nor file order tell copies from distractors; the pools of photos
are disjoint (see `copyseek.bench.plan`). The output depends only on the photos' names and
contents and the settings, not on the number of worker processes.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek import __version__
from copyseek.bench.config import BenchConfig
from copyseek.bench.plan import (
    Plan,
    collect_photos,
    is_held_out,
    plan_benchmark,
    relative_name,
    unreadable_reason,
)
from copyseek.edits import random_edits_with_layout
from copyseek.edits.params import scaled_to_area
from copyseek.errors import CopyseekError, ImageSkip
from copyseek.io.images import ImageFile, read_image
from copyseek.progress import progress_bar

OUTPUTS = (
    "references", "queries", "background", "gt.csv", "edits.csv", "layouts.json", "families.csv", "benchmark.json",
    "holdout.txt",
)  # fmt: skip
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class CopyTask:
    """Write a photo untouched (re-encoded only if it must be: not JPEG, too large, rotated by EXIF)."""

    source: Path
    dest: Path
    max_side: int
    quality: int


@dataclass(frozen=True)
class QueryTask:
    """Write a randomly edited photo; `seed` alone decides the edits."""

    source: Path
    dest: Path
    donors: tuple[Path, ...]
    seed: np.random.SeedSequence
    severity: float
    max_side: int
    quality: int


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """`image` downscaled, aspect kept, so that its longer side is at most `max_side` pixels."""
    if max(image.size) <= max_side:
        return image
    return image.resize(
        scaled_to_area(image.size, (max_side, max_side), 1.0), Image.Resampling.BICUBIC, reducing_gap=2.0
    )


def load_photo(path: Path, max_side: int) -> Image.Image:
    """An upright RGB photo, longer side at most `max_side`. Raises CopyseekError if unusable."""
    try:
        pixels = read_image(ImageFile(path.stem, path), min_side=max_side).pixels
    except ImageSkip as skip:
        raise CopyseekError(f"cannot use {path}: {skip.reason}; remove it and build again") from None
    return fit_within(Image.fromarray(pixels), max_side)


class LazyPhotos(Sequence):
    """Photos decoded on first access: most queries draw no composite edit, so never need donors."""

    def __init__(self, paths: Sequence[Path], max_side: int):
        self._paths = list(paths)
        self._max_side = max_side
        self._decoded: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> Image.Image:
        if index not in self._decoded:
            self._decoded[index] = load_photo(self._paths[index], self._max_side)
        return self._decoded[index]


def _can_copy_bytes(path: Path, max_side: int) -> bool:
    """Whether a photo can be copied byte for byte: a small enough, upright RGB or grey JPEG."""
    with Image.open(path) as image:
        return (
            image.format == "JPEG"
            and image.mode in ("RGB", "L")
            and max(image.size) <= max_side
            and image.getexif().get(EXIF_ORIENTATION, 1) == 1
        )


def render(task: CopyTask | QueryTask) -> tuple[list[str], dict | None]:
    """Write one benchmark image; returns the names of the edits applied and the layout of the
    written query (Layout.to_dict), or ([], None) for copies."""
    if isinstance(task, CopyTask):
        if _can_copy_bytes(task.source, task.max_side):
            shutil.copyfile(task.source, task.dest)
        else:
            load_photo(task.source, task.max_side).save(task.dest, "JPEG", quality=task.quality)
        return [], None
    rng = np.random.default_rng(task.seed)
    edited, names, layout = random_edits_with_layout(
        load_photo(task.source, task.max_side),
        rng,
        severity=task.severity,
        donors=LazyPhotos(task.donors, task.max_side),
    )
    written = fit_within(edited, task.max_side)
    written.save(task.dest, "JPEG", quality=task.quality)
    return names, layout.resized(written.size).to_dict()


def _render_all(
    tasks: list[CopyTask | QueryTask], workers: int, progress: bool
) -> list[tuple[list[str], dict | None]]:
    """render() every task, in order, on `workers` processes, with a progress bar."""
    results: list[tuple[list[str], dict | None]] = []
    with progress_bar(len(tasks), "bench build", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                results.append(render(task))
                bar.update()
            return results
        # spawn, not fork: the caller may hold threads (torch, tqdm's monitor) that fork would copy
        # mid-operation.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for names in pool.imap(render, tasks, chunksize=4):
                results.append(names)
                bar.update()
    return results


def _prepare_output(out: Path, overwrite: bool) -> None:
    """Create `out`, or empty a previous benchmark there if `overwrite`; never touch other files."""
    if out.exists() and not out.is_dir():
        raise CopyseekError(f"output exists and is not a folder: {out}")
    if out.exists() and any(out.iterdir()):
        if not (out / "benchmark.json").is_file():
            raise CopyseekError(
                f"output folder {out} is not empty and holds no benchmark; choose a new folder"
            )
        if not overwrite:
            raise CopyseekError(
                f"{out} already holds a benchmark; use --overwrite (overwrite=True) to replace it"
            )
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    for folder in ("references", "queries", "background"):
        (out / folder).mkdir(parents=True, exist_ok=True)


def _write_records(out: Path, plan: Plan, edits: dict[str, list[str]], root: Path) -> None:
    """gt.csv and edits.csv, rows sorted by query id."""
    with open(out / "gt.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "reference_id"])
        writer.writerows(sorted(plan.ground_truth.items()))
    with open(out / "edits.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "is_copy", "edits", "source"])
        for query_id in sorted(plan.query_sources):
            is_copy = int(bool(plan.ground_truth[query_id]))
            writer.writerow(
                [
                    query_id,
                    is_copy,
                    "|".join(edits[query_id]),
                    relative_name(plan.query_sources[query_id], root),
                ]
            )


def _write_families(out: Path, plan: Plan, edits: dict[str, list[str]]) -> None:
    """families.csv: every reference, its family (the original's id) and the edits of a version."""
    with open(out / "families.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["reference_id", "family", "edits"])
        for ref_id in sorted(plan.references):
            writer.writerow([ref_id, plan.variant_of.get(ref_id, ref_id), "|".join(edits[ref_id])])


def _tasks(plan: Plan, out: Path, config: BenchConfig) -> list[CopyTask | QueryTask]:
    """Every image to write: references, background, then queries in id order."""

    def copy(source: Path, folder: str, image_id: str) -> CopyTask:
        return CopyTask(source, out / folder / f"{image_id}.jpg", config.max_side, config.quality)

    def reference(image_id: str, source: Path) -> CopyTask | QueryTask:
        if image_id not in plan.variant_of:
            return copy(source, "references", image_id)
        dest = out / "references" / f"{image_id}.jpg"
        return QueryTask(source, dest, (), plan.variant_seeds[image_id], config.variant_severity, config.max_side, config.quality)

    tasks: list[CopyTask | QueryTask] = [reference(i, p) for i, p in plan.references.items()]
    tasks += [copy(p, "background", i) for i, p in plan.background.items()]
    for query_id, source in plan.query_sources.items():
        dest = out / "queries" / f"{query_id}.jpg"
        donors, seed = plan.query_donors[query_id], plan.query_seeds[query_id]
        tasks.append(QueryTask(source, dest, donors, seed, config.severity, config.max_side, config.quality))
    return tasks


def _record(
    config: BenchConfig,
    root: Path,
    usable: list[Path],
    skipped: dict[Path, str],
    held_out: list[Path],
    plan: Plan,
) -> dict:
    """benchmark.json's content: the settings and which photo (named relative to root) went where."""

    def name(path: Path) -> str:
        return relative_name(path, root)

    return {
        "created_by": f"copyseek {__version__}",
        "config": asdict(config),
        "images": str(root),
        "photos": [name(p) for p in usable],
        "skipped": {name(p): reason for p, reason in skipped.items()},
        "held_out": len(held_out),
        "references": {i: name(p) for i, p in plan.references.items()},
        "background": {i: name(p) for i, p in plan.background.items()},
        "donors": [name(p) for p in plan.donors],
        **({"variant_of": plan.variant_of} if plan.variant_of else {}),
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def build_benchmark(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    seed: int = BenchConfig.seed,
    n_references: int = BenchConfig.n_references,
    n_copied: int = BenchConfig.n_copied,
    n_copies: int = BenchConfig.n_copies,
    n_distractor_queries: int = BenchConfig.n_distractor_queries,
    n_background: int = BenchConfig.n_background,
    n_donors: int | None = None,
    severity: float = BenchConfig.severity,
    holdout: float = BenchConfig.holdout,
    max_side: int = BenchConfig.max_side,
    quality: int = BenchConfig.quality,
    variants_per_reference: int = BenchConfig.variants_per_reference,
    variant_severity: float = BenchConfig.variant_severity,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Build a DISC21-style benchmark under `out` from the photos in `images` (a folder, searched
    recursively, or a list of image paths). See the module docstring for what is written and
    BenchConfig for the settings.

    workers: processes (default: up to 2, one per CPU core); the output does not depend on it.
    overwrite: replace a benchmark already in `out` (other non-empty folders are refused).
    Returns a summary: counts, output paths, skipped photos, seconds.
    Raises CopyseekError on bad settings, too few photos or an unusable output folder.
    """
    started = time.perf_counter()
    config = BenchConfig(
        seed=int(seed),
        n_references=n_references,
        n_copied=n_copied,
        n_copies=n_copies,
        n_distractor_queries=n_distractor_queries,
        n_background=n_background,
        n_donors=n_donors,
        severity=float(severity),
        holdout=float(holdout),
        max_side=int(max_side),
        quality=int(quality),
        variants_per_reference=variants_per_reference,
        variant_severity=float(variant_severity),
    )
    config.validate()
    workers = min(2, os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise CopyseekError(f"workers must be at least 1, got {workers}")
    out = Path(out).resolve()
    root, photos = collect_photos(images, exclude=out)

    held_out = [p for p in photos if is_held_out(relative_name(p, root), config.holdout)]
    kept = sorted(set(photos) - set(held_out))
    skipped = {p: reason for p in kept if (reason := unreadable_reason(p)) is not None}
    usable = [p for p in kept if p not in skipped]
    plan = plan_benchmark(usable, config)
    _prepare_output(out, overwrite)

    record = _record(config, root, usable, skipped, held_out, plan)
    # Written first as incomplete, so that an interrupted build can be replaced with --overwrite.
    _write_json(out / "benchmark.json", {**record, "complete": False})
    tasks = _tasks(plan, out, config)
    results = _render_all(tasks, workers, progress)
    query_ids = list(plan.query_sources)
    rendered = dict(zip(query_ids, results[len(tasks) - len(query_ids) :]))
    edits = {query_id: names for query_id, (names, _) in rendered.items()}

    _write_records(out, plan, edits, root)
    _write_json(out / "layouts.json", {query_id: rendered[query_id][1] for query_id in sorted(rendered)})
    if plan.variant_of:
        _write_families(out, plan, {ref_id: names for ref_id, (names, _) in zip(plan.references, results)})
    (out / "holdout.txt").write_text("".join(f"{p}\n" for p in held_out), encoding="utf-8")
    _write_json(out / "benchmark.json", {**record, "complete": True})
    n_copies = sum(1 for ref in plan.ground_truth.values() if ref)
    return {
        "out": str(out),
        "references": len(plan.references),
        "queries": len(query_ids),
        "copy_queries": n_copies,
        "distractor_queries": len(query_ids) - n_copies,
        "background": len(plan.background),
        "donors": len(plan.donors),
        "held_out": len(held_out),
        "skipped": {relative_name(p, root): reason for p, reason in skipped.items()},
        "images_written": len(tasks),
        "seconds": round(time.perf_counter() - started, 2),
    }
