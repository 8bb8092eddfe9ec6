"""Score normalisation against a background set (ISC2021 / SSCD).

A query that resembles many unrelated images (a texture, a screenshot, a blank page) gets high
similarities to everything. Subtracting its typical similarity to a background set of photos that
are known not to be copies makes one threshold mean the same for every query:

    score(q, r) = sim(q, r) - beta * mean(top-n similarities of q to the background set)

A fixed background set does not grow with the collection: at 10,000 references every query meets
far more look-alikes than among 60 background photos, and its best wrong match scores higher
(BENCHMARKS.md, issue 13). `CollectionNormalizer` takes the top-n over the background set *and*
the collection's own references, leaving out each vector's `skip` nearest references (the
reference a copy matches, or a reference itself) and their versions: the offset rises with the
collection's density around the query. Measured for SSCD alone: +0.008 to +0.071 muAP on five
calibrated benchmarks, but no smaller loss as the collection grows (BENCHMARKS.md, issue 13).
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np

from copyseek.describe.global_branch import GlobalBranch, VectorSearcher
from copyseek.errors import CopyseekError
from copyseek.io.images import DecodedImage, find_images, iter_decoded, resolved
from copyseek.progress import progress_bar
from copyseek.store.files import atomic_write


class BackgroundNormalizer:
    """Subtract beta x the mean of a query's top-n background similarities from its scores."""

    def __init__(self, background: np.ndarray, beta: float = 1.0, n: int = 3):
        if background.ndim != 2 or len(background) == 0:
            raise CopyseekError("the background set has no usable images")
        if n < 1:
            raise CopyseekError(f"the number of background neighbours must be >= 1, got {n}")
        self.beta = beta
        self.n = min(n, len(background))
        self.searcher = VectorSearcher(background.shape[1])
        self.searcher.add({"vectors": background})

    def offsets(self, queries: np.ndarray) -> np.ndarray:
        """(m, dim) query vectors -> (m,) amounts to subtract from each query's similarities."""
        sims, _ = self.searcher.search_vectors(queries, self.n)
        return (self.beta * sims.mean(axis=1)).astype(np.float32)


DUPLICATE_SIMILARITY = 0.5
"""Cosine similarity (raw) above which two references are near-duplicates of each other, versions
of one photo (unrelated photos score about 0-0.3 with SSCD)."""


def best_of_versions(vectors: np.ndarray, threshold: float = DUPLICATE_SIMILARITY) -> np.ndarray:
    """(m, dim) global vectors of one query's candidates, best scored first -> (j,) indices of the
    candidates kept, in order: each one that is not a version (raw cosine > `threshold`) of a
    candidate kept before it. A bank holding many versions of one photo then reports the photo once
    per query, not once per version (`match --collapse-versions`).

    >>> v = np.array([[1.0, 0.0], [0.9, 0.436], [0.0, 1.0]], np.float32)
    >>> best_of_versions(v).tolist()
    [0, 2]
    """
    vectors = np.asarray(vectors, np.float32)
    if vectors.ndim != 2:
        raise CopyseekError(f"best_of_versions needs (m, dim) vectors, got shape {vectors.shape}")
    similar = vectors @ vectors.T > threshold
    kept: list[int] = []
    for i in range(len(vectors)):
        if not similar[i, kept].any():
            kept.append(i)
    return np.array(kept, np.int64)


class CollectionNormalizer(BackgroundNormalizer):
    """BackgroundNormalizer over the background set and the collection's references together.

    Each vector's `skip` nearest references, and their versions (references nearer than
    DUPLICATE_SIMILARITY to one of them), are left out of its top-n: they may be the reference a
    query copies (or, for a reference, itself), and a photo held in many versions must not lower
    the scores of its own copies. `spare`: further neighbours searched to replace the versions
    left out. `removed`: (N,) bool, the collection's rows whose references were removed (they stay
    in its searcher until the index is compacted) and count for nothing."""

    def __init__(
        self, background: np.ndarray, collection: VectorSearcher, beta: float = 1.0, n: int = 3, skip: int = 1,
        spare: int = 32, removed: np.ndarray | None = None,
    ):
        super().__init__(background, beta, n)
        if skip < 0 or spare < 0:
            raise CopyseekError(f"the nearest references left out of the offset (and spares) must be >= 0, got {skip}, {spare}")
        self.n = n
        self.skip = skip
        self.spare = spare
        self.collection = collection
        self.removed = np.zeros(collection.ntotal, bool) if removed is None else np.asarray(removed, bool)
        if self.removed.shape != (collection.ntotal,):
            raise CopyseekError(f"removed must flag each of the collection's {collection.ntotal} rows, got shape {self.removed.shape}")

    def offsets(self, queries: np.ndarray) -> np.ndarray:
        """(m, dim) query vectors -> (m,) beta x the mean of their top-n similarities over the
        background and the references that are neither their `skip` nearest nor versions of those."""
        background, _ = self.searcher.search_vectors(queries, self.n)
        references = self.distinct_similarities(queries)
        pooled = np.concatenate([background, references], axis=1)
        top = -np.sort(-pooled, axis=1)[:, : self.n]
        finite = np.isfinite(top)
        return (self.beta * np.where(finite, top, 0.0).sum(axis=1) / finite.sum(axis=1)).astype(np.float32)

    def distinct_similarities(self, queries: np.ndarray) -> np.ndarray:
        """(m, dim) -> (m, n + skip + spare) similarities to the nearest references, -inf for the
        skipped ones, their versions and missing neighbours."""
        found, rows = self.collection.search_vectors(queries, self.n + self.skip + self.spare)
        rows = np.where((rows >= 0) & ~self.removed[np.maximum(rows, 0)], rows, -1)
        found = np.where(rows >= 0, found, -np.inf)
        if self.skip == 0 or rows.shape[1] == 0:
            return found
        valid = np.unique(rows[rows >= 0])
        vectors = np.zeros((rows.shape[0], rows.shape[1], queries.shape[1]), np.float32)
        vectors[rows >= 0] = self.collection.reconstruct(valid)[np.searchsorted(valid, rows[rows >= 0])]
        nearest = vectors[:, : self.skip]
        versions = (np.einsum("mkd,msd->mks", vectors, nearest) > DUPLICATE_SIMILARITY).any(axis=2)
        versions[:, : self.skip] = True
        return np.where(versions, -np.inf, found)


def background_vectors(
    branch: GlobalBranch, folder: str | Path, cache_dir: Path | None, workers: int = 2, progress: bool = True
) -> np.ndarray:
    """(n, dim) global descriptors of the images in `folder`, cached in `cache_dir` by model and by
    the folder's listing (path, size, mtime of every file), so a changed folder is described again."""
    files, _ = find_images(folder)
    if not files:
        raise CopyseekError(f"no images in the background folder {folder}")
    listing = [(resolved(f.path), *file_stamp(f.path)) for f in files]
    key = hashlib.sha1(json.dumps([branch.spec(), listing]).encode()).hexdigest()[:20]
    cached = cache_dir / f"{key}.npz" if cache_dir else None
    if cached and cached.exists():
        vectors = read_cache(cached, branch.model.dim)
        if vectors is not None:
            return vectors
    images: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    with progress_bar(len(files), "background", disable=not progress) as bar:
        for item in iter_decoded(files, branch.decode_side, workers):
            if isinstance(item, DecodedImage):
                images.append(item.pixels)
            bar.update(1)
            if len(images) == branch.batch_size:
                vectors.append(branch.embed(images))
                images = []
        if images:
            vectors.append(branch.embed(images))
    if not vectors:
        raise CopyseekError(f"none of the images in the background folder {folder} could be read")
    result = np.concatenate(vectors)
    if cached:
        write_cache(cached, result)
    return result


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, mtime in ns) of a file; (0, 0) for one that cannot be read (its decoding is skipped)."""
    try:
        info = path.stat()
        return info.st_size, info.st_mtime_ns
    except (OSError, RuntimeError):
        return 0, 0


def read_cache(path: Path, dim: int) -> np.ndarray | None:
    """The cached (n, dim) background vectors, or None (with a warning) if the file is damaged: the
    caller describes the background again and replaces it. The zip's CRC catches flipped bytes."""
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors = data["vectors"]
        if vectors.ndim == 2 and vectors.shape[1] == dim and len(vectors) and np.isfinite(vectors).all():
            return vectors
        problem = f"shape {vectors.shape}"
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        problem = " ".join(str(exc).split())[:100] or type(exc).__name__
    warnings.warn(f"the background cache {path} is damaged ({problem}); describing the background again")
    return None


def write_cache(path: Path, vectors: np.ndarray) -> None:
    """Cache background vectors atomically; on a read-only index, carry on without the cache."""
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write(path, lambda handle: np.savez(handle, vectors=vectors))
    except OSError as exc:
        warnings.warn(f"cannot cache the background descriptors in {path.parent} ({exc.strerror}); they are recomputed each run")
