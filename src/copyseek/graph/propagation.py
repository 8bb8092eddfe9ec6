"""Label propagation on a kNN graph, the transductive step of Iscen et al., "Label Propagation for Deep
Semi-supervised Learning" (CVPR 2019): Z = (I - alpha S)^-1 Y by conjugate gradient, one column per
class, then a label, a confidence (1 - H(z) / log c, or the best class's margin) and an abstention per node.

    lp = LabelPropagation(alpha=0.99, balance=True, abstain=0.01).fit(graph, labels)
    lp.labels_        # (n,) int class per node, -1 where it abstains
    lp.confidence_    # (n,) in [0, 1]

labels: (n,) ints, -1 for unlabelled nodes. Class balancing divides each class's column by its number
of seeds (its seeds' total weight with self-training), so a class with many labelled images does not
flood the graph. Abstention: a node whose
largest propagated mass (from Z scaled by 1 - alpha, so a lone seed scores about 1 on itself) stays
under `abstain` reached no labelled family and is left unlabelled (-1).

Scale: (I - alpha S)^-1 is block diagonal over the graph's connected components, so each component is
solved alone and only for the classes seeded in it, CLASS_BLOCK classes at a time, and every block is
folded into a per-node ScoreSummary; with keep_scores=False no (n, c) array is ever made (100k images
and 2,381 labels: 1.47 GB of arrays at peak, 13.3 GB for one dense solve, BENCHMARKS.md, issue 14,
session 26; 0.86 GB since conjugate_gradient solves 32 of a block's classes at a time, session 29).

Self-training (`self_train=F`, ours): after the propagation, the most confident floor(F x unlabelled)
of the unlabelled nodes (by their confidence, among those that would get a label) become extra
seeds of their best class with weight `self_weight`, and the propagation is run again from the
seeds and these pseudo-seeds; `self_rounds` repeats this, each round choosing its pseudo-seeds afresh
from the previous round's scores. `self_select="class"` takes the fraction F of each class's
unlabelled nodes instead (those whose best class it is, rounded), so a class whose nodes are all
less confident than another's still gets pseudo-seeds (as class-balanced self-training, Zou et al.
ECCV 2018, does for its pseudo-labels). It is the iterative pseudo-labelling of Iscen et al. and of Lee
(2013), which feed pseudo-labels back into training, applied here to the transductive step alone:
a confident node near the edge of what a seed reaches becomes a source itself, so the labels reach
further along chains of edited copies. Measured on 483 hard families (BENCHMARKS.md, issue 14,
session 17), "class" with F 0.05 and W 1 (chosen on the dev half; `copyseek label`'s default) adds
+0.004 (level within the spread), +0.027 and +0.036 accuracy to plain propagation on the test half
at 1, 2 and 5 labels per family; "global" at its best (F 0.5, W 0.5) +0.004, +0.009 and +0.009.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.diffusion import Components, component_labels, conjugate_gradient, shifted_product
from copyseek.graph.knn import KnnGraph
from copyseek.progress import progress_bar

CLASS_BLOCK = 256
"""Classes propagated together in one conjugate-gradient call: CG's working arrays are (component
nodes, <= 256), whatever the number of classes."""


class ScoreSummary:
    """What a node's label and confidence need from its (c,) non-negative scores, gathered block of
    classes by block: the best class (the first on ties, as argmax), its score, the runner-up's score,
    the total and sum z log z. Label propagation never needs its (n, c) scores whole.

        summary = ScoreSummary(n); summary.add(rows, classes, z_block)   # z_block: (rows, classes)
        summary.margin(), summary.entropy(c)"""

    def __init__(self, n: int):
        self.best = np.zeros(n, np.int64)
        self.top1, self.top2, self.total, self.zlogz = (np.zeros(n) for _ in range(4))

    @classmethod
    def of(cls, z: np.ndarray) -> "ScoreSummary":
        """The summary of dense (n, c) scores (negative values count as 0)."""
        z = np.maximum(np.asarray(z, np.float64), 0)
        summary = cls(len(z))
        summary.add(np.arange(len(z)), np.arange(z.shape[1]), z)
        return summary

    def add(self, rows: np.ndarray, classes: np.ndarray, z: np.ndarray) -> None:
        """Fold in (len(rows), len(classes)) non-negative scores; blocks must come in increasing class
        order for ties to go to the first class, and a (row, class) pair only once."""
        if z.shape[1] == 0:
            return
        arg = z.argmax(axis=1)
        first = z[np.arange(len(z)), arg]
        second = -np.partition(-z, 1, axis=1)[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
        old = self.top1[rows]
        self.best[rows] = np.where(first > old, classes[arg], self.best[rows])
        self.top2[rows] = np.maximum(np.minimum(old, first), np.maximum(self.top2[rows], second))
        self.top1[rows] = np.maximum(old, first)
        self.total[rows] += z.sum(axis=1)
        self.zlogz[rows] += (z * np.log(z, out=np.zeros_like(z), where=z > 0)).sum(axis=1)

    def margin(self) -> np.ndarray:
        """(n,) (z_1 - z_2) / sum z (`margin_confidence`)."""
        return np.divide(self.top1 - self.top2, self.total, out=np.zeros_like(self.total), where=self.total > 0)

    def entropy(self, n_classes: int) -> np.ndarray:
        """(n,) 1 - H(z / sum z) / log c (`entropy_confidence`), from H = log T - (sum z log z) / T."""
        mass = self.total > 0
        if n_classes < 2:
            return mass.astype(np.float64)
        logs = np.log(self.total, out=np.zeros_like(self.total), where=mass)
        h = logs - np.divide(self.zlogz, self.total, out=np.zeros_like(self.total), where=mass)
        return np.where(mass, np.clip(1.0 - h / np.log(n_classes), 0.0, 1.0), 0.0)


def entropy_confidence(z: np.ndarray) -> np.ndarray:
    """(n, c) non-negative scores -> (n,) 1 - H(z / sum z) / log c in [0, 1] (1: one class only; a row
    of zeros: 0). With one class, every node that received mass has confidence 1."""
    return ScoreSummary.of(z).entropy(np.shape(z)[1])


def margin_confidence(z: np.ndarray) -> np.ndarray:
    """(n, c) non-negative scores -> (n,) (z_1 - z_2) / sum z in [0, 1]: the best class's lead over the
    runner-up, as a share of the node's mass (a row of zeros: 0; one class: 1 where there is mass).
    Entropy over hundreds of classes is dominated by how the small scores of far classes spread, which
    says little about whether the best class is right; the lead over the runner-up does: on 483 hard
    families, with self-training, the more confident half by margin is 0.985 right at 5 labels, by
    entropy 0.909 (BENCHMARKS.md, issue 14, session 25)."""
    return ScoreSummary.of(z).margin()


CONFIDENCES = {"entropy": lambda summary, c: summary.entropy(c), "margin": lambda summary, c: summary.margin()}
"""Confidence measure name -> its value from a ScoreSummary of c classes."""


class LabelPropagation:
    """Transductive label propagation (scikit-learn shape).

    alpha:          0 < alpha < 1 (0.99 in the paper).
    balance:        divide each class's propagated scores by its number of seeds (by its seeds' total
                    weight with self-training).
    abstain:        minimum propagated mass (>= 0) for a node to get a label; 0 labels every node that
                    any seed reaches.
    confidence:     how sure a node's label is: "entropy", 1 - H / log c (the paper's), or "margin",
                    the best class's lead over the runner-up as a share of the node's mass (ranks
                    right labels first far better with many classes: `margin_confidence`).
    min_confidence: minimum confidence for a label (0: no condition).
    self_train:     fraction in [0, 1] of the unlabelled nodes made pseudo-seeds per round (0: off, one
                    propagation). Only nodes that would get a label (mass over `abstain`, confidence
                    at least `min_confidence`) qualify.
    self_weight:    a pseudo-seed's weight in (0, 1] (a user's seed weighs 1). With `balance`, a class's
                    scores are divided by its seeds' total weight, pseudo-seeds included.
    self_rounds:    rounds of self-training (>= 1; used only when self_train > 0).
    self_select:    "global": the most confident fraction of all unlabelled nodes; "class": of each
                    class's unlabelled nodes (by their best class).
    keep_scores:    keep the (n, c) float32 scores as scores_ (4 bytes per node and class); False
                    keeps only what labels and confidences need (a few floats per node): a collection
                    of a million images with ten thousand labels needs it.
    tol, max_iter:  conjugate gradient's.
    progress:       a progress bar per propagation (labels solved, component by component).
    Fitted: classes_ (c,) the distinct labels, scores_ (n, c) float32 the last propagation's (balanced) scores
    (None without keep_scores),
    labels_ (n,), confidence_ (n,), mass_ (n,) of the last propagation, pseudo_seeds_ (n,) bool, the last round's
    pseudo-seeds (all False without self-training), iterations_ CG iterations of all propagations.
    """

    def __init__(
        self,
        alpha: float = 0.99,
        balance: bool = True,
        abstain: float = 0.0,
        min_confidence: float = 0.0,
        self_train: float = 0.0,
        self_weight: float = 1.0,
        self_rounds: int = 1,
        self_select: str = "global",
        confidence: str = "entropy",
        keep_scores: bool = True,
        tol: float = 1e-4,
        max_iter: int = 500,
        progress: bool = False,
    ):
        if not 0.0 < alpha < 1.0:
            raise CopyseekError(f"label propagation alpha must be in (0, 1), got {alpha}")
        if abstain < 0 or not np.isfinite(abstain):
            raise CopyseekError(f"abstain must be a mass >= 0, got {abstain}")
        if not 0.0 <= min_confidence <= 1.0:
            raise CopyseekError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if not 0.0 <= self_train <= 1.0:
            raise CopyseekError(f"self_train must be a fraction of the unlabelled nodes in [0, 1], got {self_train}")
        if not 0.0 < self_weight <= 1.0:
            raise CopyseekError(f"self_weight must be in (0, 1] (a user's seed weighs 1), got {self_weight}")
        if isinstance(self_rounds, bool) or not isinstance(self_rounds, (int, np.integer)) or self_rounds < 1:
            raise CopyseekError(f"self_rounds must be an integer >= 1, got {self_rounds!r}")
        if self_select not in ("global", "class"):
            raise CopyseekError(f"self_select must be 'global' or 'class', got {self_select!r}")
        if confidence not in CONFIDENCES:
            raise CopyseekError(f"confidence must be one of {sorted(CONFIDENCES)}, got {confidence!r}")
        self.alpha, self.balance, self.abstain, self.min_confidence = alpha, balance, abstain, min_confidence
        if not isinstance(keep_scores, bool):
            raise CopyseekError(f"keep_scores must be True or False, got {keep_scores!r}")
        self.self_select, self.confidence, self.keep_scores = self_select, confidence, keep_scores
        self.progress = bool(progress)
        self.self_train, self.self_weight, self.self_rounds = float(self_train), float(self_weight), int(self_rounds)
        self.tol, self.max_iter = tol, max_iter

    def get_params(self) -> dict[str, Any]:
        names = ("alpha", "balance", "abstain", "min_confidence", "self_train", "self_weight", "self_rounds", "self_select",
                 "confidence", "keep_scores", "tol", "max_iter", "progress")
        return {k: getattr(self, k) for k in names}

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
        seed_rows = np.flatnonzero(seeded)
        s = graph.normalized("sym")
        components = Components(component_labels(s))
        self.iterations_ = 0
        self.pseudo_seeds_ = np.zeros(graph.n_nodes, bool)
        self._propagate(s, components, seed_rows, seed_class, np.ones(len(seed_rows)), "propagating")
        for round_ in range(self.self_rounds if self.self_train > 0 else 0):
            top = self._pseudo_seeds(seeded)
            self.pseudo_seeds_ = np.zeros(graph.n_nodes, bool)
            self.pseudo_seeds_[top] = True
            self._propagate(
                s, components, np.concatenate([seed_rows, top]), np.concatenate([seed_class, self._best[top]]),
                np.concatenate([np.ones(len(seed_rows)), np.full(len(top), self.self_weight)]),
                f"self-training {round_ + 1}/{self.self_rounds}",
            )
        self.labels_ = np.where(self._unsure(), -1, self.classes_[self._best])
        self.labels_[seeded] = labels[seeded]  # a user's label is kept as given
        self.confidence_[seeded] = 1.0
        return self

    def _propagate(
        self, s, components: Components, rows: np.ndarray, classes: np.ndarray, weights: np.ndarray, stage: str
    ) -> None:
        """mass_, confidence_ (and scores_ with keep_scores) of one propagation from seeds of weight
        `weights` at `rows` for class indices `classes`. (I - alpha S)^-1 is block diagonal over the
        graph's connected components, so each component is solved alone and only for the classes
        seeded in it, at most CLASS_BLOCK at a time, each block folded into a ScoreSummary: memory is
        CG's (component, <= 256) arrays and a few floats per node (plus the (n, c) float32 scores
        with keep_scores), never a dense (n, c) seed matrix."""
        n, c = s.shape[0], len(self.classes_)
        # a class's scores are divided by its seeds' total weight (its number of seeds without pseudo-seeds)
        divisor = np.bincount(classes, weights=weights, minlength=c) if self.balance else np.ones(c)
        summary = ScoreSummary(n)
        z = np.zeros((n, c), np.float32) if self.keep_scores else None
        seed_component = components.labels[rows]
        touched = np.unique(seed_component)
        # (component, class) pairs to solve: what the bar counts
        pairs = len(np.unique(seed_component.astype(np.int64) * c + classes))
        iterations = 0
        bar = progress_bar(pairs, stage, disable=not self.progress, unit="label")
        for label in touched:
            nodes = components.members(label)  # sorted rows
            here = seed_component == label
            local, seed_classes, seed_weights = np.searchsorted(nodes, rows[here]), classes[here], weights[here]
            sub = s[nodes][:, nodes]
            present = np.unique(seed_classes)
            for start in range(0, len(present), CLASS_BLOCK):
                block = present[start : start + CLASS_BLOCK]
                pick = np.isin(seed_classes, block)
                y = np.zeros((len(nodes), len(block)))
                np.add.at(y, (local[pick], np.searchsorted(block, seed_classes[pick])), seed_weights[pick])
                x, its = conjugate_gradient(partial(shifted_product, sub, self.alpha), y, self.tol, self.max_iter)
                iterations = max(iterations, its)
                x *= (1.0 - self.alpha) / divisor[block]
                np.maximum(x, 0, out=x)  # tiny negative values are CG's rounding
                summary.add(nodes, block, x)
                if z is not None:
                    z[np.ix_(nodes, block)] = x
                bar.update(len(block))
        bar.close()
        self.iterations_ += iterations
        self.scores_, self.mass_, self._best = z, summary.top1, summary.best
        self.confidence_ = CONFIDENCES[self.confidence](summary, c)

    def _pseudo_seeds(self, seeded: np.ndarray) -> np.ndarray:
        """Rows of this round's pseudo-seeds: the most confident unlabelled nodes that would get a label,
        floor(self_train x unlabelled) of them, or with "class" the rounded fraction of each class's."""
        candidates = np.flatnonzero(~seeded & ~self._unsure())
        best = self._best[candidates]
        order = np.lexsort((-self.confidence_[candidates], best if self.self_select == "class" else np.zeros_like(best)))
        if self.self_select == "global":
            return candidates[order[: int(self.self_train * (~seeded).sum())]]
        counts = np.bincount(best, minlength=len(self.classes_))
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank = np.arange(len(order)) - start[best[order]]  # place within its class, most confident first
        return candidates[order[rank < np.rint(self.self_train * counts)[best[order]]]]

    def _unsure(self) -> np.ndarray:
        """(n,) bool: nodes the current scores leave unlabelled (abstain, min_confidence, no mass)."""
        return (self.mass_ <= self.abstain) | (self.confidence_ < self.min_confidence) | (self.mass_ <= 0)
