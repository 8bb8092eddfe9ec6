import pytest
import torch
import torch.nn.functional as F

from copyseek.errors import CopyseekError
from copyseek.learn.losses import (
    AllPairs, Contrastive, Distill, HardNegatives, NonZeroMeanReducer, RecallAtK, SiMix, WeightedSum,
    batch_similarities, relaxed_recall_at_k,
)


def clustered(n_classes=6, per_class=4, dim=8, spread=0.3, seed=0):
    """(N, dim) unit embeddings around random class centres, and their (N,) labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    points = centres[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return F.normalize(points, dim=1).double(), labels


def exact_recall_at_k(emb, labels, k):
    """Fraction of the query's positives within its top k, over min(k, #positives), per query."""
    sim = emb @ emb.T
    sim.fill_diagonal_(-float("inf"))
    top = sim.topk(k, dim=1).indices
    hits = (labels[top] == labels[:, None]).sum(1).double()
    n_pos = (labels[:, None] == labels[None]).sum(1) - 1
    return hits / n_pos.clamp(max=k)


def stepped_recall_at_k(emb, labels, k):
    """The surrogate's formula with exact steps: rank = 1 + #{items above}; a positive counts 1 if
    its rank is below k, 1/2 at rank k (sigmoid(0)); hits capped at k, over min(k, #positives)."""
    sim = emb @ emb.T
    n = len(labels)
    recall = torch.zeros(n, dtype=emb.dtype)
    for q in range(n):
        others = [z for z in range(n) if z != q]
        positives = [p for p in others if labels[p] == labels[q]]
        ranks = [1 + sum(float(sim[q, z] > sim[q, p]) for z in others if z != p) for p in positives]
        hits = sum(1.0 if r < k else 0.5 if r == k else 0.0 for r in ranks)
        recall[q] = min(hits, k) / min(k, len(positives))
    return recall


@pytest.mark.parametrize("k", [1, 2, 4])
def test_relaxed_recall_tends_to_its_stepped_formula_at_small_temperatures(k):
    emb, labels = clustered(spread=1.0)
    relaxed = relaxed_recall_at_k(batch_similarities(emb, labels), [k], tau1=1e-6, tau2=1e-3)
    assert torch.allclose(relaxed, stepped_recall_at_k(emb, labels, k), atol=1e-3)


def test_recall_loss_is_low_for_perfect_clusters_and_high_for_random_ones():
    # Tied positives count 1/2 in each other's ranks, so even perfect clusters keep a small loss.
    tight, labels = clustered(spread=0.0)
    loose, _ = clustered(spread=10.0)
    assert RecallAtK(ks=(1, 2))(tight, labels) < 0.25 < 0.5 < RecallAtK(ks=(1, 2))(loose, labels)


def test_simix_columns_are_similarities_to_mixed_embeddings():
    emb, labels = clustered(n_classes=3, per_class=3)
    s = SiMix(generator=torch.Generator().manual_seed(1))(batch_similarities(emb, labels))
    n = len(labels)
    i, j = torch.triu(labels[:, None] == labels[None], 1).nonzero(as_tuple=True)
    assert s.sim.shape == (n, n + len(i))
    assert torch.equal(s.item_labels[n:], labels[i])
    # alpha of each virtual item, recovered from one query, must explain every query's similarity.
    for col, (a, b) in enumerate(zip(i.tolist(), j.tolist())):
        virtual = s.sim[:, n + col]
        q = next(q for q in range(n) if q not in (a, b) and not torch.isclose(emb[q] @ emb[a], emb[q] @ emb[b]))
        alpha = (virtual[q] - emb[q] @ emb[b]) / (emb[q] @ emb[a] - emb[q] @ emb[b])
        assert torch.allclose(virtual, emb @ (alpha * emb[a] + (1 - alpha) * emb[b]))
        # A query never sees a mix made from itself.
        assert not s.valid[a, n + col] and not s.valid[b, n + col]
        assert s.valid[[q for q in range(n) if q not in (a, b)], n + col].all()


def test_simix_caps_the_number_of_virtual_items():
    emb, labels = clustered(n_classes=4, per_class=5)
    s = SiMix(max_mixes=7)(batch_similarities(emb, labels))
    assert s.sim.shape[1] == len(labels) + 7
    with pytest.raises(CopyseekError):
        SiMix(max_mixes=0)


def test_contrastive_is_zero_beyond_margins_and_miner_keeps_hard_negatives():
    emb, labels = clustered(spread=0.0)
    assert Contrastive(pos_margin=0.99, neg_margin=0.99)(emb, labels) == 0
    s = batch_similarities(*clustered(spread=1.0))
    pos, neg = HardNegatives(margin=0.0)(s)
    farthest_pos = torch.where(pos, s.sim, torch.tensor(float("inf"), dtype=s.sim.dtype)).amin(1, keepdim=True)
    assert torch.equal(pos, AllPairs()(s)[0])
    assert (s.sim[neg] > farthest_pos.expand_as(s.sim)[neg]).all()
    assert neg.sum() < s.negatives.sum()


def test_non_zero_mean_reducer_ignores_satisfied_elements():
    assert NonZeroMeanReducer()(torch.tensor([0.0, 0.0, 2.0, 4.0])) == 3.0


def test_distill_is_zero_when_student_equals_teacher_and_checks_shapes():
    emb, labels = clustered()
    assert Distill()(emb, labels, emb * 3) < 1e-12  # the teacher is normalised first
    assert Distill()(emb, labels, torch.roll(emb, 1, 0)) > 0.1
    with pytest.raises(CopyseekError, match="teacher"):
        Distill()(emb, labels, None)
    other_dim = F.normalize(torch.randn(len(labels), 5, dtype=emb.dtype), dim=1)
    with pytest.raises(CopyseekError, match="dimension"):
        Distill()(emb, labels, other_dim)
    assert Distill(direct=0, relational=1)(emb, labels, other_dim) > 0


def test_weighted_sum_adds_weighted_terms():
    emb, labels = clustered(spread=1.0)
    recall, distill = RecallAtK(), Distill()
    teacher = torch.roll(emb, 1, 0)
    total = WeightedSum([(2.0, recall), (0.5, distill)])(emb, labels, teacher)
    assert torch.isclose(total, 2 * recall(emb, labels) + 0.5 * distill(emb, labels, teacher))


def test_inputs_are_validated():
    emb, labels = clustered()
    with pytest.raises(CopyseekError, match="labels"):
        RecallAtK()(emb, labels[:-1])
    with pytest.raises(CopyseekError, match="ks"):
        RecallAtK(ks=())
    with pytest.raises(CopyseekError, match="temperatures"):
        RecallAtK(tau1=0)


@pytest.mark.parametrize("loss", [RecallAtK(mixer=SiMix()), RecallAtK(), Contrastive()], ids=["recall+simix", "recall", "contrastive"])
def test_loss_decreases_on_a_tiny_separable_problem(loss):
    # Classes separable in 4 of 16 dimensions, buried under large noise in the other 12: a linear
    # embedding trained by each loss must learn to ignore the noise.
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(8).repeat_interleave(4)
    signal = torch.randn(8, 4, generator=g)[labels] + 0.05 * torch.randn(len(labels), 4, generator=g)
    x = torch.cat([signal, 3 * torch.randn(len(labels), 12, generator=g)], dim=1)
    model = torch.nn.Linear(16, 8)
    assert exact_recall_at_k(F.normalize(model(x), dim=1).double(), labels, 1).mean() < 0.5
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        value = loss(F.normalize(model(x), dim=1), labels)
        value.backward()
        opt.step()
        losses.append(value.item())
    assert losses[-1] < 0.5 * losses[0]
    emb = F.normalize(model(x), dim=1).double()
    assert exact_recall_at_k(emb, labels, 1).mean() == 1.0
