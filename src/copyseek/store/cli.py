"""The index's own sub-commands beyond `index` / `info` (assembled by copyseek.cli): `remove`,
`compact`, `list`, `verify`, `repair` (store/index.py, store/integrity.py), and `copyseek label`,
label propagation (copyseek.graph) on an index's kNN graph (store/graphs.py)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError


def add_parser(sub) -> None:
    add_index_parsers(sub)
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
    # k 20, alpha 0.8, union, gamma 1: tuned on the dev half of 483 hard families (BENCHMARKS.md, issue 14)
    p.add_argument("--k", type=int, default=20, help="graph neighbours per image (default 20)")
    p.add_argument("--alpha", type=float, default=0.8, help="propagation reach, in (0, 1) (default 0.8)")
    p.add_argument("--symmetrize", default="union",
                   help="how the kNN lists become edges: union (default: an edge where either image lists the "
                   "other), mutual or sum")
    p.add_argument("--gamma", type=float, default=1.0, help="edge weight = cosine ** gamma (default 1)")
    p.add_argument("--abstain", type=float, default=0.01, help="least propagated mass for a label (default 0.01)")
    p.add_argument("--confidence", choices=["margin", "entropy"], default="margin",  # graph.propagation.CONFIDENCES
                   help="how sure a label is: margin (default), the best label's lead over the runner-up as a share "
                   "of the propagated mass, or entropy, 1 - H / log c (the paper's); margin ranks right labels "
                   "first far better with many labels (BENCHMARKS.md, issue 14, session 25)")
    p.add_argument("--min-confidence", type=float, default=0.0, help="least confidence for a label (default 0)")
    p.add_argument("--no-balance", action="store_true", help="do not divide each label's scores by its number of seeds")
    # self-training F 0.05 of each label's references, W 1, one round: chosen on the dev families over 5 label
    # draws (BENCHMARKS.md, issue 14, session 17), the best mean gain at 1, 2 and 5 labels, not losing at 1
    p.add_argument("--self-train", type=float, default=0.05, metavar="F",
                   help="self-training: the most confident fraction F of each label's unlabelled references becomes "
                   "extra seeds of that label and the propagation runs again (default 0.05; 0: off)")
    p.add_argument("--self-weight", type=float, default=1.0, metavar="W",
                   help="weight of those extra seeds, in (0, 1] (a given label weighs 1; default 1)")
    p.add_argument("--self-rounds", type=int, default=1, help="self-training rounds (default 1)")
    p.add_argument("--self-select", default="class", choices=["global", "class"],
                   help="extra seeds: the most confident fraction of each label's unlabelled references (class, the "
                   "default) or of all of them (global)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
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
    lp = LabelPropagation(  # its options are checked before the graph is built
        alpha=args.alpha, balance=not args.no_balance, abstain=args.abstain, min_confidence=args.min_confidence,
        self_train=args.self_train, self_weight=args.self_weight, self_rounds=args.self_rounds,
        self_select=args.self_select, confidence=args.confidence, keep_scores=False, progress=not args.quiet,
    )
    with Index.open(args.index) as index:
        nodes = index_graph(index, GraphParams(k=args.k, gamma=args.gamma, symmetrize=args.symmetrize))
    ids, graph = nodes.ids, nodes.graph
    seeds = read_seeds(args.seeds, set(ids))
    names = sorted(set(seeds.values()))
    labels = np.full(len(ids), -1)
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    number_of = {name: number for number, name in enumerate(names)}
    for image_id, label in seeds.items():
        labels[row_of[image_id]] = number_of[label]
    lp.fit(graph, labels)
    with open(output, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["reference_id", "label", "confidence", "seed"])
        for row, image_id in enumerate(ids):
            label = names[lp.labels_[row]] if lp.labels_[row] >= 0 else ""
            writer.writerow([image_id, label, f"{lp.confidence_[row]:.4f}", int(labels[row] >= 0)])
    labelled = int((lp.labels_ >= 0).sum() - (labels >= 0).sum())
    print(f"{len(seeds)} seeds, {len(names)} labels: labelled {labelled} more references, {int((lp.labels_ < 0).sum())} left unlabelled")
    if lp.pseudo_seeds_.any():
        print(f"self-training: {int(lp.pseudo_seeds_.sum())} confident references were extra seeds ({args.self_rounds} round(s))")
    print(f"labels written to {output}")
    return 0


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another copyseek process is writing to the index, wait up to this long for it (default 0: fail at once)",
    )


def add_index_parsers(sub) -> None:
    p = sub.add_parser(
        "remove",
        help="remove references from an index (they are never returned again)",
        description="Make references unsearchable, in one crash-safe step. A later `copyseek index` of "
        "the same files does not add them back (a changed file with the same name is a new image). "
        "Their features stay on disk until `copyseek compact`. Exit 1 if an id is not in the index.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("ids", nargs="*", metavar="ID", help="reference ids (file names without extension)")
    p.add_argument("--from-file", metavar="IDS.txt", help="also remove the ids in this file, one per line ('-' = stdin)")
    add_wait_option(p)
    p.set_defaults(run=run_remove)

    p = sub.add_parser(
        "compact",
        help="reclaim the space of removed references",
        description="Rewrite the chunk files that hold removed references without them. Crash-safe: "
        "an interrupted compaction leaves the index as it was, and a re-run completes it.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    add_wait_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_compact)

    p = sub.add_parser(
        "list",
        help="list an index's images: id, path, status",
        description="Every image the index knows, with its status: indexed (searchable), skipped "
        "(could not be used; the reason), removed, or lost (its chunk was damaged and the file is gone). "
        "Works on read-only index folders.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    p.add_argument("--status", nargs="+", choices=("indexed", "skipped", "removed", "lost"), help="only these statuses")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=run_list)

    p = sub.add_parser(
        "verify",
        help="check every file of an index; exit 1 if something is damaged",
        description="Read every file the index holds: the manifest (SQLite's integrity check), each "
        "chunk (its recorded checksum, that it decodes, that it holds the references the manifest "
        "says) and the background caches. Prints each damaged file with the references it held, and "
        "the fix. Writes nothing: works on read-only folders. Exit 0 = clean, 1 = damaged.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    p.set_defaults(run=run_verify)

    p = sub.add_parser(
        "repair",
        help="drop damaged chunks and describe their references again",
        description="Forget damaged chunk files and background caches, describe the references they "
        "held again from their recorded paths, and list those whose file is gone (status lost; a "
        "later `copyseek index` adds them back once the file is there). Afterwards `verify` is clean "
        "and `match` gives the predictions it gave before the damage.",
    )
    p.add_argument("index", metavar="INDEX_DIR")
    add_wait_option(p)
    p.add_argument("--workers", type=int, default=2, help="image decoding threads (default 2)")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call (default 16)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_repair)


def read_ids(args: argparse.Namespace) -> list[str]:
    ids = list(args.ids)
    if args.from_file:
        if args.from_file == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(args.from_file).read_text(encoding="utf-8-sig")
            except OSError as exc:
                raise CopyseekError(f"cannot read the id file {args.from_file} ({exc.strerror})") from None
        ids += [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not ids:
        raise CopyseekError("no ids given: name them, or give --from-file IDS.txt")
    return ids


def run_remove(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index

    ids = read_ids(args)
    with Index.open(args.index, wait=args.wait) as index:
        report = index.remove(ids)
    print(report.summary())
    for image_id in report.unknown:
        print(f"not in the index: {image_id}", file=sys.stderr)
    return 1 if report.unknown else 0


def run_compact(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index

    with Index.open(args.index, wait=args.wait) as index:
        print(index.compact(progress=not args.quiet).summary())
    return 0


def run_list(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index

    with Index.open(args.index) as index:
        entries = index.list(args.status)
    for e in entries:
        if args.json:
            print(json.dumps({"id": e.id, "path": e.path, "status": e.status, "reason": e.reason}))
        else:
            print("\t".join([e.id, e.status, e.path] + ([e.reason] if e.reason else [])))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index
    from copyseek.store.integrity import verify

    with Index.open(args.index) as index:
        report = verify(index)
    for line in report.lines(index.path):
        print(line)
    return 0 if report.ok else 1


def run_repair(args: argparse.Namespace) -> int:
    from copyseek.store.index import Index
    from copyseek.store.integrity import repair

    with Index.open(args.index, {"batch_size": args.batch_size}, wait=args.wait) as index:
        report = repair(index, progress=not args.quiet, workers=args.workers, batch_size=args.batch_size)
    for line in report.lines():
        print(line)
    return 0
