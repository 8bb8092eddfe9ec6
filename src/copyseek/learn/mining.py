"""Miners that look at the whole collection before any batch: training pairs without labels.

"Mining on Manifolds: Metric Learning without Labels" (Iscen, Tolias, Avrithis, Chum, CVPR 2018):
describe every training photo with the network itself, build the kNN graph of the descriptors
(copyseek.graph) and take as positives of an anchor the images near it on the manifold but not among
its Euclidean neighbours, as negatives the Euclidean neighbours that the manifold puts far
(`copyseek.graph.mining`). `KnnMiner` is the baseline the paper compares with: Euclidean neighbours
as positives, the next ones as negatives.

A collection miner is also a batch miner (`copyseek.learn.registry.MINERS`, `TrainConfig.miner`):
`MinedBatches` turns its tuples into batches in which an anchor and some of its positives share a
label and each negative has a label of its own, so every ranking loss (contrastive, Recall@k)
trains on them unchanged; inside such a batch the miner keeps every pair (the batch already holds
the mined ones).

    miner = ManifoldMiner(MiningParams(k_positive=3))
    mined = miner.mine(vectors)                  # (n, d) unit rows -> MinedExamples
    batches = MinedBatches(mined, groups_per_batch=32, items_per_group=4)
    rows, labels = batches.sample(rng)           # photo rows and labels of one batch

`PoolMiner` (miner "pool") is HOW's: the batches stay the configured ones (photos and their edits),
and every `pool_every` steps a pool of the training photos and edits of them is described with the
current model; each class of a batch then brings its `pool_negatives` hardest negatives from that
pool (`PoolNegatives`), the pool items most similar to the class's own pool items, one per other
photo, instead of only the other photos the batch happened to draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from copyseek.errors import CopyseekError
from copyseek.graph.knn import GraphParams, KnnGraph, check_vectors, knn_graph, search
from copyseek.graph.mining import MinedExamples, mine_on_manifold, stationary_anchors
from copyseek.io.images import load_rgb
from copyseek.learn.data import Augment, Batch, square, to_batch
from copyseek.learn.losses import HardNegatives, Similarities
from copyseek.progress import progress_bar

ANCHORS = ("stationary", "all")


@dataclass(frozen=True)
class MiningParams:
    """k_positive, k_negative: positives and negatives per anchor; graph_k: neighbours per node of the
    kNN graph; euclidean_k: Euclidean neighbours a manifold positive must not be among, manifold_pool:
    top manifold neighbours a negative must not be among (manifold miner only). 0 = scaled to the
    collection's size n (`resolved`). anchors: "stationary" (local
    maxima of the random walk's stationary distribution, the paper's) or "all" images.
    alpha: diffusion's (0.99 in the paper)."""

    k_positive: int = 0
    k_negative: int = 0
    graph_k: int = 0
    euclidean_k: int = 0
    manifold_pool: int = 0
    anchors: str = "stationary"
    alpha: float = 0.99

    def __post_init__(self) -> None:
        for name in ("k_positive", "k_negative", "graph_k", "euclidean_k", "manifold_pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise CopyseekError(f"mining {name} must be a whole number >= 0 (0: scaled), got {value!r}")
        if self.anchors not in ANCHORS:
            raise CopyseekError(f"mining anchors must be one of {', '.join(ANCHORS)}, got {self.anchors!r}")
        if not 0 < self.alpha < 1:
            raise CopyseekError(f"mining alpha must be in (0, 1), got {self.alpha}")

    def resolved(self, n: int) -> "MiningParams":
        """The k values for a collection of n images: the graph's k grows as sqrt(n) / 3 (5..50),
        k_positive as sqrt(n) / 8 (2..20), k_negative is 3 x k_positive, euclidean_k half of
        k_positive (>= 1), manifold_pool k_positive + euclidean_k (the manifold neighbours positives
        are drawn from). Our own scaling, chosen on benchmark families of 5 images (BENCHMARKS.md,
        issue 15): a larger pool leaves no Euclidean neighbour as a negative."""
        root = math.sqrt(max(n, 1))
        k_positive = self.k_positive or int(np.clip(round(root / 8), 2, 20))
        euclidean_k = self.euclidean_k or max(1, k_positive // 2)
        return replace(
            self,
            k_positive=k_positive,
            k_negative=self.k_negative or 3 * k_positive,
            graph_k=min(self.graph_k or int(np.clip(round(root / 3), 5, 50)), max(n - 1, 1)),
            euclidean_k=euclidean_k,
            manifold_pool=self.manifold_pool or k_positive + euclidean_k,
        )


class CollectionMiner:
    """Base of the miners that mine the whole collection (`mine`) and, inside the batches made from
    their tuples, keep every valid pair (`__call__`, the batch-miner protocol of learn/losses.py)."""

    def __init__(self, params: MiningParams | None = None):
        self.params = params or MiningParams()

    def __call__(self, s: Similarities) -> tuple[Tensor, Tensor]:
        return s.positives, s.negatives

    def graph(self, vectors: np.ndarray, params: MiningParams) -> KnnGraph:
        return knn_graph(vectors, k=params.graph_k, symmetrize="mutual")

    def anchors(self, graph: KnnGraph, params: MiningParams) -> np.ndarray:
        if params.anchors == "all":
            return np.setdiff1d(np.arange(graph.n_nodes), graph.isolated())
        return stationary_anchors(graph)

    def mine(self, vectors: np.ndarray) -> MinedExamples:
        """(n, d) unit descriptors of the collection -> anchors (a,), positives (a, k_positive),
        negatives (a, k_negative) as rows, -1 padded."""
        vectors = check_vectors(vectors)
        if len(vectors) < 3:
            raise CopyseekError(f"mining needs at least 3 images, got {len(vectors)}")
        params = self.params.resolved(len(vectors))
        graph = self.graph(vectors, params)
        return self.mine_graph(graph, vectors, self.anchors(graph, params), params)

    def mine_graph(self, graph: KnnGraph, vectors: np.ndarray, anchors: np.ndarray, params: MiningParams) -> MinedExamples:
        """The pairs of each anchor: what differs between miners (ManifoldMiner, KnnMiner override it)."""
        raise NotImplementedError


class ManifoldMiner(CollectionMiner):
    """Hard positives near on the manifold but not in Euclidean terms; hard negatives near in
    Euclidean terms but far on the manifold (copyseek.graph.mining.mine_on_manifold)."""

    def mine_graph(self, graph: KnnGraph, vectors: np.ndarray, anchors: np.ndarray, params: MiningParams) -> MinedExamples:
        return mine_on_manifold(graph, vectors, anchors, params.k_positive, params.k_negative,
                                euclidean_k=params.euclidean_k, manifold_pool=params.manifold_pool, alpha=params.alpha)


class KnnMiner(CollectionMiner):
    """The Euclidean baseline: the k_positive nearest neighbours are positives, the next k_negative
    ones negatives (the same anchors as the manifold miner)."""

    def mine_graph(self, graph: KnnGraph, vectors: np.ndarray, anchors: np.ndarray, params: MiningParams) -> MinedExamples:
        k = min(params.k_positive + params.k_negative, len(vectors) - 1)
        _, rows = search(vectors, vectors[anchors], k + 1, GraphParams(factory=graph.params.factory))
        lists = [r[(r >= 0) & (r != a)][:k] for a, r in zip(anchors, rows)]
        positives = np.full((len(anchors), params.k_positive), -1, np.int64)
        negatives = np.full((len(anchors), params.k_negative), -1, np.int64)
        for i, near in enumerate(lists):
            positives[i, : min(len(near), params.k_positive)] = near[: params.k_positive]
            rest = near[params.k_positive :]
            negatives[i, : len(rest)] = rest
        return MinedExamples(anchors, positives, negatives)


def mining_precision(mined: MinedExamples, family: np.ndarray) -> tuple[float, float]:
    """(share of mined positives in the anchor's family, share of mined negatives outside it), each
    over the mined pairs (NaN when there are none); family: (n,) one id per row."""
    family = np.asarray(family)
    own = family[mined.anchors][:, None]
    pos, neg = mined.positives, mined.negatives
    hits_p = (family[np.where(pos >= 0, pos, 0)] == own) & (pos >= 0)
    hits_n = (family[np.where(neg >= 0, neg, 0)] != own) & (neg >= 0)
    n_p, n_n = int((pos >= 0).sum()), int((neg >= 0).sum())
    return (hits_p.sum() / n_p if n_p else math.nan), (hits_n.sum() / n_n if n_n else math.nan)


class MinedBatches:
    """Batches of mined tuples: `groups_per_batch` anchors that have positives, each with up to
    items_per_group - 1 of its positives (one label per group) and up to as many of its negatives
    (a label each). A photo already in the batch is not added twice (its first label stays)."""

    def __init__(self, mined: MinedExamples, groups_per_batch: int, items_per_group: int):
        if groups_per_batch < 1 or items_per_group < 2:
            raise CopyseekError(f"mined batches need groups_per_batch >= 1 and items_per_group >= 2, got "
                                f"{groups_per_batch}, {items_per_group}")
        keep = (mined.positives >= 0).any(axis=1)
        if not keep.any():
            raise CopyseekError("the miner found no anchor with a positive: more images, or larger k values")
        self.anchors = mined.anchors[keep]
        self.positives = [row[row >= 0] for row in mined.positives[keep]]
        self.negatives = [row[row >= 0] for row in mined.negatives[keep]]
        self.groups_per_batch, self.items_per_group = groups_per_batch, items_per_group

    def __len__(self) -> int:
        return len(self.anchors)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rows (N,), labels (N,)) of one batch: group g's items take label g, a negative of a group
        takes len(self) + its row (labels never collide)."""
        groups = rng.choice(len(self), size=min(self.groups_per_batch, len(self)), replace=False)
        label_of: dict[int, int] = {}
        take = self.items_per_group - 1
        for g in groups:
            chosen = rng.choice(self.positives[g], size=min(take, len(self.positives[g])), replace=False)
            for row in (self.anchors[g], *chosen):
                label_of.setdefault(int(row), int(g))
        for g in groups:
            if len(self.negatives[g]):
                for row in rng.choice(self.negatives[g], size=min(take, len(self.negatives[g])), replace=False):
                    label_of.setdefault(int(row), len(self) + int(row))
        rows = np.fromiter(label_of, np.int64, len(label_of))
        return rows, np.fromiter(label_of.values(), np.int64, len(label_of))


class PoolMiner(HardNegatives):
    """HOW's hard negatives from a pool (miner "pool"). Inside a batch it is `HardNegatives` (all
    positive pairs, the negatives closer than the farthest positive + 0.1); what differs is the batch:
    `copyseek.learn.train.make_source` wraps the configured batches in `PoolNegatives`, which adds the
    hardest negatives of every class from a pool described with the current model."""


def hardest_pool_negatives(vectors: np.ndarray, labels: np.ndarray, classes: np.ndarray, k: int) -> np.ndarray:
    """(len(classes), k) pool rows, -1 padded: for each class, the k pool items of other classes most
    similar to any of the class's own pool items, at most one item per other class (the hardest).
    vectors: (P, D) unit rows of the pool; labels: (P,) their classes."""
    vectors, labels = np.asarray(vectors, np.float32), np.asarray(labels)
    out = np.full((len(classes), k), -1, np.int64)
    for i, c in enumerate(classes):
        own = labels == c
        if not own.any():
            continue
        sim = (vectors[own] @ vectors.T).max(axis=0)
        sim[own] = -np.inf
        taken: set[int] = set()
        j = 0
        for row in np.argsort(-sim, kind="stable"):
            if j == k or not np.isfinite(sim[row]):
                break
            if int(labels[row]) in taken:
                continue
            taken.add(int(labels[row]))
            out[i, j] = row
            j += 1
    return out


def describe_arrays(model: nn.Module, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, dim) float32 descriptors by `model` in eval mode (its modes restored)."""
    device = next(model.parameters()).device
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                part = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
                out.append(model(part.to(device)).float().cpu().numpy())
    finally:
        for module, mode in was_training.items():
            module.training = mode
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


class PoolNegatives:
    """A BatchSource: the batches of `source`, each class of a batch joined by its `negatives` hardest
    negatives from a pool (images (P, S, S, 3) uint8 with their classes (P,), the same class ids as
    the batches'), chosen by `hardest_pool_negatives` on the pool described by `model` every `every`
    batches. A pool item keeps its class, so one that is the photo of another class of the batch is
    that class's positive too. HOW re-describes a pool of 20k images every epoch and takes the
    hardest negatives of each query; here the pool is the training photos and edits of them."""

    def __init__(self, source, images: np.ndarray, labels: np.ndarray, model: nn.Module, every: int, negatives: int):
        if every < 1 or negatives < 1:
            raise CopyseekError(f"pool mining needs pool_every >= 1 and pool_negatives >= 1, got {every}, {negatives}")
        if len(images) != len(labels) or len(np.unique(labels)) < 2:
            raise CopyseekError(f"a pool needs images of at least 2 classes, got {len(images)} images")
        self.source, self.images, self.labels, self.model = source, images, np.asarray(labels, np.int64), model
        self.every, self.negatives = every, negatives
        self.calls, self.vectors = 0, None

    def refresh(self) -> None:
        """Describe the pool with the model as it is now."""
        self.vectors = describe_arrays(self.model, self.images)

    def next_batch(self, rng: np.random.Generator) -> Batch:
        if self.vectors is None or self.calls % self.every == 0:
            self.refresh()
        self.calls += 1
        batch = self.source.next_batch(rng)
        if batch.teacher is not None:
            raise CopyseekError("pool negatives have no teacher embeddings: the pool miner takes ranking losses only")
        classes = np.unique(batch.labels.numpy())
        rows = hardest_pool_negatives(self.vectors, self.labels, classes, self.negatives).ravel()
        rows = np.unique(rows[rows >= 0])
        if not len(rows):
            return batch
        images = torch.cat([batch.images, torch.from_numpy(self.images[rows]).permute(0, 3, 1, 2)])
        return Batch(images, torch.cat([batch.labels, torch.from_numpy(self.labels[rows])]), None)


def build_pool(maker, size: int, views: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The pool of PoolNegatives: every class's photo and `views` edits of it (a ViewMaker's views,
    made once with a fixed seed), square at `size` px: (images (P, size, size, 3), labels (P,))."""
    images, labels = [], []
    for label in range(maker.photos.n_classes):
        for view in maker.views(label, 1 + views, np.random.default_rng([seed, 7, label])):
            images.append(square(view, size))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64)


class PhotoBatches:
    """A BatchSource over a collection's photos: `sampler.sample(rng) -> (rows, labels)` chooses,
    the photos are decoded (square, `size` px) and cached. With `augment` and `edited` > 0, that
    share of the chosen photos get a random edit first (other photos of the collection as donors
    for composite edits): the photos of a pseudo-class are then seen under the edits the
    descriptor must be invariant to, not only as themselves (`TrainConfig.photo_edits`)."""

    def __init__(self, paths: Sequence[Path], sampler, size: int, cache_size: int = 4096,
                 augment: Augment | None = None, edited: float = 0.0):
        if not 0 <= edited <= 1:
            raise CopyseekError(f"the share of edited photos must be in [0, 1], got {edited}")
        if edited > 0 and augment is None:
            raise CopyseekError("editing a share of the photos needs an augment")
        self.paths, self.sampler, self.size = list(paths), sampler, size
        self.augment, self.edited = augment, edited
        self.decoded = lru_cache(maxsize=cache_size)(self._decoded)
        self.image = lru_cache(maxsize=cache_size)(self._image)

    def _decoded(self, row: int) -> Image.Image:
        return Image.fromarray(load_rgb(self.paths[row], self.size))

    def _image(self, row: int) -> np.ndarray:
        return square(self.decoded(row), self.size)

    def view(self, row: int, rng: np.random.Generator, repeat: bool = False) -> np.ndarray:
        """(size, size, 3) uint8: photo `row`, edited with probability `edited`, always if it is a
        `repeat` (drawn before in the batch: two identical views teach nothing)."""
        if (not repeat or self.augment is None) and (not self.edited or rng.random() >= self.edited):
            return self.image(row)
        donors = [self.decoded(int(d)) for d in rng.choice(len(self.paths), size=min(2, len(self.paths)), replace=False)]
        return square(self.augment(self.decoded(row), rng, donors), self.size)

    def next_batch(self, rng: np.random.Generator) -> Batch:
        rows, labels = self.sampler.sample(rng)
        repeat = np.zeros(len(rows), bool)
        repeat[np.setdiff1d(np.arange(len(rows)), np.unique(rows, return_index=True)[1])] = True
        return to_batch(np.stack([self.view(int(r), rng, bool(again)) for r, again in zip(rows, repeat)]), labels, None)


def square_photo(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the photo decoded and resized as the exported model's sidecar does."""
    return square(Image.fromarray(load_rgb(path, size)), size)


def describe_photos(model: nn.Module, paths: Sequence[Path], size: int, batch_size: int = 32,
                    progress: bool = True) -> np.ndarray:
    """(n, dim) float32 descriptors of the photos by `model` (in eval mode; its mode is restored)."""
    device = next(model.parameters()).device
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    out = []
    try:
        with torch.no_grad(), progress_bar(len(paths), "describing", disable=not progress) as bar:
            for start in range(0, len(paths), batch_size):
                part = paths[start : start + batch_size]
                images = torch.from_numpy(np.stack([square_photo(p, size) for p in part])).permute(0, 3, 1, 2)
                out.append(model(images.to(device)).float().cpu().numpy())
                bar.update(len(part))
    finally:
        for module, mode in was_training.items():
            module.training = mode
    return np.concatenate(out).astype(np.float32)
