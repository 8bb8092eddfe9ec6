"""The global branch: one unit vector per image from a global model, searched with Faiss."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.describe.base import Branch, Candidates, Chunk, Features, Searcher
from copyseek.describe.models import GlobalModel
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.validation import check_bool, check_images, check_int, check_vectors, from_options


@dataclass(frozen=True)
class GlobalOptions:
    """The global branch's options, as an index stores them (the one place their defaults live).

    model: a model spec (`copyseek.describe.models`); factory: a Faiss index_factory string, or
    "auto" (the default: chosen by the number of references when searched, see `auto_factory`);
    resize: views such as "square:224+short:256" (None: the model's own); flip_average: also
    describe mirrors. batch_size (images per model call) and threads (0: all cores) change speed
    only and are not stored.
    """

    model: str = "sscd"
    factory: str = "auto"
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

    factory: "auto" (the default: exact below EXACT_BELOW references, compressed IVF past it; see
    `auto_factory`), "Flat" (always exact) or any Faiss index_factory string such as "IVF1024,PQ64"
    or "OPQ32,IVF4096,PQ32"; a trainable index is trained on the references the first time it is
    searched.
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
        factory: str = "auto",
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

    @classmethod
    def options_from_spec(cls, spec: dict) -> dict:
        """The factory a stored spec names: an index built when the default was "Flat" stays exact."""
        return {"factory": spec["factory"]} if "factory" in spec else {}

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

AUTO = "auto"
"""The factory that `auto_factory` resolves by the number of references when first searched."""
EXACT_BELOW = 50_000
"""References below which "auto" searches exactly: one query then costs under ~3 ms on one core
and 2 KB per reference (512-d float32) is still small."""
HNSW_COARSE_FROM = 4_000_000
"""References from which "auto" finds the IVF lists to visit with an HNSW graph over the list
centres (their number grows with the square root of the references; an exact scan of 16k+
centres per query would cost more than the lists)."""
AUTO_PROBE_SHARE = 2
"""The structures "auto" chooses visit 1/AUTO_PROBE_SHARE of their lists by default, not the 1/16 of
`default_nprobe`: SSCD vectors of unrelated photos are nearly orthogonal (no clusters for the lists
to follow), and a heavily edited copy is often in none of the lists nearest the query. On 1M
real-like references (BENCHMARKS.md, issue 13) recall@1 of exact on true copies was 0.88 at 1/16,
0.95 at 1/4 and 0.97 at 1/2 of 1024 lists, for 1.0 / 3.4 / 6.2 ms of CPU per query: next to the
~50 ms a query's description costs, the copies are worth the milliseconds."""
TRAIN_MAX = 64
"""Training vectors per IVF list at most, and at least TRAIN_MIN in all: a sample of the references,
evenly spaced by row, so the same references train the same index whatever chunks they came in
(k-means on every reference would take an hour on one core at 1M)."""
TRAIN_MIN = 1 << 16


def auto_factory(references: int, dim: int) -> str:
    """The Faiss factory string "auto" stands for at `references` vectors of `dim`.

    - below EXACT_BELOW: "Flat" (exact);
    - past it: IVF with about sqrt(references) lists (a power of two; a list then holds about
      sqrt(references) codes) and 4-bit PQ codes read by Faiss's SIMD fast scan, dim / 4
      sub-quantizers = dim / 8 bytes (64 B at 512-d, ~72 B per reference with the list's 8-byte
      id). 8-bit PQ or an OPQ rotation train 10-50x longer on one core (k-means of 256 centroids per
      sub-quantizer) for codes that are slower to scan; recall and speed: BENCHMARKS.md, issue 13;
    - from HNSW_COARSE_FROM: about 4 sqrt(references) lists found through an HNSW32 graph.

    >>> auto_factory(10_000, 512), auto_factory(1_000_000, 512), auto_factory(20_000_000, 1024)
    ('Flat', 'IVF1024,PQ128x4fs', 'IVF16384_HNSW32,PQ256x4fs')
    """
    check_int("references", references, minimum=0)
    check_int("vector dimension", dim, minimum=1)
    if references < EXACT_BELOW or dim % 8:
        return "Flat"
    codes = f"PQ{dim // 4}x4fs"
    if references < HNSW_COARSE_FROM:
        return f"IVF{2 ** round(np.log2(np.sqrt(references)))},{codes}"
    return f"IVF{2 ** round(np.log2(4 * np.sqrt(references)))}_HNSW32,{codes}"


def make_faiss_index(dim: int, factory: str):
    """An empty Faiss inner-product index from a factory string; a bad string raises CopyseekError."""
    import faiss

    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CopyseekError(f"invalid Faiss factory string {factory!r}: {str(exc).splitlines()[-1]}") from None


class VectorSearcher(Searcher):
    """Inner-product search over unit vectors with a Faiss index built from a factory string.

    factory "auto" (`auto_factory`) is resolved to a concrete structure when the searcher is first
    used (searched, asked its size or its parameters), by the number of references it holds then;
    references added afterwards join that structure. The index reads an index's chunks before it is
    searched, so the structure follows the collection's size each time it is opened.

    Search-time parameters (Faiss's ParameterSpace) are apart from the structure: `nprobe` for IVF
    indexes, `efSearch` for HNSW ones, with the defaults above, and for IVF fast-scan indexes
    `threads`, the threads one query's lists are scanned with (default 1; batches of queries are
    spread over the cores either way); set per run with `set_search_parameters` and never part of
    the branch's spec.

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
    >>> auto = VectorSearcher(4)
    >>> auto.add({"vectors": np.eye(4, dtype=np.float32)})
    >>> auto.structure
    'Flat'
    """

    def __init__(self, dim: int, factory: str = AUTO):
        self.dim = check_int("vector dimension", dim, minimum=1)
        if not isinstance(factory, str) or not factory:
            raise CopyseekError(f"global factory must be a Faiss index_factory string or 'auto', got {factory!r}")
        self.factory = factory
        self.index = None if factory == AUTO else make_faiss_index(dim, factory)
        self._resolved_at = 0  # references held when "auto" was resolved
        self._pending: list[np.ndarray] = []  # vectors waiting for the structure to be chosen or trained
        self._defaults: dict[str, int] = {} if self.index is None else self._default_parameters()
        self._chosen: dict[str, int] = {}

    @property
    def structure(self) -> str:
        """The factory string of the index searched (what "auto" resolved to; resolves it now)."""
        self._resolve()
        return self.factory if self.factory != AUTO else auto_factory(self._resolved_at, self.dim)

    def _resolve(self) -> None:
        """Build the index "auto" stands for at the number of references held now (once)."""
        if self.index is None:
            self._use(make_faiss_index(self.dim, auto_factory(self.ntotal, self.dim)), self.ntotal)

    def _use(self, index, resolved_at: int) -> None:
        """Search `index` ("auto" resolved at `resolved_at` references), with its default parameters."""
        import faiss

        self.index, self._resolved_at = index, resolved_at
        self._defaults = self._default_parameters()
        if self.factory == AUTO and "nprobe" in self._defaults:
            self._defaults["nprobe"] = max(8, faiss.extract_index_ivf(self.index).nlist // AUTO_PROBE_SHARE)

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
        if self._fast_scan_ivf() is not None:
            defaults["threads"] = 1
        return defaults

    def _fast_scan_ivf(self):
        """The IVF fast-scan index inside this one (the structure `auto` builds past EXACT_BELOW), or None."""
        import faiss

        try:
            ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))
        except RuntimeError:
            return None
        return ivf if isinstance(ivf, faiss.IndexIVFFastScan) and ivf.bbs == 32 else None

    def search_parameters(self) -> dict[str, int]:
        """Search-time parameter name -> the value searches use now (empty for exact indexes)."""
        self._resolve()
        return {**self._defaults, **self._chosen}

    def set_search_parameters(self, **values: int | None) -> None:
        """Set search-time parameters (nprobe, efSearch); None restores a parameter's default.
        A parameter this index does not have raises."""
        self._resolve()
        for name, value in values.items():
            if name not in self._defaults:
                takes = ", ".join(self._defaults) or "none (exact or flat search)"
                raise CopyseekError(
                    f"the Faiss index {self.structure!r} has no search-time parameter {name!r}; it takes: {takes}"
                )
            if value is None:
                self._chosen.pop(name, None)
            else:
                self._chosen[name] = check_int(name, value, minimum=1)

    def _apply_search_parameters(self, k: int) -> int:
        """Set the Faiss parameters for a search of k results; returns the threads asked for one
        query's lists (1 where the index has no such parameter)."""
        import faiss

        space = faiss.ParameterSpace()
        parameters = self.search_parameters()
        for name, value in parameters.items():
            if name != "threads":  # not Faiss's: see search_vectors
                # HNSW returns at most efSearch results, so it is never below k
                space.set_index_parameter(self.index, name, max(value, k) if name == "efSearch" else value)
        return parameters.get("threads", 1)

    @property
    def ntotal(self) -> int:
        return (0 if self.index is None else int(self.index.ntotal)) + sum(len(p) for p in self._pending)

    def add(self, chunk: Chunk) -> None:
        if "vectors" not in chunk:
            raise CopyseekError(f"global chunk lacks 'vectors' (has {sorted(chunk)}); was it packed by the global branch?")
        vectors = check_vectors(chunk["vectors"], self.dim, "global chunk vectors")
        if self.index is not None and self.index.is_trained and not self._pending:
            self.index.add(vectors)
        else:
            self._pending.append(vectors)

    def _flush(self) -> None:
        self._resolve()
        if not self._pending:
            return
        if not self.index.is_trained:
            sample = self._training_sample()
            try:
                self.index.train(sample)
            except RuntimeError as exc:
                raise CopyseekError(
                    f"Faiss index {self.structure!r} cannot be trained on {len(sample)} references "
                    f"({str(exc).splitlines()[-1]}); use a smaller index or 'Flat'"
                ) from None
        while self._pending:  # part by part: the pending vectors are never copied whole
            self.index.add(self._pending.pop(0))

    def _training_sample(self) -> np.ndarray:
        """The pending vectors, or TRAIN_MAX per IVF list of them (at least TRAIN_MIN) evenly spaced by row."""
        import faiss

        total = sum(len(p) for p in self._pending)
        try:
            limit = max(TRAIN_MAX * faiss.extract_index_ivf(self.index).nlist, TRAIN_MIN)
        except RuntimeError:  # not an IVF index (e.g. PQ alone): Faiss samples what it needs
            limit = total
        if total <= limit:
            return np.concatenate(self._pending)
        rows = np.linspace(0, total - 1, limit).astype(np.int64)
        offsets = np.cumsum([0] + [len(p) for p in self._pending])
        return np.concatenate(
            [p[rows[(rows >= lo) & (rows < hi)] - lo] for p, lo, hi in zip(self._pending, offsets[:-1], offsets[1:])]
        )

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) queries -> (n, k) similarities and rows (-1 where fewer than k references)."""
        vectors = check_vectors(vectors, self.dim, "global query vectors")
        check_int("k", k, minimum=1)
        self._flush()
        k = max(1, min(k, max(self.ntotal, 1)))
        if self.ntotal == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        threads = self._apply_search_parameters(k + 1)
        if threads == 1:
            return search_in_order(self.index, vectors, k, self.ntotal)
        # Faiss's fast-scan implementation 14 splits the (query, list) pairs over the threads, so
        # one query's lists are scanned in parallel; its default (12) gives each thread whole
        # queries, which leaves all but one core idle for a single query. Opt-in: on a machine whose
        # cores are busy, OpenMP threads that wait for each other cost far more than they save.
        import faiss

        ivf, before = self._fast_scan_ivf(), faiss.omp_get_max_threads()
        ivf.implem = 14
        faiss.omp_set_num_threads(threads)
        try:
            return search_in_order(self.index, vectors, k, self.ntotal)
        finally:
            ivf.implem = 0
            faiss.omp_set_num_threads(before)

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

    def save(self, path: Path) -> bool:
        """Write the trained, filled Faiss index to `path` (Faiss's own format), unless it is an exact
        `Flat` one: that is the chunks' vectors themselves, as quick to rebuild as to read."""
        import faiss

        self._flush()
        if isinstance(faiss.downcast_index(self.index), faiss.IndexFlat):
            return False
        faiss.write_index(self.index, str(path))
        return True

    def load(self, path: Path) -> bool:
        """Search the Faiss index `save` wrote to `path`, read with Faiss's memory mapping where the
        index kind allows it; False (and this searcher left empty) if it is not an inner-product
        index of this dimension or Faiss cannot read it."""
        import faiss

        if self.ntotal:
            raise CopyseekError("a searcher loads a saved index only while it is empty")
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
        except RuntimeError:
            return False
        if index.d != self.dim or index.metric_type != faiss.METRIC_INNER_PRODUCT or not index.is_trained:
            return False
        self._use(index, int(index.ntotal))
        return True

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
