"""How indexing and matching speed grow with the number of references: the fused pipelines (global +
local: `fused` and its faster preset `fused-fast`) side by side with SSCD alone, in one run.

    .venv/bin/python benchmarks/bench_fused.py --images ../shared/images --queries bench/std/queries \
        --background bench/std/background --sizes 250,500,1000,2000

The reference set grows in steps: the photos of --images first, then edited duplicates of them
(random DISC21-style edits at severity 0.8, made once before timing) until the largest size. Each
pipeline indexes the steps incrementally (`Index.add` on the growing folder, so each step times only
the new references) and matches every query after each step. Each pipeline runs in its own process,
so its peak memory is its own. Prints one markdown table: throughput (wall) and its ratio to SSCD
alone's at the same step, and CPU time per image (all threads of the process: less sensitive than
wall time to what else runs on a shared machine), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.bench.run import parse_pipeline
from copyseek.edits import random_edits
from copyseek.io.images import find_images
from copyseek.match.matcher import MatchOptions, match
from copyseek.match.normalize import background_vectors
from copyseek.store.index import Index

PIPELINES = ("sscd", "fused", "fused-fast")
"""bench pipelines (copyseek.bench.run); the first is the baseline of the ratios."""


def make_pool(photos: Path, size: int, out: Path, seed: int = 0) -> list[Path]:
    """`size` reference files in `out`: the photos, then edited duplicates of them, in a fixed order."""
    files, _ = find_images(photos)
    if not files:
        raise SystemExit(f"no images in {photos}")
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    pool = []
    for i in range(size):
        source = files[i % len(files)].path
        target = out / f"ref{i:06d}.jpg"
        if i < len(files):
            shutil.copyfile(source, target.with_suffix(source.suffix.lower()))
            target = target.with_suffix(source.suffix.lower())
        else:
            edited, _ = random_edits(Image.open(source), rng, severity=0.8)
            edited.convert("RGB").save(target, quality=90)
        pool.append(target)
    return pool


def make_queries(photos: Path, n: int, out: Path, seed: int = 1) -> Path:
    """n edited copies of photos (severity 1.6), when no query folder is given."""
    files, _ = find_images(photos)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for i in rng.choice(len(files), size=min(n, len(files)), replace=False):
        edited, _ = random_edits(Image.open(files[i].path), rng, severity=1.6)
        edited.convert("RGB").save(out / f"q{i:06d}.jpg", quality=90)
    return out


def child(name: str, pool: list[Path], sizes: list[int], queries: Path, background: Path | None, work: Path) -> dict:
    """Index the pool in steps and match after each one; rows of timings (wall and CPU seconds)."""
    chosen = parse_pipeline(name)
    refs = work / f"refs-{name}"
    refs.mkdir()
    n_queries = len(find_images(queries)[0])
    rows = []
    done = 0
    options = MatchOptions(k=10, background=background)
    with Index.create(work / f"index-{name}", chosen.pipeline, chosen.options) as index:
        if background is not None:  # describe (and cache) the background set once, outside the timings
            background_vectors(index.branches["global"], background, Path(index.path) / "background", progress=False)
        for size in sizes:
            for path in pool[done:size]:
                (refs / path.name).symlink_to(path)
            start, cpu = time.perf_counter(), time.process_time()
            index.add(refs, progress=False)
            index_s, index_cpu = time.perf_counter() - start, time.process_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            match(index, queries, options, progress=False)
            match_s, match_cpu = time.perf_counter() - start, time.process_time() - cpu
            info = index.info()
            rows.append({
                "size": size,
                "index_per_s": (size - done) / index_s,
                "index_cpu_ms": 1000 * index_cpu / (size - done),
                "queries_per_s": n_queries / match_s,
                "query_cpu_ms": 1000 * match_cpu / n_queries,
                "bytes_per_reference": sum(info["bytes_per_reference"].values()),
            })
            done = size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": rows, "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=Path("../shared/images"))
    parser.add_argument("--queries", type=Path, help="query folder (default: 60 edited copies of --images)")
    parser.add_argument("--background", type=Path, help="background folder for score normalisation")
    parser.add_argument("--sizes", default="250,500,1000,2000", help="reference set sizes, increasing")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), help="bench pipelines; the first is the baseline")
    parser.add_argument("--child", nargs=2, metavar=("PIPELINE", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(set(sizes)):
        raise SystemExit("--sizes must be increasing")
    if args.child:
        pipeline, work = args.child[0], Path(args.child[1])
        pool = sorted((work / "pool").iterdir())
        print(json.dumps(child(pipeline, pool, sizes, args.queries, args.background, work)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        work = Path(scratch)
        print(f"making {sizes[-1]} references ...", file=sys.stderr)
        make_pool(args.images, sizes[-1], work / "pool")
        queries = args.queries or make_queries(args.images, 60, work / "queries")
        n_queries = len(find_images(queries)[0])
        results = {}
        load_before = os.getloadavg()
        for pipeline in args.pipelines:
            print(f"{pipeline} ...", file=sys.stderr)
            command = [sys.executable, __file__, "--sizes", args.sizes, "--queries", str(queries), "--child", pipeline, str(work)]
            if args.background:
                command += ["--background", str(args.background)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {pipeline} run failed:\n{done.stderr}")
            results[pipeline] = json.loads(done.stdout.strip().splitlines()[-1])
        load_after = os.getloadavg()
    base = args.pipelines[0]
    print(f"\n{n_queries} queries; img/s = references added in that step / seconds; x{base} = ratio to {base} at that step;")
    print(f"CPU ms = process CPU time (all threads) per image; load average (1, 5, 15 min) {load_before[0]:.1f} / "
          f"{load_before[1]:.1f} / {load_before[2]:.1f} before, {load_after[0]:.1f} / {load_after[1]:.1f} / {load_after[2]:.1f} after\n")
    print(f"| references | pipeline | index img/s | x{base} | index CPU ms/image | queries/s | x{base} | query CPU ms/query | bytes/reference |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for step, baseline in enumerate(results[base]["rows"]):
        for pipeline in args.pipelines:
            r = results[pipeline]["rows"][step]
            print(
                f"| {r['size']:,} | {pipeline} | {r['index_per_s']:.1f} | {r['index_per_s'] / baseline['index_per_s']:.2f} "
                f"| {r['index_cpu_ms']:.0f} | {r['queries_per_s']:.1f} | {r['queries_per_s'] / baseline['queries_per_s']:.2f} "
                f"| {r['query_cpu_ms']:.0f} | {r['bytes_per_reference']:,.0f} |"
            )
    print("\npeak RSS (MB): " + ", ".join(f"{p} {results[p]['peak_mb']:.0f}" for p in args.pipelines))

if __name__ == "__main__":
    main()
