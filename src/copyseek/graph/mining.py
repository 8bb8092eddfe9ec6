"""Hard examples from disagreements between Euclidean and manifold neighbours (Iscen, Tolias, Avrithis,
Chum, "Mining on Manifolds: Metric Learning without Labels", CVPR 2018), on the graph core.

    anchors = stationary_anchors(graph)                     # modes of the random walk
    mined = mine_on_manifold(graph, vectors, anchors, k_positive=10, k_negative=10)
    mined.positives   # (a, k_positive) rows near on the manifold, not among the Euclidean neighbours
    mined.negatives   # (a, k_negative) Euclidean neighbours that the manifold puts far

Our reading of the paper: positives of anchor x are its top manifold neighbours (diffusion from x)
that are not among its Euclidean k-NN (hard positives); negatives are its Euclidean k-NN that are
not among its top `manifold_pool` manifold neighbours (hard negatives). -1 pads short rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.diffusion import Diffusion
from copyseek.graph.knn import GraphParams, KnnGraph, check_vectors, search


def stationary_anchors(graph: KnnGraph) -> np.ndarray:
    """Rows whose stationary probability under the random walk on A (proportional to the degree, A
    being symmetric) is the largest among their neighbours': the local modes the paper starts from.
    Isolated nodes are never anchors."""
    a = graph.affinity().tocsr()
    degree = graph.degrees()
    best_neighbour = np.zeros(graph.n_nodes)
    for row in range(graph.n_nodes):  # a CSR row at a time: never dense
        neighbours = a.indices[a.indptr[row] : a.indptr[row + 1]]
        best_neighbour[row] = degree[neighbours].max() if len(neighbours) else np.inf
    return np.flatnonzero(degree >= best_neighbour)


@dataclass
class MinedExamples:
    """anchors (a,), positives (a, k_positive), negatives (a, k_negative): rows, -1 padded."""

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray


def _padded(lists: list[np.ndarray], width: int) -> np.ndarray:
    out = np.full((len(lists), width), -1, np.int64)
    for i, values in enumerate(lists):
        out[i, : min(width, len(values))] = values[:width]
    return out


def mine_on_manifold(
    graph: KnnGraph,
    vectors: np.ndarray,
    anchors: np.ndarray,
    k_positive: int = 10,
    k_negative: int = 10,
    euclidean_k: int | None = None,
    manifold_pool: int | None = None,
    alpha: float = 0.99,
) -> MinedExamples:
    """Hard positives and negatives of each anchor (see the module docstring).

    euclidean_k: Euclidean neighbours that are not hard positives (default k_positive);
    manifold_pool: manifold neighbours that are not hard negatives (default 5 x k_negative)."""
    vectors = check_vectors(vectors, graph.dim)
    anchors = np.asarray(anchors, np.int64)
    if len(vectors) != graph.n_nodes:
        raise CopyseekError(f"{len(vectors)} vectors for a graph of {graph.n_nodes} nodes")
    if k_positive < 1 or k_negative < 1:
        raise CopyseekError(f"k_positive and k_negative must be >= 1, got {k_positive}, {k_negative}")
    euclidean_k = euclidean_k or k_positive
    manifold_pool = manifold_pool or 5 * k_negative
    _, euclid = search(vectors, vectors[anchors], max(euclidean_k, k_negative) + 1, GraphParams(factory=graph.params.factory))
    diffusion = Diffusion(alpha, "temporal").fit(graph)
    positives, negatives = [], []
    for start in range(0, len(anchors), 256):
        block = anchors[start : start + 256]
        y = np.zeros((graph.n_nodes, len(block)))
        y[block, np.arange(len(block))] = 1.0
        f = diffusion.rank(y)
        for column, anchor in enumerate(block):
            near = euclid[start + column]
            near = near[(near >= 0) & (near != anchor)]
            order = np.argsort(-f[:, column], kind="stable")
            order = order[(order != anchor) & (f[order, column] > 0)]
            # the top manifold neighbours, Euclidean ones taken out (so at most euclidean_k are skipped)
            candidates = order[: k_positive + euclidean_k]
            positives.append(candidates[~np.isin(candidates, near[:euclidean_k])][:k_positive])
            nearest = near[:k_negative]
            negatives.append(nearest[~np.isin(nearest, order[:manifold_pool])])
    return MinedExamples(anchors, _padded(positives, k_positive), _padded(negatives, k_negative))
