"""The kNN graph of an index's references (copyseek.graph), kept in the index folder and never stale.

    INDEX/graph/knn-<spec hash>.npz   the graph's lists and the reference ids they were built for

`index_graph(index, params)` loads it when the ids are the index's current ones; when references
were added it extends the stored graph (new lists searched, old lists updated: the same graph as a
rebuild); when references were removed it drops their nodes and searches again only the lists that
lost a neighbour; anything else (ids reordered, another spec) rebuilds. The file is replaced
atomically, so a crash leaves the previous graph, which the next call brings up to date.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.knn import GraphParams, KnnGraph, knn_graph
from copyseek.store.files import atomic_write, load_chunk


def index_vectors(index) -> np.ndarray:
    """(n, dim) float32 global vectors of an index's references, in row order."""
    if "global" not in index.branches:
        raise CopyseekError(f"the index {index.path} has no global branch, which the graph is built from")
    parts = [load_chunk(index.path / "chunks", chunk)["global"]["vectors"] for chunk, _, _ in index.manifest.chunks()]
    if not parts:
        raise CopyseekError(f"the index {index.path} holds no references yet")
    return np.concatenate(parts).astype(np.float32)


def graph_path(index, params: GraphParams):
    digest = hashlib.sha1(json.dumps(params.spec(), sort_keys=True).encode()).hexdigest()[:12]
    return index.path / "graph" / f"knn-{digest}.npz"


def index_graph(index, params: GraphParams | None = None, vectors: np.ndarray | None = None) -> KnnGraph:
    """The up-to-date kNN graph of `index`'s references (node i = row i); see the module docstring.
    vectors: the index's vectors when the caller already has them (else read from the chunks)."""
    params = params or GraphParams()
    vectors = index_vectors(index) if vectors is None else vectors
    ids = list(index.ids)
    path = graph_path(index, params)
    stored_ids: list[str] = []
    graph = None
    if path.is_file():
        with np.load(path) as data:
            stored_ids = [str(i) for i in data["ids"]]
            graph = KnnGraph.from_arrays(data)
        if graph.n_nodes != len(stored_ids) or graph.params != params:
            graph, stored_ids = None, []
    if graph is not None and stored_ids == ids:
        return graph
    graph = updated(graph, stored_ids, ids, vectors, params)
    save(path, graph, ids)
    return graph


def updated(graph: KnnGraph | None, stored_ids: list[str], ids: list[str], vectors: np.ndarray, params: GraphParams) -> KnnGraph:
    """The graph for `ids` from the one stored for `stored_ids`: removals, then additions at the end."""
    if graph is None:
        return knn_graph(vectors, **params.spec())
    current = set(ids)
    removed = np.array([r for r, i in enumerate(stored_ids) if i not in current], np.int64)
    kept_ids = [i for i in stored_ids if i in current]
    if ids[: len(kept_ids)] != kept_ids:  # rows reordered: nothing to reuse
        return knn_graph(vectors, **params.spec())
    if len(removed):
        graph = graph.remove(removed, vectors[: len(kept_ids)])
    return graph.extend(vectors)


def save(path, graph: KnnGraph, ids: list[str]) -> None:
    path.parent.mkdir(exist_ok=True)

    atomic_write(path, lambda handle: np.savez(handle, **graph.to_arrays(), ids=np.asarray(ids, dtype=str)))
