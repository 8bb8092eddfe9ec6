"""The index's own sub-commands beyond `index` / `info` (assembled by copyseek.cli): `copyseek label`,
label propagation (copyseek.graph) on an index's kNN graph (store/graphs.py)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError


def add_parser(sub) -> None:
    add_label_parser(sub)


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
        nodes = index_graph(index, GraphParams(k=args.k, symmetrize="sum"))
    ids, graph = nodes.ids, nodes.graph
    seeds = read_seeds(args.seeds, set(ids))
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
