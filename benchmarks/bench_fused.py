"""How indexing and matching speed grow with the number of references: the fused pipeline (global +
local) side by side with the global branch alone, in one run.

    .venv/bin/python benchmarks/bench_fused.py --images ../shared/images --queries bench/std/queries \
        --background bench/std/background --sizes 250,500,1000,2000

The reference set grows in steps: the photos of --images first, then edited duplicates of them
(random DISC21-style edits at severity 0.8, made once before timing) until the largest size. Each
pipeline indexes the steps incrementally (`Index.add` on the growing folder, so each step times only
the new references) and matches every query after each step. Each pipeline runs in its own process,
so its peak memory is its own. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.edits import random_edits
from copyseek.io.images import find_images
from copyseek.match.matcher import MatchOptions, match
from copyseek.match.normalize import background_vectors
from copyseek.store.index import Index

PIPELINES = ("global", "fused")


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


def child(pipeline: str, pool: list[Path], sizes: list[int], queries: Path, background: Path | None, work: Path) -> dict:
    """Index the pool in steps and match after each one; rows of timings."""
    refs = work / f"refs-{pipeline}"
    refs.mkdir()
    n_queries = len(find_images(queries)[0])
    rows = []
    done = 0
    with Index.create(work / f"index-{pipeline}", pipeline) as index:
        if background is not None:  # describe (and cache) the background set once, outside the timings
            background_vectors(index.branches["global"], background, Path(index.path) / "background", progress=False)
        for size in sizes:
            for path in pool[done:size]:
                (refs / path.name).symlink_to(path)
            start = time.perf_counter()
            index.add(refs, progress=False)
            index_s = time.perf_counter() - start
            start = time.perf_counter()
            match(index, queries, MatchOptions(k=10, background=background), progress=False)
            match_s = time.perf_counter() - start
            info = index.info()
            rows.append({
                "size": size,
                "index_per_s": (size - done) / index_s,
                "queries_per_s": n_queries / match_s,
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
        for pipeline in PIPELINES:
            print(f"{pipeline} ...", file=sys.stderr)
            command = [sys.executable, __file__, "--sizes", args.sizes, "--queries", str(queries), "--child", pipeline, str(work)]
            if args.background:
                command += ["--background", str(args.background)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"the {pipeline} run failed:\n{done.stderr}")
            results[pipeline] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{n_queries} queries; index img/s = references added in that step / seconds\n")
    print("| references | global index img/s | fused index img/s | global queries/s | fused queries/s | fused bytes/reference |")
    print("|---:|---:|---:|---:|---:|---:|")
    for g, f in zip(results["global"]["rows"], results["fused"]["rows"]):
        print(
            f"| {g['size']:,} | {g['index_per_s']:.1f} | {f['index_per_s']:.1f} | {g['queries_per_s']:.1f} "
            f"| {f['queries_per_s']:.1f} | {f['bytes_per_reference']:,.0f} |"
        )
    print(f"\npeak RSS (MB): global {results['global']['peak_mb']:.0f}, fused {results['fused']['peak_mb']:.0f}")


if __name__ == "__main__":
    main()
