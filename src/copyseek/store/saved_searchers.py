"""Searchers kept between runs, so that opening a large index does not rebuild them.

    INDEX/searchers/<branch>-<fingerprint>.bin    the searcher's own file (`Searcher.save`)
    INDEX/searchers/<branch>-<fingerprint>.json   {"sha256": of the .bin, "rows": it holds}

A branch's searcher over 1M references is a trained Faiss index: rebuilding it from the chunks
(training, then adding every vector) takes about a minute of CPU, reading it back well under a
second. The fingerprint names the branch's spec and every committed chunk (number, sha256, row
count) of the snapshot it was built from, so a saved searcher is used only for exactly that
snapshot: adding references, `compact` or `repair` change the chunks and so the name, and the next
open rebuilds and saves again. Removed references need no new file: the index masks their rows.
The files are derived data: one that is missing, damaged or unreadable is rebuilt from the
chunks, never an error; a read-only index folder is searched without saving anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from copyseek.describe.base import Searcher
from copyseek.store.files import atomic_write
from copyseek.store.manifest import ChunkRecord

FOLDER = "searchers"


def fingerprint(spec: dict, chunks: list[ChunkRecord]) -> str:
    """16 hex digits naming a branch spec and the chunks a searcher holds, in order."""
    content = json.dumps([spec, [(c.chunk, c.first_row, c.count, c.sha256) for c in chunks]], sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:16]


def saved_path(index_path: Path, branch: str, digest: str) -> Path:
    return index_path / FOLDER / f"{branch}-{digest}.bin"


def load_saved(index_path: Path, branch: str, spec: dict, chunks: list[ChunkRecord],
               new_searcher: Callable[[], Searcher]) -> Searcher | None:
    """The branch's searcher read from the file saved for exactly these chunks, or None when there
    is none or it does not check out (sha256, row count)."""
    path = saved_path(index_path, branch, fingerprint(spec, chunks))
    if not path.exists():
        return None
    problem = saved_problem(path, sum(c.count for c in chunks))
    searcher = new_searcher()
    if problem is None and not searcher.load(path):
        problem = "its searcher cannot read it"
    if problem is not None:
        warnings.warn(f"the saved searcher {path} is damaged ({problem}); rebuilding it from the chunks")
        return None
    return searcher


def saved_problem(path: Path, rows: int | None = None) -> str | None:
    """What is wrong with a saved searcher's file and its record (`rows`: the rows it must hold,
    when known), or None."""
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        if record["sha256"] != _sha256(path):
            return "checksum mismatch"
        if rows is not None and record["rows"] != rows:
            return f"it holds {record['rows']} rows, the chunks {rows}"
    except FileNotFoundError as exc:
        return f"{Path(exc.filename).name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return " ".join(str(exc).split())[:100] or type(exc).__name__
    return None


def save(index_path: Path, branch: str, spec: dict, chunks: list[ChunkRecord], searcher: Searcher) -> bool:
    """Save `searcher` (built from exactly `chunks`) if its kind keeps a file and the index folder
    is writable, and delete the branch's files of other snapshots. True if a file was written;
    saving is best effort (a full disk or a race with another reader saves nothing)."""
    if not os.access(index_path, os.W_OK) or not sum(c.count for c in chunks):
        return False
    folder = index_path / FOLDER
    path = saved_path(index_path, branch, fingerprint(spec, chunks))
    # several readers may save the same snapshot at once: each writes its own files, the renames agree
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(exist_ok=True)
        if not searcher.save(tmp):
            return False
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        record = json.dumps({"sha256": _sha256(tmp), "rows": searcher.ntotal}).encode()
        os.replace(tmp, path)
        atomic_write(path.with_suffix(f".{os.getpid()}.json"), lambda handle: handle.write(record))
        os.replace(path.with_suffix(f".{os.getpid()}.json"), path.with_suffix(".json"))
        for other in folder.glob(f"{branch}-*"):
            if other.stem != path.stem:
                other.unlink(missing_ok=True)
    except OSError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
