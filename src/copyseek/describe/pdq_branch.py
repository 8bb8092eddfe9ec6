"""The PDQ branch: Meta's 256-bit perceptual hash (the `pdqhash` package), as ThreatExchange uses it.

References store one hash; queries are hashed under the 8 dihedral transforms (rotations, flips),
as ThreatExchange's matcher does, and a reference's distance is the smallest over the 8.
Score = 1 - hamming / 256, so 1 is identical and ThreatExchange's match threshold (distance 31)
is a score of 0.879.
"""

from __future__ import annotations

import numpy as np

from copyseek.describe.base import Branch, Candidates, Chunk, Features, Searcher
from copyseek.errors import CopyseekError
from copyseek.validation import check_codes, check_images, check_int

BITS = 256
PDQ_SIDE = 512
"""PDQ downsamples internally; decoding at 512 px keeps its input as the reference code sees it."""


def pdq_hashes(image: np.ndarray, dihedral: bool) -> tuple[np.ndarray, int]:
    """(H, W, 3) uint8 RGB -> ((t, 32) uint8 packed hashes, quality 0-100); t = 8 if dihedral else 1."""
    import pdqhash

    if dihedral:
        hashes, quality = pdqhash.compute_dihedral(np.ascontiguousarray(image))
    else:
        hash_bits, quality = pdqhash.compute(np.ascontiguousarray(image))
        hashes = [hash_bits]
    return np.packbits(np.asarray(hashes, dtype=np.uint8), axis=1), int(quality)


class PDQBranch(Branch):
    name = "pdq"

    @property
    def decode_side(self) -> int:
        return PDQ_SIDE

    def spec(self) -> dict:
        return {"hash": "pdq", "bits": BITS}

    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        features = []
        for image in check_images(images):
            hashes, quality = pdq_hashes(image, dihedral=query)
            features.append({"hashes": hashes, "quality": np.array(quality, np.uint8)})
        return features

    def pack(self, features: list[Features]) -> Chunk:
        hashes = np.stack([f["hashes"][0] for f in features]) if features else np.zeros((0, BITS // 8), np.uint8)
        return {"hashes": hashes}

    def new_searcher(self) -> "HashSearcher":
        return HashSearcher()


class HashSearcher(Searcher):
    """Exact Hamming search (Faiss IndexBinaryFlat) over packed 256-bit hashes."""

    def __init__(self) -> None:
        import faiss

        self.index = faiss.IndexBinaryFlat(BITS)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, chunk: Chunk) -> None:
        if "hashes" not in chunk:
            raise CopyseekError(f"pdq chunk lacks 'hashes' (has {sorted(chunk)}); was it packed by the pdq branch?")
        self.index.add(check_codes(chunk["hashes"], BITS // 8, "pdq chunk hashes"))

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        check_int("k", k, minimum=1)
        if any("hashes" not in q for q in queries):
            raise CopyseekError("pdq queries need a 'hashes' feature each (from PDQBranch.extract)")
        results = []
        k = max(1, min(k, self.ntotal))
        for i, query in enumerate(queries):
            distances, rows = self.index.search(check_codes(query["hashes"], BITS // 8, f"pdq query {i} hashes"), k)
            best: dict[int, int] = {}
            for d, r in zip(distances.ravel(), rows.ravel()):
                if r >= 0 and d < best.get(int(r), BITS + 1):
                    best[int(r)] = int(d)
            ranked = sorted(best.items(), key=lambda item: item[1])[:k]
            rows_out = np.array([r for r, _ in ranked], np.int64)
            scores = np.array([1.0 - d / BITS for _, d in ranked], np.float32)
            results.append(Candidates(rows_out, scores))
        return results

    def nbytes(self) -> int:
        return self.ntotal * BITS // 8
