"""The `copyseek` command line. Each sub-command is a thin layer over the Python API."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import warnings
from contextlib import nullcontext
from pathlib import Path

from copyseek import __version__
from copyseek.errors import CopyseekError
from copyseek.distributed.cli import add_ray_options, add_shard_options, ray_describer, shards_for
from copyseek.store.cli import add_wait_option

DESCRIPTION = """Find modified copies of images (crops, overlays, recompression, pastes...) in a
reference collection, with calibrated scores, and evaluate them the DISC21 way.

typical use:
  copyseek index references/ --index my.idx
  copyseek match queries/ --index my.idx --output predictions.csv --background photos/
  copyseek eval predictions.csv --ground-truth gt.csv --plot pr.png
  copyseek info my.idx
"""


def add_speed_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed")
    group.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    group.add_argument("--workers", type=int, default=2, help="image decoding threads (default 2)")
    group.add_argument("--threads", type=int, default=0, help="model threads; 0 = all cores (default)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_ids_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ids",
        choices=("stem", "relative"),
        default="stem",
        help="image ids: file names without extension (default, as DISC21), or paths relative to the "
        "folder given, for collections whose file names repeat (`a/x.jpg`, `b/x.jpg`)",
    )


def runtime_options(args: argparse.Namespace) -> dict:
    return {"threads": args.threads, "batch_size": args.batch_size}


def add_index_parser(sub) -> None:
    p = sub.add_parser(
        "index",
        help="create or extend an index of reference images",
        description="Describe every image below REFERENCE_DIR and add it to the index. Incremental: "
        "images already indexed are not read again; an interrupted run keeps its committed work and "
        "a re-run completes it. Unusable files are skipped with the reason (INDEX/skipped.csv).",
    )
    p.add_argument("reference_dir", metavar="REFERENCE_DIR", help="folder of reference images (searched recursively)")
    p.add_argument("--index", required=True, metavar="INDEX_DIR", help="index folder (created if missing)")
    p.add_argument(
        "--pipeline",
        default=None,
        help="branches to index: global (default for a new index), local, fused (global + local), "
        "fused-fast (fused at about twice the speed, a little less accurate), pdq, "
        "asmk (HOW local descriptors aggregated by ASMK)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="global model: sscd (default), sscd-fast, copyseek-small, onnx:PATH, torchscript:PATH, "
        "or an ensemble A,B@WEIGHT (fused default: sscd,copyseek-small@0.4)",
    )
    p.add_argument("--resize", default=None, metavar="MODE:SIZE", help="model input: square:320, short:288, or several joined by + whose vectors are averaged, "
        "e.g. square:224+short:256 (default: the model's own; square:224+short:256 for fused)")
    p.add_argument("--factory", default=None, help="Faiss index factory string for the global branch (default auto: exact below 50,000 references, IVF + 4-bit PQ past it; Flat: always exact)")
    p.add_argument(
        "--flip-average",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="global vectors of each image and its mirror, averaged (2x model cost; default off)",
    )
    p.add_argument("--how-model", default=None, metavar="MODEL.onnx",
                   help="HOW model of the asmk pipeline, with its MODEL.codebook.npz beside it "
                   "(default: the shipped copyseek-how; train one with configs/how.toml)")
    p.add_argument(
        "--local-descriptor",
        default=None,
        metavar="NAME",
        help="local branch's keypoint descriptor: rootsift (default), mkd or kdp (or a variant, e.g. mkd:pcawt)",
    )
    p.add_argument("--commit-every", type=int, default=256, help="images per atomic commit (default 256)")
    add_ids_option(p)
    add_wait_option(p)
    add_speed_options(p)
    add_ray_options(p)
    p.set_defaults(run=run_index)


def branch_options(args: argparse.Namespace) -> dict[str, dict]:
    options = {k: v for k, v in {"model": args.model, "resize": args.resize, "factory": args.factory}.items() if v}
    if args.flip_average is not None:
        options["flip_average"] = args.flip_average
    branches = {"global": options} if options else {}
    if args.how_model:
        branches["how"] = {"model": args.how_model}
    if args.local_descriptor:
        from copyseek.local.describers import resolve_name

        # Stored resolved ('mkd' -> 'mkd:lw'), so the index keeps its describer if the default changes.
        branches["local"] = {"descriptor": resolve_name(args.local_descriptor)}
    return branches


def run_index(args: argparse.Namespace) -> int:
    from copyseek.io.images import find_images
    from copyseek.registry import pipeline_branches
    from copyseek.store.index import Index

    # before the index exists, so that a typo or an empty folder leaves nothing behind
    files, ignored = find_images(args.reference_dir, args.ids)
    if not files:
        raise CopyseekError(f"no images in {args.reference_dir}" + (f" ({len(ignored)} other files)" if ignored else ""))
    if args.how_model and args.pipeline and "how" not in pipeline_branches(args.pipeline):
        raise CopyseekError(f"--how-model is for a pipeline with the how branch (asmk), not {args.pipeline!r}")
    with Index.open_or_create(args.index, args.pipeline, branch_options(args), runtime_options(args), wait=args.wait) as index:
        report = index.add(
            files,
            commit_every=args.commit_every,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.quiet,
            describer=ray_describer(args, index),
        )
        report.ignored_files = len(ignored)
        print(report.summary())
        if report.skipped:
            print(f"skipped images are listed in {Path(args.index) / 'skipped.csv'}")
        print(f"references: {len(index)}")
    return 0


def add_match_parser(sub) -> None:
    p = sub.add_parser(
        "match",
        help="match query images against an index, write DISC21 predictions",
        description="Find, for each query image (files, or folders searched recursively), the "
        "references it may copy. Writes query_id,reference_id,score rows (higher = more similar), at "
        "most --k per query. Scores: global = cosine similarity (minus the background offset with "
        "--background); local = inliers; pdq = 1 - Hamming distance / 256; fused = log-odds that the "
        "pair is a copy (probability = 1 / (1 + exp(-score)); 2.2 = 90 %%).",
    )
    p.add_argument("queries", nargs="+", metavar="QUERY", help="query images or folders of them")
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("--output", required=True, metavar="PREDICTIONS", help="output file, or - for stdout")
    p.add_argument(
        "--format",
        choices=("csv", "json"),
        default="csv",
        help="csv: DISC21 predictions (default); json: one JSON object per query and line, with its "
        "matches and, for the fused pipeline, each branch's evidence",
    )
    p.add_argument(
        "--background",
        metavar="BACKGROUND_DIR",
        help="photos known not to be copies, for score normalisation (descriptors cached in the index)",
    )
    p.add_argument("--k", type=int, default=10, help="predictions per query at most (default 10)")
    p.add_argument("--beta", type=float, default=1.0, help="normalisation weight (default 1)")
    p.add_argument("--n-background", type=int, default=3, help="background neighbours averaged (default 3)")
    p.add_argument(
        "--normalize-with", choices=("background", "collection"), default="background",
        help="with --background: take each query's offset over the background set alone (default), or over the "
        "background set and the index's own references, leaving out the query's nearest reference and its versions "
        "(the offset then follows the collection's density; measured for global pipelines, BENCHMARKS.md issue 13)",
    )
    add_ids_option(p)
    p.add_argument(
        "--variants",
        action="store_true",
        help="also write PREDICTIONS.variants.csv: for each query's best reference, the other references "
        "that are versions of the same photo, ranked by diffusion on the references' kNN graph",
    )
    p.add_argument("--nprobe", type=int, help="IVF lists visited per query, for an index made with an IVF --factory "
                   "(default: 1/16 of the lists, 8 to 256)")
    p.add_argument("--ef-search", type=int, help="HNSW candidate-list length, for an HNSW --factory (default 64)")
    p.add_argument("--search-threads", type=int, help="threads one query's IVF lists are scanned with, for the "
                   "compressed global index (`auto` past 50,000 references; default 1): lower latency when cores are idle")
    p.add_argument("--pair-matching", action=argparse.BooleanOptionalAction, default=None,
                   help="local branch: take each verified reference's tentative matches within the pair, so a pair's "
                   "evidence falls less as the collection grows, at ~140-250 ms more per query (default: the index's setting, "
                   "off unless it was built with it; BENCHMARKS.md issue 13)")
    p.add_argument("--collapse-versions", action="store_true",
                   help="list each query's best reference of every group of versions only (references whose global "
                   "vectors are nearer than 0.5 raw cosine to a better-scored one are left out; --variants lists them): "
                   "a bank holding many versions of one photo then reports the photo once per query (BENCHMARKS.md issue 13)")
    add_speed_options(p)
    add_shard_options(p)
    p.set_defaults(run=run_match)


def run_match(args: argparse.Namespace) -> int:
    from copyseek.io.csvfiles import check_output_path
    from copyseek.io.images import find_inputs
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    options = MatchOptions(
        k=args.k,
        background=args.background,
        beta=args.beta,
        n_background=args.n_background,
        normalize_with=args.normalize_with,
        batch_size=args.batch_size,
        workers=args.workers,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        search_threads=args.search_threads,
        pair_matching=args.pair_matching,
        collapse_versions=args.collapse_versions,
    )
    to_stdout = args.output == "-"
    output = None if to_stdout else check_output_path(args.output)
    shards = shards_for(args)
    with Index.open(args.index, runtime_options(args)) as index, shards or nullcontext():
        index.use_searcher_source(shards)
        files, _ = find_inputs(args.queries, args.ids)
        if not files:
            raise CopyseekError(f"no query images in {' '.join(args.queries)}")
        if args.variants:
            from copyseek.match.variants import match_with_variants, write_variants

            result, variants = match_with_variants(index, files, options, progress=not args.quiet)
        else:
            result = match(index, files, options, progress=not args.quiet)
    info = sys.stderr if to_stdout else sys.stdout  # stdout carries the predictions themselves
    write_match_output(result, args.format, output)
    print(result.summary(), file=info)
    if output is not None:
        print(f"predictions written to {output}")
    if args.variants:
        if output is None:
            raise CopyseekError("--variants writes PREDICTIONS.variants.csv beside the predictions: give --output a file")
        path = write_variants(output.with_name(output.stem + ".variants.csv"), variants)
        print(f"{len(variants)} variants of the matched references written to {path}")
    if result.skipped and output is not None:
        report = output.with_name(output.stem + ".skipped.csv")
        with open(report, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["id", "path", "reason"])
            writer.writerows((f.id, str(f.path), reason) for f, reason in result.skipped)
        print(f"skipped queries are listed in {report}")
    return 0


def write_match_output(result, fmt: str, output: Path | None) -> None:
    """The predictions as DISC21 CSV or as JSON lines (one object per query), to a file or stdout."""
    from copyseek.io.csvfiles import format_score, write_predictions, write_predictions_to

    if fmt == "csv":
        if output is None:
            write_predictions_to(sys.stdout, result.predictions)
        else:
            write_predictions(output, result.predictions)
        return
    by_query: dict[str, list] = {}
    for p in result.predictions:
        match = {"reference": p.reference_id, "score": float(format_score(p.score))}
        if p.evidence:
            match["evidence"] = {k: float(format_score(v)) for k, v in p.evidence.items()}
        by_query.setdefault(p.query_id, []).append(match)
    lines = [json.dumps({"query": f.id, "path": str(f.path), "matches": by_query.get(f.id, [])}) for f in result.queried]
    text = "".join(line + "\n" for line in lines)
    if output is None:
        sys.stdout.write(text)
    else:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, output)


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score predictions against a ground truth (muAP, recall@P90, accuracy@1)",
        description="DISC21 metrics as the ISC2021 reference code computes them: predictions of all "
        "queries pooled and sorted by score, ties counted worst case, predictions for queries that "
        "copy nothing are false positives.",
    )
    p.add_argument("predictions", metavar="PREDICTIONS.csv")
    p.add_argument("--ground-truth", required=True, metavar="GT.csv", help="query_id,reference_id (empty reference = no copy)")
    p.add_argument("--plot", metavar="PR.png", help="write the precision-recall curve as a PNG")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from copyseek.eval.metrics import evaluate
    from copyseek.io.csvfiles import check_output_path, read_ground_truth, read_predictions

    if args.plot:
        check_output_path(args.plot)  # before the work, not after it
    metrics = evaluate(read_predictions(args.predictions), read_ground_truth(args.ground_truth))
    if args.json:
        print(
            json.dumps(
                {
                    "micro_ap": metrics.micro_ap,
                    "recall_at_p90": metrics.recall_at_p90,
                    "threshold_at_p90": metrics.threshold_at_p90,
                    "accuracy_at_1": metrics.accuracy_at_1,
                    "n_predictions": metrics.n_predictions,
                    "n_positives": metrics.n_positives,
                },
                indent=2,
            )
        )
    else:
        print(metrics.summary())
    if args.plot:
        from copyseek.eval.plot import plot_pr_curves

        plot_pr_curves({Path(args.predictions).stem: metrics}, args.plot)
        print(f"precision-recall curve written to {args.plot}")
    return 0


def add_info_parser(sub) -> None:
    p = sub.add_parser("info", help="describe an index", description="Number of references, pipeline, models and sizes of an index.")
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--json", action="store_true", help="print everything as JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index

    with Index.open(args.index) as index:
        info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"index: {info['path']}")
    print(f"references: {info['references']}")
    print(f"skipped: {info['skipped']}")
    print(f"pipeline: {info['pipeline']}")
    for name, spec in info["branches"].items():
        print(f"branch {name}: " + ", ".join(f"{k}={v}" for k, v in spec.items()))
    print(f"disk: {info['disk_bytes'] / 1e6:.2f} MB")
    for name, per_ref in info["bytes_per_reference"].items():
        print(f"bytes per reference ({name}): {per_ref:.0f}")
    return 0


def add_explain_parser(sub) -> None:
    p = sub.add_parser(
        "explain",
        help="draw why a query matches a reference",
        description="Both images side by side with the local branch's inlier correspondences, the "
        "copied region outlined in the query, and each branch's score (global, region-global, "
        "local inliers; not background-normalised). 'fused (pair alone)' is the fused log-odds of the "
        "pair by itself: no other reference competes, so any look-alike pair scores high. With a "
        "fused --index and a reference id, 'fused (as match)' is the score `copyseek match` gives "
        "the pair (without --background), where the rest of the index competes.",
    )
    p.add_argument("query", metavar="QUERY", help="query image")
    p.add_argument("reference", metavar="REFERENCE", help="reference image, or a reference id with --index")
    p.add_argument("--output", required=True, metavar="PAIR.png")
    p.add_argument("--index", metavar="INDEX_DIR", help="use this index's model and look REFERENCE up by id")
    p.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from copyseek.match.explain import explain_pair

    explanation = explain_pair(args.query, args.reference, args.output, args.index)
    for name, value in explanation.scores.items():
        print(f"{name}: {value:.4g}")  # same format as the picture; inliers print as integers
    print(f"picture written to {explanation.path}")
    return 0


def add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole thing on generated images (no arguments needed)",
        description="Makes a small collection of images, edited copies of some of them and "
        "distractors, then indexes, matches, evaluates and shows a few top matches.",
    )
    p.add_argument("--out", default=None, help="folder for the demo's files (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from copyseek.demo import run_demo as demo

    demo(args.out, seed=args.seed, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="copyseek", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"copyseek {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_index_parser, add_match_parser, add_eval_parser, add_info_parser, add_explain_parser, add_demo_parser):
        add(sub)
    for module in ("copyseek.store.cli", "copyseek.bench.cli", "copyseek.learn.cli", "copyseek.service.cli", "copyseek.graph.cli",
                   "copyseek.attack.cli", "copyseek.detect.cli"):
        add_optional_parser(module, sub)
    return parser


def add_optional_parser(module: str, sub) -> None:
    """Sub-commands of other domains register themselves with an `add_parser(subparsers)` function."""
    import importlib

    try:
        importlib.import_module(module).add_parser(sub)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            # copyseek's own warnings are for the user: one line like the errors, no source line
            warnings.showwarning = lambda message, category, *_: print(
                f"copyseek {args.command}: warning: {message}", file=sys.stderr
            )
            return int(args.run(args) or 0)
    except CopyseekError as exc:
        print(f"copyseek {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
