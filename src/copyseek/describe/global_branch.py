"""The global branch: one unit vector per image from a global model, searched with Faiss."""

from __future__ import annotations

import numpy as np

from copyseek.describe.base import Branch, Candidates, Chunk, Features, Searcher
from copyseek.describe.models import GlobalModel
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError


class GlobalBranch(Branch):
    """Global descriptors (SSCD by default) in a Faiss index named by a factory string.

    factory: "Flat" (exact inner product, the default) or any Faiss index_factory string such as
    "IVF1024,PQ64" or "OPQ32,IVF4096,PQ32" for compressed search at scale; a trainable index is
    trained on the references the first time it is searched.
    views: the resizings each image is described at (default: the model's own); with several, the
    image's vector is the normalised sum of the model's vectors at each. A squashed square view and
    an aspect-keeping one see an edited copy differently: SSCD at square:224+short:256 scores muAP
    +0.029 over square:320 alone on five calibrated benchmarks, at about 1.3x the model cost.
    flip_average: also describe each view's mirror (twice the cost again; +0.004 on the same five
    benchmarks).
    """

    name = "global"

    def __init__(
        self,
        model: GlobalModel,
        factory: str = "Flat",
        batch_size: int = 16,
        flip_average: bool = False,
        views: tuple[Preprocess, ...] | None = None,
    ):
        if views is not None and not views:
            raise CopyseekError("the global branch needs at least one view")
        self.model = model
        self.factory = factory
        self.batch_size = batch_size
        self.flip_average = flip_average
        self.views = tuple(views) if views else (model.preprocess,)

    @property
    def decode_side(self) -> int:
        return max(view.size for view in self.views)

    def spec(self) -> dict:
        # flip named only when on, so indexes made before the option existed keep their spec
        return {
            **self.model.spec(),
            "preprocess": "+".join(str(view) for view in self.views),
            "factory": self.factory,
            **({"flip_average": True} if self.flip_average else {}),
        }

    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        return [{"vector": v} for v in self.embed(images)]

    def embed(
        self, images: list[np.ndarray], flip_average: bool | None = None, views: tuple[Preprocess, ...] | None = None
    ) -> np.ndarray:
        """(N, dim) unit vectors of (H, W, 3) uint8 RGB images of any sizes: the normalised sum of the
        model's vectors at each of `views` and, with flip_average, of their mirrors (defaults: the
        branch's)."""
        flip = self.flip_average if flip_average is None else flip_average
        summed = np.zeros((len(images), self.model.dim), np.float32)
        for view in views or self.views:
            resized = [view.apply(image) for image in images]
            summed += self._embed_resized(resized)
            if flip:
                summed += self._embed_resized([np.ascontiguousarray(r[:, ::-1]) for r in resized])
        return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)

    def _embed_resized(self, resized: list[np.ndarray]) -> np.ndarray:
        """Model vectors of already resized images; same-size inputs are batched together."""
        vectors = np.zeros((len(resized), self.model.dim), np.float32)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(resized):
            by_shape.setdefault(image.shape, []).append(i)
        for members in by_shape.values():
            for start in range(0, len(members), self.batch_size):
                part = members[start : start + self.batch_size]
                vectors[part] = self.model.embed(np.stack([resized[i] for i in part]))
        return vectors

    def pack(self, features: list[Features]) -> Chunk:
        if not features:
            return {"vectors": np.zeros((0, self.model.dim), np.float32)}
        return {"vectors": np.stack([f["vector"] for f in features]).astype(np.float32)}

    def new_searcher(self) -> "VectorSearcher":
        return VectorSearcher(self.model.dim, self.factory)


class VectorSearcher(Searcher):
    """Inner-product search over unit vectors with a Faiss index built from a factory string."""

    def __init__(self, dim: int, factory: str = "Flat"):
        import faiss

        self.dim = dim
        self.factory = factory
        try:
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise CopyseekError(f"invalid Faiss factory string {factory!r}: {str(exc).splitlines()[-1]}") from None
        self._pending: list[np.ndarray] = []  # vectors waiting for a trainable index to be trained

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) + sum(len(p) for p in self._pending)

    def add(self, chunk: Chunk) -> None:
        vectors = np.ascontiguousarray(chunk["vectors"], dtype=np.float32)
        if self.index.is_trained and not self._pending:
            self.index.add(vectors)
        else:
            self._pending.append(vectors)

    def _flush(self) -> None:
        if not self._pending:
            return
        vectors = np.concatenate(self._pending)
        if not self.index.is_trained:
            try:
                self.index.train(vectors)
            except RuntimeError as exc:
                raise CopyseekError(
                    f"Faiss index {self.factory!r} cannot be trained on {len(vectors)} references "
                    f"({str(exc).splitlines()[-1]}); use a smaller index or 'Flat'"
                ) from None
        self.index.add(vectors)
        self._pending = []

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) queries -> (n, k) similarities and rows (-1 where fewer than k references)."""
        self._flush()
        k = max(1, min(k, max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """(m,) rows -> (m, dim) stored vectors (decoded, for compressed indexes)."""
        import faiss

        self._flush()
        rows = np.asarray(rows, np.int64)
        try:
            return self.index.reconstruct_batch(rows)
        except RuntimeError:  # IVF indexes need a direct map from row to list entry first
            faiss.extract_index_ivf(self.index).make_direct_map()
            return self.index.reconstruct_batch(rows)

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        if not queries:
            return []
        sims, rows = self.search_vectors(np.stack([q["vector"] for q in queries]), k)
        return [Candidates(r[r >= 0].astype(np.int64), s[r >= 0].astype(np.float32)) for s, r in zip(sims, rows)]

    def nbytes(self) -> int:
        import faiss

        self._flush()
        if isinstance(self.index, faiss.IndexFlat):
            return self.index.ntotal * self.dim * 4
        return int(faiss.serialize_index(self.index).nbytes)
