"""Accuracy as the collection grows: a calibrated benchmark's queries against its references plus
distractor references, at several collection sizes, for several pipelines side by side.

    .venv/bin/python benchmarks/bench_growth.py bench/seed1 --distractor-photos bench/std/holdout.txt \
        --sizes 200,1000,10000 --pipelines sscd+sn fused+sn --distractor-edits light --workdir scratch/growth

Distractors (`copyseek.bench.distractors`) are made once in WORKDIR/distractors-EDITS, deterministic
per file, so a larger run extends a smaller one: photos of --distractor-photos and procedural images
(`copyseek.synthetic`), alternating. --distractor-edits says how the photos are edited: `light`
(default: crop, rescale, flip, mild colour jitter: a collection of ordinary photos), `none` (each
photo once as it is, then procedural only) or `heavy` (DISC21-style query chains with overlays,
pastes and collages: an adversarial bank of edited near-copies). The distractor photos must be
disjoint from the benchmark's photos (its references, query sources, donors and background):
`bench/std/holdout.txt` is disjoint from every benchmark built from `non-holdout.txt` (seed1,
e2-e4). Nothing of a benchmark's queries is ever a distractor.

Each pipeline's index lives in WORKDIR/index-NAME-EDITS and grows incrementally: the benchmark's
references first, then the distractors in file order, so every size is a prefix of the next and a
re-run adds only what is missing (an interrupted one resumes from its last committed chunk). After
each size every query is matched (normalised against the benchmark's background set for `+sn`
pipelines). Prints one markdown table: muAP, recall@P90, the score threshold at P90, the precision
and recall at the threshold calibrated at --calibrate-at references (how far a threshold chosen on a
small collection keeps its meaning), what the false matches above that threshold are (benchmark
references, photo distractors, procedural distractors), and the muAP with only each query's best
distractor per source photo (the spare photos come back many times; this estimates what that
reuse costs). --drop-scene-mates T leaves out of the spare photos those whose SSCD cosine to any
photo of the benchmark (references, query sources, donors, background) is at least T: other shots
of a benchmark photo's scene (copyseek.bench.distractors); its runs get their own distractors,
indexes and rows (recipe name `EDITS-scene<T>`). Times are wall and CPU seconds
of this process (all its threads), indexing and matching apart. --index-only grows the indexes
without matching and keeps a copy of each size's index, WORKDIR/index-NAME-EDITS-SIZE, for
`bench_growth_causes.py fused` (both local matchings on each size).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from copyseek.bench.distractors import (
    DISTRACTOR_EDITS, DistractorRecipe, benchmark_photos, distractor_index, false_match_kinds, make_distractors,
    one_per_source, read_photo_list, scene_mates,
)
from copyseek.bench.run import benchmark_paths, parse_pipeline
from copyseek.eval.metrics import Metrics, evaluate
from copyseek.io.csvfiles import read_ground_truth, read_predictions, write_predictions
from copyseek.io.images import ImageFile, find_images
from copyseek.match.matcher import MatchOptions, make_scorer, match
from copyseek.store.index import Index


def precision_recall_at(metrics: Metrics, threshold: float | None) -> tuple[float, float]:
    """Precision and recall of the predictions scoring at least `threshold`."""
    if threshold is None:
        return float("nan"), float("nan")
    kept = np.flatnonzero(metrics.curve.thresholds >= threshold)
    if len(kept) == 0:
        return float("nan"), 0.0
    last = kept[-1]
    return float(metrics.curve.precision[last]), float(metrics.curve.recall[last])


def top_false_matches(predictions: list, ground_truth, edits_csv: Path, photos: list[Path], recipe: DistractorRecipe, n: int) -> str:
    """A markdown table of the n highest-scoring false matches: the query's edits (and whether it
    copies anything), the reference and what it is made from (a benchmark reference, a distractor
    photo by file name, or a procedural image)."""
    with open(edits_csv, newline="") as handle:
        edits = {row["query_id"]: row for row in csv.DictReader(handle)}
    wrong = sorted((p for p in predictions if (p.query_id, p.reference_id) not in ground_truth.pairs), key=lambda p: -p.score)
    lines = ["| score | query | copy query? | query edits | reference | made from |", "|---:|---|---|---|---|---|"]
    for p in wrong[:n]:
        i = distractor_index(p.reference_id)
        source = None if i is None else recipe.photo_of(i, len(photos))
        made_from = "benchmark reference" if i is None else "procedural" if source is None else f"{photos[source].name} ({recipe.edits})"
        row = edits.get(p.query_id, {})
        lines.append(
            f"| {p.score:.3f} | {p.query_id} | {'yes' if row.get('is_copy') == '1' else 'no'} | "
            f"{row.get('edits', '').replace('|', ', ')} | {p.reference_id} | {made_from} |"
        )
    return "\n".join(lines)


def photo_vectors(photos: list[Path], cache: Path) -> np.ndarray:
    """(n, d) SSCD descriptors of unedited photos (decoded as distractors start from them), cached
    by file name in `cache` (.npz)."""
    from copyseek.progress import progress_bar
    from copyseek.registry import make_branch

    known = dict(np.load(cache)) if cache.exists() else {}
    missing = [p for p in photos if p.name not in known]
    if missing:
        branch = make_branch("global", {"threads": 1})
        with progress_bar(len(missing), "describing photos") as bar:
            for path in missing:
                known[path.name] = branch.embed([np.asarray(DistractorRecipe().load_photo(path))])[0]
                bar.update(1)
        np.savez(cache, **known)
    return np.stack([known[p.name] for p in photos])


def without_scene_mates(photos: list[Path], bench: Path, threshold: float, workdir: Path) -> list[Path]:
    """`photos` less those with a cosine >= threshold to a photo of the benchmark; prints which."""
    cache = workdir / "photo-vectors.npz"
    ours = benchmark_photos(bench)
    mates = scene_mates(photo_vectors(photos, cache), photo_vectors(ours, cache), threshold)
    print(f"left out {int(mates.sum())} of {len(photos)} spare photos as scene mates (cosine >= {threshold}): "
          + ", ".join(p.name for p, m in zip(photos, mates) if m), file=sys.stderr, flush=True)
    return [p for p, m in zip(photos, mates) if not m]


def index_folder(name: str, workdir: Path, edits: str) -> Path:
    """Where pipeline `name`'s growing index lives in WORKDIR (`+sn` shares the plain pipeline's)."""
    return workdir / f"index-{name.removesuffix('+sn')}-{edits}"


def grow_and_copy(name: str, files: list[ImageFile], workdir: Path, edits: str) -> Path:
    """Add what is missing of `files` to pipeline `name`'s index in WORKDIR and copy the index as it
    now is to `index-NAME-EDITS-SIZE` (kept if it exists): one index per size, without matching."""
    chosen = parse_pipeline(name)
    folder = index_folder(name, workdir, edits)
    with Index.open_or_create(folder, chosen.pipeline, chosen.options) as index:
        index.add(files, progress=True, on_skip=lambda f, r: None)
        size = len(index)
    copy = folder.with_name(f"{folder.name}-{size}")
    if not copy.exists():
        shutil.copytree(folder, copy)
    return copy


def grow_and_evaluate(name: str, bench: Path, files: list[ImageFile], workdir: Path, edits: str) -> dict:
    """Add what is missing of `files` to pipeline `name`'s index in WORKDIR, match every query and
    evaluate; one row of measurements (CPU time is the process's, all threads)."""
    paths = benchmark_paths(bench)
    chosen = parse_pipeline(name)
    options = MatchOptions(k=10, background=paths["background"] if chosen.normalize else None)
    with Index.open_or_create(index_folder(name, workdir, edits), chosen.pipeline, chosen.options) as index:
        start, cpu = time.perf_counter(), time.process_time()
        added = index.add(files, progress=True, on_skip=lambda f, r: None).added
        index_s, index_cpu = time.perf_counter() - start, time.process_time() - cpu
        if chosen.normalize:  # describe (and cache) the background set outside the timing
            make_scorer(index, options, progress=False)
        start, cpu = time.perf_counter(), time.process_time()
        result = match(index, paths["queries"], options, progress=False, on_skip=lambda f, r: None)
        match_s, match_cpu = time.perf_counter() - start, time.process_time() - cpu
        size = len(index)
    out = workdir / f"pred-{name}-{edits}-{size}.csv"
    write_predictions(out, result.predictions)
    metrics = evaluate(read_predictions(out), read_ground_truth(paths["gt"]))
    return {
        "pipeline": name, "edits": edits, "size": size, "added": added, "index_s": index_s, "index_cpu_s": index_cpu,
        "queries": result.queries, "match_s": match_s, "match_cpu_s": match_cpu, "predictions": str(out),
        "muap": metrics.micro_ap, "recall_p90": metrics.recall_at_p90, "threshold_p90": metrics.threshold_at_p90,
    }


def table(rows: list[dict], ground_truth_csv: Path, calibrate_at: int, n_photos: int, seed: int) -> str:
    """The markdown table, with precision, recall and the false matches' kinds at the threshold
    calibrated at `calibrate_at` references (per pipeline and recipe)."""
    ground_truth = read_ground_truth(ground_truth_csv)
    lines = [
        f"| pipeline | distractors | references | muAP | muAP, one distractor per source photo | recall@P90 | threshold at P90 | precision / recall at the {calibrate_at:,}-reference P90 threshold "
        "| false matches there: references / photo / procedural distractors | index images/s (CPU s per image) | queries/s (CPU s per query) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in dict.fromkeys((r["pipeline"], r["edits"]) for r in rows):
        mine = sorted((r for r in rows if (r["pipeline"], r["edits"]) == key), key=lambda r: r["size"])
        calibrated = min(mine, key=lambda r: abs(r["size"] - calibrate_at))["threshold_p90"]
        recipe = DistractorRecipe(key[1].split("-")[0], seed)  # a label `EDITS-scene<T>` names EDITS' recipe
        for r in mine:
            predictions = read_predictions(r["predictions"])
            precision, recall = precision_recall_at(evaluate(predictions, ground_truth), calibrated)
            kinds = false_match_kinds(predictions, ground_truth, calibrated, recipe, n_photos)
            deduplicated = evaluate(one_per_source(predictions, recipe, n_photos), ground_truth).micro_ap
            threshold = "n/a" if r["threshold_p90"] is None else f"{r['threshold_p90']:.3f}"
            indexing = "-" if not r["added"] else f"{r['added'] / r['index_s']:.1f} ({r['index_cpu_s'] / r['added']:.3f})"
            lines.append(
                f"| {key[0]} | {key[1]} | {r['size']:,} | {r['muap']:.4f} | {deduplicated:.4f} | {r['recall_p90']:.4f} | {threshold} | "
                f"{precision:.3f} / {recall:.3f} | {' / '.join(str(v) for v in kinds.values())} | {indexing} | "
                f"{r['queries'] / r['match_s']:.1f} ({r['match_cpu_s'] / r['queries']:.3f}) |"
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
    parser.add_argument("--distractor-edits", choices=DISTRACTOR_EDITS, default="light", help="how distractor photos are edited (docstring above)")
    parser.add_argument("--drop-scene-mates", type=float, metavar="COSINE",
                        help="leave out spare photos this close to a benchmark photo (other shots of its scenes)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--table", action="store_true", help="only print the table of the rows measured so far in WORKDIR")
    parser.add_argument("--index-only", action="store_true",
                        help="grow the indexes without matching, copying each size's index to WORKDIR/index-NAME-EDITS-SIZE "
                             "(the inputs of bench_growth_causes.py fused)")
    parser.add_argument("--false-matches", type=int, default=0, metavar="N", help="with --table: also the N top false matches of each pipeline's largest size")
    args = parser.parse_args()
    photos = read_photo_list(args.distractor_photos)
    recipe = DistractorRecipe(args.distractor_edits, args.seed)
    label = args.distractor_edits  # names the recipe's distractors, indexes and rows in WORKDIR
    if args.drop_scene_mates is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        photos = without_scene_mates(photos, args.bench, args.drop_scene_mates, args.workdir)
        label = f"{args.distractor_edits}-scene{args.drop_scene_mates:g}"
    rows_json = args.workdir / f"rows-{label}.json"
    if args.table:
        rows = json.loads(rows_json.read_text())
        paths = benchmark_paths(args.bench)
        print(table(rows, paths["gt"], args.calibrate_at, len(photos), args.seed))
        for name in dict.fromkeys(r["pipeline"] for r in rows) if args.false_matches else ():
            largest = max((r for r in rows if r["pipeline"] == name), key=lambda r: r["size"])
            print(f"\n{name}, {largest['size']:,} references, top {args.false_matches} false matches:\n")
            predictions = read_predictions(largest["predictions"])
            print(top_false_matches(predictions, read_ground_truth(paths["gt"]), args.bench / "edits.csv", photos, recipe, args.false_matches))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(set(sizes)):
        raise SystemExit("--sizes must be increasing")
    references = find_images(benchmark_paths(args.bench)["references"])[0]
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = json.loads(rows_json.read_text()) if rows_json.exists() else []  # a later run adds its sizes
    for size in sizes:  # every pipeline at one size before the next, so a cut-short run is still side by side
        distractors = make_distractors(photos, max(0, size - len(references)), args.workdir / f"distractors-{label}", recipe)
        for name in args.pipelines:
            if args.index_only:
                print(f"{name} at {size:,} references: {grow_and_copy(name, references + distractors, args.workdir, label)}", flush=True)
                continue
            row = grow_and_evaluate(name, args.bench, references + distractors, args.workdir, label)
            rows = [r for r in rows if (r["pipeline"], r["size"]) != (name, row["size"])] + [row]
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
            rows_json.write_text(json.dumps(rows, indent=1))
    if not args.index_only:
        print(table(rows, benchmark_paths(args.bench)["gt"], args.calibrate_at, len(photos), args.seed))


if __name__ == "__main__":
    main()
