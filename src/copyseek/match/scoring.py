"""What a pipeline's scorer sees and returns: the types every scorer shares, and the simple scorers.

A scorer turns a batch of queries' candidates from every branch into one scored list per query;
`copyseek.registry.SCORERS` names each pipeline's scorer factory, `(index, normaliser) -> scorer`.
This module is below `matcher.py` (which runs scorers) and `fusion.py` (a scorer), so neither needs
the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from copyseek.describe.base import Candidates, Features
from copyseek.errors import CopyseekError
from copyseek.match.normalize import BackgroundNormalizer

if TYPE_CHECKING:
    from copyseek.store.index import Index


@dataclass
class QueryBatch:
    """What a pipeline's scorer sees of a batch of queries: their ids and pixels, every branch's
    features and every branch's candidates (one list per branch, one entry per query)."""

    ids: list[str]
    images: list[np.ndarray]
    features: dict[str, list[Features]]
    candidates: dict[str, list[Candidates]]


Scorer = Callable[[QueryBatch], list[Candidates]]
"""Turns a batch's candidates from every branch into one scored list per query."""

ScorerFactory = Callable[["Index", "BackgroundNormalizer | None"], Scorer]
"""Makes a pipeline's scorer for an index, given the background normaliser (or None)."""


def normalized_global(batch: QueryBatch, normalizer: BackgroundNormalizer | None) -> list[Candidates]:
    """Global candidates, minus each query's background offset when normalising."""
    found = batch.candidates["global"]
    if normalizer is None or not found:
        return found
    offsets = normalizer.offsets(np.stack([f["vector"] for f in batch.features["global"]]))
    return [Candidates(c.rows, c.scores - o, c.extra) for c, o in zip(found, offsets)]


def global_scorer(index: "Index", normalizer: BackgroundNormalizer | None) -> Scorer:
    """Score = global similarity, minus the query's background offset when normalising."""
    return lambda batch: normalized_global(batch, normalizer)


def branch_scorer(index: "Index", normalizer: BackgroundNormalizer | None) -> Scorer:
    """Score = the only branch's own score (one-branch pipelines without a global vector to
    normalise, e.g. local inliers or PDQ's 1 - Hamming / 256)."""
    if len(index.branches) != 1:
        raise CopyseekError(f"the branch's own score needs a one-branch pipeline, not {', '.join(index.branches)}")
    (name,) = index.branches
    return lambda batch: batch.candidates[name]
