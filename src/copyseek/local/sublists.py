"""Finer IVF lists for large collections, derived from the stored codes at search-build time.

The codec's lists are fixed (4,096, shipped), so the descriptors per list grow with the collection:
~80 at 1,000 references, ~78,000 at 1M (320M descriptors), and a query descriptor's scan of nprobe
lists grows with them. Splitting the codec lists into sub-lists keeps lists short: a descriptor's
sub-list is the nearest of its list's residual centroids to its PQ reconstruction minus the list's
centroid (a two-level quantizer; the sub-lists of codec list l have the consecutive ids
first[l] .. first[l + 1] - 1). Everything comes from what an index already stores (PQ codes, codec
lists): no stored format changes, no re-extraction, and an index of any size can be searched with
any split.

Sub-lists are shared out by list size, not evenly: a collection fills the codec's lists unevenly
(on our photos the expected list length seen by a query descriptor, sum(n_l^2) / sum(n_l), is 2.7x
the mean; on the simulated 1M collection of `benchmarks/bench_scale.py` 50x, one list holding 5% of
all descriptors), and a query descriptor lands in the long lists as often as they are long. So
list l gets about n_l / t sub-lists (at least one), t chosen so that the total is the budget
(`split` x the codec's lists), and every sub-list holds ~t descriptors whatever the collection.
Each split list's residual centroids are a k-means of a seeded sample of its own residuals (~40 per
centroid: seconds), so they follow the collection.

Queries find their sub-lists the same two-level way: the IVF index's quantizer (`SplitLists.quantizer`)
is itself a Faiss IVF index, the sub-list centroids filed under their codec lists, so it finds a
descriptor's nearest codec lists by a flat search over their 4,096 centroids and then the nearest
sub-lists among theirs. A flat search of all 65,536 sub-list centroids per query descriptor would
cost more than the scan it saves, and an HNSW graph over them was measured slower still (~75 us per
query descriptor at efSearch 32 against ~10 us).
"""

from __future__ import annotations

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec

MAX_SPLIT = 16
"""Sub-lists per codec list on average at most: 4,096 x 16 = 65,536 lists."""
MAX_LISTS = 1 << 16
"""Lists of a split index at most: a sub-list id is a uint16, like a stored codec list."""
TARGET_LIST = 4096
"""Descriptors per (sub-)list that `split` = 0 ("auto") aims at."""
MOST_PER_LIST = 256
"""Sub-lists of one codec list at most: a descriptor is assigned by comparing it with all of its list's
residual centroids, so a list holding 5% of a 1M collection (16M descriptors) split 3,300 ways would
cost 3,300 comparisons for each of them; such a list keeps longer sub-lists instead (on the simulated
collection of BENCHMARKS.md, 256 halves the assignment time of no cap, and a query's search takes
~35% less CPU than with 64)."""
SAMPLE_PER_CENTROID = 40
"""Residuals each residual centroid is trained on, on average (Faiss asks for at least 39)."""
DECODE_BLOCK = 1 << 21
"""Codes decoded at a time (512 MB of floats at 64 dimensions)."""


def auto_split(descriptors: int, nlist: int) -> int:
    """Sub-lists per codec list, on average, for a collection of `descriptors`: the power of two (1 to
    MAX_SPLIT, nlist x split <= MAX_LISTS) that brings the mean list length closest to TARGET_LIST
    from above; 1 below nlist x 2 x TARGET_LIST."""
    split = 1
    while split < MAX_SPLIT and nlist * split * 2 <= MAX_LISTS and descriptors / (nlist * split * 2) >= TARGET_LIST:
        split *= 2
    return split


def check_split(split: int) -> None:
    if split not in {0} | {1 << i for i in range(MAX_SPLIT.bit_length())}:
        raise CopyseekError(f"local split must be 0 (by collection size) or a power of two up to {MAX_SPLIT}, got {split}")


def share_out(sizes: np.ndarray, budget: int, most: int = MOST_PER_LIST) -> np.ndarray:
    """(nlist,) descriptors per codec list -> (nlist,) int64 sub-lists per list: ceil(n_l / t), at
    least 1 and at most `most`, with the smallest sub-list length t, but no less than the mean
    sum(n) / budget, whose total fits in `budget` (>= nlist)."""
    sizes = np.asarray(sizes, np.float64)
    if budget < len(sizes):
        raise CopyseekError(f"cannot split {len(sizes)} lists into {budget} sub-lists")

    def counts(t: float) -> np.ndarray:
        return np.clip(np.ceil(sizes / max(t, 1e-9)), 1, most).astype(np.int64)

    low, high = sizes.sum() / budget, max(float(sizes.max()), 1.0)  # counts(high) is all ones
    if counts(low).sum() <= budget:  # capped lists leave budget over: not a reason for shorter sub-lists
        return counts(low)
    for _ in range(60):  # bisection on t: the total only falls as t grows
        middle = (low + high) / 2
        low, high = (low, middle) if counts(middle).sum() <= budget else (middle, high)
    return counts(high)


def residuals(codec: Codec, codes: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """(n, code_size) PQ codes and their (n,) codec lists -> (n, dim) float32 reconstruction minus
    the list's centroid."""
    decoded = codec.quantizer.decode(np.ascontiguousarray(codes))
    return decoded - codec.coarse[lists.astype(np.int64)]


class SplitLists:
    """Codec list l split into counts[l] sub-lists by (counts[l], dim) residual centroids; `centroids`
    holds all of them, (sum(counts), dim), in sub-list id order (a list of one sub-list: zeros)."""

    def __init__(self, codec: Codec, counts: np.ndarray, centroids: np.ndarray):
        import faiss

        counts = np.asarray(counts, np.int64)
        if counts.shape != (codec.nlist,) or counts.min() < 1:
            raise CopyseekError(f"sub-list counts must be {codec.nlist} positive integers, one per codec list")
        if counts.sum() > MAX_LISTS:
            raise CopyseekError(f"cannot split {codec.nlist} lists into {counts.sum()}: at most {MAX_LISTS} lists (uint16 ids)")
        if centroids.shape != (counts.sum(), codec.dim):
            raise CopyseekError(f"residual centroids must be ({counts.sum()}, {codec.dim}), got {centroids.shape}")
        self.codec = codec
        self.counts = counts
        self.first = np.concatenate([[0], np.cumsum(counts)])  # (nlist + 1,) first sub-list id of each list
        self.centroids = np.ascontiguousarray(centroids, np.float32)
        # the two-level quantizer: the sub-list centroids (absolute) in an IVF over the codec's lists
        self._index = faiss.IndexIVFFlat(codec.coarse_index, codec.dim, codec.nlist)
        self._index.is_trained = True
        owner = self.list_of()  # named arrays: swig_ptr does not keep a temporary alive
        absolute = np.ascontiguousarray(codec.coarse[owner] + self.centroids)
        ids = np.arange(self.nlist, dtype=np.int64)
        self._index.add_core(self.nlist, faiss.swig_ptr(absolute), faiss.swig_ptr(ids), faiss.swig_ptr(owner))
        self._index.make_direct_map()  # reconstruct(i): Faiss compares quantizers so when it merges IVF indexes
        self._norms = (self.centroids**2).sum(1)

    @classmethod
    def fit(cls, codec: Codec, codes: np.ndarray, lists: np.ndarray, split: int, seed: int = 0) -> "SplitLists":
        """Share `split` x nlist sub-lists out by list size (`share_out`) and fit each split list's
        residual centroids by k-means on a seeded sample of its stored descriptors (codes, lists)."""
        import faiss

        counts = share_out(np.bincount(lists, minlength=codec.nlist), codec.nlist * split)
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(codes), min(len(codes), SAMPLE_PER_CENTROID * int(counts.sum())), replace=False))
        sample = sample[np.argsort(lists[sample], kind="stable")]
        bounds = np.searchsorted(lists[sample], np.arange(codec.nlist + 1))
        blocks = []
        for l in range(codec.nlist):
            rows = sample[bounds[l] : bounds[l + 1]]
            counts[l] = max(1, min(counts[l], len(rows)))  # a list with few sampled descriptors splits less
            if counts[l] == 1:
                blocks.append(np.zeros((1, codec.dim), np.float32))
                continue
            kmeans = faiss.Kmeans(codec.dim, int(counts[l]), niter=10, seed=seed, min_points_per_centroid=1)
            kmeans.train(residuals(codec, codes[rows], lists[rows]))
            blocks.append(kmeans.centroids)
        return cls(codec, counts, np.concatenate(blocks))

    @property
    def nlist(self) -> int:
        return int(self.first[-1])

    def list_of(self) -> np.ndarray:
        """(nlist',) int64 the codec list of each sub-list."""
        return np.repeat(np.arange(self.codec.nlist, dtype=np.int64), self.counts)

    def assign(self, codes: np.ndarray, lists: np.ndarray) -> np.ndarray:
        """(n,) uint16 sub-list ids: the nearest residual centroid of the descriptor's own codec list,
        decoded block by block (one matrix product per list and block: Faiss's IVF scan of the same
        centroids is ~10x slower)."""
        out = np.empty(len(codes), np.uint16)
        split = self.counts > 1
        for lo in range(0, len(codes), DECODE_BLOCK):  # block by block: no (n,) int64 temporaries (2.6 GB at 1M)
            hi = min(lo + DECODE_BLOCK, len(codes))
            out[lo:hi] = self.first[lists[lo:hi]]  # lists of one sub-list: done
            rows = lo + np.flatnonzero(split[lists[lo:hi]])
            rows = rows[np.argsort(lists[rows], kind="stable")]
            r = residuals(self.codec, codes[rows], lists[rows])
            bounds = np.searchsorted(lists[rows], np.arange(self.codec.nlist + 1))
            for l in np.flatnonzero(bounds[1:] > bounds[:-1]):
                a, b = bounds[l], bounds[l + 1]
                own = slice(self.first[l], self.first[l + 1])
                out[rows[a:b]] = self.first[l] + (self._norms[own] - 2 * r[a:b] @ self.centroids[own].T).argmin(1)
        return out

    def quantizer(self):
        """The IVF index's quantizer: a Faiss IVF index whose search(x, n) returns the n nearest
        sub-lists among those of x's `nprobe` (its attribute) nearest codec lists."""
        return self._index
