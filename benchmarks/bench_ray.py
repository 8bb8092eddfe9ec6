"""Ray indexing against single-process indexing, side by side in one run, and proof they agree.

For each pipeline: the same images are indexed by one process (`Index.add` as `copyseek index`
does) and through Ray (`--ray`, a local Ray on this machine) with 1 and 2 describing actors; then
the Ray indexes' vectors, ids and chunks are compared with the single-process one, and queries
are matched against both. Prints markdown tables: wall time, images/s, the ratio to single-process,
this process's CPU seconds per image, and the machine's load while each ran (the machine may be
shared: ratios measured in one run are the meaningful numbers).

    python benchmarks/bench_ray.py --images DIR --queries QDIR --out SCRATCH [--pipelines global fused] [--limit N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

from copyseek.distributed.cluster import connect
from copyseek.distributed.indexing import RayDescriber, ray_branch_options
from copyseek.io.images import find_images
from copyseek.match.matcher import MatchOptions, match
from copyseek.store.index import Index


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy_cores(before: list[int], after: list[int], seconds: float) -> float:
    """Cores busy on the whole machine (every session's work) between two /proc/stat readings."""
    idle = (after[3] + after[4]) - (before[3] + before[4])
    total = sum(after) - sum(before)
    return (os.cpu_count() or 1) * (1 - idle / total) if total else 0.0


def cpu_stat() -> list[int]:
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def index_once(path: Path, pipeline: str, files, describer, args) -> dict:
    shutil.rmtree(path, ignore_errors=True)
    index = Index.create(path, pipeline)
    stat, cpu, start = cpu_stat(), time.process_time(), time.perf_counter()
    report = index.add(files, commit_every=args.commit_every, batch_size=args.batch_size, progress=False, describer=describer)
    wall = time.perf_counter() - start
    index.close()
    return {
        "added": report.added,
        "wall": wall,
        "rate": report.added / wall,
        "driver_cpu": (time.process_time() - cpu) / max(report.added, 1),
        "busy": busy_cores(stat, cpu_stat(), wall),
        "load": load(),
    }


def same_index(a: Path, b: Path) -> tuple[bool, bool]:
    """(same ids and chunks, same features for every branch)."""
    with Index.open(a) as x, Index.open(b) as y:
        layout = x.ids == y.ids and [(c.first_row, c.count) for c in x.manifest.chunks()] == [(c.first_row, c.count) for c in y.manifest.chunks()]
        rows = np.arange(len(x.ids))
        vectors = all(
            np.array_equal(x.searchers()[n].reconstruct(rows), y.searchers()[n].reconstruct(rows))
            for n in x.branches
            if hasattr(x.searchers()[n], "reconstruct")
        )
    return layout, vectors


def predictions(path: Path, queries: Path) -> list:
    with Index.open(path) as index:
        return match(index, queries, MatchOptions(k=10), progress=False).predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", required=True)
    parser.add_argument("--queries", required=True, help="queries matched against the single-process and Ray indexes")
    parser.add_argument("--out", required=True, help="scratch folder for the indexes")
    parser.add_argument("--pipelines", nargs="+", default=["global"])
    parser.add_argument("--limit", type=int, nargs="+", default=None, help="images per pipeline (default all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray actor counts to measure")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--commit-every", type=int, default=256)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = find_images(args.images)[0]
    for f in files:  # every mode reads from the page cache
        f.path.read_bytes()
    started = time.perf_counter()
    connect(None)
    ray_start = time.perf_counter() - started
    print(f"machine: {os.cpu_count()} cores, load {load()} at start; local Ray started in {ray_start:.1f} s (not counted below)\n")
    print("| pipeline | mode | images | wall s | images/s | vs single | driver CPU ms/img | machine busy cores | load (1/5/15 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    checks = []
    for p, pipeline in enumerate(args.pipelines):
        chosen = files[: args.limit[min(p, len(args.limit) - 1)]] if args.limit else files
        single = index_once(out / f"{pipeline}-single", pipeline, chosen, None, args)
        rows = [("single process", single)]
        for workers in args.workers:
            with Index.open(out / f"{pipeline}-single") as reference:
                options, specs = ray_branch_options(reference)
            describer = RayDescriber(options, specs, workers=workers, batch_size=args.batch_size)
            result = index_once(out / f"{pipeline}-ray{workers}", pipeline, chosen, describer, args)
            pool = describer.pool
            rows.append((f"Ray, {workers} actor{'s' * (workers > 1)} ({pool.cpus_per_worker:g} CPU, {pool.threads} model threads each)", result))
            checks.append((pipeline, workers, *same_index(out / f"{pipeline}-single", out / f"{pipeline}-ray{workers}")))
        for mode, r in rows:
            print(
                f"| {pipeline} | {mode} | {r['added']} | {r['wall']:.1f} | {r['rate']:.1f} | {r['rate'] / single['rate']:.2f}x "
                f"| {1000 * r['driver_cpu']:.1f} | {r['busy']:.2f} | {r['load']} |"
            )
        same = predictions(out / f"{pipeline}-single", Path(args.queries)) == predictions(out / f"{pipeline}-ray{args.workers[0]}", Path(args.queries))
        checks.append((pipeline, f"predictions on {args.queries}", same, same))
    print("\n| pipeline | compared with single process | same ids and chunks | same features |")
    print("|---|---|---|---|")
    for pipeline, what, layout, vectors in checks:
        label = what if isinstance(what, str) else f"Ray, {what} actor(s)"
        print(f"| {pipeline} | {label} | {'yes' if layout else 'NO'} | {'yes' if vectors else 'NO'} |")
    print(f"\nload at the end: {load()}")


if __name__ == "__main__":
    main()
