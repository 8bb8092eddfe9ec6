"""ASMK (Tolias, Avrithis, Jegou, ICCV 2013) with binarised residuals, as HOW uses it.

- A codebook of k visual words (k-means on local descriptors of photos that are not indexed).
- An image's descriptors are assigned to their nearest word (references) or to their m nearest
  (queries: multiple assignment); the residuals to each word are summed, and the sum's signs kept:
  one (word id, dim-bit code) per word the image uses.
- Similarity of two images: over the words they share, the selective kernel sigma(u) = u^alpha for
  u >= tau, else 0, of u = 1 - 2 hamming / dim, summed, divided by sqrt(words of each image).

Why our own implementation rather than the `asmk` package: the index stores each batch of
references as one atomic chunk of arrays and rebuilds its searchers from the chunks at every open
(crash safety, incremental growth); the package keeps its inverted file as one pickled object that
grows only by increasing image ids, needs a compiled Cython extension and, for its k-means, Faiss's
GPU settings. The kernel itself is a few vectorised lines, so the chunks hold plain arrays (word ids,
packed bits, words per image) and the inverted file is an argsort of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copyseek.describe.base import Candidates, Chunk, Features, Searcher
from copyseek.errors import CopyseekError
from copyseek.validation import check_codes, check_int

CHUNK_ARRAYS = ("words", "bits", "counts")


@dataclass(frozen=True)
class AsmkParams:
    """alpha: selective kernel exponent; tau: similarity threshold (of 1 - 2 hamming / dim, -1..1);
    query_assignments: words each query descriptor is assigned to (multiple assignment)."""

    alpha: float = 3.0
    tau: float = 0.0
    query_assignments: int = 5

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise CopyseekError(f"ASMK alpha must be positive, got {self.alpha}")
        if not -1.0 <= self.tau < 1.0:
            raise CopyseekError(f"ASMK tau must be in [-1, 1), got {self.tau}")
        if self.query_assignments < 1:
            raise CopyseekError(f"ASMK query_assignments must be at least 1, got {self.query_assignments}")


class Codebook:
    """k visual words: centroids (k, dim) float32. `fit` learns them by k-means (Faiss, CPU)."""

    def __init__(self, centroids: np.ndarray):
        centroids = np.ascontiguousarray(centroids, np.float32)
        if centroids.ndim != 2 or len(centroids) < 1 or centroids.shape[1] % 8:
            raise CopyseekError(f"a codebook needs (k, dim) centroids with dim a multiple of 8, got {centroids.shape}")
        self.centroids = centroids
        self._index = None

    @property
    def size(self) -> int:
        return len(self.centroids)

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @classmethod
    def fit(cls, descriptors: np.ndarray, words: int, *, seed: int = 0, iterations: int = 20) -> "Codebook":
        """k-means of (n, dim) descriptors into `words` words (n >= words)."""
        import faiss

        descriptors = np.ascontiguousarray(descriptors, np.float32)
        if words < 1 or len(descriptors) < words:
            raise CopyseekError(f"a codebook of {words} words needs at least as many descriptors, got {len(descriptors)}")
        kmeans = faiss.Kmeans(descriptors.shape[1], words, niter=iterations, seed=seed, gpu=False,
                              max_points_per_centroid=256, verbose=False)
        kmeans.train(descriptors)
        return cls(kmeans.centroids)

    def assign(self, descriptors: np.ndarray, m: int = 1) -> np.ndarray:
        """(n, dim) -> (n, min(m, k)) int64 word ids, nearest first."""
        import faiss

        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim:
            raise CopyseekError(f"descriptors of shape {descriptors.shape} do not fit a {self.dim}-d codebook")
        index = self._index
        if index is None:
            # Published only once it holds the centroids: the branch's extraction threads share one
            # codebook, and a thread searching a half-built (empty) index would get word -1.
            index = faiss.IndexFlatL2(self.dim)
            index.add(self.centroids)
            self._index = index
        m = min(m, self.size)
        if len(descriptors) == 0:
            return np.zeros((0, m), np.int64)
        return index.search(np.ascontiguousarray(descriptors, np.float32), m)[1]

    def aggregate(self, descriptors: np.ndarray, assignments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image's descriptors (n, dim) and their word ids (n, m) -> (words (w,) int64 ascending,
        bits (w, dim / 8) uint8): for each word used, the signs of the summed residuals, packed."""
        if len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.dim // 8), np.uint8)
        rows = np.repeat(np.arange(len(descriptors)), assignments.shape[1])
        flat = assignments.ravel()
        words, inverse = np.unique(flat, return_inverse=True)
        sums = np.zeros((len(words), self.dim), np.float32)
        np.add.at(sums, inverse, descriptors[rows] - self.centroids[flat])
        return words, np.packbits(sums > 0, axis=1)

    def fingerprint(self) -> str:
        return hashlib.sha1(self.centroids.tobytes()).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        np.savez(Path(path), centroids=self.centroids)

    @classmethod
    def load(cls, path: str | Path) -> "Codebook":
        try:
            with np.load(Path(path)) as data:
                return cls(data["centroids"])
        except (OSError, KeyError, ValueError) as exc:
            raise CopyseekError(f"cannot read codebook {path}: {exc}") from None


def pack_words(features: list[Features], codebook_size: int, dim: int) -> Chunk:
    """References' aggregated features -> chunk arrays: words (W,) uint16 (int32 past 65,536 words),
    bits (W, dim / 8) uint8, counts (n,) int32 words per image (images in order)."""
    dtype = np.uint16 if codebook_size <= 1 << 16 else np.int32
    counts = np.array([len(f["words"]) for f in features], np.int32)
    if not features:
        return {"words": np.zeros(0, dtype), "bits": np.zeros((0, dim // 8), np.uint8), "counts": counts}
    return {
        "words": np.concatenate([f["words"] for f in features]).astype(dtype),
        "bits": np.concatenate([f["bits"] for f in features]).astype(np.uint8),
        "counts": counts,
    }


class AsmkSearcher(Searcher):
    """Inverted file over the aggregated words of all references, searched with the ASMK kernel.

    Chunks (pack_words) are kept as they come; the inverted file (postings sorted by word) is
    rebuilt from all of them at the first search after an add, in O(W log W).
    """

    def __init__(self, codebook_size: int, dim: int, params: AsmkParams = AsmkParams()):
        self.codebook_size, self.dim, self.params = codebook_size, dim, params
        self._chunks: list[Chunk] = []
        self._built = 0  # references in the inverted file
        self._rows = np.zeros(0, np.int64)
        self._bits = np.zeros((0, dim // 8), np.uint8)
        self._offsets = np.zeros(codebook_size + 1, np.int64)
        self._norms = np.zeros(0, np.float32)

    @property
    def ntotal(self) -> int:
        return sum(len(c["counts"]) for c in self._chunks)

    def add(self, chunk: Chunk) -> None:
        missing = set(CHUNK_ARRAYS) - set(chunk)
        if missing:
            raise CopyseekError(f"HOW chunk lacks arrays {sorted(missing)}; was it packed by the HOW branch?")
        words, bits, counts = chunk["words"], chunk["bits"], chunk["counts"]
        if len(words) != int(counts.sum()) or len(bits) != len(words):
            raise CopyseekError("HOW chunk is inconsistent: its word, code and per-image counts differ")
        if len(words) and (bits.shape[1] != self.dim // 8 or int(words.max()) >= self.codebook_size):
            raise CopyseekError(
                f"HOW chunk does not fit this codebook ({self.codebook_size} words, {self.dim}-bit codes)")
        self._chunks.append(chunk)

    def nbytes(self) -> int:
        return sum(c[name].nbytes for c in self._chunks for name in CHUNK_ARRAYS)

    def _build(self) -> None:
        if self._built == self.ntotal:
            return
        counts = np.concatenate([c["counts"] for c in self._chunks])
        words = np.concatenate([c["words"] for c in self._chunks]).astype(np.int64)
        bits = np.concatenate([c["bits"].reshape(-1, self.dim // 8) for c in self._chunks])
        order = np.argsort(words, kind="stable")
        self._rows = np.repeat(np.arange(len(counts)), counts)[order]
        self._bits = bits[order]
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(words, minlength=self.codebook_size))])
        self._norms = np.sqrt(np.maximum(counts, 1)).astype(np.float32)
        self._built = len(counts)

    def scores(self, words: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """(ntotal,) float32 ASMK similarity of one query's aggregated (words, bits) to every reference."""
        self._build()
        scores = np.zeros(self._built, np.float32)
        if len(words) == 0 or self._built == 0:
            return scores
        lo, hi = self._offsets[words], self._offsets[words + 1]
        lengths = hi - lo
        total = int(lengths.sum())
        if total == 0:
            return scores
        # Posting indices of every query word, concatenated: lo[q], lo[q] + 1, ..., hi[q] - 1.
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        postings = starts + np.arange(total)
        query_of = np.repeat(np.arange(len(words)), lengths)
        hamming = np.bitwise_count(self._bits[postings] ^ bits[query_of]).sum(axis=1, dtype=np.int32)
        similarity = 1.0 - 2.0 * hamming.astype(np.float32) / self.dim
        keep = similarity >= self.params.tau
        kernel = np.sign(similarity[keep]) * np.abs(similarity[keep]) ** self.params.alpha
        scores += np.bincount(self._rows[postings[keep]], kernel, minlength=self._built).astype(np.float32)
        return scores / self._norms / np.sqrt(len(words))

    def query_scores(self, query: Features) -> np.ndarray:
        """(ntotal,) float32 ASMK similarity of one query's features to every reference: the larger
        of the query's and its mirror's when the features hold both (the fused pipeline's HOW evidence)."""
        scores = self.scores(*self._query_words(query))
        if "words_mirrored" in query:
            scores = np.maximum(scores, self.scores(*self._query_words(query, "_mirrored")))
        return scores

    def _query_words(self, query: Features, suffix: str = "") -> tuple[np.ndarray, np.ndarray]:
        """A query's (words, bits), checked: word ids in the codebook, codes of this width."""
        if f"words{suffix}" not in query or f"bits{suffix}" not in query:
            raise CopyseekError("HOW query features lack words and bits; were they made by the HOW branch?")
        words = np.asarray(query[f"words{suffix}"])
        bits = check_codes(query[f"bits{suffix}"], self.dim // 8, "HOW query codes") if len(words) else \
            np.zeros((0, self.dim // 8), np.uint8)
        if words.ndim != 1 or words.dtype.kind not in "iu" or len(words) != len(bits) or \
                (len(words) and (words.min() < 0 or words.max() >= self.codebook_size)):
            raise CopyseekError(f"HOW query words must be ids below {self.codebook_size}, one per code")
        return words.astype(np.int64), bits

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        k = check_int("k", k, minimum=1)
        out = []
        for query in queries:
            scores = self.query_scores(query)
            top = np.argsort(-scores, kind="stable")[:k]
            top = top[scores[top] > 0]
            out.append(Candidates(top.astype(np.int64), scores[top].astype(np.float32)))
        return out
