"""Local-feature search: Faiss kNN of every query descriptor, votes per reference, verification.

Stages, for a batch of queries:
1. one Faiss search of all their descriptors (and mirrored ones) against all reference descriptors:
   a flat 4-bit PQ fast-scan index (every code compared) up to `flat_max` descriptors, IVF fast-scan
   over the codec's fixed lists past it, each split into sub-lists as the collection grows
   (`copyseek.local.sublists`);
2. votes: a neighbour votes for its reference when it is much closer than the k-th neighbour (a
   ratio test against the local density); each query keypoint votes at most once per reference;
   counted sparsely (np.unique), so the cost does not grow with the number of references;
3. the `verify_top` most voted references are verified (`copyseek.local.verify`): the voting
   neighbours in a reference are its tentative matches, so verification needs no descriptor
   decoding or second matching step; score = inliers.
   With `pair_matching`, each verified reference's tentative matches are found within the pair
   instead (its PQ codes decoded, the same kNN and ratio test over its descriptors alone): a
   larger collection takes a copy's collection-wide neighbours and tightens the ratio test, so
   the same pair verifies fewer inliers as references are added (BENCHMARKS.md, issue 13);
   within the pair it does not, at the cost of one distance matrix per verified reference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from copyseek.describe.base import Candidates, Chunk, Features, Searcher
from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec
from copyseek.local.sublists import SplitLists, auto_split, check_split
from copyseek.local.verify import Verification, VerifyParams, one_to_one, verify
from copyseek.validation import check_bool, check_int, check_number, check_vectors

XY_SCALE = 65535
"""Stored keypoint positions are uint16 fractions of the image's width / height."""
CHUNK_ARRAYS = ("codes", "lists", "xy", "counts", "sizes")
BUILD_BLOCK = 1 << 20
"""Descriptors handed to Faiss at a time when the index is built."""
PIECE = 1 << 25
"""Descriptors in the plain IVF-PQ copy that is converted to fast-scan at a time (~0.8 GB)."""


@dataclass(frozen=True)
class SearchParams:
    """knn:         neighbours per query descriptor.
    vote_ratio:  a neighbour votes when its distance is below vote_ratio x the k-th neighbour's.
    verify_top:  references verified per query (the most voted).
    flat_max:    descriptors up to which the index is flat (every code compared); past it, IVF.
    nprobe:      IVF lists visited per query descriptor.
    split:       sub-lists per codec list on average (a power of two up to 16), shared out by list
                 size; 0 = by collection size (`sublists.auto_split`: 1 up to ~33M descriptors, i.e.
                 ~100k references; 16 at 1M).
    split_nprobe: sub-lists visited per query descriptor when the lists are split.
    batch:       queries per Faiss call (bounds the (descriptors, knn) result arrays).
    pair_matching: tentative matches of a verified reference from its own descriptors (module
                 docstring); chance fits on non-copies then reach ~6 inliers instead of 3-4.
                 Off by default: fused muAP +0.014 / +0.019 at 1,000 / 10,000 references, but
                 ~140-250 ms more per query (BENCHMARKS.md issue 13).
    """

    knn: int = 5
    vote_ratio: float = 0.85
    verify_top: int = 30
    flat_max: int = 1 << 15
    nprobe: int = 16
    split: int = 0
    split_nprobe: int = 8
    batch: int = 64
    pair_matching: bool = False

    def __post_init__(self) -> None:
        for name in ("knn", "verify_top", "flat_max", "nprobe", "split", "split_nprobe", "batch"):
            check_int(f"local {name}", getattr(self, name))
        check_number("local vote_ratio", self.vote_ratio)
        if self.knn < 2:
            raise CopyseekError(f"local knn must be at least 2 (votes compare with the k-th neighbour), got {self.knn}")
        if not 0.0 < self.vote_ratio <= 1.0:
            raise CopyseekError(f"local vote_ratio must be in (0, 1], got {self.vote_ratio}")
        if min(self.verify_top, self.nprobe, self.split_nprobe, self.batch, self.flat_max) < 1:
            raise CopyseekError("local verify_top, nprobe, split_nprobe, batch and flat_max must be positive")
        check_split(self.split)
        check_bool("local pair_matching", self.pair_matching)


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
        self._stored_params = params  # what set_search_parameters(name=None) restores
        self.verify_params = verify_params
        self._parts: list[Chunk] = []  # chunks added since the arrays below were last concatenated
        self.codes = np.zeros((0, codec.code_size), np.uint8)
        self.lists = np.zeros(0, np.uint16)
        self.xy = np.zeros((0, 2), np.uint16)
        self.counts = np.zeros(0, np.int32)
        self.sizes = np.zeros((0, 2), np.int32)
        self.offsets = np.zeros(1, np.int64)
        self.index = None
        self.quantizer = None  # the IVF index's quantizer, held here because Faiss does not own it
        self.split_lists: SplitLists | None = None  # when the codec's lists are split

    def search_parameters(self) -> dict[str, int]:
        """Search-time parameter name -> value now: pair_matching (a switch: True takes tentative
        matches within each verified pair, False from the collection-wide neighbours; module docstring)."""
        return {"pair_matching": bool(self.params.pair_matching)}

    def set_search_parameters(self, **values: int | None) -> None:
        """Set pair_matching for the searches to come (None restores the index's setting)."""
        for name, value in values.items():
            if name != "pair_matching":
                raise CopyseekError(f"the local searcher has no search-time parameter {name!r}; it takes: pair_matching")
            if value is None:
                value = self._stored_params.pair_matching
            elif value not in (0, 1):  # True and False included
                raise CopyseekError(f"pair_matching must be true or false, got {value!r}")
            self.params = replace(self.params, pair_matching=bool(value))

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
        """Flat PQ fast-scan up to flat_max descriptors, else IVF-PQ fast-scan (`_build_ivf`). The flat
        one is filled through its plain (non fast-scan) form, which accepts stored codes as is."""
        import faiss

        codec = self.codec
        if len(self.codes) > self.params.flat_max:
            return self._build_ivf()
        self.split_lists = None
        builder = self._plain(faiss.IndexPQ(codec.dim, codec.m, codec.nbits))
        for lo in range(0, len(self.codes), BUILD_BLOCK):  # block by block: no second copy of all codes
            builder.add_sa_codes(self.codes[lo : lo + BUILD_BLOCK])
        return faiss.IndexPQFastScan(builder)

    def _build_ivf(self):
        """IVF-PQ fast-scan over the codec's lists, split into sub-lists past ~33M descriptors.

        Faiss fills a fast-scan IVF index correctly only by converting a plain IVF-PQ one (its own
        add_sa_codes skips the packing into blocks), and the plain copy costs 24 B per descriptor
        (7.7 GB at 1M references): so ranges of lists holding at most PIECE descriptors are filled,
        converted and merged one at a time (merging into empty lists copies the packed blocks as is).
        """
        import faiss

        codec = self.codec
        split = self.params.split or auto_split(len(self.codes), codec.nlist)
        self.split_lists = SplitLists.fit(codec, self.codes, self.lists, split) if split > 1 else None
        self.quantizer = self.split_lists.quantizer() if self.split_lists else codec.coarse_index
        nlist = self.quantizer.ntotal
        lists = self.split_lists.assign(self.codes, self.lists) if self.split_lists else self.lists  # (N,) uint16
        filled = np.cumsum(np.bincount(lists, minlength=nlist))
        bounds = np.unique(np.concatenate([[0], np.searchsorted(filled, np.arange(PIECE, filled[-1], PIECE)), [nlist]]))
        index = None
        for first, last in zip(bounds[:-1], bounds[1:]):
            builder = self._plain(faiss.IndexIVFPQ(self.quantizer, codec.dim, nlist, codec.m, codec.nbits))
            builder.by_residual = False
            rows = np.flatnonzero((lists >= first) & (lists < last))
            for lo in range(0, len(rows), BUILD_BLOCK):  # an IVF code is the list number's low bytes, then the PQ code
                block = rows[lo : lo + BUILD_BLOCK]
                prefix = lists[block].astype("<i8").view(np.uint8).reshape(-1, 8)[:, : builder.coarse_code_size()]
                builder.add_sa_codes(np.hstack([prefix, self.codes[block]]), block)
            piece = faiss.IndexIVFPQFastScan(builder)
            del builder
            if index is None:
                index = piece
            else:
                index.merge_from(piece, 0)
        index.nprobe = min(self.params.split_nprobe, nlist) if self.split_lists else self.params.nprobe
        return index

    def _plain(self, builder):
        """A plain Faiss PQ / IVF-PQ index holding the codec's PQ centroids, ready for stored codes."""
        import faiss

        faiss.copy_array_to_vector(self.codec.centroids.ravel(), builder.pq.centroids)
        builder.is_trained = True
        return builder

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
        knn = min(self.params.knn, len(self.codes))
        if self.split_lists:  # the codec lists whose sub-lists are compared: as many as sub-lists visited
            self.quantizer.nprobe = min(self.index.nprobe, self.codec.nlist)
        if knn:
            distances, ids = self.index.search(stacked, knn)
        else:  # no reference descriptor at all (flat images): no neighbour, and Faiss refuses k = 0
            distances, ids = np.zeros((len(stacked), 0), np.float32), np.zeros((len(stacked), 0), np.int64)
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
        if self.params.pair_matching:
            groups = self.pair_matches(query, row)
        else:
            groups = neighbours.matches(row, int(self.offsets[row]))
        size = (int(query["size"][0]), int(query["size"][1]))
        return verify(query["xy"], size, ref_xy, ref_size, groups, self.verify_params)

    def pair_matches(self, query: Features, row: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Tentative one-to-one matches (query keypoint, reference keypoint) of the query with
        reference `row` from the reference's descriptors alone: [direct, mirrored], as
        Neighbours.matches gives them for a collection holding only this reference."""
        import faiss

        lo, hi = int(self.offsets[row]), int(self.offsets[row + 1])
        reference = self.codec.quantizer.decode(np.ascontiguousarray(self.codes[lo:hi]))  # (r, dim)
        knn = min(self.params.knn, hi - lo)
        groups = []
        for desc in query_descs(query):
            if knn == 0 or len(desc) == 0:
                groups.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
                continue
            # Faiss's exact kNN selects the knn nearest while it computes the distances: about half
            # the time of a full (n, r) distance matrix and its partition, the same neighbours
            near, nearest = faiss.knn(np.ascontiguousarray(desc, np.float32), reference, knn)  # (n, knn) ascending
            voted = near < self.params.vote_ratio**2 * near[:, -1:]
            keypoint, col = np.nonzero(voted)
            groups.append(one_to_one(keypoint, nearest[keypoint, col], near[keypoint, col]))
        return groups

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
