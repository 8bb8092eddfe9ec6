"""The k-nearest-neighbour graph of a collection's descriptors, the object that diffusion, label
propagation, dedup (and the learning methods on manifolds) all work on.

    graph = knn_graph(vectors, k=10)                 # vectors: (n, d) unit rows; Faiss search of k + 1
    S = graph.normalized()                           # (n, n) scipy CSR, D^-1/2 A D^-1/2
    graph = graph.extend(all_vectors)                # rows appended since: exact kNN lists kept exact
    graph = graph.remove(rows, remaining_vectors)    # rows removed: lists that lost a neighbour refilled

Nothing here is dense in n: the directed lists are (n, k) arrays and every matrix is sparse, so a
graph of 100k images takes tens of megabytes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from copyseek.errors import CopyseekError
from copyseek.validation import from_options

SYMMETRIZATIONS = ("mutual", "union", "sum")
"""How the directed kNN relation becomes an undirected affinity A (W: directed weights):
mutual: min(W, W^T), an edge only where each is in the other's list (Iscen et al. 2017, 2018; also
        what "min" means for a symmetric similarity);
union:  max(W, W^T), an edge where either lists the other;
sum:    W + W^T (Iscen et al. 2019's label propagation), mutual edges count twice."""

NORMALIZATIONS = ("sym", "rw-self")
"""sym: D^-1/2 A D^-1/2 (diffusion, label propagation); rw-self: D^-1 (A + I), a random walk that may
stay put (the graph convolution's propagation matrix). Isolated nodes keep a zero row in `sym` and
only their self-loop in `rw-self`, never a division by zero."""


@dataclass(frozen=True)
class GraphParams:
    """k:           neighbours per node (the node itself excluded).
    gamma:       edge weight = max(cosine, 0) ** gamma (3 in the papers: sharpens near-duplicates).
    symmetrize:  one of SYMMETRIZATIONS.
    factory:     Faiss index for the neighbour search: "Flat" (exact) or e.g. "IVF1024,Flat" past ~50k.
    nprobe:      IVF lists visited per search (ignored by Flat).
    """

    k: int = 10
    gamma: float = 3.0
    symmetrize: str = "mutual"
    factory: str = "Flat"
    nprobe: int = 32

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise CopyseekError(f"graph k must be a whole number >= 1, got {self.k}")
        if not np.isfinite(self.gamma) or self.gamma <= 0:
            raise CopyseekError(f"graph gamma must be > 0, got {self.gamma}")
        if self.symmetrize not in SYMMETRIZATIONS:
            raise CopyseekError(f"graph symmetrize must be one of {', '.join(SYMMETRIZATIONS)}, got {self.symmetrize!r}")
        if self.nprobe < 1:
            raise CopyseekError(f"graph nprobe must be >= 1, got {self.nprobe}")

    def spec(self) -> dict:
        """What changes the graph (stored beside it; a different spec means rebuild)."""
        return dataclasses.asdict(self)


def check_vectors(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 C-contiguous copy-free view of `vectors`, or a CopyseekError saying what is wrong."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise CopyseekError(f"vectors must be a 2-d (n, dim) array, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise CopyseekError(f"vectors have dimension {array.shape[1]}, the graph was built with {dim}")
    if not np.issubdtype(array.dtype, np.number):
        raise CopyseekError(f"vectors must be numbers, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise CopyseekError("vectors hold NaN or infinite values")
    return array


def search(database: np.ndarray, queries: np.ndarray, k: int, params: GraphParams) -> tuple[np.ndarray, np.ndarray]:
    """(sims, rows), each (len(queries), k): inner-product neighbours in `database`, -1 / -inf padded."""
    import faiss

    n, dim = database.shape
    if n == 0 or k == 0:
        return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
    factory = params.factory
    if factory != "Flat" and n < 40 * 1024:  # IVF needs ~40 vectors per list to train; small sets are exact anyway
        factory = "Flat"
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise CopyseekError(f"invalid Faiss factory string {factory!r}: {str(exc).splitlines()[-1]}") from None
    if not index.is_trained:
        index.train(database)
        faiss.extract_index_ivf(index).nprobe = params.nprobe
    index.add(database)
    sims, rows = index.search(queries, min(k, n))
    if rows.shape[1] < k:  # fewer vectors than k: pad like Faiss does
        pad = k - rows.shape[1]
        sims = np.hstack([sims, np.full((len(queries), pad), -np.inf, np.float32)])
        rows = np.hstack([rows, np.full((len(queries), pad), -1, np.int64)])
    sims[rows < 0] = -np.inf
    return sims.astype(np.float32), rows.astype(np.int64)


def drop_self(sims: np.ndarray, rows: np.ndarray, own: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of each list with the node itself removed (wherever it came: exact duplicates may rank
    before it)."""
    is_self = rows == own[:, None]
    sims = np.where(is_self, -np.inf, sims)
    rows = np.where(is_self, -1, rows)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), np.take_along_axis(rows, order, 1)


@dataclass
class KnnGraph:
    """A kNN graph over n nodes (rows of the vectors it was built from).

    neighbors:    (n, k) int64 directed lists, best first, -1 where a node has fewer neighbours.
    similarities: (n, k) float32 cosine similarities of those neighbours (-inf at -1).
    params:       the GraphParams it was built with.
    dim:          the vectors' dimension (None until it has seen vectors).
    The affinity, degrees and normalised matrices are derived from the lists (cached).
    """

    neighbors: np.ndarray
    similarities: np.ndarray
    params: GraphParams
    dim: int | None = None
    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def n_nodes(self) -> int:
        return int(self.neighbors.shape[0])

    def directed(self) -> sp.csr_matrix:
        """(n, n) W: W[i, j] = max(s_ij, 0) ** gamma for j in i's list (zero weights dropped)."""
        valid = self.neighbors >= 0
        weights = np.maximum(np.where(valid, self.similarities, 0), 0) ** self.params.gamma
        keep = valid & (weights > 0)
        rows = np.broadcast_to(np.arange(self.n_nodes)[:, None], self.neighbors.shape)[keep]
        return sp.csr_matrix((weights[keep], (rows, self.neighbors[keep])), shape=(self.n_nodes,) * 2, dtype=np.float64)

    def affinity(self) -> sp.csr_matrix:
        """(n, n) symmetric A, no self-loops, from the directed lists by `params.symmetrize`."""
        if "affinity" not in self._cache:
            w = self.directed()
            if self.params.symmetrize == "mutual":
                a = w.minimum(w.T)
            elif self.params.symmetrize == "union":
                a = w.maximum(w.T)
            else:
                a = w + w.T
            a = sp.csr_matrix(a)
            a.eliminate_zeros()
            self._cache["affinity"] = a
        return self._cache["affinity"]

    def degrees(self) -> np.ndarray:
        """(n,) row sums of A."""
        return np.asarray(self.affinity().sum(axis=1)).ravel()

    def isolated(self) -> np.ndarray:
        """Rows with no edge in A (e.g. no mutual neighbour): diffusion leaves them as they are."""
        return np.flatnonzero(self.degrees() == 0)

    def normalized(self, kind: str = "sym") -> sp.csr_matrix:
        """(n, n) CSR propagation matrix, one of NORMALIZATIONS."""
        if kind not in NORMALIZATIONS:
            raise CopyseekError(f"normalisation must be one of {', '.join(NORMALIZATIONS)}, got {kind!r}")
        key = "normalized:" + kind
        if key not in self._cache:
            a = self.affinity()
            if kind == "sym":
                d = self.degrees()
                inv = np.divide(1.0, np.sqrt(d), out=np.zeros_like(d), where=d > 0)
                s = sp.diags(inv) @ a @ sp.diags(inv)
            else:
                a_self = a + sp.identity(self.n_nodes, format="csr")
                s = sp.diags(1.0 / np.asarray(a_self.sum(axis=1)).ravel()) @ a_self
            self._cache[key] = sp.csr_matrix(s)
        return self._cache[key]

    def edges(self, min_similarity: float = -1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(i, j, similarity) of each undirected edge i < j of A (from the directed lists), with
        similarity >= min_similarity."""
        a = sp.triu(self.affinity(), k=1).tocoo()
        sims = a.data ** (1.0 / self.params.gamma)  # back from the weight to the cosine
        keep = sims >= min_similarity
        return a.row[keep].astype(np.int64), a.col[keep].astype(np.int64), sims[keep].astype(np.float32)

    # ------------------------------------------------------------ changing the node set
    def extend(self, vectors: np.ndarray) -> "KnnGraph":
        """The graph of `vectors` (n + m, d) whose first n rows are this graph's nodes: new nodes get
        their lists by search, old lists take a new node where it beats their k-th neighbour. The result
        equals knn_graph(vectors) (up to ties) at the cost of searching m queries and m references."""
        vectors = check_vectors(vectors, self.dim)
        n, k = self.n_nodes, self.neighbors.shape[1]
        if len(vectors) < n:
            raise CopyseekError(f"extend needs the {n} old vectors first, got {len(vectors)} in all")
        if len(vectors) == n:
            return self
        new = vectors[n:]
        sims, rows = search(vectors, new, k + 1, self.params)
        new_sims, new_rows = drop_self(sims, rows, np.arange(n, len(vectors)), k)
        old_sims, old_rows = self.similarities, self.neighbors
        if n:
            cand_sims, cand_rows = search(new, vectors[:n], min(k, len(new)), self.params)
            cand_rows = np.where(cand_rows >= 0, cand_rows + n, -1)
            old_sims, old_rows = drop_self(
                np.hstack([old_sims, cand_sims]), np.hstack([old_rows, cand_rows]), np.full(n, -2), k
            )
        lists, sims = np.vstack([old_rows, new_rows]), np.vstack([old_sims, new_sims]).astype(np.float32)
        return KnnGraph(lists, sims, self.params, vectors.shape[1])

    def remove(self, rows: np.ndarray, remaining: np.ndarray) -> "KnnGraph":
        """The graph without nodes `rows`; `remaining` (n - len(rows), d) are the other nodes' vectors in
        their order. Kept nodes are renumbered in order; those that lost a neighbour are searched again."""
        rows = np.unique(np.asarray(rows, np.int64))
        if len(rows) and (rows[0] < 0 or rows[-1] >= self.n_nodes):
            raise CopyseekError(f"rows to remove must be in [0, {self.n_nodes}), got {rows[0]}..{rows[-1]}")
        keep = np.ones(self.n_nodes, bool)
        keep[rows] = False
        remaining = check_vectors(remaining, self.dim)
        if len(remaining) != keep.sum():
            raise CopyseekError(f"remove needs {keep.sum()} remaining vectors, got {len(remaining)}")
        new_index = np.cumsum(keep) - 1
        lists, sims = self.neighbors[keep], self.similarities[keep]
        lost = np.isin(lists, rows).any(axis=1)
        lists = np.where(lists >= 0, new_index[np.maximum(lists, 0)], -1)
        k = lists.shape[1]
        if lost.any():
            again = np.flatnonzero(lost)
            found_sims, found_rows = search(remaining, remaining[again], k + 1, self.params)
            sims[again], lists[again] = drop_self(found_sims, found_rows, again, k)
        return KnnGraph(lists, sims, self.params, self.dim)

    # ------------------------------------------------------------ storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """What `from_arrays` needs, as arrays for np.savez."""
        import json

        return {
            "neighbors": self.neighbors,
            "similarities": self.similarities,
            "params": np.asarray(json.dumps(self.params.spec())),
            "dim": np.asarray(-1 if self.dim is None else self.dim),
        }

    @classmethod
    def from_arrays(cls, data) -> "KnnGraph":
        import json

        params = from_options(GraphParams, json.loads(str(data["params"])), "graph")
        dim = int(data["dim"])
        return cls(np.asarray(data["neighbors"]), np.asarray(data["similarities"]), params, None if dim < 0 else dim)

    def save(self, path: str | Path) -> None:
        """One .npz file; written to a temporary file and renamed, so a crash leaves the old one."""
        import os

        path = Path(path)
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **self.to_arrays())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "KnnGraph":
        with np.load(path) as data:
            return cls.from_arrays(data)


def knn_graph(vectors: np.ndarray, k: int = 10, **options: Any) -> KnnGraph:
    """The kNN graph of (n, d) `vectors` (unit rows: similarity is the inner product).

    options: the other GraphParams (gamma, symmetrize, factory, nprobe). Faiss searches k + 1
    neighbours and the node itself is dropped wherever it ranks.

    >>> g = knn_graph(np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2]], k=1)
    >>> g.neighbors[:4, 0].tolist()
    [1, 0, 3, 2]
    >>> g.isolated().tolist()
    [4]
    """
    params = from_options(GraphParams, {"k": k, **options}, "graph")
    vectors = check_vectors(vectors)
    empty = KnnGraph(np.zeros((0, params.k), np.int64), np.zeros((0, params.k), np.float32), params)
    return empty.extend(vectors)
