"""Losses, mixers and miners by name: what `TrainConfig.loss` ("recall@k+simix") and
`TrainConfig.miner` ("all", "hard") name, and how a loss spec becomes one module.

A loss spec joins registered terms with "+": at most one *ranking* loss (it compares the batch's
embeddings by label and takes the mixer and the miner), any *teacher* losses (they compare with a
teacher's embeddings), and mixers that add virtual items for the ranking loss. A new piece joins
with one `register_loss` / `register_mixer` / `register_miner` call; the config, `copyseek train`
and the contract tests in tests/learn/test_losses.py then know it.

>>> import torch
>>> from copyseek.learn.config import TrainConfig
>>> from copyseek.learn.registry import build_loss
>>> loss = build_loss(TrainConfig(loss="contrastive", miner="hard"))
>>> embeddings = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
>>> float(loss(embeddings, torch.tensor([0, 0, 1, 1, 2, 2]))) >= 0
True
>>> build_loss(TrainConfig(loss="recall@k+simx"))
Traceback (most recent call last):
...
copyseek.errors.CopyseekError: loss 'recall@k+simx': unknown term 'simx'; terms: recall@k, contrastive, distill (losses), simix (mixer)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from copyseek.errors import CopyseekError
from copyseek.learn.losses import AllPairs, Contrastive, Distill, HardNegatives, Miner, Mixer, RecallAtK, SiMix, WeightedSum
from copyseek.learn.mining import KnnMiner, ManifoldMiner, PoolMiner

if TYPE_CHECKING:
    from copyseek.learn.config import TrainConfig

ROLES = ("ranking", "teacher")


@dataclass(frozen=True)
class LossEntry:
    """build(config, mixer or None, miner) -> an nn.Module called as loss(embeddings, labels, teacher);
    role: "ranking" or "teacher" (see the module docstring)."""

    build: Callable[["TrainConfig", Mixer | None, Miner], nn.Module]
    role: str


def _recall_at_k(config: "TrainConfig", mixer: Mixer | None, miner: Miner) -> nn.Module:
    return RecallAtK(config.ks, config.tau1, config.tau2, mixer=mixer)


def _contrastive(config: "TrainConfig", mixer: Mixer | None, miner: Miner) -> nn.Module:
    return Contrastive(config.pos_margin, config.neg_margin, miner=miner, mixer=mixer)


def _distill(config: "TrainConfig", mixer: Mixer | None, miner: Miner) -> nn.Module:
    return Distill(config.distill_direct, config.distill_relational)


LOSSES: dict[str, LossEntry] = {
    "recall@k": LossEntry(_recall_at_k, "ranking"),
    "contrastive": LossEntry(_contrastive, "ranking"),
    "distill": LossEntry(_distill, "teacher"),
}
"""Loss term name -> how to build it from a TrainConfig, and its role."""

MIXERS: dict[str, Callable[["TrainConfig"], Mixer]] = {"simix": lambda config: SiMix(config.simix_max or None)}
"""Mixer term name -> its constructor from a TrainConfig (virtual items for the ranking loss)."""

MINERS: dict[str, Callable[[], Miner]] = {"all": AllPairs, "hard": HardNegatives, "manifold": ManifoldMiner,
                                          "knn": KnnMiner, "pool": PoolMiner}
"""Miner name (TrainConfig.miner) -> a constructor taking no argument. A CollectionMiner
(learn/mining.py: manifold, knn) also mines the training collection before the batches; the
PoolMiner (pool) adds to every batch hard negatives from a pool described every pool_every steps."""


def _register(table: dict, kind: str, name: str, entry, taken: set[str]) -> None:
    """Add `entry`; `taken`: the names it must not reuse (loss terms and mixers share a spec)."""
    if not isinstance(name, str) or not name or "+" in name or " " in name:
        raise CopyseekError(f"a {kind} name must be a non-empty string without '+' or spaces, got {name!r}")
    if name in taken and table.get(name) != entry:
        raise CopyseekError(f"{name!r} is already registered")
    table[name] = entry


def register_loss(name: str, build: Callable[["TrainConfig", Mixer | None, Miner], nn.Module], role: str) -> None:
    """Register a loss term: build(config, mixer, miner) -> module; role "ranking" or "teacher"."""
    if role not in ROLES:
        raise CopyseekError(f"loss role must be one of {ROLES}, got {role!r}")
    _register(LOSSES, "loss", name, LossEntry(build, role), LOSSES.keys() | MIXERS.keys())


def register_mixer(name: str, build: Callable[["TrainConfig"], Mixer]) -> None:
    _register(MIXERS, "mixer", name, build, LOSSES.keys() | MIXERS.keys())


def register_miner(name: str, build: Callable[[], Miner]) -> None:
    _register(MINERS, "miner", name, build, set(MINERS))


def loss_terms(spec: str) -> list[str]:
    """The terms of a loss spec, checked: registered, distinct, one ranking loss at most, at least
    one loss, and mixers only with a ranking loss."""
    terms = spec.split("+") if isinstance(spec, str) else []
    known = f"{', '.join(LOSSES)} (losses), {', '.join(MIXERS)} (mixer{'s' if len(MIXERS) > 1 else ''})"
    unknown = [t for t in terms if t not in LOSSES and t not in MIXERS]
    if not terms or unknown:
        raise CopyseekError(f"loss {spec!r}: unknown term {', '.join(map(repr, unknown)) or repr(spec)}; terms: {known}")
    if len(set(terms)) != len(terms):
        raise CopyseekError(f"loss {spec!r}: each term once")
    ranking = [t for t in terms if t in LOSSES and LOSSES[t].role == "ranking"]
    if not [t for t in terms if t in LOSSES]:
        raise CopyseekError(f"loss {spec!r} needs one of {', '.join(LOSSES)}")
    if len(ranking) > 1:
        raise CopyseekError(f"loss {spec!r}: use one ranking loss, not {' and '.join(ranking)}")
    if not ranking and [t for t in terms if t in MIXERS]:
        raise CopyseekError(f"loss {spec!r}: a mixer mixes similarities for a ranking loss ({', '.join(n for n, e in LOSSES.items() if e.role == 'ranking')}); add one")
    return terms


def check_miner(name: str) -> str:
    if name not in MINERS:
        raise CopyseekError(f"miner must be one of {', '.join(MINERS)}, got {name!r}")
    return name


def build_loss(config: "TrainConfig") -> nn.Module:
    """The loss named by config.loss with the config's hyper-parameters: the ranking loss (with the
    mixers and config.miner), plus the teacher losses; with both, the ranking loss weighs
    config.recall_weight."""
    terms = loss_terms(config.loss)
    mixers = [MIXERS[t](config) for t in terms if t in MIXERS]
    if len(mixers) > 1:
        raise CopyseekError(f"loss {config.loss!r}: one mixer at most")
    miner = MINERS[check_miner(config.miner)]()
    losses = [(t, LOSSES[t].build(config, mixers[0] if mixers else None, miner)) for t in terms if t in LOSSES]
    if len(losses) == 1:
        return losses[0][1]
    return WeightedSum([(config.recall_weight if LOSSES[t].role == "ranking" else 1.0, module) for t, module in losses])
