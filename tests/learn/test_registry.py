"""Losses, mixers and miners through their registry (learn/registry.py): one contract test each,
parametrised over everything registered, and registering new pieces."""

import pytest
import torch
import torch.nn.functional as F

from copyseek.errors import CopyseekError
from copyseek.learn import registry
from copyseek.learn.config import TrainConfig
from copyseek.learn.losses import AllPairs, batch_similarities
from copyseek.learn.registry import LOSSES, MINERS, MIXERS, build_loss


def clustered(spread: float, seed: int = 0, n_classes: int = 4, per_class: int = 3, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    points = torch.randn(n_classes, dim, generator=g)[labels] + spread * torch.randn(len(labels), dim, generator=g)
    return F.normalize(points, dim=1), labels


def spec_alone(term: str) -> str:
    """A valid loss spec using `term`: mixers need a ranking loss beside them."""
    if term in MIXERS:
        ranking = next(name for name, entry in LOSSES.items() if entry.role == "ranking")
        return f"{ranking}+{term}"
    return term


def loss_value(loss, embeddings, labels, teacher):
    torch.manual_seed(0)  # mixers draw random virtual items
    return loss(embeddings, labels, teacher)


@pytest.mark.parametrize("term", sorted(LOSSES) + sorted(MIXERS))
def test_every_loss_term_builds_a_loss_that_behaves(term):
    config = TrainConfig(images="x", steps=1, loss=spec_alone(term), dim=8)
    config.validate()
    loss = build_loss(config)
    embeddings, labels = clustered(spread=1.0)
    teacher = embeddings.detach().clone()
    student = embeddings.clone().requires_grad_(True)
    value = loss_value(loss, student, labels, teacher + 0.5 * torch.randn_like(teacher))
    assert value.ndim == 0 and torch.isfinite(value) and value >= 0
    value.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0

    # the same batch in another order gives the same loss
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    noisy_teacher = teacher + 0.5 * torch.randn(teacher.shape, generator=torch.Generator().manual_seed(2))
    a = loss_value(loss, embeddings, labels, noisy_teacher)
    if term not in MIXERS:  # a mixer's random pairs follow the batch order
        b = loss_value(loss, embeddings[order], labels[order], noisy_teacher[order])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)

    # lower when the embeddings do what the loss asks (tight classes; or the teacher's own vectors)
    tight, tight_labels = clustered(spread=0.05)
    if LOSSES.get(term) and LOSSES[term].role == "teacher":
        assert loss_value(loss, tight, tight_labels, tight) < loss_value(loss, tight, tight_labels, noisy_teacher)
    else:
        loose, loose_labels = clustered(spread=3.0)
        assert loss_value(loss, tight, tight_labels, tight) < loss_value(loss, loose, loose_labels, loose)

    with pytest.raises(CopyseekError):
        loss(embeddings[:, 0], labels, teacher)  # (N,) instead of (N, D)
    with pytest.raises(CopyseekError):
        loss(embeddings, labels[:-1], teacher)


@pytest.mark.parametrize("name", sorted(MINERS))
def test_every_miner_picks_valid_pairs_without_gradients(name):
    miner = MINERS[name]()
    embeddings, labels = clustered(spread=1.0)
    s = batch_similarities(embeddings.requires_grad_(True), labels)
    positives, negatives = miner(s)
    for mask, allowed in ((positives, s.positives), (negatives, s.negatives)):
        assert mask.dtype == torch.bool and mask.shape == s.sim.shape and not mask.requires_grad
        assert not (mask & ~allowed).any()  # only valid pairs of the right kind, never the query itself
    assert positives.any() and negatives.any()
    every_positive, every_negative = AllPairs()(s)
    assert positives.sum() <= every_positive.sum() and negatives.sum() <= every_negative.sum()


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_every_mixer_only_appends_items(name):
    mixer = MIXERS[name](TrainConfig())
    embeddings, labels = clustered(spread=1.0)
    s = batch_similarities(embeddings, labels)
    mixed = mixer(s)
    n = len(labels)
    assert mixed.sim.shape[0] == n and mixed.sim.shape[1] >= n
    assert mixed.valid.shape == mixed.sim.shape and mixed.item_labels.shape == mixed.sim.shape[1:]
    torch.testing.assert_close(mixed.sim[:, :n], s.sim)


@pytest.fixture
def clean_registry(monkeypatch):
    for table in ("LOSSES", "MIXERS", "MINERS"):
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))


class Spread(torch.nn.Module):
    """A toy ranking loss: mean similarity of the miner's negatives."""

    def __init__(self, miner):
        super().__init__()
        self.miner = miner

    def forward(self, embeddings, labels, teacher=None):
        s = batch_similarities(embeddings, labels)
        return s.sim[self.miner(s)[1]].mean() + 1


def test_registered_pieces_are_named_in_configs(clean_registry):
    registry.register_loss("spread", lambda config, mixer, miner: Spread(miner), "ranking")
    registry.register_miner("none-negative", lambda: (lambda s: (s.positives, s.negatives & False)))
    config = TrainConfig(images="x", steps=1, loss="spread+distill", miner="all").validate()
    assert config.needs_teacher
    loss = build_loss(config)
    embeddings, labels = clustered(spread=1.0)
    assert torch.isfinite(loss(embeddings, labels, embeddings))
    TrainConfig(images="x", steps=1, loss="spread", miner="none-negative").validate()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: registry.register_loss("x", lambda c, m, n: None, "regularizer"), "role must be one of"),
        (lambda: registry.register_loss("recall@k", lambda c, m, n: None, "ranking"), "already registered"),
        (lambda: registry.register_mixer("distill", lambda c: None), "already registered"),
        (lambda: registry.register_miner("hard", lambda: None), "already registered"),
        (lambda: registry.register_loss("a+b", lambda c, m, n: None, "ranking"), "without '\\+'"),
    ],
)
def test_bad_registrations_are_refused(clean_registry, call, message):
    with pytest.raises(CopyseekError, match=message):
        call()
