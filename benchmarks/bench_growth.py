"""Accuracy as the collection grows: a calibrated benchmark's queries against its references plus
distractor references, at several collection sizes, for several pipelines side by side.

    .venv/bin/python benchmarks/bench_growth.py bench/seed1 --distractor-photos bench/std/holdout.txt \
        --sizes 200,1000,10000 --pipelines sscd+sn fused+sn --workdir scratch/growth

Distractors are made once in WORKDIR/distractors (deterministic per file, so a larger run extends a
smaller one): edited copies of --distractor-photos (random DISC21-style chains at severity 0.4-1.6,
pastes and collages drawn from the same photos) and procedural images (`copyseek.synthetic`),
alternating. The distractor photos must be disjoint from the benchmark's photos (its references,
query sources, donors and background): `bench/std/holdout.txt` is disjoint from every benchmark
built from `non-holdout.txt` (seed1, e2-e4). Nothing of a benchmark's queries is ever a distractor.

Each pipeline's index lives in WORKDIR/index-NAME and grows incrementally: the benchmark's
references first, then the distractors in file order, so every size is a prefix of the next and a
re-run adds only what is missing. After each size every query is matched (normalised against the
benchmark's background set for `+sn` pipelines). Prints one markdown table: muAP, recall@P90,
the score threshold at P90, and the precision and recall at the threshold calibrated at
--calibrate-at references (how far a threshold chosen on a small collection keeps its meaning).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from copyseek.bench.run import benchmark_paths, parse_pipeline
from copyseek.edits import random_edits
from copyseek.eval.metrics import Metrics, evaluate
from copyseek.io.csvfiles import read_ground_truth, read_predictions, write_predictions
from copyseek.io.images import ImageFile, find_images
from copyseek.match.matcher import MatchOptions, make_scorer, match
from copyseek.progress import progress_bar
from copyseek.store.index import Index
from copyseek.synthetic import synthetic_photo

DISTRACTOR_MAX_SIDE = 640
"""Distractor photos are downscaled to this before editing (editing a 1024-px photo costs 3x more
and changes nothing a 448-px local branch or a 256-px global one sees)."""


def read_photo_list(source: Path) -> list[Path]:
    """Photo paths from a folder or from a text file of paths (one a line)."""
    if source.is_dir():
        return [f.path for f in find_images(source)[0]]
    return [Path(line.strip()) for line in source.read_text().splitlines() if line.strip()]


def make_distractor(photos: list[Path], i: int, seed: int) -> Image.Image:
    """Distractor i: an edited photo (even i) or a procedural image (odd i); a function of (i, seed)."""
    rng = np.random.default_rng([seed, i])
    if i % 2:
        width, height = (int(v) for v in rng.integers(320, 720, size=2))
        return synthetic_photo(rng, width, height)
    photo = Image.open(photos[(i // 2) % len(photos)]).convert("RGB")
    photo.thumbnail((DISTRACTOR_MAX_SIDE, DISTRACTOR_MAX_SIDE))
    donors = [photos[j] for j in rng.choice(len(photos), size=2, replace=False)]
    loaded = []
    for donor in donors:
        image = Image.open(donor).convert("RGB")
        image.thumbnail((DISTRACTOR_MAX_SIDE, DISTRACTOR_MAX_SIDE))
        loaded.append(image)
    edited, _ = random_edits(photo, rng, severity=float(rng.uniform(0.4, 1.6)), donors=loaded)
    return edited.convert("RGB")


def make_distractors(photos: list[Path], n: int, out: Path, seed: int = 13) -> list[ImageFile]:
    """The first n distractor files in `out` (made where missing), in order."""
    out.mkdir(parents=True, exist_ok=True)
    files = [ImageFile(f"D{i:07d}", out / f"D{i:07d}.jpg") for i in range(n)]
    missing = [i for i, f in enumerate(files) if not f.path.exists()]
    with progress_bar(len(missing), "distractors") as bar:
        for i in missing:
            target = files[i].path
            make_distractor(photos, i, seed).save(target.with_suffix(".tmp.jpg"), quality=90)
            target.with_suffix(".tmp.jpg").rename(target)
            bar.update(1)
    return files


def precision_recall_at(metrics: Metrics, threshold: float | None) -> tuple[float, float]:
    """Precision and recall of the predictions scoring at least `threshold`."""
    if threshold is None:
        return float("nan"), float("nan")
    kept = np.flatnonzero(metrics.curve.thresholds >= threshold)
    if len(kept) == 0:
        return float("nan"), 0.0
    last = kept[-1]
    return float(metrics.curve.precision[last]), float(metrics.curve.recall[last])


def grow_and_evaluate(name: str, bench: Path, files: list[ImageFile], workdir: Path) -> dict:
    """Add what is missing of `files` to pipeline `name`'s index in WORKDIR, match every query and
    evaluate; one row of measurements (CPU time is the process's, all threads)."""
    paths = benchmark_paths(bench)
    chosen = parse_pipeline(name)
    options = MatchOptions(k=10, background=paths["background"] if chosen.normalize else None)
    with Index.open_or_create(workdir / f"index-{name.removesuffix('+sn')}", chosen.pipeline, chosen.options) as index:
        start, cpu = time.perf_counter(), time.process_time()
        added = index.add(files, progress=True, on_skip=lambda f, r: None).added
        index_s, index_cpu = time.perf_counter() - start, time.process_time() - cpu
        if chosen.normalize:  # describe (and cache) the background set outside the timing
            make_scorer(index, options, progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        result = match(index, paths["queries"], options, progress=False, on_skip=lambda f, r: None)
        match_s, match_cpu = time.perf_counter() - start, time.process_time() - cpu
        size = len(index)
    out = workdir / f"pred-{name}-{size}.csv"
    write_predictions(out, result.predictions)
    metrics = evaluate(read_predictions(out), read_ground_truth(paths["gt"]))
    return {
        "pipeline": name, "size": size, "added": added, "index_s": index_s, "index_cpu_s": index_cpu,
        "queries": result.queries, "match_s": match_s, "match_cpu_s": match_cpu, "predictions": str(out),
        "muap": metrics.micro_ap, "recall_p90": metrics.recall_at_p90, "threshold_p90": metrics.threshold_at_p90,
    }


def table(rows: list[dict], ground_truth_csv: Path, calibrate_at: int) -> str:
    """The markdown table, with precision and recall at the threshold calibrated at `calibrate_at`."""
    ground_truth = read_ground_truth(ground_truth_csv)
    lines = [
        f"| pipeline | references | muAP | recall@P90 | threshold at P90 | precision / recall at the {calibrate_at:,}-reference P90 threshold | queries/s (CPU s per query) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r["pipeline"] for r in rows):
        mine = [r for r in rows if r["pipeline"] == name]
        calibrated = min(mine, key=lambda r: abs(r["size"] - calibrate_at))["threshold_p90"]
        for r in mine:
            metrics = evaluate(read_predictions(r["predictions"]), ground_truth)
            precision, recall = precision_recall_at(metrics, calibrated)
            threshold = "n/a" if r["threshold_p90"] is None else f"{r['threshold_p90']:.3f}"
            lines.append(
                f"| {name} | {r['size']:,} | {r['muap']:.4f} | {r['recall_p90']:.4f} | {threshold} | "
                f"{precision:.3f} / {recall:.3f} | {r['queries'] / r['match_s']:.1f} ({r['match_cpu_s'] / r['queries']:.3f}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--distractor-photos", type=Path, required=True, help="folder or list file of photos disjoint from the benchmark's")
    parser.add_argument("--sizes", default="200,1000,10000", help="total references after each step, increasing")
    parser.add_argument("--pipelines", nargs="+", default=["sscd+sn", "fused+sn"])
    parser.add_argument("--calibrate-at", type=int, default=1000, help="size whose P90 threshold is applied to every size")
    parser.add_argument("--workdir", type=Path, required=True, help="keeps the distractors, the indexes and the predictions")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--table", action="store_true", help="only print the table of the rows measured so far in WORKDIR")
    args = parser.parse_args()
    if args.table:
        rows = json.loads((args.workdir / "rows.json").read_text())
        print(table(rows, benchmark_paths(args.bench)["gt"], args.calibrate_at))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(set(sizes)):
        raise SystemExit("--sizes must be increasing")
    references = find_images(benchmark_paths(args.bench)["references"])[0]
    photos = read_photo_list(args.distractor_photos)
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sizes:  # every pipeline at one size before the next, so a cut-short run is still side by side
        distractors = make_distractors(photos, max(0, size - len(references)), args.workdir / "distractors", args.seed)
        for name in args.pipelines:
            rows.append(grow_and_evaluate(name, args.bench, references + distractors, args.workdir))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            (args.workdir / "rows.json").write_text(json.dumps(rows, indent=1))
    print(table(rows, benchmark_paths(args.bench)["gt"], args.calibrate_at))

if __name__ == "__main__":
    main()
