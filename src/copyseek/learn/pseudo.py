"""Label propagation as a training loop (Iscen, Tolias, Avrithis, Chum, "Label Propagation for Deep
Semi-supervised Learning", CVPR 2019): a few labelled photos and many unlabelled ones; each round
describes every photo with the current network, builds the kNN graph (copyseek.graph), propagates
the labels (`LabelPropagation`), and trains on the pseudo-labels, each photo weighted by its
confidence 1 - H(z) / log c and each class by the inverse of its size (balance).

    pseudo = propagate_labels(vectors, labels, LPParams())        # labels: (n,) ints, -1 = unlabelled
    pseudo.labels, pseudo.weights                                  # (n,), (n,)
    sampler = PseudoLabelBatches(pseudo, classes_per_batch=32, views_per_class=4)
    rows, labels = sampler.sample(rng)

Our reading for metric-learning losses: the paper weighs each image's cross-entropy term; our
losses (contrastive, Recall@k) compare a batch's items by label, so the weights choose the batch
instead: classes are drawn uniformly (the class balance: a large pseudo-class is not drawn more
often) and the photos of a class with probability proportional to their confidence (the labelled
photos weigh 1). In expectation this is the weighted loss.

`copyseek train --pseudo-labels lp --labels labels.csv --rounds R` runs the loop (learn/lploop.py).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.knn import check_vectors, knn_graph
from copyseek.graph.propagation import LabelPropagation


@dataclass(frozen=True)
class LPParams:
    """k: neighbours per node of the graph (summed with its transpose, as in the paper); k_per_class:
    if set, the graph's k is this share of the mean class size n / c (n photos, c labelled classes),
    rounded up and at most `k` (`graph_k`); alpha: propagation's; gamma: edge weight = cosine ** gamma
    (3, the paper's). The paper's alpha = 0.99 is for classes of thousands of images; on copy families
    of 5 and 11 (BENCHMARKS.md, issue 15) it carries labels across families, and alpha = 0.8 with
    k = 10, the best of a grid on half of the families, does not."""

    k: int = 10
    alpha: float = 0.8
    gamma: float = 3.0
    k_per_class: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or int(self.k) != self.k or self.k < 1:
            raise CopyseekError(f"label propagation k must be a whole number >= 1, got {self.k!r}")
        if not 0 < self.alpha < 1:
            raise CopyseekError(f"label propagation alpha must be in (0, 1), got {self.alpha}")
        if not self.gamma > 0:
            raise CopyseekError(f"label propagation gamma must be > 0, got {self.gamma}")
        if self.k_per_class is not None and not self.k_per_class > 0:
            raise CopyseekError(f"label propagation k per class must be > 0, got {self.k_per_class}")

    def graph_k(self, n_photos: int, n_classes: int) -> int:
        """The graph's neighbours per node for `n_photos` photos in `n_classes` classes: `k`, or with
        `k_per_class` ceil(k_per_class x n_photos / n_classes) up to k; never above n_photos - 1.
        A node's list should stay mostly inside its class: the paper's k = 10 suits classes of
        thousands, not copy families of 5."""
        k = self.k if self.k_per_class is None else min(self.k, math.ceil(self.k_per_class * n_photos / n_classes))
        return min(k, n_photos - 1)


@dataclass
class PseudoLabels:
    """labels (n,) class per photo (-1: none reached it); confidence (n,) in [0, 1] (1 for the
    labelled photos); seed (n,) bool, the labelled photos; class_weight (c,) 1 / (photos of the class),
    scaled to mean 1 over the classes."""

    labels: np.ndarray
    confidence: np.ndarray
    seed: np.ndarray
    class_weight: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """(n,) per-photo weight: confidence x its class's weight (0 without a label)."""
        has = self.labels >= 0
        out = np.zeros(len(self.labels))
        out[has] = self.confidence[has] * self.class_weight[self.labels[has]]
        return out


def propagate_labels(vectors: np.ndarray, labels: np.ndarray, params: LPParams | None = None) -> PseudoLabels:
    """Pseudo-labels of (n, d) unit `vectors` from (n,) `labels` (class ids 0..c-1, -1 unlabelled)."""
    params = params or LPParams()
    vectors = check_vectors(vectors)
    labels = np.asarray(labels)
    if labels.shape != (len(vectors),) or not np.issubdtype(labels.dtype, np.integer):
        raise CopyseekError(f"labels must be ({len(vectors)},) integers, -1 for unlabelled; got {labels.dtype} {labels.shape}")
    seed = labels >= 0
    if not seed.any():
        raise CopyseekError("label propagation needs at least one labelled photo")
    n_classes = int(labels.max()) + 1
    graph = knn_graph(vectors, k=params.graph_k(len(vectors), len(np.unique(labels[seed]))), gamma=params.gamma, symmetrize="sum")
    lp = LabelPropagation(alpha=params.alpha, balance=True, keep_scores=False).fit(graph, labels)
    pseudo = np.where(seed, labels, lp.labels_).astype(np.int64)
    confidence = np.where(seed, 1.0, lp.confidence_)
    sizes = np.bincount(pseudo[pseudo >= 0], minlength=n_classes).astype(np.float64)
    class_weight = np.divide(1.0, sizes, out=np.zeros(n_classes), where=sizes > 0)
    class_weight *= (sizes > 0).sum() / max(class_weight.sum(), 1e-12)
    return PseudoLabels(pseudo, confidence, seed, class_weight)


def verified(pseudo: PseudoLabels, verify: Callable[[int, int], bool]) -> PseudoLabels:
    """The pseudo-labels with confidence 0 (so weight 0: they do not train) for every propagated photo
    that `verify(photo, labelled photo)` confirms with none of its class's labelled photos. Labels are
    kept as propagated. At 1-2 labels a family most propagated labels are wrong (BENCHMARKS.md, issue
    15, session 24); local verification (RANSAC inliers) rarely confirms a wrong one, and with it the
    rounds beat labelled-only training at 1, 2 and 5 labels (session 25)."""
    confidence = pseudo.confidence.copy()
    labelled = np.flatnonzero(pseudo.seed)
    seeds_of = {c: labelled[pseudo.labels[labelled] == c] for c in np.unique(pseudo.labels[labelled])}
    for row in np.flatnonzero(~pseudo.seed & (pseudo.labels >= 0)):
        if not any(verify(int(row), int(s)) for s in seeds_of.get(pseudo.labels[row], ())):
            confidence[row] = 0.0
    return PseudoLabels(pseudo.labels, confidence, pseudo.seed, pseudo.class_weight)


class PseudoLabelBatches:
    """Batches of pseudo-labelled photos: classes drawn uniformly among those with >= 2 photos of
    positive weight, a class's photos drawn with probability proportional to their confidence.

    seed_views:      share of each drawn class's views that are its labelled photos, drawn with
                     replacement (0: photos drawn by confidence alone). Every class of the batch then
                     keeps round 0's signal, a labelled photo and its edits, beside its propagated
                     members (in the paper every batch holds labelled and pseudo-labelled images).
    confident_share: share of the pseudo-labelled photos that take part, the most confident first (1:
                     all): at 1-2 labels a family, most propagated labels are wrong, and the least
                     confident most often (BENCHMARKS.md, issue 15, session 24).
    confident_select: "class": that share of each class's pseudo-labelled photos; "global": of all
                     of them (more precise: the surest labels are in the easiest families).
    """

    def __init__(self, pseudo: PseudoLabels, classes_per_batch: int, views_per_class: int,
                 seed_views: float = 0.0, confident_share: float = 1.0, confident_select: str = "class"):
        if classes_per_batch < 2 or views_per_class < 2:
            raise CopyseekError(f"pseudo-label batches need >= 2 classes of >= 2 photos, got {classes_per_batch}, {views_per_class}")
        if not 0 <= seed_views <= 1:
            raise CopyseekError(f"seed_views must be a share in [0, 1], got {seed_views}")
        if not 0 < confident_share <= 1:
            raise CopyseekError(f"confident_share must be a share in (0, 1], got {confident_share}")
        if confident_select not in ("class", "global"):
            raise CopyseekError(f"confident_select must be 'class' or 'global', got {confident_select!r}")
        weights = pseudo.weights
        propagated = np.flatnonzero((weights > 0) & ~pseudo.seed)
        surest = propagated[np.argsort(-pseudo.confidence[propagated], kind="stable")]
        taking = np.zeros(len(weights), bool)
        if confident_select == "global":
            taking[surest[: int(np.ceil(confident_share * len(surest)))]] = True
        else:  # the same share of each class's, most confident first
            for c in np.unique(pseudo.labels[surest]):
                own = surest[pseudo.labels[surest] == c]
                taking[own[: int(np.ceil(confident_share * len(own)))]] = True
        self.members, self.probabilities, self.seeds = [], [], []
        for c in range(len(pseudo.class_weight)):
            rows = np.flatnonzero((pseudo.labels == c) & (weights > 0) & (pseudo.seed | taking))
            seeds = rows[pseudo.seed[rows]] if seed_views > 0 else rows[:0]
            if len(rows) >= 2 or len(seeds):  # a labelled photo alone still gives views: its edits
                self.members.append(rows)
                self.probabilities.append(pseudo.confidence[rows] / pseudo.confidence[rows].sum())
                self.seeds.append(seeds)
        if len(self.members) < 2:
            raise CopyseekError("fewer than 2 classes have 2 pseudo-labelled photos: label more photos")
        self.classes_per_batch, self.views_per_class, self.seed_views = classes_per_batch, views_per_class, seed_views

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows (N,), labels (N,)): views_per_class per class at most; distinct photos, except the
        labelled ones drawn for `seed_views` (PhotoBatches edits a photo's repeats)."""
        classes = rng.choice(len(self.members), size=min(self.classes_per_batch, len(self.members)), replace=False)
        rows, labels = [], []
        for c in classes:
            members, seeds = self.members[c], self.seeds[c]
            n_seed = int(round(self.seed_views * self.views_per_class)) if len(seeds) else 0
            others = np.setdiff1d(members, seeds) if n_seed else members
            size = min(self.views_per_class - n_seed, len(others))
            p = self.probabilities[c][np.isin(members, others)]
            chosen = rng.choice(others, size=size, replace=False, p=p / p.sum()) if size else others[:0]
            if n_seed:  # the labelled photos fill the class's views
                chosen = np.concatenate([rng.choice(seeds, size=self.views_per_class - size), chosen])
            rows.append(chosen)
            labels.append(np.full(len(chosen), c))
        return np.concatenate(rows), np.concatenate(labels)


def read_labels(path: str | Path, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """`image,label` CSV (image: a photo's file name stem) -> ((n,) class ids for `names`, -1 where
    unlabelled; the class names in id order)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if r]
    except OSError as exc:
        raise CopyseekError(f"cannot read labels {path}: {exc}") from exc
    if rows and rows[0][:2] == ["image", "label"]:
        rows = rows[1:]
    if any(len(r) < 2 or not r[1] for r in rows):
        raise CopyseekError(f"{path}: every row must be image,label")
    index = {name: i for i, name in enumerate(names)}
    unknown = [r[0] for r in rows if r[0] not in index]
    if unknown:
        raise CopyseekError(f"{path}: {len(unknown)} image(s) are not training photos, e.g. {unknown[0]}")
    classes = sorted({r[1] for r in rows})
    labels = np.full(len(names), -1, np.int64)
    for image, label, *_ in rows:
        labels[index[image]] = classes.index(label)
    return labels, classes


def write_pseudo_labels(path: Path, names: list[str], classes: list[str], pseudo: PseudoLabels) -> None:
    """image,label,confidence,seed (label empty where none reached the photo)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image", "label", "confidence", "seed"])
        for name, label, confidence, seed in zip(names, pseudo.labels, pseudo.confidence, pseudo.seed):
            writer.writerow([name, classes[label] if label >= 0 else "", f"{confidence:.4f}", int(seed)])
