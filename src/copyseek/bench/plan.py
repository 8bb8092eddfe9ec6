"""Choosing the benchmark's photos: which photo is a reference, a query source, background or a
donor, which reference each query copies, and the seed of its edits.

The pools are disjoint, so a donor pasted into a query (or any distractor) can never create an
unintended true pair. Everything is a function of the seed and the photos' file names.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from copyseek.bench.config import BenchConfig
from copyseek.errors import CopyseekError
from copyseek.io.images import IMAGE_EXTENSIONS, ImageFile, check_unique_ids, find_images

DONORS_PER_QUERY = 4
"""Donor photos offered to each query's edits (decoded only if a composite edit is drawn)."""


@dataclass
class Plan:
    """Which photo goes where. Paths are absolute; ids map to photo paths."""

    references: dict[str, Path] = field(default_factory=dict)
    background: dict[str, Path] = field(default_factory=dict)
    donors: list[Path] = field(default_factory=list)
    query_sources: dict[str, Path] = field(default_factory=dict)
    ground_truth: dict[str, str] = field(default_factory=dict)
    """query id -> reference id, "" for distractor queries."""
    query_donors: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    query_seeds: dict[str, np.random.SeedSequence] = field(default_factory=dict)
    variant_of: dict[str, str] = field(default_factory=dict)
    """reference id of an edited version -> the reference id of its original (its family)."""
    variant_seeds: dict[str, np.random.SeedSequence] = field(default_factory=dict)


def collect_photos(
    images: str | os.PathLike | Sequence[str | os.PathLike], exclude: Path | None = None
) -> tuple[Path, list[Path]]:
    """(root, photos): image files of a folder (recursive) or of a list of paths, sorted, absolute.

    root is the folder, or the common folder of the listed files; names in the benchmark's
    records are relative to it. Files under `exclude` (the benchmark being written) are left out.
    """
    if isinstance(images, (str, os.PathLike)):
        root = Path(images).resolve()
        files, _ = find_images(root)
    else:
        files = [ImageFile(Path(p).stem, Path(p).resolve()) for p in images]
        for f in files:
            if not f.path.is_file():
                raise CopyseekError(f"image not found: {f.path}")
            if f.path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise CopyseekError(f"not an image file name (extension {f.path.suffix!r}): {f.path}")
        check_unique_ids(files)
        if not files:
            raise CopyseekError("the list of images is empty")
        root = Path(os.path.commonpath([f.path.parent for f in files]))
    photos = sorted(f.path.resolve() for f in files)
    if exclude is not None:
        exclude = exclude.resolve()
        photos = [p for p in photos if not p.is_relative_to(exclude)]
    if not photos:
        raise CopyseekError(f"no images found in {root}")
    return root, photos


def relative_name(path: Path, root: Path) -> str:
    """How records name a photo: its path relative to the images folder, with '/'."""
    return path.relative_to(root).as_posix()


def is_held_out(name: str, holdout: float) -> bool:
    """Whether the photo called `name` is held out: sha1(name), read as a number in [0, 1), is
    below `holdout`. Independent of the seed, so training sets stay disjoint across builds."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < holdout


def unreadable_reason(path: Path) -> str | None:
    """Why a photo cannot be used (from its header alone), or None if it looks usable."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except UnidentifiedImageError:
        return "not an image, or a format Pillow cannot read"
    except OSError as exc:
        return f"cannot read: {exc}"
    if width < 1 or height < 1:
        return f"invalid size {width}x{height}"
    return None


def make_ids(prefix: str, count: int) -> list[str]:
    """DISC21-style ids: R00000, R00001, ... (wider past 100,000)."""
    width = max(5, len(str(count - 1)))
    return [f"{prefix}{i:0{width}d}" for i in range(count)]


def _split(items: list, sizes: list[int]) -> list[list]:
    """Consecutive slices of `items` of the given sizes, then the rest."""
    bounds = np.cumsum([0, *sizes])
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [items[bounds[-1] :]]


def _shuffled(items: list, rng: np.random.Generator) -> list:
    return [items[i] for i in rng.permutation(len(items))]


def plan_benchmark(photos: Sequence[Path], config: BenchConfig) -> Plan:
    """Split `photos` (already without the held-out ones) into disjoint pools and decide every
    query's source, reference, donors and edit seed. Deterministic for config.seed."""
    if config.photos_needed() > len(photos):
        donors = "at least 1" if config.n_donors is None else config.n_donors
        raise CopyseekError(
            f"not enough photos: {len(photos)} usable, {config.photos_needed()} needed "
            f"({config.n_references} references + {config.n_distractor_queries} distractor-query sources"
            f" + {config.n_background} background + {donors} donor(s)); "
            "lower the sizes or the holdout, or add photos"
        )
    plan_seed, edit_seed = np.random.SeedSequence(config.seed).spawn(2)
    rng = np.random.default_rng(plan_seed)
    order = [photos[i] for i in rng.permutation(len(photos))]
    copied, never_copied, distractors, background, rest = _split(
        order,
        [
            config.n_copied,
            config.n_references - config.n_copied,
            config.n_distractor_queries,
            config.n_background,
        ],
    )
    donors = rest if config.n_donors is None else rest[: config.n_donors]

    references = _shuffled(copied + never_copied, rng)
    reference_ids = dict(zip(make_ids("R", len(references)), references))
    id_of = {path: ref_id for ref_id, path in reference_ids.items()}
    # Each copied reference gets one copy; extra copies go round-robin over a shuffled order.
    extra = np.resize(rng.permutation(config.n_copied), config.n_copies - config.n_copied)
    owners = list(range(config.n_copied)) + [int(i) for i in extra]
    queries = _shuffled([(copied[i], id_of[copied[i]]) for i in owners] + [(p, "") for p in distractors], rng)

    plan = Plan(
        references=reference_ids,
        background=dict(zip(make_ids("B", len(background)), background)),
        donors=donors,
    )
    for query_id, (source, ref_id), seed in zip(
        make_ids("Q", len(queries)), queries, edit_seed.spawn(len(queries))
    ):
        plan.query_sources[query_id] = source
        plan.ground_truth[query_id] = ref_id
        picked = rng.choice(len(donors), size=min(DONORS_PER_QUERY, len(donors)), replace=False)
        plan.query_donors[query_id] = tuple(donors[i] for i in picked)
        plan.query_seeds[query_id] = seed
    add_variants(plan, config)
    return plan


def add_variants(plan: Plan, config: BenchConfig) -> None:
    """config.variants_per_reference edited versions of every reference, as more references with
    ids after the originals'; their own seeds, so the rest of the plan is as without them."""
    originals = list(plan.references)
    count = config.variants_per_reference * len(originals)
    if not count:
        return
    ids = make_ids("R", len(originals) + count)[len(originals) :]
    seeds = np.random.SeedSequence([config.seed, 7919]).spawn(count)
    for n, (variant_id, seed) in enumerate(zip(ids, seeds)):
        original = originals[n % len(originals)]
        plan.references[variant_id] = plan.references[original]
        plan.variant_of[variant_id] = original
        plan.variant_seeds[variant_id] = seed
