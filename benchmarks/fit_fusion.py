"""Fit the fused pipeline's logistic weights (copyseek/match/fusion.py) on a training benchmark.

The training benchmark must be built from photos disjoint from every evaluation benchmark, e.g.
the photos an evaluation benchmark held out:

    copyseek bench build --images ../shared/images --out bench/eval --holdout 0.3
    copyseek bench build --images bench/eval/holdout.txt --out bench/fusion-train --references 60 \
        --copied 40 --copies 70 --distractor-queries 35 --background 30 --seed 7
    .venv/bin/python benchmarks/fit_fusion.py bench/fusion-train

Prints the weights (normalised and raw) to paste into fusion.py, and the training muAP of each.
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
from copyseek.match.matcher import MatchOptions, QueryBatch, make_scorer, match
from copyseek.store.index import Index


def collect(index: Index, bench: Path, background: Path | None) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Evidence of every candidate pair of every query: (query ids, rows per query, evidence per query)."""
    options = MatchOptions(k=1000, background=background)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, help="evidence file: written after collecting, read if it exists")
    args = parser.parse_args()
    gt = read_ground_truth(args.bench / "gt.csv")
    evidence_sets = load_or_collect(args)
    for label, (ids, queries, rows, evidence) in evidence_sets.items():
        x = np.concatenate(evidence)
        y = np.concatenate([[(q, ids[r]) in gt.pairs for r in rs] for q, rs in zip(queries, rows)])
        weights = fit_weights(x, y)
        predictions = [
            Prediction(q, ids[r], float(p))
            for q, rs, ev in zip(queries, rows, evidence)
            for r, p in zip(rs, weights.probability(ev))
        ]
        metrics = evaluate(predictions, gt)
        print(f"\n{label}: {len(y)} pairs, {int(y.sum())} copies; features {FEATURES}")
        print(f"  FusionWeights({weights.bias:.3f}, ({', '.join(f'{w:.3f}' for w in weights.weights)}))")
        print(f"  training muAP {metrics.micro_ap:.4f}, recall@P90 {metrics.recall_at_p90:.4f}")


def load_or_collect(args: argparse.Namespace) -> dict[str, tuple[list[str], list[str], list[np.ndarray], list[np.ndarray]]]:
    """label -> (reference ids by row, query ids, candidate rows per query, evidence per query)."""
    if args.cache and args.cache.exists():
        return pickle.loads(args.cache.read_bytes())
    sets = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        with Index.create(Path(scratch) / "idx", "fused") as index:
            index.add(args.bench / "references", progress=True)
            for label, background in (("normalised", args.bench / "background"), ("raw", None)):
                sets[label] = (index.ids, *collect(index, args.bench, background))
    if args.cache:
        args.cache.write_bytes(pickle.dumps(sets))
    return sets


if __name__ == "__main__":
    main()
