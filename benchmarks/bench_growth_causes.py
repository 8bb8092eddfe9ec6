"""Why accuracy falls as the collection grows: the measurements behind BENCHMARKS.md issue 13
(session 10), on the indexes that `benchmarks/bench_growth.py` grows.

    # 1. each evidence's share of what true pairs lose between two collection sizes (fused indexes)
    .venv/bin/python benchmarks/bench_growth_causes.py evidence bench/seed1 --small idx200 --large idx1k \\
        --small-predictions pred-200.csv --large-predictions pred-1000.csv --queries 30
    # 2. the background offset against the collection offset (any index with the global branch)
    .venv/bin/python benchmarks/bench_growth_causes.py offsets bench/seed1 --index idx1k
    # 3. the local branch alone, collection-wide tentative matches against matches within the pair
    .venv/bin/python benchmarks/bench_growth_causes.py local bench/seed1 --index idx200 idx1k
    # 4. the fused pipeline (+sn) with each of the two local matchings (fused indexes)
    .venv/bin/python benchmarks/bench_growth_causes.py fused bench/seed1 --index idx200 idx1k idx10k \
        --predictions-dir preds
    # 5. what the spare photos' reuse costs, from saved predictions (bench_growth.py's recipe)
    .venv/bin/python benchmarks/bench_growth_causes.py sources bench/seed1 --predictions preds/*.csv \
        --distractor-photos bench/std/holdout.txt
    # 6. what the drop is made of: true pairs scored lower, or new false matches (saved predictions)
    .venv/bin/python benchmarks/bench_growth_causes.py decompose bench/seed1 --small pred-200.csv --large pred-10k.csv
    # 7. the fused pipeline (+sn) listing every version of a photo, or its best only
    .venv/bin/python benchmarks/bench_growth_causes.py versions bench/seed1 --index idx200 idx1k idx10k [--neighbours]

`evidence` re-matches the `--queries` copy queries whose true pair's score fell most between the
two prediction files and prints the mean change of each evidence's contribution (fused weight x
change) to their true pairs' log-odds, then, for the same true pairs and the three best-scored
non-copies of each query on the small index, the inliers verified with the collection's
neighbours on both indexes and within the pair (`LocalBranch.verify_pair`). A smaller index of the
same references can be made from a larger one with `Index.remove` and `Index.compact`.

`sources` prints, for prediction files of growth runs, the muAP with every distractor and with only
each query's best distractor per source photo (each spare photo comes back many times among the
distractors: the difference is what that reuse costs), and the top false matches' source photos.

`decompose` mixes two prediction files of the same queries at two collection sizes: the larger
collection's muAP with its true pairs scored as in the smaller one (what the new false matches
cost), with its false matches as in the smaller one (what the true pairs' lower scores and lost
pairs cost), and with its false matches to distractor references left out.

`versions` matches the queries with local matching within the pair (with `--neighbours`: from the
collection-wide neighbours, `match`'s default), once listing every version and once with
`MatchOptions.collapse_versions` (each query's best reference of every group of
versions only: the spare photos come back many times among the distractors, light edits of each
other, and a look-alike of a query's scene then fills its top 10).

`fused` matches the queries once per local matching (`MatchOptions.pair_matching`, each with its
shipped weights), describing each query and crop once for both (the global branch's embeddings
are memoised by content), and times the local branch's search apart.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np

from copyseek.bench.distractors import DISTRACTOR_EDITS, DistractorRecipe, distractor_index, one_per_source, read_photo_list
from copyseek.bench.run import benchmark_paths
from copyseek.eval.metrics import evaluate
from copyseek.io.csvfiles import read_ground_truth, read_predictions, write_predictions
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded
from copyseek.match.fusion import CHANCE_INLIERS, FEATURES, FusedScorer
from copyseek.match.matcher import NORMALIZE_WITH, MatchOptions, make_scorer, match
from copyseek.store.index import Index


def report(label: str, index: Index, bench: Path, options: MatchOptions, scorer=None, extra=lambda: "", predictions: Path | None = None) -> None:
    """Match the benchmark's queries, print muAP / recall at P90 / threshold at P90 (then what
    `extra()` says once they are matched)."""
    paths = benchmark_paths(bench)
    result = match(index, paths["queries"], options, scorer=scorer, progress=False, on_skip=lambda f, r: None)
    if predictions is not None:
        write_predictions(predictions, result.predictions)
    metrics = evaluate(result.predictions, read_ground_truth(paths["gt"]))
    print(f"| {label} | {len(index):,} | {metrics.micro_ap:.4f} | {metrics.recall_at_p90:.4f} | {metrics.threshold_at_p90}{extra()} |", flush=True)


def offsets(args: argparse.Namespace) -> None:
    print("| offset over | references | muAP | recall@P90 | threshold at P90 |\n|---|---:|---:|---:|---:|")
    for path in args.index:
        with Index.open(path) as index:
            for how in NORMALIZE_WITH:
                options = MatchOptions(background=benchmark_paths(args.bench)["background"], normalize_with=how)
                report(how, index, args.bench, options)


def local(args: argparse.Namespace) -> None:
    print("| local branch alone, tentative matches | references | muAP | recall@P90 | threshold at P90 |\n|---|---:|---:|---:|---:|")
    for path in args.index:
        with Index.open(path) as index:
            for within_pair in (False, True):
                report(MATCHINGS[within_pair], index, args.bench, MatchOptions(pair_matching=within_pair), scorer=lambda batch: batch.candidates["local"])


MATCHINGS = {False: "collection-wide neighbours", True: "within the pair"}


class SharedEmbeddings:
    """Stands in for a global branch's `embed`, memoised by image content: matching the same
    queries once per local matching then describes each query and crop once."""

    def __init__(self, branch):
        self.embed, self.cache = branch.embed, {}
        branch.embed = self

    def __call__(self, images, **kwargs):
        key = hashlib.sha1(repr(sorted(kwargs.items())).encode())
        for image in images:
            key.update(str(np.shape(image)).encode() + np.ascontiguousarray(image).tobytes())
        if key.digest() not in self.cache:
            self.cache[key.digest()] = self.embed(images, **kwargs)
        return self.cache[key.digest()]


class TimedSearch:
    """Stands in for a searcher's `search`, adding up its wall seconds."""

    def __init__(self, searcher):
        self.search, self.seconds = searcher.search, 0.0
        searcher.search = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.search(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def fused(args: argparse.Namespace) -> None:
    print("| local matching | references | muAP | recall@P90 | threshold at P90 | local search ms/query |\n|---|---:|---:|---:|---:|---:|")
    background = benchmark_paths(args.bench)["background"]
    queries = len(find_images(benchmark_paths(args.bench)["queries"])[0])
    for path in args.index:
        with Index.open(path) as index:
            SharedEmbeddings(index.branches["global"])
            timed = TimedSearch(index.searchers()["local"])
            for within_pair in (False, True):
                timed.seconds = 0.0
                predictions = args.predictions_dir / f"pred-{path.name}-{'pair' if within_pair else 'neighbours'}.csv" if args.predictions_dir else None
                report(MATCHINGS[within_pair], index, args.bench, MatchOptions(background=background, pair_matching=within_pair),
                       extra=lambda: f" | {1000 * timed.seconds / queries:.0f}", predictions=predictions)


def versions(args: argparse.Namespace) -> None:
    print("| versions | references | muAP | recall@P90 | threshold at P90 |\n|---|---:|---:|---:|---:|")
    background = benchmark_paths(args.bench)["background"]
    for path in args.index:
        with Index.open(path) as index:
            SharedEmbeddings(index.branches["global"])
            for collapse in (False, True):
                options = MatchOptions(background=background, pair_matching=not args.neighbours, collapse_versions=collapse)
                report("best of each group" if collapse else "every version", index, args.bench, options)


def sources(args: argparse.Namespace) -> None:
    ground_truth = read_ground_truth(benchmark_paths(args.bench)["gt"])
    photos = read_photo_list(args.distractor_photos)
    recipe = DistractorRecipe(args.distractor_edits, args.seed)
    print("| predictions | muAP | muAP, one distractor per source photo | source photos of the 10 highest false matches |\n|---|---:|---:|---|")
    for path in args.predictions:
        predictions = read_predictions(path)
        deduplicated = evaluate(one_per_source(predictions, recipe, len(photos)), ground_truth).micro_ap
        wrong = sorted((p for p in predictions if (p.query_id, p.reference_id) not in ground_truth.pairs), key=lambda p: -p.score)[:10]
        made_from = [distractor_source(p.reference_id, photos, recipe) for p in wrong]
        named = ", ".join(f"{name} x{made_from.count(name)}" for name in dict.fromkeys(made_from))
        print(f"| {path.name} | {evaluate(predictions, ground_truth).micro_ap:.4f} | {deduplicated:.4f} | {named} |")


def decompose(args: argparse.Namespace) -> None:
    ground_truth = read_ground_truth(benchmark_paths(args.bench)["gt"])

    def split(path: Path) -> tuple[list, list]:
        predictions = read_predictions(path)
        is_copy = [(p.query_id, p.reference_id) in ground_truth.pairs for p in predictions]
        return [p for p, c in zip(predictions, is_copy) if c], [p for p, c in zip(predictions, is_copy) if not c]

    def muap(predictions: list) -> str:
        return f"{evaluate(predictions, ground_truth).micro_ap:.4f}"

    (small_true, small_false), (large_true, large_false) = split(args.small), split(args.large)
    no_distractors = [p for p in large_false if distractor_index(p.reference_id) is None]
    print("| small | large | large, true pairs as in small | large, false matches as in small | "
          "large without false matches to distractors | true pairs found small / large |\n|---:|---:|---:|---:|---:|---:|")
    print(f"| {muap(small_true + small_false)} | {muap(large_true + large_false)} | {muap(small_true + large_false)} | "
          f"{muap(large_true + small_false)} | {muap(large_true + no_distractors)} | {len(small_true)} / {len(large_true)} |")


def distractor_source(reference_id: str, photos: list[Path], recipe: DistractorRecipe) -> str:
    """What a reference is made from: 'benchmark', 'procedural' or the distractor's photo file name."""
    i = distractor_index(reference_id)
    if i is None:
        return "benchmark"
    source = recipe.photo_of(i, len(photos))
    return "procedural" if source is None else photos[source].name


def fallen_queries(small: Path, large: Path, ground_truth, n: int) -> list[str]:
    """The n copy queries whose true pair's score fell most from `small` to `large` predictions
    (a pair missing from `large` counts as fallen furthest)."""
    def true_scores(path: Path) -> dict:
        return {(p.query_id, p.reference_id): p.score for p in read_predictions(path) if (p.query_id, p.reference_id) in ground_truth.pairs}

    before, after = true_scores(small), true_scores(large)
    fall = sorted(before, key=lambda pair: after.get(pair, -np.inf) - before[pair])
    return list(dict.fromkeys(query for query, _ in fall))[:n]


def pair_evidence(index: Index, files: list[ImageFile], bench: Path) -> dict[str, tuple[list, np.ndarray]]:
    """query id -> (candidate reference ids, (m, 5) fused evidence), background offsets."""
    options = MatchOptions(k=1000, background=benchmark_paths(bench)["background"])
    scorer = make_scorer(index, options, progress=False)
    if not isinstance(scorer, FusedScorer):
        raise SystemExit(f"{index.path} is not a fused index")
    found = {}

    def record(batch):
        for query, (rows, evidence) in zip(batch.ids, scorer.evidence(batch)):
            found[query] = ([index.ids[r] for r in rows], evidence)
        return scorer(batch)

    match(index, files, options, scorer=record, progress=True)
    return found


def inliers(excess: float) -> int:
    """Inliers from the local evidence log(1 + inliers beyond CHANCE_INLIERS) (0 when it is 0)."""
    return 0 if excess <= 0 else int(round(np.expm1(excess))) + CHANCE_INLIERS


def decoded(file: ImageFile, side: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of one image file, decoded as matching does (longest side `side`)."""
    return next(item.pixels for item in iter_decoded([file], side, 0) if isinstance(item, DecodedImage))


def evidence(args: argparse.Namespace) -> None:
    paths = benchmark_paths(args.bench)
    ground_truth = read_ground_truth(paths["gt"])
    chosen = fallen_queries(args.small_predictions, args.large_predictions, ground_truth, args.queries)
    files = [f for f in find_images(paths["queries"])[0] if f.path.stem in chosen]
    with Index.open(args.large) as index:
        large = pair_evidence(index, files, args.bench)
    with Index.open(args.small) as index:
        small = pair_evidence(index, files, args.bench)
        weights = np.asarray(make_scorer(index, MatchOptions(background=paths["background"]), progress=False).weights.weights)
        branch = index.branches["local"]
        references = {f.path.stem: f for f in find_images(paths["references"])[0]}
        changes, rows = [], []
        for file in files:
            query = file.path.stem
            (small_ids, small_ev), (large_ids, large_ev) = small[query], large[query]
            truth = [r for q, r in ground_truth.pairs if q == query]
            for reference in truth:
                if reference in small_ids and reference in large_ids:
                    changes.append((large_ev[large_ids.index(reference)] - small_ev[small_ids.index(reference)]) * weights)
            ranked = np.argsort(-(small_ev @ weights))
            non_copies = [small_ids[i] for i in ranked if small_ids[i] not in truth][:3]
            features = branch.extract([decoded(file, branch.decode_side)], query=True)[0]
            for reference in truth + non_copies:
                alone = branch.extract([decoded(references[reference], branch.decode_side)])[0]
                within = branch.verify_pair(features, alone).inliers
                at = [inliers(ev[ids.index(reference), 2]) if reference in ids else None for ids, ev in ((small_ids, small_ev), (large_ids, large_ev))]
                rows.append((query, reference, reference in truth, *at, within))
    print(f"\nmean change of each evidence's contribution to {len(changes)} true pairs' log-odds (weight x change):\n")
    print("| " + " | ".join(FEATURES) + " |\n|" + "---:|" * len(FEATURES))
    print("| " + " | ".join(f"{v:+.3f}" for v in np.mean(changes, axis=0)) + " |")
    print(f"\nverified inliers ({args.small.name} / {args.large.name} collection-wide, within the pair):\n")
    print("| query | reference | copy | small index | large index | within the pair |\n|---|---|---|---:|---:|---:|")
    for query, reference, is_copy, at_small, at_large, within in rows:
        print(f"| {query} | {reference} | {'yes' if is_copy else 'no'} | {at_small} | {at_large} | {within} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("offsets", "local", "fused", "versions"):
        p = commands.add_parser(name)
        p.add_argument("bench", type=Path)
        p.add_argument("--index", type=Path, nargs="+", required=True)
        if name == "fused":
            p.add_argument("--predictions-dir", type=Path, help="write each run's predictions here")
        if name == "versions":
            p.add_argument("--neighbours", action="store_true", help="local matching from the collection-wide neighbours")
    p = commands.add_parser("sources")
    p.add_argument("bench", type=Path)
    p.add_argument("--predictions", type=Path, nargs="+", required=True, help="prediction CSVs of growth runs on BENCH")
    p.add_argument("--distractor-photos", type=Path, required=True, help="the growth run's --distractor-photos")
    p.add_argument("--distractor-edits", choices=DISTRACTOR_EDITS, default="light")
    p.add_argument("--seed", type=int, default=13, help="the growth run's --seed")
    p = commands.add_parser("decompose")
    p.add_argument("bench", type=Path)
    p.add_argument("--small", type=Path, required=True, help="predictions on BENCH at the smaller collection")
    p.add_argument("--large", type=Path, required=True, help="predictions on BENCH at the larger collection")
    p = commands.add_parser("evidence")
    p.add_argument("bench", type=Path)
    p.add_argument("--small", type=Path, required=True, help="fused index of the smaller collection")
    p.add_argument("--large", type=Path, required=True, help="fused index of the larger collection")
    p.add_argument("--small-predictions", type=Path, required=True)
    p.add_argument("--large-predictions", type=Path, required=True)
    p.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    commands = {"offsets": offsets, "local": local, "fused": fused, "versions": versions, "sources": sources,
                "decompose": decompose, "evidence": evidence}
    commands[args.command](args)


if __name__ == "__main__":
    main()
