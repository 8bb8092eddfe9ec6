"""The index's own sub-commands: remove, compact, list (and verify, repair)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from copyseek.errors import CopyseekError


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another copyseek process is writing to the index, wait up to this long for it (default 0: fail at once)",
    )


def add_parser(sub) -> None:
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
