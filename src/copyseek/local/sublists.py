"""Finer IVF lists for large collections, derived from the stored codes at search-build time.

The codec's lists are fixed (4,096, shipped), so the descriptors per list grow with the collection:
~80 at 1,000 references, ~78,000 at 1M (320M descriptors), and a query descriptor's scan of nprobe
lists grows with them. Splitting every codec list into `split` sub-lists keeps lists short: a
descriptor's sub-list is the nearest of `split` residual centroids to its PQ reconstruction minus its
list's centroid (a two-level quantizer, list id = codec list x split + sub-list). Everything comes
from what an index already stores (PQ codes, codec lists): no stored format changes, no re-extraction,
and an index of any size can be searched with any split. The residual centroids are a k-means on a
seeded sample of the references' own residuals (seconds), so they follow the collection.

Queries find their sub-lists the same two-level way (`SplitLists.probe`): the codec's nearest lists
by one flat search over its 4,096 centroids, then the distances to those lists' sub-lists from dot
products with the `split` residual centroids; Faiss then scans the chosen sub-lists
(`search_preassigned`). A flat search of all 65,536 sub-list centroids per query descriptor would
cost more than the scan it saves, and an HNSW graph over them was measured slower still (~75 us per
query descriptor at efSearch 32 against ~10 us).
"""

from __future__ import annotations

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec

MAX_SPLIT = 16
"""Sub-lists per codec list at most: 4,096 x 16 = 65,536 lists."""
MAX_LISTS = 1 << 16
"""Lists of a split index at most: a sub-list id is a uint16, like a stored codec list."""
TARGET_LIST = 4096
"""Descriptors per (sub-)list that `split` = 0 ("auto") aims at."""
SAMPLE = 1 << 16
"""Residuals the residual centroids are trained on."""
DECODE_BLOCK = 1 << 20
"""Codes decoded at a time (64 MB of floats at 64 dimensions)."""


def auto_split(descriptors: int, nlist: int) -> int:
    """Sub-lists per codec list for a collection of `descriptors`: the power of two (1 to MAX_SPLIT,
    nlist x split <= MAX_LISTS) that brings the mean list length closest to TARGET_LIST from above;
    1 below nlist x 2 x TARGET_LIST."""
    split = 1
    while split < MAX_SPLIT and nlist * split * 2 <= MAX_LISTS and descriptors / (nlist * split * 2) >= TARGET_LIST:
        split *= 2
    return split


def check_split(split: int) -> None:
    if split not in {0} | {1 << i for i in range(MAX_SPLIT.bit_length())}:
        raise CopyseekError(f"local split must be 0 (by collection size) or a power of two up to {MAX_SPLIT}, got {split}")


def residuals(codec: Codec, codes: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """(n, code_size) PQ codes and their (n,) codec lists -> (n, dim) float32 reconstruction minus
    the list's centroid."""
    decoded = codec.quantizer.decode(np.ascontiguousarray(codes))
    return decoded - codec.coarse[lists.astype(np.int64)]


class SplitLists:
    """The codec's lists, each split in `len(centroids)` sub-lists by (split, dim) residual centroids."""

    def __init__(self, codec: Codec, centroids: np.ndarray):
        if codec.nlist * len(centroids) > MAX_LISTS:
            raise CopyseekError(
                f"cannot split {codec.nlist} lists {len(centroids)} ways: at most {MAX_LISTS} lists (uint16 ids)"
            )
        self.codec = codec
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        self._coarse_dots = codec.coarse @ self.centroids.T  # (nlist, split)
        self._norms = (self.centroids**2).sum(1)  # (split,)

    @classmethod
    def fit(cls, codec: Codec, codes: np.ndarray, lists: np.ndarray, split: int, seed: int = 0) -> "SplitLists":
        """k-means of the residuals of a seeded sample of the stored descriptors (codes, lists)."""
        import faiss

        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(codes), min(SAMPLE, len(codes)), replace=False))
        if len(sample) < split:
            raise CopyseekError(f"cannot split lists {split} ways with {len(codes)} descriptors")
        kmeans = faiss.Kmeans(codec.dim, split, niter=20, seed=seed)
        kmeans.train(residuals(codec, codes[sample], lists[sample]))
        return cls(codec, kmeans.centroids)

    @property
    def split(self) -> int:
        return len(self.centroids)

    @property
    def nlist(self) -> int:
        return self.codec.nlist * self.split

    def assign(self, codes: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """(n,) uint16 sub-list ids (codec list x split + nearest residual centroid), decoded block by block."""
        import faiss

        nearest = faiss.IndexFlatL2(self.codec.dim)
        nearest.add(self.centroids)
        out = np.empty(len(codes), np.uint16)
        for lo in range(0, len(codes), DECODE_BLOCK):
            hi = min(lo + DECODE_BLOCK, len(codes))
            sub = nearest.search(residuals(self.codec, codes[lo:hi], lists[lo:hi]), 1)[1][:, 0]
            out[lo:hi] = lists[lo:hi].astype(np.int64) * self.split + sub
        return out

    def quantizer(self):
        """faiss.IndexFlatL2 over all nlist x split sub-list centroids, in id order: what the IVF index
        holds as its quantizer (exact, for a plain `search`; `probe` is the fast path)."""
        import faiss

        index = faiss.IndexFlatL2(self.codec.dim)
        index.add(np.ascontiguousarray((self.codec.coarse[:, None, :] + self.centroids[None]).reshape(-1, self.codec.dim)))
        return index

    def probe(self, x: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) query descriptors -> (n, nprobe) squared distances and ids of their nearest sub-lists
        among those of their `nprobe` nearest codec lists (two-level search)."""
        first = min(nprobe, self.codec.nlist)
        coarse_distances, coarse_ids = self.codec.coarse_index.search(x, first)
        # |x - c - r|^2 = |x - c|^2 - 2 (x.r - c.r) + |r|^2, for each (query, codec list, sub-list)
        dots = (x @ self.centroids.T)[:, None, :] - self._coarse_dots[coarse_ids]
        distances = (coarse_distances[:, :, None] - 2 * dots + self._norms).reshape(len(x), -1)
        ids = (coarse_ids[:, :, None] * self.split + np.arange(self.split)).reshape(len(x), -1)
        keep = min(nprobe, distances.shape[1])
        best = np.argpartition(distances, keep - 1, axis=1)[:, :keep]
        return np.take_along_axis(distances, best, 1), np.take_along_axis(ids, best, 1)
