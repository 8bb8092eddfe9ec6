"""The global branch: one unit vector per image from a global model, searched with Faiss."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from copyseek.describe.base import Branch, Candidates, Chunk, Features, Searcher
from copyseek.describe.models import GlobalModel
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.validation import check_bool, check_images, check_int, check_vectors, from_options


@dataclass(frozen=True)
class GlobalOptions:
    """The global branch's options, as an index stores them (the one place their defaults live).

    model: a model spec (`copyseek.describe.models`); factory: a Faiss index_factory string;
    resize: views such as "square:224+short:256" (None: the model's own); flip_average: also
    describe mirrors. batch_size (images per model call) and threads (0: all cores) change speed
    only and are not stored.
    """

    model: str = "sscd"
    factory: str = "Flat"
    resize: str | None = None
    flip_average: bool = False
    batch_size: int = field(default=16, metadata={"runtime": True})
    threads: int = field(default=0, metadata={"runtime": True})

    def __post_init__(self) -> None:
        for name in ("model", "factory"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise CopyseekError(f"global {name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.resize is not None and (not isinstance(self.resize, str) or not self.resize):
            raise CopyseekError(f"global resize must be a string such as 'square:224+short:256', got {self.resize!r}")
        check_bool("global flip_average", self.flip_average)
        check_int("global batch_size", self.batch_size, minimum=1)
        check_int("global threads", self.threads, minimum=0)


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
    runtime_options = ("threads", "batch_size")

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
        if not isinstance(factory, str) or not factory:
            raise CopyseekError(f"global factory must be a Faiss index_factory string, got {factory!r}")
        check_int("global batch_size", batch_size, minimum=1)
        self.model = model
        self.factory = factory
        self.batch_size = batch_size
        self.flip_average = flip_average
        self.views = tuple(views) if views else (model.preprocess,)

    @classmethod
    def from_options(cls, options: dict) -> "GlobalBranch":
        """The branch from GlobalOptions' fields (a JSON-able dict); unknown keys raise."""
        from copyseek.describe.models import load_model

        chosen = from_options(GlobalOptions, options, "global branch")
        return cls(
            load_model(chosen.model, threads=chosen.threads),
            factory=chosen.factory,
            batch_size=chosen.batch_size,
            flip_average=chosen.flip_average,
            views=Preprocess.parse_views(chosen.resize) if chosen.resize else None,
        )

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
        images = check_images(images)
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


def default_nprobe(nlist: int) -> int:
    """IVF lists visited per query by default: 1/16 of the lists, at least 8 and at most 256.
    Faiss's own default of 1 misses most neighbours of a copy (benchmarks/bench_search_time.py)."""
    return int(min(nlist, max(8, min(256, nlist // 16))))


DEFAULT_EF_SEARCH = 64
"""HNSW candidate-list length by default (Faiss's is 16); raised to k when k is larger."""


class VectorSearcher(Searcher):
    """Inner-product search over unit vectors with a Faiss index built from a factory string.

    Search-time parameters (Faiss's ParameterSpace) are apart from the structure: `nprobe` for IVF
    indexes, `efSearch` for HNSW ones, with the defaults above, set per run with
    `set_search_parameters` and never part of the branch's spec.

    >>> import numpy as np
    >>> searcher = VectorSearcher(4, "IVF2,Flat")
    >>> searcher.add({"vectors": np.eye(4, dtype=np.float32)})
    >>> searcher.search_parameters()
    {'nprobe': 2}
    >>> sims, rows = searcher.search_vectors(np.eye(4, dtype=np.float32)[:1], 1)
    >>> rows.tolist()
    [[0]]
    >>> searcher.search_vectors(np.zeros((1, 3)), 1)
    Traceback (most recent call last):
    ...
    copyseek.errors.CopyseekError: global query vectors must have shape (n, 4), got (1, 3)
    """

    def __init__(self, dim: int, factory: str = "Flat"):
        import faiss

        self.dim = check_int("vector dimension", dim, minimum=1)
        self.factory = factory
        try:
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise CopyseekError(f"invalid Faiss factory string {factory!r}: {str(exc).splitlines()[-1]}") from None
        self._pending: list[np.ndarray] = []  # vectors waiting for a trainable index to be trained
        self._defaults = self._default_parameters()
        self._chosen: dict[str, int] = {}

    def _default_parameters(self) -> dict[str, int]:
        import faiss

        defaults = {}
        try:
            defaults["nprobe"] = default_nprobe(faiss.extract_index_ivf(self.index).nlist)
        except RuntimeError:  # not an IVF index
            pass
        inner = faiss.downcast_index(self.index)
        if isinstance(inner, faiss.IndexPreTransform):
            inner = faiss.downcast_index(inner.index)
        if isinstance(inner, faiss.IndexHNSW):
            defaults["efSearch"] = DEFAULT_EF_SEARCH
        return defaults

    def search_parameters(self) -> dict[str, int]:
        """Search-time parameter name -> the value searches use now (empty for exact indexes)."""
        return {**self._defaults, **self._chosen}

    def set_search_parameters(self, **values: int | None) -> None:
        """Set search-time parameters (nprobe, efSearch); None restores a parameter's default.
        A parameter this index does not have raises."""
        for name, value in values.items():
            if name not in self._defaults:
                takes = ", ".join(self._defaults) or "none (exact or flat search)"
                raise CopyseekError(f"the Faiss index {self.factory!r} has no search-time parameter {name!r}; it takes: {takes}")
            if value is None:
                self._chosen.pop(name, None)
            else:
                self._chosen[name] = check_int(name, value, minimum=1)

    def _apply_search_parameters(self, k: int) -> None:
        import faiss

        space = faiss.ParameterSpace()
        for name, value in self.search_parameters().items():
            # HNSW returns at most efSearch results, so it is never below k
            space.set_index_parameter(self.index, name, max(value, k) if name == "efSearch" else value)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) + sum(len(p) for p in self._pending)

    def add(self, chunk: Chunk) -> None:
        if "vectors" not in chunk:
            raise CopyseekError(f"global chunk lacks 'vectors' (has {sorted(chunk)}); was it packed by the global branch?")
        vectors = check_vectors(chunk["vectors"], self.dim, "global chunk vectors")
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
        vectors = check_vectors(vectors, self.dim, "global query vectors")
        check_int("k", k, minimum=1)
        self._flush()
        k = max(1, min(k, max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        self._apply_search_parameters(k + 1)
        return search_in_order(self.index, vectors, k, self.ntotal)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """(m,) rows -> (m, dim) stored vectors (decoded, for compressed indexes)."""
        import faiss

        self._flush()
        rows = np.asarray(rows, np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.ntotal):
            raise CopyseekError(f"rows must be in [0, {self.ntotal}), got {rows.min()}..{rows.max()}")
        try:
            return self.index.reconstruct_batch(rows)
        except RuntimeError:  # IVF indexes need a direct map from row to list entry first
            faiss.extract_index_ivf(self.index).make_direct_map()
            return self.index.reconstruct_batch(rows)

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        if not queries:
            return []
        if any("vector" not in q for q in queries):
            raise CopyseekError("global queries need a 'vector' feature each (from GlobalBranch.extract)")
        vectors = [check_vectors(q["vector"], self.dim, f"global query {i} vector") for i, q in enumerate(queries)]
        sims, rows = self.search_vectors(np.concatenate(vectors), k)
        return [Candidates(r[r >= 0].astype(np.int64), s[r >= 0].astype(np.float32)) for s, r in zip(sims, rows)]

    def nbytes(self) -> int:
        import faiss

        self._flush()
        if isinstance(self.index, faiss.IndexFlat):
            return self.index.ntotal * self.dim * 4
        return int(faiss.serialize_index(self.index).nbytes)


def search_in_order(index, vectors: np.ndarray, k: int, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
    """A Faiss index's top k for (n, dim) queries, with ties in one order: similarity descending,
    then row ascending, and the lowest rows kept of a tie cut at the k-th place. Faiss orders a
    tie differently depending on k and on how many queries are searched together, so an index
    split into shards (`copyseek.distributed.shards`) could not give the same results; here one
    more neighbour is searched, and more while the k-th and the last found still tie.

    >>> import faiss
    >>> index = faiss.IndexFlatIP(2)
    >>> index.add(np.array([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32))
    >>> search_in_order(index, np.array([[1, 0]], np.float32), 2, 4)[1].tolist()
    [[0, 2]]
    """
    fetch = min(k + 1, ntotal)
    while True:
        sims, rows = index.search(vectors, fetch)
        open_tie = (sims[:, k - 1] == sims[:, -1]) & (rows[:, -1] >= 0) if fetch > k else np.zeros(len(rows), bool)
        if fetch >= ntotal or not open_tie.any():
            break
        fetch = min(2 * fetch, ntotal)
    missing = rows < 0
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, rows), np.where(missing, np.inf, -sims)), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(rows, order, axis=1)
