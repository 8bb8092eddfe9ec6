"""HOW + ASMK against the RootSIFT local branch, and the untrained HOW head against the trained one,
side by side on calibrated benchmarks; then the memory / accuracy curve over the number of local
descriptors n and the codebook size.

    .venv/bin/python benchmarks/bench_how.py bench/std bench/s1 --untrained runs/how-untrained/model.onnx \
        --trained runs/how/model.onnx --holdout bench/std/holdout.txt --curve

Prints markdown tables: muAP, recall@P90, bytes per reference, extraction ms per image and search
ms per query (one thread, measured apart from the end-to-end rates), recall per edit kind. Curve
codebooks are learned on the held-out photos (never indexed) with the trained model. Training
recipes side by side, ASMK alone (no RootSIFT row, no timings):

    .venv/bin/python benchmarks/bench_how.py bench/std bench/seed1 --untrained runs/untrained/model.onnx \
        --trained runs/how/model.onnx --model r2=runs/how-r2/model.onnx --asmk-only

`--how-option KEY=VALUE` sets an extraction or ASMK option of every ASMK row (e.g. `max_side=768`,
`features=600`, `scales=1.414,1,0.707,0.5`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from copyseek.bench.run import BenchPipeline, benchmark_paths, edit_breakdown, register_bench_pipeline, run_benchmark
from copyseek.registry import make_branch
from copyseek.io.csvfiles import read_ground_truth
from copyseek.io.images import find_images, load_rgb

TIMED_IMAGES = 40


def how_pipeline(name: str, model: Path, **options) -> str:
    register_bench_pipeline(BenchPipeline(name, "asmk", {"how": {"model": str(model), **options}}))
    return name


def branch_timings(branch_name: str, options: dict, bench: Path) -> tuple[float, float]:
    """(extraction ms per image, search ms per query) of one branch on one thread: references and
    queries described, the first TIMED_IMAGES timed; the queries searched against all references."""
    branch = make_branch(branch_name, {**options, "threads": 1})
    paths = benchmark_paths(bench)
    references = [load_rgb(f.path, branch.decode_side) for f in find_images(paths["references"])[0]]
    queries = [load_rgb(f.path, branch.decode_side) for f in find_images(paths["queries"])[0][:TIMED_IMAGES]]
    start = time.perf_counter()
    features = branch.extract(references[:TIMED_IMAGES])
    extract_ms = 1000 * (time.perf_counter() - start) / TIMED_IMAGES
    features += branch.extract(references[TIMED_IMAGES:])
    searcher = branch.new_searcher()
    searcher.add(branch.pack(features))
    query_features = branch.extract(queries, query=True)
    start = time.perf_counter()
    searcher.search(query_features, 10)
    return extract_ms, 1000 * (time.perf_counter() - start) / len(queries)


def fit_codebooks(model: Path, holdout: Path, sizes: list[int], features: int, out: Path) -> dict[int, Path]:
    """Codebooks of each size on the trained model's descriptors of the held-out photos."""
    from copyseek.how.asmk import Codebook
    from copyseek.how.features import HowExtractor, HowParams, describe_photos

    extractor = HowExtractor(model)
    photos = [Path(p) for p in holdout.read_text().split()]
    descs = describe_photos(extractor.maps, photos, HowParams(features=features), extractor.stride)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for size in sizes:
        paths[size] = out / f"codebook-{size}.npz"
        if not paths[size].exists():
            Codebook.fit(descs, size).save(paths[size])
    return paths


def summary_table(micro_ap: dict[str, dict[str, float]], baseline: str) -> str:
    """Markdown table: muAP of each pipeline on each benchmark, their mean, and the mean gain over
    `baseline`'s row."""
    benches = list(next(iter(micro_ap.values())))
    lines = ["\n### muAP over the benchmarks\n",
             f"| pipeline | {' | '.join(benches)} | mean | gain over {baseline} |",
             "|---|" + "---|" * (len(benches) + 2)]
    base = np.mean([micro_ap[baseline][b] for b in benches])
    for name, by_bench in micro_ap.items():
        mean = np.mean([by_bench[b] for b in benches])
        lines.append(f"| {name} | {' | '.join(f'{by_bench[b]:.4f}' for b in benches)} | {mean:.4f} | {mean - base:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", nargs="+", type=Path)
    parser.add_argument("--untrained", type=Path, required=True, help="HOW model with the untrained head")
    parser.add_argument("--trained", type=Path, required=True, help="HOW model after training")
    parser.add_argument("--holdout", type=Path, help="held-out photos (.txt) for the curve's codebooks")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="another trained HOW model, as one more row (e.g. another training recipe)")
    parser.add_argument("--asmk-only", action="store_true",
                        help="ASMK rows only: no RootSIFT row, no single-thread timings (training recipes side by side)")
    parser.add_argument("--curve", action="store_true", help="also the memory / accuracy curve (first benchmark)")
    parser.add_argument("--curve-only", action="store_true", help="only the curve")
    parser.add_argument("--how-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a HOW branch option for every ASMK row, e.g. max_side=768, scales=1,0.707,0.5, features=600")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    how_options = {}
    for option in args.how_option:
        key, _, value = option.partition("=")
        if not value:
            parser.error(f"--how-option takes KEY=VALUE, got {option!r}")
        try:  # as train-detector's --set: JSON values, anything else (scales "1,0.707") as text
            how_options[key] = json.loads(value)
        except json.JSONDecodeError:
            how_options[key] = value

    models = {"asmk untrained": args.untrained, "asmk trained": args.trained}
    for named in args.model:
        name, _, path = named.partition("=")
        if not path:
            parser.error(f"--model takes NAME=PATH, got {named!r}")
        models[f"asmk {name}"] = Path(path)
    rows = ([] if args.asmk_only else ["local"]) + [how_pipeline(name, path, **how_options) for name, path in models.items()]
    options = {"local": ("local", {}), **{name: ("how", {"model": str(path), **how_options}) for name, path in models.items()}}
    micro_ap: dict[str, dict[str, float]] = {}  # pipeline -> benchmark folder name -> muAP
    for bench in [] if args.curve_only else args.benchmarks:
        print(f"\n### {bench}\n", flush=True)
        results = run_benchmark(bench, rows, workdir=args.workdir, progress=False)
        for r in results:
            micro_ap.setdefault(r.name, {})[bench.name] = r.metrics.micro_ap
        print("| pipeline | muAP | recall@P90 | bytes/reference | extraction ms/image | search ms/query | index img/s | queries/s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            extract_ms, search_ms = (np.nan, np.nan) if args.asmk_only else branch_timings(*options[r.name], bench)
            print(f"| {r.name} | {r.metrics.micro_ap:.4f} | {r.metrics.recall_at_p90:.4f} | {r.bytes_per_reference:,.0f} | "
                  f"{extract_ms:.1f} | {search_ms:.2f} | {r.index_rate:.1f} | {r.query_rate:.1f} |", flush=True)
        print("\nRecall of copies at each pipeline's P90 threshold, by edit\n")
        print(edit_breakdown(results, read_ground_truth(bench / "gt.csv"), bench / "edits.csv"), flush=True)

    if len(args.benchmarks) > 1 and micro_ap:
        print(summary_table(micro_ap, baseline="asmk untrained"), flush=True)

    if args.curve or args.curve_only:
        bench = args.benchmarks[0]
        sizes = [256, 1024, 4096]
        codebooks = fit_codebooks(args.trained, args.holdout, sizes, 300, args.workdir / "codebooks")
        curve = {f"n={n} k={k}": how_pipeline(f"asmk n={n} k={k}", args.trained, features=n, codebook=str(codebooks[k]))
                 for n, k in [(100, 1024), (600, 1024), (300, 256), (300, 4096)]}  # (300, 1024): the table above
        print(f"\n### memory / accuracy ({bench}, trained model)\n")
        print("| n | codebook | muAP | recall@P90 | bytes/reference |")
        print("|---|---|---|---|---|")
        for r in run_benchmark(bench, list(curve.values()), workdir=args.workdir, progress=False):
            n, k = r.name.removeprefix("asmk ").split()
            print(f"| {n[2:]} | {k[2:]} | {r.metrics.micro_ap:.4f} | {r.metrics.recall_at_p90:.4f} | {r.bytes_per_reference:,.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
