"""Match a folder of queries against an index and produce DISC21 predictions."""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.describe.base import Searcher
from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import Prediction
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded
from copyseek.match.normalize import BackgroundNormalizer, CollectionNormalizer, background_vectors, best_of_versions
from copyseek.match.scoring import QueryBatch, Scorer
from copyseek.progress import progress_bar
from copyseek.registry import scorer_factory
from copyseek.store.index import Index, extract_all
from copyseek.validation import check_bool, check_int, check_number


NORMALIZE_WITH = ("background", "collection")


@dataclass(frozen=True)
class MatchOptions:
    """k: predictions per query at most. candidates: per branch, scored before keeping k.
    background: folder of photos known not to be copies, for score normalisation, with beta and
    n_background as in normalize.py; normalize_with: "background" (the background set alone) or
    "collection" (the background set and the index's own references, `CollectionNormalizer`,
    skipping each vector's `skip_nearest` nearest references). batch_size: queries per model call; workers: decoding threads
(0: decode in the calling thread, as benchmarks/bench_index.py does to time single queries).
    nprobe, ef_search: search-time parameters of the global branch's Faiss index (IVF lists visited,
    HNSW candidate-list length); None keeps the searcher's default (see
    `copyseek.describe.global_branch.default_nprobe`). They trade speed for recall and are not
    stored in the index. search_threads: threads one query's IVF lists are scanned with (IVF
    fast-scan indexes, the `auto` structure past 50k references; None: 1), for latency on a
    machine whose cores are otherwise idle. pair_matching: the local branch's tentative matches
    within each verified pair (True) or from the collection-wide neighbours (False); None keeps
    the index's setting (`copyseek.local.search`; the fused scorer uses the weights fitted for it).
    collapse_versions: report each query's best reference of every group of versions only (references
    whose global vectors are nearer than DUPLICATE_SIMILARITY to a better-scored one are left out
    before keeping k; needs the global branch): a bank holding many versions of one photo then
    lists the photo once per query.
    """

    k: int = 10
    candidates: int = 30
    background: str | os.PathLike | None = None
    beta: float = 1.0
    n_background: int = 3
    normalize_with: str = "background"
    skip_nearest: int = 1
    batch_size: int = 16
    workers: int = 2
    nprobe: int | None = None
    ef_search: int | None = None
    search_threads: int | None = None
    pair_matching: bool | None = None
    collapse_versions: bool = False

    def __post_init__(self) -> None:
        for name in ("k", "candidates", "n_background", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("workers", self.workers, minimum=0)
        for name in ("nprobe", "ef_search", "search_threads"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)
        if self.pair_matching is not None:
            check_bool("pair_matching", self.pair_matching)
        check_bool("collapse_versions", self.collapse_versions)
        check_number("beta", self.beta, minimum=0.0)
        check_int("skip_nearest", self.skip_nearest, minimum=0)
        if self.normalize_with not in NORMALIZE_WITH:
            raise CopyseekError(f"normalize_with must be one of {', '.join(NORMALIZE_WITH)}, got {self.normalize_with!r}")
        if self.background is not None and not isinstance(self.background, (str, os.PathLike)):
            raise CopyseekError(f"background must be a folder path, got {self.background!r}")

    def search_parameters(self) -> dict[str, int | None]:
        """Faiss's names for the search-time parameters (None: the searcher's default)."""
        return {"nprobe": self.nprobe, "efSearch": self.ef_search, "threads": self.search_threads,
                "pair_matching": self.pair_matching}


@dataclass
class MatchResult:
    predictions: list[Prediction]
    queries: int = 0
    queried: list[ImageFile] = field(default_factory=list)  # the queries matched, in order
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.queries / self.seconds:.1f} queries/s)" if self.seconds > 0 else ""
        return f"matched {self.queries} queries{rate}, {len(self.predictions)} predictions, skipped {len(self.skipped)}"


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
    searchers = index.searchers()
    set_search_parameters(searchers, options.search_parameters())
    if options.collapse_versions and "global" not in searchers:
        raise CopyseekError(
            f"collapse_versions compares references by their global vectors, and the index {index.path} has no "
            f"global branch (it has: {', '.join(searchers)})")
    scorer = scorer or make_scorer(index, options, progress)
    ids = index.ids
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
                order = np.argsort(-scored.scores, kind="stable")
                if options.collapse_versions:
                    order = order[best_of_versions(searchers["global"].reconstruct(scored.rows[order]))]
                order = order[: options.k]
                per_candidate = {key: v for key, v in scored.extra.items() if np.ndim(v) == 1}
                result.predictions += [
                    Prediction(
                        image.file.id,
                        ids[scored.rows[j]],
                        float(scored.scores[j]),
                        {key: float(v[j]) for key, v in per_candidate.items()} or None,
                    )
                    for j in order
                ]
            result.queried += [i.file for i in kept]
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


def set_search_parameters(searchers: dict[str, Searcher], values: dict[str, int | None]) -> None:
    """Hand each search-time parameter to the searchers that have it (None restores their default,
    so one run's choice does not outlive it). A value no searcher takes raises."""
    for name, value in values.items():
        takers = [s for s in searchers.values() if name in s.search_parameters()]
        if value is not None and not takers:
            raise CopyseekError(
                f"search-time parameter {name}={value} applies to none of this index's searchers "
                "(nprobe: IVF factories, efSearch: HNSW factories, threads: IVF fast-scan factories, see --factory; pair_matching: the local branch)"
            )
        for searcher in takers:
            searcher.set_search_parameters(**{name: value})


def make_scorer(index: Index, options: MatchOptions, progress: bool) -> Scorer:
    """The scoring rule of the index's pipeline, with background normalisation when asked for."""
    normalizer = None
    if options.background is not None:
        if "global" not in index.branches:
            raise CopyseekError("score normalisation (--background) needs a pipeline with the global branch")
        vectors = background_vectors(
            index.branches["global"], options.background, Path(index.path) / "background", options.workers, progress
        )
        if options.normalize_with == "collection":
            if index.pipeline != "global":
                warnings.warn(
                    f"the {index.pipeline} pipeline's weights were fitted with offsets over the background set alone: "
                    "with normalize_with='collection' its scores still rank pairs but are not calibrated", stacklevel=2)
            removed = np.array([reference is None for reference in index.ids], bool)
            normalizer = CollectionNormalizer(
                vectors, index.searchers()["global"], options.beta, options.n_background, options.skip_nearest, removed=removed)
        else:
            normalizer = BackgroundNormalizer(vectors, options.beta, options.n_background)
    return scorer_factory(index.pipeline)(index, normalizer)
