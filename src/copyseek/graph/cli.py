"""`copyseek dedup` and `copyseek label`: the graph's sub-commands (assembled by copyseek.cli)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError


def add_parser(sub) -> None:
    add_dedup_parser(sub)
    add_label_parser(sub)


def add_dedup_parser(sub) -> None:
    from copyseek.graph.dedup import KEEP_POLICIES, DedupParams

    p = sub.add_parser(
        "dedup",
        help="find groups of near-duplicates and edited copies in a folder",
        description="Describe every image below FOLDER, link each to its nearest neighbours, verify "
        "doubtful links with local features, and write the groups: OUTPUT as imagededup's JSON "
        "({path: [[duplicate, score], ...]}, paths relative to FOLDER, every image a key), "
        "OUTPUT's .groups.csv (group,path,confidence,keep) and a contact sheet with --plot. "
        "A dry run unless --move-to is given: nothing is moved or deleted.",
    )
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--output", required=True, metavar="GROUPS.json")
    p.add_argument("--plot", metavar="GROUPS.png", help="contact sheet of the largest groups")
    p.add_argument("--keep", choices=KEEP_POLICIES, default="largest", help="which image of a group stays (default largest)")
    p.add_argument("--move-to", metavar="DIR", help="move the images not kept there (default: move nothing)")
    p.add_argument("--k", type=int, default=DedupParams.k, help=f"neighbours per image (default {DedupParams.k})")
    p.add_argument("--accept", type=float, default=DedupParams.accept, help=f"cosine that makes a duplicate without verification (default {DedupParams.accept})")
    p.add_argument("--candidate", type=float, default=DedupParams.candidate, help=f"cosine from which a pair is verified locally (default {DedupParams.candidate})")
    p.add_argument("--no-verify", action="store_true", help="no local verification: pairs under --accept are dropped")
    p.add_argument("--model", default="sscd", help="global model (default sscd)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_dedup)


def run_dedup(args: argparse.Namespace) -> int:
    from copyseek.graph.dedup import DedupParams
    from copyseek.graph.folders import dedup_folder

    report = dedup_folder(
        args.folder,
        args.output,
        params=DedupParams(k=args.k, accept=args.accept, candidate=args.candidate),
        plot=args.plot,
        keep=args.keep,
        move_to=args.move_to,
        verify=not args.no_verify,
        model=args.model,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(report.summary())
    for path in report.outputs:
        print(f"written: {path}")
    return 0


def add_label_parser(sub) -> None:
    p = sub.add_parser(
        "label",
        help="spread labels known for a few references to the rest of an index",
        description="Label propagation on the index's kNN graph (kept in the index folder, updated "
        "when references change). SEEDS is a CSV reference_id,label; OUTPUT gets "
        "reference_id,label,confidence,seed for every reference, the label empty where no labelled "
        "family reaches the image (--abstain) or the confidence is under --min-confidence.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--seeds", required=True, metavar="LABELS.csv")
    p.add_argument("--output", required=True, metavar="LABELS.out.csv")
    p.add_argument("--k", type=int, default=10, help="graph neighbours per image (default 10)")
    p.add_argument("--alpha", type=float, default=0.99, help="propagation reach, in (0, 1) (default 0.99)")
    p.add_argument("--abstain", type=float, default=0.01, help="least propagated mass for a label (default 0.01)")
    p.add_argument("--min-confidence", type=float, default=0.0, help="least confidence for a label (default 0)")
    p.add_argument("--no-balance", action="store_true", help="do not divide each label's scores by its number of seeds")
    p.set_defaults(run=run_label)


def read_seeds(path: str | Path, known: set[str]) -> dict[str, str]:
    """reference_id -> label from a CSV with those two columns (header required)."""
    path = Path(path)
    if not path.is_file():
        raise CopyseekError(f"seeds file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"reference_id", "label"} <= set(reader.fieldnames):
            raise CopyseekError(f"{path} must have the header reference_id,label")
        seeds = {row["reference_id"]: row["label"] for row in reader if row["label"]}
    unknown = sorted(set(seeds) - known)
    if unknown:
        raise CopyseekError(f"{len(unknown)} seed reference(s) are not in the index, e.g. {', '.join(unknown[:5])}")
    if not seeds:
        raise CopyseekError(f"{path} labels no reference")
    return seeds


def run_label(args: argparse.Namespace) -> int:
    from copyseek.graph.knn import GraphParams
    from copyseek.graph.propagation import LabelPropagation
    from copyseek.store.graphs import index_graph
    from copyseek.store.index import Index

    output = Path(args.output)
    if not output.parent.exists():
        raise CopyseekError(f"output folder does not exist: {output.parent}")
    with Index.open(args.index) as index:
        ids = list(index.ids)
        seeds = read_seeds(args.seeds, set(ids))
        graph = index_graph(index, GraphParams(k=args.k, symmetrize="sum"))
    names = sorted(set(seeds.values()))
    labels = np.full(len(ids), -1)
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    for image_id, label in seeds.items():
        labels[row_of[image_id]] = names.index(label)
    lp = LabelPropagation(
        alpha=args.alpha, balance=not args.no_balance, abstain=args.abstain, min_confidence=args.min_confidence
    ).fit(graph, labels)
    with open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["reference_id", "label", "confidence", "seed"])
        for row, image_id in enumerate(ids):
            label = names[lp.labels_[row]] if lp.labels_[row] >= 0 else ""
            writer.writerow([image_id, label, f"{lp.confidence_[row]:.4f}", int(labels[row] >= 0)])
    labelled = int((lp.labels_ >= 0).sum() - (labels >= 0).sum())
    print(f"{len(seeds)} seeds, {len(names)} labels: labelled {labelled} more references, {int((lp.labels_ < 0).sum())} left unlabelled")
    print(f"labels written to {output}")
    return 0
