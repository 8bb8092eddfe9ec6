"""Local-feature search: Faiss kNN of every query descriptor, votes per reference, verification.

Stages, for a batch of queries:
1. one Faiss search of all their descriptors (and mirrored ones) against all reference descriptors:
   a flat 4-bit PQ fast-scan index (every code compared) up to `flat_max` descriptors, IVF fast-scan
   over the codec's fixed lists past it;
2. votes: a neighbour votes for its reference when it is much closer than the k-th neighbour (a
   ratio test against the local density); each query keypoint votes at most once per reference;
   counted sparsely (np.unique), so the cost does not grow with the number of references;
3. the `verify_top` most voted references are verified (`copyseek.local.verify`): the voting
   neighbours in a reference are its tentative matches, so verification needs no descriptor
   decoding or second matching step; score = inliers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyseek.describe.base import Candidates, Chunk, Features, Searcher
from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec
from copyseek.local.verify import Verification, VerifyParams, one_to_one, verify
from copyseek.validation import check_int, check_number, check_vectors

XY_SCALE = 65535
"""Stored keypoint positions are uint16 fractions of the image's width / height."""
CHUNK_ARRAYS = ("codes", "lists", "xy", "counts", "sizes")
BUILD_BLOCK = 1 << 20
"""Descriptors handed to Faiss at a time when the index is built."""


@dataclass(frozen=True)
class SearchParams:
    """knn:         neighbours per query descriptor.
    vote_ratio:  a neighbour votes when its distance is below vote_ratio x the k-th neighbour's.
    verify_top:  references verified per query (the most voted).
    flat_max:    descriptors up to which the index is flat (every code compared); past it, IVF.
    nprobe:      IVF lists visited per query descriptor.
    batch:       queries per Faiss call (bounds the (descriptors, knn) result arrays).
    """

    knn: int = 5
    vote_ratio: float = 0.85
    verify_top: int = 30
    flat_max: int = 1 << 15
    nprobe: int = 16
    batch: int = 64

    def __post_init__(self) -> None:
        for name in ("knn", "verify_top", "flat_max", "nprobe", "batch"):
            check_int(f"local {name}", getattr(self, name))
        check_number("local vote_ratio", self.vote_ratio)
        if self.knn < 2:
            raise CopyseekError(f"local knn must be at least 2 (votes compare with the k-th neighbour), got {self.knn}")
        if not 0.0 < self.vote_ratio <= 1.0:
            raise CopyseekError(f"local vote_ratio must be in (0, 1], got {self.vote_ratio}")
        if self.verify_top < 1 or self.nprobe < 1 or self.batch < 1 or self.flat_max < 1:
            raise CopyseekError("local verify_top, nprobe, batch and flat_max must be positive")


def pack_features(codec: Codec, features: list[Features]) -> Chunk:
    """Reference features -> chunk arrays (descriptors of all images concatenated in image order).

    codes:  (N, code_size) uint8 PQ codes;    lists: (N,) uint16 IVF list of each descriptor;
    xy:     (N, 2) uint16 position / image size * 65535;
    counts: (n,) int32 descriptors per image; sizes: (n, 2) int32 image (width, height) in pixels.
    """
    sizes = np.array([f["size"] for f in features], np.int32).reshape(-1, 2)
    counts = np.array([len(f["xy"]) for f in features], np.int32)
    xy = np.concatenate([f["xy"] for f in features]) if features else np.zeros((0, 2), np.float32)
    desc = np.concatenate([f["desc"] for f in features]) if features else np.zeros((0, codec.dim), np.float32)
    fraction = xy / np.maximum(np.repeat(sizes, counts, axis=0), 1)
    return {
        "codes": codec.encode(desc),
        "lists": codec.assign(desc).astype(np.uint16),
        "xy": np.round(np.clip(fraction, 0.0, 1.0) * XY_SCALE).astype(np.uint16),
        "counts": counts,
        "sizes": sizes,
    }


class LocalSearcher(Searcher):
    """Packed local features of all references, a Faiss index over their codes, and verification.

    The arrays of pack_features, concatenated over chunks, are kept as attributes (codes, lists,
    xy, counts, sizes) with offsets (ntotal + 1,): the first descriptor of each reference.
    """

    def __init__(
        self, codec: Codec, params: SearchParams = SearchParams(), verify_params: VerifyParams = VerifyParams()
    ):
        self.codec = codec
        self.params = params
        self.verify_params = verify_params
        self._parts: list[Chunk] = []  # chunks added since the arrays below were last concatenated
        self.codes = np.zeros((0, codec.code_size), np.uint8)
        self.lists = np.zeros(0, np.uint16)
        self.xy = np.zeros((0, 2), np.uint16)
        self.counts = np.zeros(0, np.int32)
        self.sizes = np.zeros((0, 2), np.int32)
        self.offsets = np.zeros(1, np.int64)
        self.index = None

    @property
    def ntotal(self) -> int:
        return len(self.counts) + sum(len(c["counts"]) for c in self._parts)

    def add(self, chunk: Chunk) -> None:
        missing = set(CHUNK_ARRAYS) - set(chunk)
        if missing:
            raise CopyseekError(f"local chunk lacks arrays {sorted(missing)}; was it packed by the local branch?")
        n = int(chunk["counts"].sum())
        if chunk["codes"].shape != (n, self.codec.code_size) or chunk["lists"].shape != (n,) or len(chunk["xy"]) != n:
            raise CopyseekError("local chunk does not match this codec (code size or descriptor count differ)")
        self._parts.append(chunk)

    def nbytes(self) -> int:
        self._concatenate()
        return sum(getattr(self, name).nbytes for name in CHUNK_ARRAYS)

    def _concatenate(self) -> None:
        if not self._parts:
            return
        for name in CHUNK_ARRAYS:
            setattr(self, name, np.concatenate([getattr(self, name)] + [c[name] for c in self._parts]))
        self.offsets = np.concatenate([[0], np.cumsum(self.counts, dtype=np.int64)])
        self._parts = []

    def _sync_index(self) -> None:
        """Rebuild the Faiss index when references were added since it was built: from the stored
        codes and lists alone, in time linear in the number of descriptors."""
        self._concatenate()
        if self.index is None or self.index.ntotal < len(self.codes):
            self.index = self._build_index()

    def _build_index(self):
        """Flat PQ fast-scan up to flat_max descriptors, else IVF-PQ fast-scan over the codec's lists.
        Both are filled through their plain (non fast-scan) form, which accepts stored codes as is."""
        import faiss

        codec = self.codec
        flat = len(self.codes) <= self.params.flat_max
        if flat:
            builder = faiss.IndexPQ(codec.dim, codec.m, codec.nbits)
        else:
            builder = faiss.IndexIVFPQ(codec.coarse_index, codec.dim, codec.nlist, codec.m, codec.nbits)
            builder.by_residual = False
        faiss.copy_array_to_vector(codec.centroids.ravel(), builder.pq.centroids)
        builder.is_trained = True
        for lo in range(0, len(self.codes), BUILD_BLOCK):  # block by block: no second copy of all codes
            codes = self.codes[lo : lo + BUILD_BLOCK]
            if not flat:  # an IVF code is the list number's low bytes, then the PQ code
                lists = self.lists[lo : lo + BUILD_BLOCK].astype("<i8").view(np.uint8).reshape(-1, 8)
                codes = np.hstack([lists[:, : builder.coarse_code_size()], codes])
            builder.add_sa_codes(codes)
        if isinstance(builder, faiss.IndexPQ):
            return faiss.IndexPQFastScan(builder)
        index = faiss.IndexIVFPQFastScan(builder)
        index.nprobe = self.params.nprobe
        return index

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        check_int("k", k, minimum=1)
        for i, query in enumerate(queries):
            self._check_query(query, f"local query {i}")
        self._concatenate()
        if len(self.codes) == 0:
            return [Candidates.empty() for _ in queries]
        out: list[Candidates] = []
        for start in range(0, len(queries), self.params.batch):
            batch = queries[start : start + self.params.batch]
            for query, neighbours in zip(batch, self._search_neighbours(batch)):
                out.append(self._verify_top(query, neighbours, k))
        return out

    def _check_query(self, query: Features, what: str) -> None:
        """Query features as LocalBranch.extract(query=True) makes them, at this codec's dimension."""
        missing = {"xy", "desc", "size"} - set(query)
        if missing:
            raise CopyseekError(f"{what} lacks {sorted(missing)} (features from LocalBranch.extract)")
        for name in ("desc", "desc_mirrored"):
            if name in query:
                check_vectors(query[name], self.codec.dim, f"{what} {name}")
        if np.shape(query["xy"]) != (len(query["desc"]), 2):
            raise CopyseekError(f"{what} xy must be (n, 2) for its n descriptors, got {np.shape(query['xy'])}")

    def verification(self, query: Features, row: int) -> Verification:
        """Verify one query against reference `row` exactly as `search` does (to explain a match)."""
        self._check_query(query, "local query")
        self._concatenate()
        if not 0 <= row < len(self.counts):
            raise CopyseekError(f"reference row {row} is not in this index of {len(self.counts)} references")
        return self._verify(query, self._search_neighbours([query])[0], row)

    def _search_neighbours(self, queries: list[Features]) -> list["Neighbours"]:
        """One Faiss search for all descriptors of `queries`, split into each query's neighbours."""
        self._sync_index()
        stacked = np.concatenate([np.concatenate(query_descs(q)) for q in queries]).astype(np.float32)
        distances, ids = self.index.search(stacked, min(self.params.knn, len(self.codes)))
        bounds = np.cumsum([0] + [len(query_descs(q)) * len(q["xy"]) for q in queries])
        return [
            self.neighbours(distances[lo:hi], ids[lo:hi], len(q["xy"]))
            for q, lo, hi in zip(queries, bounds[:-1], bounds[1:])
        ]

    def neighbours(self, distances: np.ndarray, ids: np.ndarray, keypoints: int) -> "Neighbours":
        """The voting neighbours among one query's (n, knn) squared distances and descriptor ids;
        row j of the arrays is keypoint j % keypoints, of the mirrored set when j >= keypoints."""
        voted = (ids >= 0) & (distances < self.params.vote_ratio**2 * distances[:, -1:])  # squared
        j, col = np.nonzero(voted)
        desc = ids[j, col]
        rows = np.searchsorted(self.offsets, desc, side="right") - 1
        order = np.argsort(rows, kind="stable")
        return Neighbours(
            keypoint=(j % max(keypoints, 1))[order],
            mirrored=(j >= keypoints)[order],
            row=rows[order],
            desc=desc[order],
            distance=distances[j, col][order],
        )

    def reference(self, row: int) -> tuple[np.ndarray, tuple[int, int]]:
        """Reference `row`'s keypoints (n, 2) float32 in its pixels, and its (width, height)."""
        lo, hi = self.offsets[row], self.offsets[row + 1]
        size = self.sizes[row]
        return self.xy[lo:hi].astype(np.float32) * (size.astype(np.float32) / XY_SCALE), (int(size[0]), int(size[1]))

    def _verify(self, query: Features, neighbours: "Neighbours", row: int) -> Verification:
        ref_xy, ref_size = self.reference(row)
        groups = neighbours.matches(row, int(self.offsets[row]))
        size = (int(query["size"][0]), int(query["size"][1]))
        return verify(query["xy"], size, ref_xy, ref_size, groups, self.verify_params)

    def _verify_top(self, query: Features, neighbours: "Neighbours", k: int) -> Candidates:
        """Verify the most voted references; keep the k with most inliers (at least one)."""
        rows, votes = neighbours.votes(len(self.counts))
        top = np.argsort(-votes, kind="stable")[: max(k, self.params.verify_top)]
        rows, votes = rows[top], votes[top]
        results = [self._verify(query, neighbours, int(row)) for row in rows]
        inliers = np.array([r.inliers for r in results], np.int32)
        order = np.argsort(-inliers, kind="stable")[:k]  # ties keep the vote order
        order = order[inliers[order] > 0]
        return Candidates(
            rows[order].astype(np.int64),
            inliers[order].astype(np.float32),
            {
                "inliers": inliers[order],
                "votes": votes[order].astype(np.int32),
                "region": np.array([results[i].region for i in order], np.float32).reshape(-1, 4),
                "mirrored": np.array([results[i].mirrored for i in order], bool),
            },
        )


@dataclass(frozen=True)
class Neighbours:
    """One query's voting neighbours, (v,) arrays sorted by reference row: the query keypoint, whether
    it came from the mirrored descriptors, the reference row and descriptor id, squared distance."""

    keypoint: np.ndarray
    mirrored: np.ndarray
    row: np.ndarray
    desc: np.ndarray
    distance: np.ndarray

    def votes(self, references: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, votes): the references with a voting neighbour and, for each, how many query
        keypoints have one there (a keypoint counts once per reference, mirrored or not)."""
        pairs = np.unique(self.keypoint * references + self.row)
        return np.unique(pairs % references, return_counts=True)

    def matches(self, row: int, first_desc: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tentative one-to-one matches (query keypoint, keypoint of the reference) with reference
        `row`, whose descriptors start at id first_desc: [direct, mirrored]."""
        lo, hi = np.searchsorted(self.row, [row, row + 1])
        groups = []
        for mirrored in (False, True):
            sel = lo + np.flatnonzero(self.mirrored[lo:hi] == mirrored)
            groups.append(one_to_one(self.keypoint[sel], self.desc[sel] - first_desc, self.distance[sel]))
        return groups


def query_descs(query: Features) -> list[np.ndarray]:
    """The query's descriptor sets: [desc] or [desc, desc_mirrored], each (n, dim) float32."""
    if "desc_mirrored" in query:
        return [query["desc"], query["desc_mirrored"]]
    return [query["desc"]]
