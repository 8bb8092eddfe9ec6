"""Training batches from image folders, with no labels needed.

Each source photo is its own class and its positives are edited copies made on the fly with the
benchmark's edits (`copyseek.edits.random_edits`); in a labelled folder (images only in
sub-folders) each sub-folder is a class. A batch is `classes_per_batch` classes x
`views_per_class` views, resized square to the model's training size.

Two sources produce batches: `OnlineViews` edits afresh for every batch (endless variety, costly
on a CPU; `PrefetchedViews` makes them ahead in worker processes, so that a GPU is not kept waiting
by one process's edits), `ViewBank` draws from views made once and saved with their teacher
embeddings (the cheap way to distil on a CPU: the edits and the teacher run once, not once per epoch).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import weakref
from collections import OrderedDict, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from copyseek.describe.models import GlobalModel
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.io.images import IMAGE_EXTENSIONS, load_rgb
from copyseek.learn.teacher import embed_resized, teacher_embeddings

Augment = Callable[[Image.Image, np.random.Generator, Sequence[Image.Image]], Image.Image]
"""An edit: (RGB image, random generator, donor photos for composite edits) -> edited RGB image."""


COLOUR_EDITS = ("contrast", "saturation", "color_jitter", "grayscale")
"""The colour edits that `EditAugment(colour=p)` adds to a share p of the views."""


class EditAugment:
    """The benchmark's random edits as an Augment (a class, so that worker processes can receive it).
    colour: the chance that a view also gets one of COLOUR_EDITS after its chain (0: the benchmark's
    own mix), to weight up the colour edits a descriptor is not invariant to."""

    def __init__(self, severity: float = 1.0, colour: float = 0.0):
        if not 0 <= colour <= 1:
            raise CopyseekError(f"the share of colour edits must be in [0, 1], got {colour}")
        self.severity, self.colour = severity, colour

    def __call__(self, image: Image.Image, rng: np.random.Generator, donors: Sequence[Image.Image]) -> Image.Image:
        from copyseek.edits import random_edits  # imported late: augly is slow to import

        edited, _ = random_edits(image, rng, severity=self.severity, donors=donors)
        if self.colour and rng.random() < self.colour:
            from copyseek.edits.registry import EDITS

            edited = EDITS[COLOUR_EDITS[rng.integers(len(COLOUR_EDITS))]](edited, rng, self.severity)
        return edited.convert("RGB")


@dataclass
class Photos:
    """Training images and their classes: paths (n,), labels (n,) int64 in 0..n_classes-1."""

    paths: list[Path]
    labels: np.ndarray

    @property
    def n_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def members(self, label: int) -> np.ndarray:
        """Indices of the photos of class `label`."""
        return np.flatnonzero(self.labels == label)


def read_image_list(list_file: Path) -> list[Path]:
    """Paths listed one per line in a .txt file (relative ones to the list's folder; # comments)."""
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(os.path.expanduser(line))
            paths.append(path if path.is_absolute() else list_file.parent / path)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CopyseekError(f"{len(missing)} image(s) listed in {list_file} do not exist, e.g. {missing[0]}")
    return paths


def discover_photos(source: str | os.PathLike) -> Photos:
    """The training photos of a folder or of a .txt list of image paths.

    A folder whose images all lie in sub-folders is labelled (one class per first-level sub-folder);
    otherwise, and for lists, every photo is its own class.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".txt":
        paths = read_image_list(source)
        labels = np.arange(len(paths))
    elif source.is_dir():
        # Not io.find_images: class sub-folders may reuse file names, which an index forbids.
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                       and not any(part.startswith(".") for part in p.relative_to(source).parts))
        groups = [p.relative_to(source).parts[0] if len(p.relative_to(source).parts) > 1 else None for p in paths]
        if paths and all(groups):
            names = sorted(set(groups))
            labels = np.array([names.index(g) for g in groups])
        else:
            labels = np.arange(len(paths))
    else:
        raise CopyseekError(f"training images must be a folder or a .txt list of image paths, got {source}")
    if len(paths) < 2:
        raise CopyseekError(f"training needs at least 2 images, found {len(paths)} in {source}")
    if any(p.suffix.lower() not in IMAGE_EXTENSIONS for p in paths):
        raise CopyseekError(f"{source} lists files that are not images (extensions: {sorted(IMAGE_EXTENSIONS)})")
    return Photos(paths, labels.astype(np.int64))


@dataclass
class Batch:
    """images (N, 3, S, S) uint8 RGB; labels (N,) int64; teacher (N, Dt) float32 or None."""

    images: Tensor
    labels: Tensor
    teacher: Tensor | None = None


def to_batch(views: np.ndarray, labels: np.ndarray, teacher: np.ndarray | None) -> Batch:
    """(N, S, S, 3) uint8 views -> Batch."""
    return Batch(
        torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2),
        torch.from_numpy(np.asarray(labels, np.int64)),
        None if teacher is None else torch.from_numpy(np.asarray(teacher, np.float32)),
    )


class ViewMaker:
    """Makes the views of one class: its photo unedited (first view, if `include_original`) and
    edited copies, with `donors` other training photos offered to composite edits (pastes, blends);
    the photos are decoded once and cached."""

    def __init__(self, photos: Photos, augment: Augment, decode_side: int, include_original: bool = True,
                 donors: int = 2, cache_size: int = 2048):
        self.photos = photos
        self.augment = augment
        self.include_original = include_original
        self.decode_side = decode_side
        self.donors = donors
        self.cache_size = cache_size
        self._cache: OrderedDict[int, Image.Image] = OrderedDict()

    def __getstate__(self) -> dict:
        # Worker processes decode what they need; shipping decoded photos would cost more.
        return {**self.__dict__, "_cache": OrderedDict()}

    def photo(self, index: int) -> Image.Image:
        """Photo `index` decoded (shorter side about 2 x decode_side at most), least recently used evicted."""
        if index in self._cache:
            self._cache.move_to_end(index)
        else:
            self._cache[index] = Image.fromarray(load_rgb(self.photos.paths[index], self.decode_side))
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return self._cache[index]

    def views(self, label: int, n: int, rng: np.random.Generator) -> list[Image.Image]:
        members = self.photos.members(label)
        chosen = rng.choice(members, size=n, replace=len(members) < n)
        others = np.flatnonzero(self.photos.labels != label)
        views = []
        for v, i in enumerate(chosen):
            if v == 0 and self.include_original:
                views.append(self.photo(int(i)))
                continue
            donors = [self.photo(int(d)) for d in rng.choice(others, size=min(self.donors, len(others)), replace=False)]
            views.append(self.augment(self.photo(int(i)), rng, donors))
        return views


def square(image: Image.Image, size: int) -> np.ndarray:
    """RGB image -> (size, size, 3) uint8, as the exported model's sidecar resizes."""
    return Preprocess("square", size).apply(np.asarray(image))


class BatchSource(Protocol):
    def next_batch(self, rng: np.random.Generator) -> Batch: ...


def sample_classes(n_classes: int, classes_per_batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(n_classes, size=min(classes_per_batch, n_classes), replace=False)


class OnlineViews:
    """Fresh views for every batch; with a teacher, its embeddings are computed batch by batch."""

    def __init__(self, maker: ViewMaker, size: int, classes_per_batch: int, views_per_class: int,
                 teacher: GlobalModel | None = None):
        check_batch_shape(classes_per_batch, views_per_class)
        self.maker, self.size, self.teacher = maker, size, teacher
        self.classes_per_batch, self.views_per_class = classes_per_batch, views_per_class

    def next_batch(self, rng: np.random.Generator) -> Batch:
        classes = sample_classes(self.maker.photos.n_classes, self.classes_per_batch, rng)
        views = [view for c in classes for view in self.maker.views(int(c), self.views_per_class, rng)]
        teacher = teacher_embeddings(self.teacher, views) if self.teacher is not None else None
        images = np.stack([square(view, self.size) for view in views])
        return to_batch(images, np.repeat(classes, self.views_per_class), teacher)


def worker_pool(workers: int, **options) -> ProcessPoolExecutor:
    """`workers` processes spawned, not forked (as elsewhere in copyseek): a child forked from a trainer
    whose OpenCV / OpenMP thread pools have run can hang in its first resize."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), **options)


_WORKER_VIEWS: OnlineViews | None = None  # a PrefetchedViews worker's views, installed once per process


def _install_views(views: OnlineViews) -> None:
    global _WORKER_VIEWS
    _WORKER_VIEWS = views


def _numbered_batch(seed: int, index: int) -> Batch:
    return _WORKER_VIEWS.next_batch(np.random.default_rng([seed, index]))


class PrefetchedViews:
    """`OnlineViews` made ahead of the trainer in `workers` processes, each keeping its own cache of
    decoded photos. Batch k is drawn with its own generator, default_rng([seed, k]), so the batches
    depend neither on the number of workers nor on the step a resumed run starts from (`first_batch`);
    the generator passed to next_batch is not used. close() ends the workers."""

    def __init__(self, views: OnlineViews, workers: int, seed: int, first_batch: int = 0):
        if workers < 1:
            raise CopyseekError(f"PrefetchedViews needs at least 1 worker process, got {workers}")
        if views.teacher is not None:
            raise CopyseekError("fresh views made in worker processes carry no teacher embeddings: "
                                "distil from a view bank (bank_views) or set workers = 0")
        self.seed, self.next_index, self.ahead = seed, first_batch, 2 * workers
        self.pool = worker_pool(workers, initializer=_install_views, initargs=(views,))
        self.pending: deque[Future] = deque()  # batches next_index, next_index + 1, ...
        # Also ends the workers when the source is dropped unclosed (e.g. wrapped by PoolNegatives).
        self._shutdown = weakref.finalize(self, self.pool.shutdown, cancel_futures=True)

    def next_batch(self, rng: np.random.Generator | None = None) -> Batch:
        while len(self.pending) < self.ahead:
            index = self.next_index + len(self.pending)
            self.pending.append(self.pool.submit(_numbered_batch, self.seed, index))
        self.next_index += 1
        return self.pending.popleft().result()

    def close(self) -> None:
        self._shutdown()


def check_batch_shape(classes_per_batch: int, views_per_class: int) -> None:
    if classes_per_batch < 2:
        raise CopyseekError(f"a batch needs at least 2 classes, got classes_per_batch={classes_per_batch}")
    if views_per_class < 2:
        raise CopyseekError(f"each class needs at least 2 views to have positives, got views_per_class={views_per_class}")


# ---------------------------------------------------------------- precomputed views


def _class_views(maker: ViewMaker, size: int, label: int, n: int, seed: int,
                 teacher_preprocess: Preprocess | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """One class's n views at the student's size, and at the teacher's (run in worker processes)."""
    views = maker.views(label, n, np.random.default_rng([seed, label]))
    for_teacher = [teacher_preprocess.apply(np.asarray(v)) for v in views] if teacher_preprocess else []
    return np.stack([square(v, size) for v in views]), for_teacher


def build_view_bank(folder: Path, maker: ViewMaker, size: int, views_per_class: int, seed: int,
                    teacher: GlobalModel | None = None, teacher_spec: str | None = None, workers: int = 0,
                    progress: Callable[[int], None] | None = None) -> Path:
    """Make `views_per_class` views of every class once and save them in `folder`:
    images.npy (V, S, S, 3) uint8, labels.npy (V,), teacher.npy (V, Dt) float32 (with a teacher),
    meta.json. Classes are edited in `workers` processes; results do not depend on their number.
    progress(n) is called with the number of classes done."""
    if views_per_class < 2:
        raise CopyseekError(f"a view bank needs at least 2 views per class, got {views_per_class}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = maker.photos.n_classes
    total = n_classes * views_per_class
    images = np.lib.format.open_memmap(folder / "images.npy.part", "w+", np.uint8, (total, size, size, 3))
    vectors = np.zeros((total, teacher.dim), np.float32) if teacher is not None else None
    preprocess = teacher.preprocess if teacher is not None else None
    args = [(maker, size, label, views_per_class, seed, preprocess) for label in range(n_classes)]
    pool = worker_pool(workers) if workers > 0 else None
    try:
        results = pool.map(_class_views, *zip(*args), chunksize=4) if pool else (_class_views(*a) for a in args)
        for label, (views, for_teacher) in enumerate(results):
            rows = slice(label * views_per_class, (label + 1) * views_per_class)
            images[rows] = views
            if teacher is not None:
                vectors[rows] = embed_resized(teacher, for_teacher)
            if progress:
                progress(1)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    images.flush()
    del images
    os.replace(folder / "images.npy.part", folder / "images.npy")
    np.save(folder / "labels.npy", np.repeat(np.arange(n_classes), views_per_class))
    if vectors is not None:
        np.save(folder / "teacher.npy", vectors)
    meta = {"size": size, "views_per_class": views_per_class, "n_classes": n_classes, "seed": seed,
            "teacher": teacher_spec if teacher is not None else None,
            "sources": [str(p) for p in maker.photos.paths]}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


class ViewBank:
    """Batches drawn from a saved view bank (memory-mapped: the views stay on disk)."""

    def __init__(self, folder: Path, classes_per_batch: int, views_per_class: int):
        check_batch_shape(classes_per_batch, views_per_class)
        folder = Path(folder)
        if not (folder / "meta.json").exists():
            raise CopyseekError(f"{folder} is not a view bank (no meta.json)")
        self.meta = json.loads((folder / "meta.json").read_text())
        self.images = np.load(folder / "images.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy")
        self.teacher = np.load(folder / "teacher.npy") if (folder / "teacher.npy").exists() else None
        self.rows_of = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        self.classes_per_batch, self.views_per_class = classes_per_batch, views_per_class

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def next_batch(self, rng: np.random.Generator) -> Batch:
        classes = sample_classes(len(self.rows_of), self.classes_per_batch, rng)
        rows = np.concatenate([
            rng.choice(self.rows_of[c], size=self.views_per_class, replace=len(self.rows_of[c]) < self.views_per_class)
            for c in classes
        ])
        order = np.argsort(rows)  # sorted reads from the memory map, then back to class order
        images = np.empty((len(rows), *self.images.shape[1:]), np.uint8)
        images[order] = self.images[rows[order]]
        return to_batch(images, np.repeat(classes, self.views_per_class),
                        None if self.teacher is None else self.teacher[rows])
