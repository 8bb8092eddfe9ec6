"""What the fused pipeline's global descriptor is made of: SSCD at one resizing, mirrored, at two
resizings, and with copyseek-small beside it, each scored alone (global branch, normalised against
the background set) on several benchmarks, and the mean.

    .venv/bin/python benchmarks/bench_global_views.py bench/std bench/seed1 bench/e2 bench/e3 bench/e4

Each row is a `copyseek bench run` pipeline (same index, matching and metric code), so the numbers
are those `copyseek bench run` would print for it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from copyseek.bench.run import BenchPipeline, register_bench_pipeline, run_benchmark
from copyseek.registry import PIPELINE_DEFAULTS

FUSED_GLOBAL = PIPELINE_DEFAULTS["fused"]["global"]

ROWS = {
    "SSCD square:320 (the model's own)": {"model": "sscd"},
    "SSCD square:320, mirror averaged": {"model": "sscd", "flip_average": True},
    "SSCD square:256+short:320": {"model": "sscd", "resize": "square:256+short:320"},
    f"SSCD {FUSED_GLOBAL['resize']}": {"model": "sscd", "resize": FUSED_GLOBAL["resize"]},
    f"{FUSED_GLOBAL['model']} {FUSED_GLOBAL['resize']} (fused default)": dict(FUSED_GLOBAL),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path, help="benchmark folders made by copyseek bench build")
    args = parser.parse_args()
    for name, options in ROWS.items():
        register_bench_pipeline(BenchPipeline(name, "global", {"global": options}, normalize=True))
    scores: dict[str, list[tuple[float, float]]] = {name: [] for name in ROWS}
    for bench in args.benchmarks:
        print(f"{bench}:", flush=True)
        for result in run_benchmark(bench, list(ROWS), progress=True):
            scores[result.name].append((result.metrics.micro_ap, result.metrics.recall_at_p90))
    names = [bench.name for bench in args.benchmarks]
    print("\nmuAP / recall@P90, scores normalised against each benchmark's background set\n")
    print("| global descriptor | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for name, row in scores.items():
        mean_ap = sum(ap for ap, _ in row) / len(row)
        mean_recall = sum(r for _, r in row) / len(row)
        cells = " | ".join(f"{ap:.3f} / {r:.3f}" for ap, r in row)
        print(f"| {name} | {cells} | {mean_ap:.3f} / {mean_recall:.3f} |")


if __name__ == "__main__":
    main()
