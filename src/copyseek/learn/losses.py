"""Losses on a batch of embeddings, built from orthogonal pieces (pytorch-metric-learning style).

Every loss is called as `loss(embeddings (N, D), labels (N,), teacher (N, Dt) | None) -> scalar`
on the WHOLE batch, which is what `copyseek.learn.chunked` needs to differentiate it once and
back-propagate chunk by chunk. Inside, the pieces are:

- `Similarities`: queries scored against a retrieval set, with the mask of what each query may see;
- mixers (`SiMix`) that add virtual items to the retrieval set from scalar similarities only;
- miners that choose which pairs a pair loss looks at;
- reducers that turn per-query or per-pair losses into the scalar to minimise.

Recall@k surrogate and SiMix follow Patel, Tolias and Matas, "Recall@k Surrogate Loss with Large
Batches and Similarity Mixup" (CVPR 2022, arXiv 2108.11179).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.errors import CopyseekError


@dataclass
class Similarities:
    """Queries scored against a retrieval set.

    sim:          (Q, B) float similarities, higher = closer.
    query_labels: (Q,) int64 class of each query.
    item_labels:  (B,) int64 class of each retrieval-set item.
    valid:        (Q, B) bool, False where an item is not in a query's retrieval set (the query itself,
                  virtual items made from it).
    """

    sim: Tensor
    query_labels: Tensor
    item_labels: Tensor
    valid: Tensor

    @property
    def positives(self) -> Tensor:
        """(Q, B) bool: valid items of the query's class."""
        return self.valid & (self.query_labels[:, None] == self.item_labels[None, :])

    @property
    def negatives(self) -> Tensor:
        """(Q, B) bool: valid items of another class."""
        return self.valid & (self.query_labels[:, None] != self.item_labels[None, :])


def batch_similarities(embeddings: Tensor, labels: Tensor) -> Similarities:
    """Every batch element queried against all others: (N, D), (N,) -> (N, N) cosine similarities
    (the embeddings are unit vectors) with the diagonal excluded."""
    check_batch(embeddings, labels)
    n = embeddings.shape[0]
    valid = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    return Similarities(embeddings @ embeddings.T, labels, labels, valid)


def check_batch(embeddings: Tensor, labels: Tensor) -> None:
    if embeddings.ndim != 2:
        raise CopyseekError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    if labels.shape != embeddings.shape[:1]:
        raise CopyseekError(f"labels must be (N,) = ({embeddings.shape[0]},), got shape {tuple(labels.shape)}")


# ---------------------------------------------------------------- mixers


class Mixer(Protocol):
    def __call__(self, s: Similarities) -> Similarities:
        """The same queries against a retrieval set with virtual items appended."""


class SiMix:
    """Similarity mixup: virtual retrieval-set items mixing two positives, built from similarities.

    For items i, j of one class and alpha ~ U(0, 1), the virtual item alpha x_i + (1 - alpha) x_j has,
    by linearity of the dot product, similarity alpha s(q, i) + (1 - alpha) s(q, j) with every query q:
    a new column of the similarity matrix, with no embedding or image made. It joins the retrieval
    set with the class of i and j; a query never sees a mix it is part of (it would be a near copy).

    max_mixes: at most this many virtual items (a random subset of all positive pairs);
               None for every positive pair.
    """

    def __init__(self, max_mixes: int | None = None, generator: torch.Generator | None = None):
        if max_mixes is not None and max_mixes < 1:
            raise CopyseekError(f"SiMix max_mixes must be positive or None, got {max_mixes}")
        self.max_mixes = max_mixes
        self.generator = generator

    def __call__(self, s: Similarities) -> Similarities:
        labels = s.item_labels
        same = labels[:, None] == labels[None, :]
        i, j = torch.triu(same, diagonal=1).nonzero(as_tuple=True)  # (P,), (P,)
        if self.max_mixes is not None and i.numel() > self.max_mixes:
            keep = torch.randperm(i.numel(), generator=self.generator)[: self.max_mixes].to(i.device)
            i, j = i[keep], j[keep]
        if i.numel() == 0:
            return s
        alpha = torch.rand(i.numel(), generator=self.generator).to(s.sim)  # (M,)
        mixed = s.sim[:, i] * alpha + s.sim[:, j] * (1 - alpha)  # (Q, M)
        # A mix is hidden from a query that is one of its two parts (or cannot see one of them).
        valid = s.valid[:, i] & s.valid[:, j]
        return Similarities(
            torch.cat([s.sim, mixed], dim=1), s.query_labels,
            torch.cat([labels, labels[i]]), torch.cat([s.valid, valid], dim=1),
        )


# ---------------------------------------------------------------- miners


class Miner(Protocol):
    def __call__(self, s: Similarities) -> tuple[Tensor, Tensor]:
        """(Q, B) bool masks of the positive and negative pairs to use."""


class AllPairs:
    """Every valid positive and negative pair."""

    def __call__(self, s: Similarities) -> tuple[Tensor, Tensor]:
        return s.positives, s.negatives


class HardNegatives:
    """All positive pairs; negatives only if closer to the query than its farthest positive + margin
    (the rest would contribute little but noise to the average)."""

    def __init__(self, margin: float = 0.1):
        self.margin = margin

    def __call__(self, s: Similarities) -> tuple[Tensor, Tensor]:
        pos, neg = s.positives, s.negatives
        with torch.no_grad():
            farthest = torch.where(pos, s.sim, torch.full_like(s.sim, float("inf"))).amin(dim=1, keepdim=True)
        return pos, neg & (s.sim > farthest - self.margin)


# ---------------------------------------------------------------- reducers


class Reducer(Protocol):
    def __call__(self, losses: Tensor) -> Tensor:
        """(n,) losses -> scalar."""


class MeanReducer:
    """The average (0 for no element, keeping the graph)."""

    def __call__(self, losses: Tensor) -> Tensor:
        return losses.mean() if losses.numel() else losses.sum()


class NonZeroMeanReducer:
    """The average over elements with a positive loss: pairs already beyond their margin do not
    dilute the gradient of those that are not."""

    def __call__(self, losses: Tensor) -> Tensor:
        active = losses > 0
        return losses[active].mean() if active.any() else losses.sum()


# ---------------------------------------------------------------- losses


def relaxed_recall_at_k(s: Similarities, ks: Sequence[int], tau1: float, tau2: float) -> Tensor:
    """Per-query smooth recall@k, averaged over ks: Similarities (Q, B) -> (Q',) for the Q' queries
    that have at least one positive.

    The rank of a positive p of query q, 1 + #{valid items scored above p}, uses a sigmoid of
    temperature tau1 instead of a step; recall@k = min(k, #{positives ranked within k}) /
    min(k, #positives) uses a sigmoid of temperature tau2 on k - rank (as in the paper, a positive
    at rank exactly k counts one half).
    """
    pos = s.positives
    q_idx, p_idx = pos.nonzero(as_tuple=True)  # (M,) positive pairs
    if q_idx.numel() == 0:
        return s.sim.new_zeros(0)
    diff = s.sim[q_idx] - s.sim[q_idx, p_idx][:, None]  # (M, B)
    above = torch.sigmoid(diff / tau1) * s.valid[q_idx]
    # The positive itself contributes sigmoid(0) = 1/2 to its own row: remove it.
    rank = 1 + above.sum(dim=1) - 0.5  # (M,)
    n_pos = pos.sum(dim=1)  # (Q,)
    has_pos = n_pos > 0
    recalls = []
    for k in ks:
        hits = torch.zeros(s.sim.shape[0], dtype=s.sim.dtype, device=s.sim.device)
        hits = hits.index_add(0, q_idx, torch.sigmoid((k - rank) / tau2)).clamp(max=k)
        recalls.append(hits[has_pos] / n_pos[has_pos].clamp(max=k))
    return torch.stack(recalls).mean(dim=0)


class RecallAtK(nn.Module):
    """1 - smooth recall@k averaged over ks (the Recall@k surrogate), optionally with SiMix.

    Defaults are the paper's: ks (1, 2, 4, 8, 16), tau1 = 0.01 for ranks, tau2 = 1 for recall.
    """

    def __init__(self, ks: Sequence[int] = (1, 2, 4, 8, 16), tau1: float = 0.01, tau2: float = 1.0,
                 mixer: Mixer | None = None, reducer: Reducer | None = None):
        super().__init__()
        if not ks or min(ks) < 1:
            raise CopyseekError(f"recall@k needs positive ks, got {list(ks)}")
        if tau1 <= 0 or tau2 <= 0:
            raise CopyseekError(f"temperatures must be positive, got tau1={tau1}, tau2={tau2}")
        self.ks, self.tau1, self.tau2 = tuple(int(k) for k in ks), tau1, tau2
        self.mixer = mixer
        self.reducer = reducer or MeanReducer()

    def forward(self, embeddings: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s = batch_similarities(embeddings, labels)
        if self.mixer is not None:
            s = self.mixer(s)
        return self.reducer(1 - relaxed_recall_at_k(s, self.ks, self.tau1, self.tau2))


class Contrastive(nn.Module):
    """Pair loss on cosine similarities: positives pulled above pos_margin, negatives pushed below
    neg_margin (hinge). The baseline the Recall@k surrogate is compared with."""

    def __init__(self, pos_margin: float = 1.0, neg_margin: float = 0.3, miner: Miner | None = None,
                 mixer: Mixer | None = None, reducer: Reducer | None = None):
        super().__init__()
        self.pos_margin, self.neg_margin = pos_margin, neg_margin
        self.miner = miner or AllPairs()
        self.mixer = mixer
        self.reducer = reducer or NonZeroMeanReducer()

    def forward(self, embeddings: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        s = batch_similarities(embeddings, labels)
        if self.mixer is not None:
            s = self.mixer(s)
        pos, neg = self.miner(s)
        losses = torch.cat([F.relu(self.pos_margin - s.sim[pos]), F.relu(s.sim[neg] - self.neg_margin)])
        return self.reducer(losses)


class Distill(nn.Module):
    """The student reproduces a teacher's unit embeddings.

    direct:     weight of 1 - cos(student_i, teacher_i) (needs equal dimensions);
    relational: weight of the mean squared difference between the student's and the teacher's
                batch similarity matrices (any dimensions: it matches how the teacher ranks).
    """

    def __init__(self, direct: float = 1.0, relational: float = 1.0, reducer: Reducer | None = None):
        super().__init__()
        if direct < 0 or relational < 0 or direct + relational == 0:
            raise CopyseekError(f"distillation weights must be >= 0 and not both 0, got {direct}, {relational}")
        self.direct, self.relational = direct, relational
        self.reducer = reducer or MeanReducer()

    def forward(self, embeddings: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        check_batch(embeddings, labels)
        if teacher is None:
            raise CopyseekError("distillation needs the teacher's embeddings of the batch (--teacher)")
        if teacher.shape[0] != embeddings.shape[0]:
            raise CopyseekError(f"teacher embeddings {tuple(teacher.shape)} do not match the batch {tuple(embeddings.shape)}")
        teacher = F.normalize(teacher.to(embeddings), dim=1)
        per_sample = embeddings.new_zeros(embeddings.shape[0])
        if self.direct:
            if teacher.shape[1] != embeddings.shape[1]:
                raise CopyseekError(
                    f"direct distillation needs the student's dimension ({embeddings.shape[1]}) to equal the "
                    f"teacher's ({teacher.shape[1]}); set the model dim or use relational distillation only")
            per_sample = per_sample + self.direct * (1 - (embeddings * teacher).sum(dim=1))
        if self.relational:
            gap = embeddings @ embeddings.T - teacher @ teacher.T  # (N, N)
            per_sample = per_sample + self.relational * gap.pow(2).mean(dim=1)
        return self.reducer(per_sample)


class WeightedSum(nn.Module):
    """sum_i w_i * loss_i(embeddings, labels, teacher): e.g. distillation plus Recall@k."""

    def __init__(self, terms: Sequence[tuple[float, nn.Module]]):
        super().__init__()
        if not terms:
            raise CopyseekError("a weighted sum of losses needs at least one term")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList([loss for _, loss in terms])

    def forward(self, embeddings: Tensor, labels: Tensor, teacher: Tensor | None = None) -> Tensor:
        return sum(w * loss(embeddings, labels, teacher) for w, loss in zip(self.weights, self.losses))
