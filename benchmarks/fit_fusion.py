"""Fit the fused pipeline's logistic weights (copyseek/match/fusion.py) on a training benchmark.

The training benchmarks must be built from photos disjoint from every evaluation benchmark, e.g.
the photos an evaluation benchmark held out, with several seeds for more pairs:

    copyseek bench build --images ../shared/images --out bench/eval --holdout 0.3
    copyseek bench build --images bench/eval/holdout.txt --out bench/fusion-train --references 60 \
        --copied 40 --copies 70 --distractor-queries 35 --background 30 --seed 7
    for seed in 8 9; do copyseek bench build --images bench/eval/holdout.txt --out bench/fusion-train$seed \
        --references 70 --copied 50 --copies 100 --distractor-queries 40 --background 30 --seed $seed; done
    copyseek bench build --images bench/eval/holdout.txt --out bench/fusion-train10 --references 100 \
        --copied 70 --copies 140 --distractor-queries 20 --background 30 --seed 10
    .venv/bin/python benchmarks/fit_fusion.py bench/fusion-train bench/fusion-train8 bench/fusion-train9 \
        bench/fusion-train10

With `--pair-matching` the weights are for a local branch that takes tentative matches within the
pair (FITTED_PAIR_WEIGHTS, its inliers counted beyond CHANCE_PAIR_INLIERS). `--indexes DIR` keeps
each benchmark's fused index in DIR (reused by later runs: only the matching is redone).
With `--local-descriptor mkd` (or any other) the weights are fitted for fused indexes whose local
branch uses that descriptor (FITTED_WEIGHTS in fusion.py); with `--normalize-with collection`, for
offsets taken against the background set and the collection's own references (not shipped: fusion.py has
no weights for them yet). Fits one set of weights on the pairs of all benchmarks together and prints them (normalised and
raw) to paste into fusion.py, with the training muAP of each benchmark, and the muAP of each
benchmark under weights fitted on the others (leave-one-benchmark-out), a check of overfitting.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
from pathlib import Path

import numpy as np

from copyseek.eval.metrics import evaluate
from copyseek.io.csvfiles import Prediction, read_ground_truth
from copyseek.match.fusion import FEATURES, FusedScorer, fit_weights
from copyseek.match.matcher import NORMALIZE_WITH, MatchOptions, make_scorer, match
from copyseek.match.scoring import QueryBatch
from copyseek.store.index import Index


def collect(
    index: Index, bench: Path, background: Path | None, normalize_with: str = "background", pair_matching: bool = False
) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Evidence of every candidate pair of every query: (query ids, rows per query, evidence per query)."""
    options = MatchOptions(k=1000, background=background, normalize_with=normalize_with, pair_matching=pair_matching)
    scorer = make_scorer(index, options, progress=True)
    if not isinstance(scorer, FusedScorer):
        raise SystemExit("the index is not a fused one")
    queries: list[str] = []
    collected: list[tuple[np.ndarray, np.ndarray]] = []

    def record(batch: QueryBatch):
        queries.extend(batch.ids)
        collected.extend(scorer.evidence(batch))
        return scorer(batch)

    match(index, bench / "queries", options, scorer=record, progress=True)
    return queries, [rows for rows, _ in collected], [ev for _, ev in collected]


Pairs = tuple[np.ndarray, np.ndarray, list[Prediction]]  # evidence (m, 3), is_copy (m,), unscored pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", type=Path, nargs="+", help="training benchmarks (copyseek bench build)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, help="evidence file: written after collecting, read if it exists")
    parser.add_argument(
        "--local-descriptor", default="rootsift", help="the local branch's descriptor the weights are for (default rootsift)"
    )
    parser.add_argument(
        "--normalize-with", choices=NORMALIZE_WITH, default="background",
        help="what the normalised weights' offsets are taken against (MatchOptions.normalize_with; default background)",
    )
    parser.add_argument("--pair-matching", action="store_true", help="fit for tentative matches within the pair (MatchOptions.pair_matching)")
    parser.add_argument("--indexes", type=Path, help="keep each benchmark's fused index here, reused by later runs")
    args = parser.parse_args()
    collected = load_or_collect(args)
    for label in ("normalised", "raw"):
        per_bench = {bench: labelled_pairs(collected[bench][label], read_ground_truth(bench / "gt.csv")) for bench in args.benches}
        x = np.concatenate([ev for ev, _, _ in per_bench.values()])
        y = np.concatenate([is_copy for _, is_copy, _ in per_bench.values()])
        weights = fit_weights(x, y)
        print(f"\n{label}: {len(y)} pairs, {int(y.sum())} copies; features {FEATURES}")
        print(f"  FusionWeights({weights.bias:.3f}, ({', '.join(f'{w:.3f}' for w in weights.weights)}))")
        for bench, pairs in per_bench.items():
            others = [per_bench[b] for b in per_bench if b != bench]
            line = f"  {bench}: training muAP / R@P90 {scores(pairs, weights, bench)}"
            if others:
                held_out = fit_weights(np.concatenate([o[0] for o in others]), np.concatenate([o[1] for o in others]))
                line += f"; fitted on the others {scores(pairs, held_out, bench)}"
            print(line)


def labelled_pairs(collected: tuple, gt) -> Pairs:
    """Evidence, copy labels and (query, reference) pairs of one benchmark's candidates."""
    ids, queries, rows, evidence = collected
    pairs = [Prediction(q, ids[r], 0.0) for q, rs in zip(queries, rows) for r in rs]
    is_copy = np.array([(p.query_id, p.reference_id) in gt.pairs for p in pairs], bool)
    return np.concatenate(evidence), is_copy, pairs


def scores(pairs: Pairs, weights, bench: Path) -> str:
    evidence, _, unscored = pairs
    predictions = [Prediction(p.query_id, p.reference_id, float(s)) for p, s in zip(unscored, weights.probability(evidence))]
    metrics = evaluate(predictions, read_ground_truth(bench / "gt.csv"))
    return f"{metrics.micro_ap:.4f} / {metrics.recall_at_p90:.4f}"


def load_or_collect(args: argparse.Namespace) -> dict[Path, dict[str, tuple]]:
    """bench -> label -> (reference ids by row, query ids, candidate rows per query, evidence per query).
    The cache keeps each benchmark's evidence under the settings it was collected with (local
    descriptor, offsets), so a run with other settings collects its own."""
    cached = pickle.loads(args.cache.read_bytes()) if args.cache and args.cache.exists() else {}
    settings = (args.local_descriptor, args.normalize_with) + (("pair",) if args.pair_matching else ())
    for bench in args.benches:
        if (bench, *settings) in cached:
            continue
        with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
            folder = args.indexes / f"{bench.name}-{args.local_descriptor}" if args.indexes else Path(scratch) / "idx"
            with Index.open_or_create(folder, "fused", {"local": {"descriptor": args.local_descriptor}}) as index:
                index.add(bench / "references", progress=True)
                cached[bench, *settings] = {
                    label: (index.ids, *collect(index, bench, background, args.normalize_with, args.pair_matching))
                    for label, background in (("normalised", bench / "background"), ("raw", None))
                }
        if args.cache:
            args.cache.write_bytes(pickle.dumps(cached))
    return {bench: cached[(bench, *settings)] for bench in args.benches}


if __name__ == "__main__":
    main()
