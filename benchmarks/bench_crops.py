"""The fused pipeline's crop policies side by side (match/crops.py): muAP, recall@P90, crop
descriptions per query and the scoring time they add, on one or more built benchmarks.

    .venv/bin/python benchmarks/bench_crops.py bench/std bench/seed1 --work /tmp/crops \
        --policies grid local best best-else-grid partial-else-grid boxes+grid

Each benchmark is indexed once with the fused pipeline (kept under --work and reused). The queries
are described and searched once; every policy's scorer then sees the same batches, so the table
differs only by the crops (the detector runs inside the policies that use it, timed with them).
Normalised scores (the benchmark's background set), as `fused+sn`. Prints markdown tables: per
benchmark and policy, then the mean over benchmarks, then recall per edit kind (all benchmarks
together). Times: wall and CPU (process) ms per query, the shared description and search included.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from copyseek.bench.run import PipelineResult, edit_recall_counts, recall_table
from copyseek.eval.metrics import evaluate
from copyseek.io.csvfiles import GroundTruth, Prediction, read_ground_truth
from copyseek.io.images import find_images
from copyseek.detect.runtime import CROP_DETECTOR
from copyseek.match.fusion import FusedScorer, FusionParams
from copyseek.match.matcher import MatchOptions, match
from copyseek.match.normalize import BackgroundNormalizer, background_vectors
from copyseek.store.index import Index


class PolicyRecorder:
    """A scorer that runs every policy's FusedScorer on each batch and keeps their predictions."""

    def __init__(self, scorers: dict[str, FusedScorer], k: int):
        self.scorers, self.k = scorers, k
        self.predictions: dict[str, list[Prediction]] = defaultdict(list)
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.ids: list[str] = []

    def __call__(self, batch):
        first = None
        for name, scorer in self.scorers.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            scored = scorer(batch)
            self.seconds[name] += time.perf_counter() - started
            self.cpu_seconds[name] += time.process_time() - cpu_started
            for query_id, s in zip(batch.ids, scored):
                for j in np.argsort(-s.scores, kind="stable")[: self.k]:
                    self.predictions[name].append(Prediction(query_id, self.ids[s.rows[j]], float(s.scores[j])))
            first = first or scored
        return first


def params_of(spec: str, detector: str) -> FusionParams:
    """'POLICY', or 'POLICY@N': at most N crops per query, the first in the policy's order; either
    followed by ',FIELD=VALUE' pairs setting other FusionParams, e.g. 'sure-else-grid,frame_threshold=0.7'."""
    head, *pairs = spec.split(",")
    policy, _, most = head.partition("@")
    fields = {key: json.loads(value) for key, _, value in (pair.partition("=") for pair in pairs)}
    return FusionParams(crop_policy=policy, detector=detector or None, max_crops=int(most) if most else None, **fields)


def run(bench: Path, work: Path, policies: list[str], detector: str, limit: int = 0) -> tuple[dict, dict]:
    index_dir = work / f"index-{bench.name}"
    with Index.open_or_create(index_dir, "fused") as index:
        index.add(bench / "references", progress=False)  # incremental: completes an interrupted index
        vectors = background_vectors(index.branches["global"], bench / "background", index_dir / "background", 2, False)
        normalizer = BackgroundNormalizer(vectors)
        scorers = {p: FusedScorer(index, normalizer, params_of(p, detector)) for p in policies}
        recorder = PolicyRecorder(scorers, k=10)
        recorder.ids = index.ids
        started, cpu_started = time.perf_counter(), time.process_time()
        queries = find_images(bench / "queries")[0]
        queries = queries[:: max(1, len(queries) // limit)][:limit] if limit else queries
        result = match(index, queries, MatchOptions(k=10), progress=False, scorer=recorder)
        shared = time.perf_counter() - started - sum(recorder.seconds.values())
        shared_cpu = time.process_time() - cpu_started - sum(recorder.cpu_seconds.values())
    truth = read_ground_truth(bench / "gt.csv")
    if limit:  # evaluate on the queries matched only
        kept = {q.id for q in queries}
        truth = GroundTruth(frozenset(p for p in truth.pairs if p[0] in kept), truth.queries & kept)
    rows, results = {}, []
    for p in policies:
        metrics = evaluate(recorder.predictions[p], truth)
        scorer = scorers[p]
        rows[p] = {
            "muAP": metrics.micro_ap, "R@P90": metrics.recall_at_p90,
            "crops": scorer.crops_described / result.queries, "cropped": scorer.queries_cropped / result.queries,
            "ms": 1000 * (shared + recorder.seconds[p]) / result.queries,
            "cpu ms": 1000 * (shared_cpu + recorder.cpu_seconds[p]) / result.queries,
        }
        results.append(PipelineResult(p, metrics, 0, 0, 0, 0, recorder.predictions[p]))
    return rows, edit_recall_counts(results, truth, bench / "edits.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="+", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="where the indexes are kept")
    parser.add_argument("--policies", nargs="+", metavar="POLICY[@N][,FIELD=VALUE...]", default=["grid", "local", "best", "best-else-grid", "partial-else-grid", "boxes+grid"])
    parser.add_argument("--detector", default=str(CROP_DETECTOR),
                        help="an exported detector.onnx (default: the fused preset's, models/detector-crops.onnx)")
    parser.add_argument("--limit", type=int, default=0, help="queries per benchmark, evenly spaced (0: all)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    head = "| policy | muAP | R@P90 | crop descriptions / query | queries cropped | ms / query (wall) | CPU ms / query |"
    table = ["| benchmark " + head, "|---" * 8 + "|"]
    means: dict[str, list[dict]] = defaultdict(list)
    counts: dict[str, tuple[int, list[int]]] = {}
    for bench in args.benches:
        rows, bench_counts = run(bench, args.work, args.policies, args.detector, args.limit)
        (args.work / f"edits-{bench.name}.json").write_text(json.dumps(bench_counts))  # kept if a later benchmark fails
        for kind, (n, found) in bench_counts.items():
            total, so_far = counts.get(kind, (0, [0] * len(found)))
            counts[kind] = (total + n, [a + b for a, b in zip(so_far, found)])
        for p, r in rows.items():
            means[p].append(r)
            table.append(f"| {bench.name} | {p} | {r['muAP']:.4f} | {r['R@P90']:.4f} | {r['crops']:.2f} | "
                         f"{r['cropped']:.2f} | {r['ms']:.0f} | {r['cpu ms']:.0f} |")
        print("\n".join(table[-len(rows):]), flush=True)
    table += ["", "| mean over benchmarks " + head, "|---" * 8 + "|"]
    for p, rs in means.items():
        m = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        table.append(f"| {len(rs)} | {p} | {m['muAP']:.4f} | {m['R@P90']:.4f} | {m['crops']:.2f} | {m['cropped']:.2f} | "
                     f"{m['ms']:.0f} | {m['cpu ms']:.0f} |")
    names = ", ".join(b.name for b in args.benches)
    print("\n" + "\n".join(table) + f"\n\nRecall of copies at each policy's P90 threshold per edit ({names}):\n\n"
          + recall_table(list(means), counts))


if __name__ == "__main__":
    main()
