"""Label propagation on a kNN graph, the transductive step of Iscen et al., "Label Propagation for Deep
Semi-supervised Learning" (CVPR 2019): Z = (I - alpha S)^-1 Y by conjugate gradient, one column per
class, then a label, a confidence 1 - H(z) / log c and an abstention per node.

    lp = LabelPropagation(alpha=0.99, balance=True, abstain=0.01).fit(graph, labels)
    lp.labels_        # (n,) int class per node, -1 where it abstains
    lp.confidence_    # (n,) in [0, 1]

labels: (n,) ints, -1 for unlabelled nodes. Class balancing divides each class's column by its number
of seeds, so a class with many labelled images does not flood the graph. Abstention: a node whose
largest propagated mass (from Z scaled by 1 - alpha, so a lone seed scores about 1 on itself) stays
under `abstain` reached no labelled family and is left unlabelled (-1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.diffusion import conjugate_gradient
from copyseek.graph.knn import KnnGraph


def entropy_confidence(z: np.ndarray) -> np.ndarray:
    """(n, c) non-negative scores -> (n,) 1 - H(z / sum z) / log c in [0, 1] (1: one class only; a row
    of zeros: 0). With one class, every node that received mass has confidence 1."""
    z = np.maximum(np.asarray(z, np.float64), 0)
    total = z.sum(axis=1, keepdims=True)
    p = np.divide(z, total, out=np.zeros_like(z), where=total > 0)
    if z.shape[1] < 2:
        return (total[:, 0] > 0).astype(np.float64)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    h = -(p * logs).sum(axis=1)
    return np.where(total[:, 0] > 0, 1.0 - h / np.log(z.shape[1]), 0.0)


class LabelPropagation:
    """Transductive label propagation (scikit-learn shape).

    alpha:          0 < alpha < 1 (0.99 in the paper).
    balance:        divide each class's propagated scores by its number of seeds.
    abstain:        minimum propagated mass (>= 0) for a node to get a label; 0 labels every node that
                    any seed reaches.
    min_confidence: minimum 1 - H / log c for a label (0: no condition).
    tol, max_iter:  conjugate gradient's.
    Fitted: classes_ (c,) the distinct labels, scores_ (n, c) propagated (balanced) scores, labels_ (n,),
    confidence_ (n,), mass_ (n,), iterations_.
    """

    def __init__(
        self,
        alpha: float = 0.99,
        balance: bool = True,
        abstain: float = 0.0,
        min_confidence: float = 0.0,
        tol: float = 1e-4,
        max_iter: int = 500,
    ):
        if not 0.0 < alpha < 1.0:
            raise CopyseekError(f"label propagation alpha must be in (0, 1), got {alpha}")
        if abstain < 0 or not np.isfinite(abstain):
            raise CopyseekError(f"abstain must be a mass >= 0, got {abstain}")
        if not 0.0 <= min_confidence <= 1.0:
            raise CopyseekError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.alpha, self.balance, self.abstain, self.min_confidence = alpha, balance, abstain, min_confidence
        self.tol, self.max_iter = tol, max_iter

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("alpha", "balance", "abstain", "min_confidence", "tol", "max_iter")}

    def fit(self, graph: KnnGraph, labels: np.ndarray) -> "LabelPropagation":
        labels = np.asarray(labels)
        if labels.shape != (graph.n_nodes,):
            raise CopyseekError(f"labels must have shape ({graph.n_nodes},), one per node, got {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise CopyseekError(f"labels must be integers (-1 = unlabelled), got dtype {labels.dtype}")
        seeded = labels >= 0
        if not seeded.any():
            raise CopyseekError("label propagation needs at least one labelled node")
        self.classes_, seed_class = np.unique(labels[seeded], return_inverse=True)
        y = np.zeros((graph.n_nodes, len(self.classes_)))
        y[np.flatnonzero(seeded), seed_class] = 1.0
        s = graph.normalized("sym")
        z, self.iterations_ = conjugate_gradient(lambda x: x - self.alpha * (s @ x), y, self.tol, self.max_iter)
        z = np.maximum(z * (1.0 - self.alpha), 0)  # tiny negative values are CG's rounding
        if self.balance:
            z /= np.bincount(seed_class, minlength=len(self.classes_))[None, :]
        self.scores_ = z
        self.mass_ = z.max(axis=1)
        self.confidence_ = entropy_confidence(z)
        best = self.classes_[z.argmax(axis=1)]
        unsure = (self.mass_ <= self.abstain) | (self.confidence_ < self.min_confidence) | (self.mass_ <= 0)
        self.labels_ = np.where(unsure, -1, best)
        self.labels_[seeded] = labels[seeded]  # a user's label is kept as given
        self.confidence_[seeded] = 1.0
        return self
