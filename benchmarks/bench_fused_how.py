"""The fused pipeline with HOW (fused-how) against today's fused default, side by side on the same
evidence: HOW's ASMK similarity as a sixth evidence, and HOW's top references as extra candidates.

    .venv/bin/python benchmarks/bench_fused_how.py --train bench/fusion-train bench/fusion-train8 \
        bench/fusion-train9 bench/fusion-train10 --eval bench/std bench/seed1 bench/e2 bench/e3 bench/e4 \
        --cache fused-how.pkl

Every benchmark is indexed once with the fused-how pipeline (global + local + HOW branches, the
shipped models) and matched once with its background set (normalised scores, as fused+sn). Per
query the crops are searched once (with today's skip rule: the shipped fused weights), then the
evidence is computed twice from the same crops: for today's candidates (global top 30, local,
crops; `how_candidates=0`) and with HOW's top `--how-candidates` added. The variants:
  - fused (shipped weights): today's fused+sn score (the five evidence, FITTED_WEIGHTS),
  - fused, refitted: the five evidence refitted on the training benchmarks (control for the fit),
  - fused + HOW evidence: six evidence fitted on the same training benchmarks,
  - fused + HOW evidence + candidates: the same with HOW's top references among the candidates.
Weights are fitted on the --train benchmarks only (built from the photos the evaluation benchmarks
hold out, docs/fusion.md); with --leave-one-out they are also fitted on the other --eval benchmarks
(a check with more, and in-domain, pairs). Predictions: the top 10 per query, as `copyseek match`.
Prints the fitted weights and one markdown table (muAP / R@P90 per benchmark and the mean).
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copyseek.eval.metrics import evaluate
from copyseek.io.csvfiles import Prediction, read_ground_truth
from copyseek.match.fusion import FITTED_WEIGHTS, FusedScorer, FusionWeights, fit_weights
from copyseek.match.matcher import MatchOptions, make_scorer, match
from copyseek.match.scoring import QueryBatch, normalized_global
from copyseek.describe.base import Candidates
from copyseek.store.index import Index

PREDICTIONS_PER_QUERY = 10


@dataclass
class Collected:
    """One benchmark's candidates and evidence, per query: today's candidates (`rows`, `evidence`
    (m, 6)) and with HOW's top references added (`rows_how`, `evidence_how`)."""

    ids: list[str]  # reference id of each index row
    queries: list[str]
    rows: list[np.ndarray]
    evidence: list[np.ndarray]
    rows_how: list[np.ndarray]
    evidence_how: list[np.ndarray]
    seconds: dict[str, float]  # CPU seconds: index, match
    bytes_per_reference: dict[str, float]


def collect(bench: Path, how_candidates: int, workdir: Path | None) -> Collected:
    """Index `bench`'s references with fused-how, match its queries once, and keep both evidence sets."""
    with tempfile.TemporaryDirectory(dir=workdir) as scratch, Index.create(Path(scratch) / "idx", "fused-how") as index:
        cpu = time.process_time()
        index.add(bench / "references", progress=False)
        index_cpu = time.process_time() - cpu
        options = MatchOptions(k=PREDICTIONS_PER_QUERY, background=bench / "background")
        scorer = make_scorer(index, options, progress=False)
        assert isinstance(scorer, FusedScorer)
        # today's skip rule (crops searched below probability 0.95 under the fused weights), not
        # the fused-how weights being refitted here
        scorer.given_weights = FITTED_WEIGHTS["rootsift"][0]
        out = Collected(index.ids, [], [], [], [], [], {}, index.info()["bytes_per_reference"])

        def record(batch: QueryBatch) -> list[Candidates]:
            whole = normalized_global(batch, scorer.normalizer)
            scored = []
            for q, region_best in enumerate(scorer.crop_evidence(batch)):
                rows, evidence = scorer.pair_evidence(batch, q, whole[q].rows, region_best, how_candidates=0)
                rows_how, evidence_how = scorer.pair_evidence(batch, q, whole[q].rows, region_best, how_candidates)
                out.rows.append(rows), out.evidence.append(evidence)
                out.rows_how.append(rows_how), out.evidence_how.append(evidence_how)
                scored.append(Candidates(rows, scorer.weights.log_odds(evidence)))
            out.queries.extend(batch.ids)
            return scored

        cpu = time.process_time()
        match(index, bench / "queries", options, scorer=record, progress=True)
        out.seconds = {"index": index_cpu, "match": time.process_time() - cpu}
    return out


def labels(collected: Collected, bench: Path, with_how: bool) -> tuple[np.ndarray, np.ndarray]:
    """All candidate pairs' evidence (n, 6) and copy labels (n,)."""
    gt = read_ground_truth(bench / "gt.csv")
    rows, evidence = (collected.rows_how, collected.evidence_how) if with_how else (collected.rows, collected.evidence)
    is_copy = [(q, collected.ids[r]) in gt.pairs for q, rs in zip(collected.queries, rows) for r in rs]
    return np.concatenate(evidence), np.array(is_copy, bool)


def scores(collected: Collected, bench: Path, weights: FusionWeights, with_how: bool) -> tuple[float, float]:
    """(muAP, R@P90) of the top PREDICTIONS_PER_QUERY predictions per query under `weights`."""
    rows, evidence = (collected.rows_how, collected.evidence_how) if with_how else (collected.rows, collected.evidence)
    predictions = []
    for query, rs, ev in zip(collected.queries, rows, evidence):
        log_odds = weights.log_odds(ev)
        for j in np.argsort(-log_odds, kind="stable")[:PREDICTIONS_PER_QUERY]:
            predictions.append(Prediction(query, collected.ids[rs[j]], float(log_odds[j])))
    metrics = evaluate(predictions, read_ground_truth(bench / "gt.csv"))
    return metrics.micro_ap, metrics.recall_at_p90


VARIANTS = (  # name, evidence columns fitted (None: shipped weights), HOW candidates
    ("fused (shipped weights, today)", None, False),
    ("fused, refitted (5 evidence)", 5, False),
    ("fused + HOW evidence", 6, False),
    ("fused + HOW evidence + HOW candidates", 6, True),
)


def fit(collected: dict[Path, Collected], benches: list[Path], columns: int, with_how: bool) -> FusionWeights:
    pairs = [labels(collected[b], b, with_how) for b in benches]
    return fit_weights(np.concatenate([x[:, :columns] for x, _ in pairs]), np.concatenate([y for _, y in pairs]))


def table(collected: dict[Path, Collected], evals: list[Path], weights_of) -> list[str]:
    """Markdown rows: one per variant, muAP / R@P90 per benchmark and their mean."""
    lines = []
    for name, columns, with_how in VARIANTS:
        measured = [scores(collected[b], b, weights_of(b, columns, with_how), with_how) for b in evals]
        cells = [f"{ap:.4f} / {r:.3f}" for ap, r in measured]
        mean = np.mean(measured, axis=0)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | **{mean[0]:.4f} / {mean[1]:.3f}** |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="fusion training benchmarks")
    parser.add_argument("--eval", type=Path, nargs="+", required=True, help="evaluation benchmarks")
    parser.add_argument("--how-candidates", type=int, default=10, help="HOW's top references added (last variant)")
    parser.add_argument("--leave-one-out", action="store_true", help="also fit on the other --eval benchmarks")
    parser.add_argument("--cache", type=Path, help="evidence file: written after each benchmark, read if it exists")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.leave_one_out and len(args.eval) < 2:
        parser.error("--leave-one-out needs two or more --eval benchmarks")
    collected: dict[Path, Collected] = pickle.loads(args.cache.read_bytes()) if args.cache and args.cache.exists() else {}
    for bench in [*args.train, *args.eval]:
        if bench not in collected:
            print(f"{bench} ...", file=sys.stderr, flush=True)
            collected[bench] = collect(bench, args.how_candidates, args.workdir)
            if args.cache:
                args.cache.write_bytes(pickle.dumps(collected))

    shipped = FITTED_WEIGHTS["rootsift"][0]
    fitted = {(columns, with_how): fit(collected, args.train, columns, with_how)
              for _, columns, with_how in VARIANTS if columns is not None}
    print("weights fitted on " + ", ".join(map(str, args.train)) + " (bias; g, c, e, o, m[, h]):")
    for (columns, with_how), w in fitted.items():
        print(f"  {columns} evidence{' + HOW candidates' if with_how else ''}: FusionWeights({w.bias:.3f}, "
              f"({', '.join(f'{v:.3f}' for v in w.weights)}))")

    def from_train(bench: Path, columns: int | None, with_how: bool) -> FusionWeights:
        return shipped if columns is None else fitted[(columns, with_how)]

    header = "| variant | " + " | ".join(b.name for b in args.eval) + " | mean |"
    rule = "|---" * (len(args.eval) + 2) + "|"
    print("\nmuAP / R@P90, weights fitted on the training benchmarks\n")
    print("\n".join([header, rule, *table(collected, args.eval, from_train)]))
    if args.leave_one_out:
        def from_others(bench: Path, columns: int | None, with_how: bool) -> FusionWeights:
            others = [b for b in args.eval if b != bench]
            return shipped if columns is None else fit(collected, others, columns, with_how)

        print("\nmuAP / R@P90, weights fitted on the other evaluation benchmarks (leave one out)\n")
        print("\n".join([header, rule, *table(collected, args.eval, from_others)]))
    cost = {b: collected[b] for b in args.eval}
    queries = sum(len(c.queries) for c in cost.values())
    references = sum(len(c.ids) for c in cost.values())
    print(f"\nfused-how, evaluation benchmarks: {sum(c.seconds['index'] for c in cost.values()) / references:.2f} CPU s "
          f"per reference indexed, {sum(c.seconds['match'] for c in cost.values()) / queries:.2f} CPU s per query; bytes per "
          "reference " + ", ".join(f"{k} {v:,.0f}" for k, v in next(iter(cost.values())).bytes_per_reference.items()))


if __name__ == "__main__":
    main()
