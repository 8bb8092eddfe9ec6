"""`copyseek train`: train a descriptor model and export it for `copyseek index --model onnx:PATH`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from copyseek.errors import CopyseekError

EXAMPLES = """examples:
  copyseek train --images photos/ --out runs/r1 --minutes 30
  copyseek train --config configs/copyseek-small.toml --images BENCH/holdout.txt --out runs/small
  copyseek train --out runs/small --resume --minutes 60        # continue, with a larger budget
  copyseek train --out runs/how-step200 --export runs/how/snapshots/step-000200.pt   # export a snapshot
  copyseek train --config configs/lp-verified.toml --images photos/ --out runs/lp --pseudo-labels lp --labels labels.csv --rounds 3
  copyseek train --images photos/ --out runs/mom --miner manifold --loss contrastive --set init=copyseek-small --set freeze_norm=1 --minutes 10
  copyseek index refs/ --index refs.idx --model onnx:runs/r1/model.onnx
"""


def add_parser(subparsers) -> None:
    add_train_parser(subparsers)
    add_triage_parser(subparsers)


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a descriptor model (Recall@k surrogate, contrastive, distillation)",
        description="Train a global descriptor on unlabelled photos (each its own class, positives made "
        "by random edits) or on a labelled folder (one class per sub-folder), with huge batches computed "
        "in chunks. Writes checkpoints, metrics.csv, curves.png and model.onnx (+ model.json) to --out. "
        "Settings come from the defaults, then --config, then --set, then the options below.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", metavar="DIR|LIST.txt", help="training images: a folder or a .txt list of paths")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (checkpoints, metrics, model)")
    p.add_argument("--config", metavar="FILE.toml", help="settings file (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR (its saved settings apply)")
    p.add_argument("--export", metavar="CHECKPOINT.pt", help="do not train: export the model of a checkpoint or "
                   "snapshot of a run to RUN_DIR (model.onnx, and for a HOW head its codebook), as the run does at its end; "
                   "--images: the photos for the codebook when the run's are not on this machine")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--loss", help="recall@k+simix (default), recall@k, contrastive, distill, distill+recall@k, ...")
    p.add_argument("--miner", help="pairs: all (default), hard, or mined from the training photos' kNN graph "
                   "without labels or edits: manifold (Iscen et al. 2018), knn (Euclidean baseline)")
    p.add_argument("--pseudo-labels", choices=("lp",), help="lp: semi-supervised rounds of describe -> kNN graph -> "
                   "label propagation -> training on the pseudo-labels (Iscen et al. 2019); needs --labels; "
                   "--set labelled_steps=N trains on the labelled photos alone first, as the paper does; "
                   "--set pseudo_inliers=12 trains only the propagated labels that local verification confirms; "
                   "configs/lp-verified.toml holds both, the recipe that beats labelled-only training on copy families")
    p.add_argument("--labels", metavar="LABELS.csv", help="image,label for the labelled photos (image = file name stem)")
    p.add_argument("--rounds", type=int, default=3, help="label propagation rounds, each --minutes long (default 3)")
    p.add_argument("--teacher", help="model to distil: sscd (default), onnx:PATH, torchscript:PATH or any --model of copyseek index")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: a GPU when there is one")
    p.add_argument("--minutes", type=float, help="training time budget in minutes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting, e.g. --set arch=vit-tiny --set ks=[1,4] (repeatable)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_train)


def settings(args: argparse.Namespace):
    """The run's TrainConfig: defaults < saved run (with --resume) < --config < --set < options."""
    from copyseek.learn.config import TrainConfig, parse_assignment, read_saved, read_toml, updated

    config = TrainConfig()
    if args.resume:
        saved = Path(args.out) / "config.json"
        if not saved.exists():
            raise CopyseekError(f"--resume: {args.out} holds no run (no config.json)")
        config = updated(config, read_saved(saved), str(saved))
    if args.config:
        config = updated(config, read_toml(Path(args.config)), args.config)
    config = updated(config, dict(parse_assignment(a) for a in args.set), "--set")
    options = {"images": args.images, "seed": args.seed, "loss": args.loss, "miner": args.miner, "teacher": args.teacher,
               "device": args.device, "minutes": args.minutes}
    return updated(config, {k: v for k, v in options.items() if v is not None}, "options")


def usage_line(model: Path) -> str:
    """Where an exported model went and how to index with it: a HOW model (its sidecar says kind
    'how') is a local branch for --pipeline asmk, any other one a global --model."""
    sidecar = Path(model).with_suffix(".json")
    how = sidecar.is_file() and json.loads(sidecar.read_text()).get("kind") == "how"
    use = f"--pipeline asmk --how-model {model}" if how else f"--model onnx:{model}"
    return f"model: {model} (use it with: copyseek index DIR --index INDEX {use})"


def run_train(args: argparse.Namespace) -> int:
    if args.export:
        from copyseek.learn.train import export_checkpoint

        model = export_checkpoint(Path(args.export), Path(args.out), images=args.images, progress=not args.quiet)
        print(usage_line(model))
        return 0
    if bool(args.pseudo_labels) != bool(args.labels):
        raise CopyseekError("--pseudo-labels lp and --labels LABELS.csv go together")
    if args.pseudo_labels:
        if args.resume:
            raise CopyseekError("--resume does not continue label propagation rounds: start a new --out")
        from copyseek.learn.lploop import train_lp

        model = train_lp(settings(args), Path(args.out), args.labels, args.rounds, progress=not args.quiet)
    else:
        from copyseek.learn.train import train

        model = train(settings(args), Path(args.out), resume=args.resume, progress=not args.quiet)
    print(usage_line(model))
    return 0


def add_triage_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "triage",
        help="rank user reports of copies, most doubtful first (GCN cleaning)",
        description="For each reference, a graph convolutional network over its verified copies (clean) "
        "and its reported copies (noisy) scores each report's relevance. Both CSVs are DISC21-style "
        "query_id,reference_id; query ids name image files under --queries. Writes "
        "query_id,reference_id,relevance, one row per report, lowest relevance first.",
    )
    p.add_argument("--verified", required=True, metavar="VERIFIED.csv")
    p.add_argument("--reports", required=True, metavar="REPORTS.csv")
    p.add_argument("--index", required=True, metavar="INDEX_DIR")
    p.add_argument("--queries", required=True, metavar="DIR", help="folder of the query images")
    p.add_argument("--output", required=True, metavar="QUEUE.csv")
    p.add_argument("--epochs", type=int, default=200, help="GCN training epochs per reference (default 200)")
    p.add_argument("--k", type=int, default=None, metavar="K",
                   help="GCN graph: neighbours per image in each reference's kNN graph (default 10)")
    p.add_argument("--context-references", type=int, default=None, metavar="M",
                   help="the clean images (reference + verified copies) of the M other references with the nearest "
                   "clean prototypes join each graph as negatives (copyseek's extension; 0 = the paper's graph; "
                   "default 5)")
    p.add_argument("--relevance", choices=("gcn", "collection"), default="gcn",  # learn.triage.RELEVANCES (imports torch)
                   help="gcn (default): one GCN per reported reference; collection: one multi-class GCN over every "
                   "reported reference and its M context references, a report's relevance the probability of its "
                   "reference (better for weighting prototypes on SSCD descriptors)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_triage)


def run_triage(args: argparse.Namespace) -> int:
    import csv

    from copyseek.graph.gcn import GCNParams
    from copyseek.io.csvfiles import read_ground_truth
    from copyseek.learn.triage import triage
    from copyseek.store.index import Index

    output = Path(args.output)
    if not output.parent.exists():
        raise CopyseekError(f"output folder does not exist: {output.parent}")
    verified = set(read_ground_truth(args.verified).pairs)
    reports = set(read_ground_truth(args.reports).pairs)
    with Index.open(args.index) as index:
        chosen = {"k": args.k, "context_references": args.context_references}
        params = GCNParams(epochs=args.epochs, **{name: value for name, value in chosen.items() if value is not None})
        rows = triage(index, verified, reports, args.queries, params, progress=not args.quiet, relevance=args.relevance)
    with open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "reference_id", "relevance"])
        writer.writerows((r.query_id, r.reference_id, f"{r.relevance:.4f}") for r in rows)
    print(f"{len(rows)} reports ranked, most doubtful first, in {output}")
    return 0
