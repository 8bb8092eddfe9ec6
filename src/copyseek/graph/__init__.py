"""copyseek.graph: one kNN graph of a collection's descriptors and the transductive methods on it:
diffusion (temporal, spectral, hybrid solvers), label propagation and near-duplicate grouping.

It imports neither match, learn nor store; they import it.
"""

from copyseek.graph.diffusion import SOLVERS, Diffusion, make_solver, register_solver
from copyseek.graph.knn import GraphParams, KnnGraph, knn_graph
from copyseek.graph.propagation import LabelPropagation, entropy_confidence

__all__ = [
    "SOLVERS",
    "Diffusion",
    "GraphParams",
    "KnnGraph",
    "LabelPropagation",
    "entropy_confidence",
    "knn_graph",
    "make_solver",
    "register_solver",
]
