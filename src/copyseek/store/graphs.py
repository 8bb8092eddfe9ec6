"""The kNN graph of an index's references (copyseek.graph), kept in the index folder and never stale.

    INDEX/graph/knn-<spec hash>.npz   the graph's lists and the reference ids they were built for

Nodes are the index's live references (a removed reference whose features are still stored until
`compact` is not a node); `IndexGraph` maps them to the searchers' rows and back.
`index_graph(index, params)` loads the graph when the ids are the index's current ones; when references
were added it extends the stored graph (new lists searched, old lists updated: the same graph as a
rebuild); when references were removed it drops their nodes and searches again only the lists that
lost a neighbour; anything else (ids reordered, another spec) rebuilds. The file is replaced
atomically, so a crash leaves the previous graph, which the next call brings up to date.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.knn import GraphParams, KnnGraph, knn_graph
from copyseek.store.files import atomic_write


def index_vectors(index) -> np.ndarray:
    """(rows, dim) float32 global vectors of every searcher row of an index, removed-but-stored rows
    included (their ids are None in `index.ids`)."""
    if "global" not in index.branches:
        raise CopyseekError(f"the index {index.path} has no global branch, which the graph is built from")
    if not len(index.ids):
        raise CopyseekError(f"the index {index.path} holds no references yet")
    return np.asarray(index.searchers()["global"].reconstruct(np.arange(len(index.ids))), np.float32)


@dataclass
class IndexGraph:
    """graph: over the live references; ids: (nodes,) their ids; rows: (nodes,) their searcher rows;
    vectors: (nodes, dim) their global vectors."""

    graph: KnnGraph
    ids: list[str]
    rows: np.ndarray
    vectors: np.ndarray

    def nodes_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Searcher rows -> graph nodes (-1 for rows that are not nodes)."""
        lookup = np.full(int(max(self.rows.max(initial=-1), np.max(rows, initial=-1))) + 1, -1, np.int64)
        lookup[self.rows] = np.arange(len(self.rows))
        rows = np.asarray(rows, np.int64)
        return np.where(rows >= 0, lookup[np.maximum(rows, 0)], -1)


def graph_path(index, params: GraphParams):
    digest = hashlib.sha1(json.dumps(params.spec(), sort_keys=True).encode()).hexdigest()[:12]
    return index.path / "graph" / f"knn-{digest}.npz"


def index_graph(index, params: GraphParams | None = None) -> IndexGraph:
    """The up-to-date kNN graph of `index`'s live references; see the module docstring."""
    params = params or GraphParams()
    all_ids = list(index.ids)
    rows = np.array([r for r, i in enumerate(all_ids) if i is not None], np.int64)
    ids = [all_ids[r] for r in rows]
    vectors = index_vectors(index)[rows]
    path = graph_path(index, params)
    stored_ids: list[str] = []
    graph = None
    if path.is_file():
        with np.load(path) as data:
            stored_ids = [str(i) for i in data["ids"]]
            graph = KnnGraph.from_arrays(data)
        if graph.n_nodes != len(stored_ids) or graph.params != params:
            graph, stored_ids = None, []
    if graph is None or stored_ids != ids:
        graph = updated(graph, stored_ids, ids, vectors, params)
        save(path, graph, ids)
    return IndexGraph(graph, ids, rows, vectors)


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
