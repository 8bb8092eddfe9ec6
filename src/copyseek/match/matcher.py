"""Match a folder of queries against an index and produce DISC21 predictions."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.describe.base import Candidates, Features
from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import Prediction
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded
from copyseek.match.normalize import BackgroundNormalizer, background_vectors
from copyseek.progress import progress_bar
from copyseek.store.index import Index, extract_all


@dataclass
class MatchOptions:
    """k: predictions per query at most. candidates: per branch, scored before keeping k.
    background: folder of photos known not to be copies, for score normalisation, with beta and n
    as in normalize.py."""

    k: int = 10
    candidates: int = 30
    background: str | os.PathLike | None = None
    beta: float = 1.0
    n_background: int = 3
    batch_size: int = 16
    workers: int = 2

    def __post_init__(self) -> None:
        if self.k < 1:
            raise CopyseekError(f"k must be >= 1, got {self.k}")


@dataclass
class MatchResult:
    predictions: list[Prediction]
    queries: int = 0
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.queries / self.seconds:.1f} queries/s)" if self.seconds > 0 else ""
        return f"matched {self.queries} queries{rate}, {len(self.predictions)} predictions, skipped {len(self.skipped)}"


@dataclass
class QueryBatch:
    """What a pipeline's scorer sees of a batch of queries: their ids and pixels, every branch's
    features and every branch's candidates."""

    ids: list[str]
    images: list[np.ndarray]
    features: dict[str, list[Features]]
    candidates: dict[str, list[Candidates]]


Scorer = Callable[[QueryBatch], list[Candidates]]
"""Turns a batch's candidates from every branch into one scored list per query."""

ScorerFactory = Callable[[Index, "BackgroundNormalizer | None"], Scorer]
"""Makes a pipeline's scorer for an index, given the background normaliser (or None)."""


def match(
    index: Index,
    queries: str | os.PathLike | Iterable[ImageFile],
    options: MatchOptions | None = None,
    *,
    progress: bool = True,
    on_skip: Callable[[ImageFile, str], None] | None = None,
    scorer: Scorer | None = None,
) -> MatchResult:
    """Predictions (query_id, reference_id, score), at most options.k per query, best first.

    scorer: replaces the pipeline's own scoring rule (e.g. to study or fit it)."""
    options = options or MatchOptions()
    start = time.perf_counter()
    files = find_images(queries)[0] if isinstance(queries, (str, os.PathLike)) else list(queries)
    if len(index) == 0:
        raise CopyseekError(f"the index {index.path} holds no references yet")
    scorer = scorer or make_scorer(index, options, progress)
    ids = index.ids
    searchers = index.searchers()
    result = MatchResult([])
    on_skip = on_skip or (lambda f, r: print(f"skipped {f.path}: {r}", file=sys.stderr))
    decode_side = max(b.decode_side for b in index.branches.values())
    batch: list[DecodedImage] = []
    with progress_bar(len(files), "matching", disable=not progress) as bar:

        def flush() -> None:
            kept, features = [], {name: [] for name in index.branches}
            for image, per_branch in zip(batch, extract_all(index.branches, batch, query=True)):
                if isinstance(per_branch, str):
                    result.skipped.append((image.file, per_branch))
                    on_skip(image.file, per_branch)
                    continue
                kept.append(image)
                for name in index.branches:
                    features[name].append(per_branch[name])
            candidates = {name: searchers[name].search(features[name], max(options.k, options.candidates)) for name in index.branches}
            queries = QueryBatch([i.file.id for i in kept], [i.pixels for i in kept], features, candidates)
            for image, scored in zip(kept, scorer(queries)):
                order = np.argsort(-scored.scores, kind="stable")[: options.k]
                result.predictions += [
                    Prediction(image.file.id, ids[scored.rows[j]], float(scored.scores[j])) for j in order
                ]
            result.queries += len(kept)
            bar.update(len(batch))
            batch.clear()

        for item in iter_decoded(files, decode_side, options.workers):
            if isinstance(item, DecodedImage):
                batch.append(item)
                if len(batch) == options.batch_size:
                    flush()
            else:
                result.skipped.append((item[0], item[1].reason))
                on_skip(item[0], item[1].reason)
                bar.update(1)
        if batch:
            flush()
    result.seconds = time.perf_counter() - start
    return result


def make_scorer(index: Index, options: MatchOptions, progress: bool) -> Scorer:
    """The scoring rule of the index's pipeline, with background normalisation when asked for."""
    normalizer = None
    if options.background is not None:
        if "global" not in index.branches:
            raise CopyseekError("score normalisation (--background) needs a pipeline with the global branch")
        vectors = background_vectors(
            index.branches["global"], options.background, Path(index.path) / "background", options.workers, progress
        )
        normalizer = BackgroundNormalizer(vectors, options.beta, options.n_background)
    if index.pipeline not in SCORERS:
        raise CopyseekError(f"no scorer is registered for pipeline {index.pipeline!r}")
    return SCORERS[index.pipeline](index, normalizer)


def normalized_global(batch: QueryBatch, normalizer: BackgroundNormalizer | None) -> list[Candidates]:
    """Global candidates, minus each query's background offset when normalising."""
    found = batch.candidates["global"]
    if normalizer is None or not found:
        return found
    offsets = normalizer.offsets(np.stack([f["vector"] for f in batch.features["global"]]))
    return [Candidates(c.rows, c.scores - o, c.extra) for c, o in zip(found, offsets)]


def global_scorer(index: Index, normalizer: BackgroundNormalizer | None) -> Scorer:
    """Score = global similarity, minus the query's background offset when normalising."""
    return lambda batch: normalized_global(batch, normalizer)


def single_branch_scorer(branch: str) -> ScorerFactory:
    """Score = the branch's own score (for branches without a global vector to normalise)."""

    def make(index: Index, normalizer: BackgroundNormalizer | None) -> Scorer:
        return lambda batch: batch.candidates[branch]

    return make


def fused_scorer(index: Index, normalizer: BackgroundNormalizer | None) -> Scorer:
    """Global, local and region-global evidence in one calibrated score (match/fusion.py)."""
    from copyseek.match.fusion import FusedScorer

    return FusedScorer(index, normalizer)


SCORERS: dict[str, ScorerFactory] = {
    "global": global_scorer,
    "local": single_branch_scorer("local"),
    "fused": fused_scorer,
    "pdq": single_branch_scorer("pdq"),
    "asmk": single_branch_scorer("how"),
}
"""Pipeline name -> its scoring rule (given the normaliser, or None)."""
