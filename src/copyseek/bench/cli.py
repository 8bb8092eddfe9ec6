"""`copyseek bench`: build DISC21-style benchmarks (sub-commands register in SUBCOMMANDS)."""

from __future__ import annotations

import argparse
from pathlib import Path

from copyseek.bench.config import BenchConfig
from copyseek.errors import CopyseekError

BUILD_DESCRIPTION = """Make a DISC21-style benchmark from a folder of photos. The photos are split into
disjoint pools, and BENCH_DIR gets:
  references/      copied and never-copied photos (R*.jpg)
  queries/         edited copies of references, and distractors: other photos edited the same
                   way (Q*.jpg; ids are shuffled, so they tell nothing)
  background/      untouched photos for score normalisation (B*.jpg)
  gt.csv           query_id,reference_id (empty reference for distractors)
  edits.csv        the edits of each query, in order
  families.csv     with --variants-per-reference: each reference's original (its family)
  benchmark.json   the settings and which photo went where
  holdout.txt      photos kept out of the benchmark (--holdout), e.g. to train on
The result depends only on the photos and the settings, not on --workers.
"""

BUILD_EXAMPLES = """examples:
  copyseek bench build --images photos/ --out bench/ --holdout 0.3
  copyseek bench build --images photos/ --out hard/ --severity 1.6 --copies 200 --seed 1
  copyseek index bench/references --index bench.idx
  copyseek match bench/queries --index bench.idx --output pred.csv --background bench/background
  copyseek eval pred.csv --ground-truth bench/gt.csv
"""


def add_parser(subparsers) -> None:
    """Add the `bench` command to the main CLI's sub-parsers."""
    parser = subparsers.add_parser(
        "bench",
        help="build copy-detection benchmarks (DISC21 style)",
        description="Benchmarks in the DISC21 layout: references/, queries/, background/, gt.csv.",
    )
    bench_sub = parser.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(bench_sub)


def add_build_parser(bench_sub) -> None:
    """Add `bench build` to the `bench` command's sub-parsers."""
    p = bench_sub.add_parser(
        "build",
        help="make a benchmark from a folder of photos",
        description=BUILD_DESCRIPTION,
        epilog=BUILD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--images",
        required=True,
        metavar="DIR|LIST.txt",
        help="photos: a folder (recursive) or a .txt list of paths",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="BENCH_DIR",
        help="output folder (new, or a benchmark with --overwrite)",
    )
    p.add_argument("--seed", type=int, default=BenchConfig.seed, help="random seed (default %(default)s)")
    sizes = p.add_argument_group("sizes (numbers of images)")
    size_options = (
        ("--references", "n_references", "references, copied or not"),
        ("--copied", "n_copied", "references that have copies among the queries"),
        ("--copies", "n_copies", "copy queries, at least --copied"),
        ("--distractor-queries", "n_distractor_queries", "queries made from photos that are not references"),
        ("--background", "n_background", "untouched background photos"),
    )
    for flag, field, text in size_options:
        default = getattr(BenchConfig, field)
        sizes.add_argument(
            flag, dest=field, type=int, metavar="N", default=default, help=f"{text} (default {default})"
        )
    sizes.add_argument(
        "--donors",
        dest="n_donors",
        type=int,
        metavar="N",
        help="photos that composite edits paste into queries (default: all left over)",
    )
    p.add_argument(
        "--severity",
        type=float,
        default=BenchConfig.severity,
        help="edit strength 0..2; the default %(default)s is calibrated so that SSCD scores muAP ~0.62 (0.75 normalised), as on DISC21",
    )
    p.add_argument(
        "--variants-per-reference",
        type=int,
        default=BenchConfig.variants_per_reference,
        metavar="N",
        help="N edited versions of each reference as more references (families.csv; default 0)",
    )
    p.add_argument(
        "--variant-severity",
        type=float,
        default=BenchConfig.variant_severity,
        help="edit strength 0..2 of those versions (default %(default)s; they get no composite edits)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=BenchConfig.holdout,
        help="fraction of the photos kept out, chosen by file name (default %(default)s)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=BenchConfig.max_side,
        help="longest side of written images in pixels (default %(default)s)",
    )
    p.add_argument(
        "--quality",
        type=int,
        default=BenchConfig.quality,
        help="JPEG quality of re-encoded images (default %(default)s)",
    )
    p.add_argument("--workers", type=int, help="processes (default: up to 2, one per core)")
    p.add_argument("--overwrite", action="store_true", help="replace the benchmark already in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_build)


def _images_argument(value: str) -> str | list[Path]:
    """A folder as is, or the paths listed in a .txt file (one a line, relative to the file's
    folder; blank lines and lines starting with # are ignored)."""
    path = Path(value)
    if path.is_file() and path.suffix.lower() == ".txt":
        lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
        return [path.parent / line for line in lines if line and not line.startswith("#")]
    if not path.is_dir():
        raise CopyseekError(f"--images must be a folder or a .txt list of image paths: {value}")
    return value


def run_build(args: argparse.Namespace) -> int:
    from copyseek.bench.build import build_benchmark  # imported late: keeps `copyseek --help` fast

    summary = build_benchmark(
        _images_argument(args.images),
        args.out,
        seed=args.seed,
        n_references=args.n_references,
        n_copied=args.n_copied,
        n_copies=args.n_copies,
        n_distractor_queries=args.n_distractor_queries,
        n_background=args.n_background,
        n_donors=args.n_donors,
        severity=args.severity,
        holdout=args.holdout,
        max_side=args.max_side,
        quality=args.quality,
        variants_per_reference=args.variants_per_reference,
        variant_severity=args.variant_severity,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"benchmark written to {summary['out']}: {summary['references']} references, "
        f"{summary['queries']} queries ({summary['copy_queries']} copies, "
        f"{summary['distractor_queries']} distractors), {summary['background']} background, "
        f"{summary['donors']} donors; {summary['images_written']} images in {summary['seconds']:.1f} s"
    )
    if summary["held_out"]:
        print(f"{summary['held_out']} photos held out, listed in {Path(summary['out']) / 'holdout.txt'}")
    for name, reason in summary["skipped"].items():
        print(f"skipped {name}: {reason}")
    return 0


RUN_DESCRIPTION = """Run several pipelines on one benchmark, side by side in one run, and print one
markdown table (muAP, recall@P90, accuracy@1, indexing and query images/s, peak memory, bytes per
reference) and a per-edit breakdown: the recall of copies of each edit kind at each pipeline's
precision-0.9 threshold. Each index is built in its own process, so peak memory is its own.

pipelines: pdq, sscd, sscd+sn, sscd-fast, sscd-fast+sn, global:MODEL[+sn] (e.g. global:onnx:m.onnx+sn)
and those other branches register (local, fused...); +sn = score normalisation against
BENCH/background (or --background).
"""


def add_run_parser(bench_sub) -> None:
    """Add `bench run` to the `bench` command's sub-parsers."""
    p = bench_sub.add_parser(
        "run",
        help="compare pipelines side by side on a benchmark",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bench", metavar="BENCH_DIR", help="a benchmark made by copyseek bench build (or DISC21's layout)")
    p.add_argument(
        "--pipelines",
        nargs="+",
        default=None,
        metavar="NAME",
        help="pipelines to compare (default: pdq sscd sscd+sn sscd-fast)",
    )
    p.add_argument("--background", metavar="DIR", help="background photos for +sn pipelines (default BENCH/background)")
    p.add_argument("--plot", metavar="PR.png", help="write every pipeline's precision-recall curve into one PNG")
    p.add_argument("--output", metavar="REPORT.md", help="also write the tables to a markdown file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run_run)


def run_run(args: argparse.Namespace) -> int:
    from copyseek.bench.run import DEFAULT_PIPELINES, edit_breakdown, results_table, run_benchmark
    from copyseek.eval.plot import plot_pr_curves
    from copyseek.io.csvfiles import read_ground_truth

    from copyseek.io.csvfiles import check_output_path

    for output in (args.output, args.plot):
        if output:
            check_output_path(output)  # before the work, not after it
    bench = Path(args.bench)
    results = run_benchmark(bench, args.pipelines or DEFAULT_PIPELINES, args.background, progress=not args.quiet)
    breakdown = edit_breakdown(results, read_ground_truth(bench / "gt.csv"), bench / "edits.csv")
    report = (
        f"## {bench}\n\n{results_table(results)}\n\n"
        f"### Recall of copies at each pipeline's P90 threshold, by edit\n\n{breakdown}\n"
    )
    print(report)
    if args.output:
        Path(args.output).write_text(report)
    if args.plot:
        plot_pr_curves({r.name: r.metrics for r in results}, args.plot, title=f"Precision-recall on {bench.name}")
        print(f"precision-recall curves written to {args.plot}")
    return 0


PATCHES_DESCRIPTION = """The patch benchmark (HPatches-like) of the local branch's describers: each photo
and six edited versions with known geometry (homography, scale, rotation, blur, JPEG, photometric),
SIFT frames of the photo and the same frames mapped into each edit. Prints matching mAP and
nearest-neighbour accuracy per describer, with the edit's frames exact ('clean') or jittered as
HPatches jitters its patches (levels easy, hard, tough: rotation, scale and translation noise; their
mean mAP is the headline, as in HPatches), or with position or orientation noise alone, and mAP per
edit kind. Photos held out for training (the same
hash rule as `bench build --holdout`) are left out."""


def add_patches_parser(bench_sub) -> None:
    """Add `bench patches` to the `bench` command's sub-parsers."""
    p = bench_sub.add_parser(
        "patches",
        help="compare local patch describers (RootSIFT, MKD, KDP) on true correspondences",
        description=PATCHES_DESCRIPTION,
        epilog="example:\n  copyseek bench patches --images photos/ --photos 60",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", required=True, metavar="DIR|LIST.txt", help="photos: a folder or a .txt list")
    p.add_argument("--photos", type=int, default=60, metavar="N", help="photos to use, first by name (default 60)")
    p.add_argument(
        "--holdout", type=float, default=0.3, help="leave out the photos `bench build --holdout` would hold out (default 0.3)"
    )
    p.add_argument(
        "--describers",
        nargs="+",
        default=None,
        help="describer names (default: rootsift mkd:raw mkd:pcawt mkd:lw kdp:cart kdp:polar kdp:fc)",
    )
    p.add_argument(
        "--conditions",
        nargs="+",
        default=None,
        metavar="COND",
        help="misregistration of the edited frames: clean, easy, hard, tough (HPatches' jitter levels), "
        "position:SIZES, orientation:DEGREES (default: clean easy hard tough)",
    )
    p.add_argument(
        "--kdp-weights", type=Path, default=None, metavar="DIR", help="read kdp:HEAD from DIR/kdp_HEAD.npz (a training run's)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the edits and noise (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_patches)


def run_patches(args: argparse.Namespace) -> int:
    from copyseek.bench.patches import (
        DESCRIBERS,
        default_conditions,
        kind_table,
        load_pairs,
        parse_condition,
        results_table,
        run_patch_benchmark,
    )
    from copyseek.local.describers import kdp_from_file, make_describer, resolve_name

    def describer(name: str):
        resolved = resolve_name(name)
        if args.kdp_weights is not None and resolved.startswith("kdp:"):
            return kdp_from_file(args.kdp_weights / f"kdp_{resolved.partition(':')[2]}.npz", resolved)
        return make_describer(name)

    describers = {name: describer(name) for name in args.describers or DESCRIBERS}
    conditions = dict(parse_condition(c) for c in args.conditions) if args.conditions else default_conditions()
    pairs = load_pairs(args.images, args.photos, args.holdout, args.seed, progress=not args.quiet)
    results = run_patch_benchmark(pairs, describers, conditions, seed=args.seed, progress=not args.quiet)
    photos = len({id(p.gray) for p in pairs})
    print(f"{len(pairs)} pairs from {photos} photos, {sum(len(p.frames) for p in pairs)} correspondences\n")
    print(results_table(results, tuple(conditions)))
    first = next(iter(conditions))
    print(f"\nmAP per edit kind ({first} frames):\n")
    print(kind_table(results, [p.kind for p in pairs], first))
    return 0


SUBCOMMANDS = [add_build_parser, add_run_parser, add_patches_parser]
"""Functions adding the `bench` sub-commands (each takes the `bench` sub-parsers)."""
