"""Fault injection: damage each file of an index in each way, run each command, record what happens.

Used by the fault-injection tests (tests/store/test_faults.py) and by benchmarks/fault_table.py
(which pass the command line's `main` in); the script writes the table in docs/integrity.md.
An outcome is one of:

    ok          the command did its work (exit 0; a warning line is allowed)
    reported    exit 1 with the damage listed (verify), or 1 for an unknown id (remove)
    refused     exit 2 with one line naming the damaged file and the fix
    TRACEBACK   anything else (an exception escaped, or a message that is not one line): a bug
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def delete(path: Path) -> None:
    path.unlink()


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def flip_bytes(path: Path) -> None:
    """Invert 8 bytes in the middle of the file and 8 near its start (header damage)."""
    data = bytearray(path.read_bytes())
    for start in (min(16, len(data) // 4), len(data) // 2):
        for i in range(start, min(start + 8, len(data))):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def make_read_only(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "delete": delete,
    "truncate": truncate,
    "flip bytes": flip_bytes,
    "make read-only": make_read_only,
}


def index_files(index: Path) -> dict[str, Path]:
    """One file of each kind an index holds: a chunk, the manifest, a background cache, a saved
    searcher, the lock."""
    chunks = sorted((index / "chunks").glob("*.npz"))
    caches = sorted((index / "background").glob("*.np[yz]"))
    saved = sorted((index / "searchers").glob("*.bin"))
    files = {"chunk": chunks[len(chunks) // 2], "manifest": index / "manifest.sqlite", "lock": index / "lock"}
    if caches:
        files["background cache"] = caches[0]
    if saved:
        files["saved searcher"] = saved[0]
    return files


@dataclass
class Outcome:
    command: str
    code: int | None
    stderr: str
    kind: str


def run_cli(main: Callable[[list[str]], int], argv: list[str]) -> tuple[int | None, str, str]:
    """Run the command line's `main` in this process: (exit code or None if an exception escaped,
    stdout, stderr). `main` is passed in: the command line is a layer above the store."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | None = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except Exception as exc:  # noqa: BLE001 - recorded as the bug it is
            code = None
            err.write(f"Traceback: {type(exc).__name__}: {exc}\n")
    return code, out.getvalue(), err.getvalue()


def classify(command: str, code: int | None, stderr: str, index: Path) -> str:
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    if code is None or "Traceback" in stderr:
        return "TRACEBACK"
    if code == 0:
        return "ok"
    if code == 1 and command.split()[0] in ("verify", "remove"):
        return "reported"
    if code == 2 and len(errors) == 1 and str(index) in errors[0]:
        return "refused"
    return "TRACEBACK"


def restore_permissions(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(Path(dirpath) / name, 0o644)


def run_case(
    main: Callable[[list[str]], int],
    pristine: Path,
    work: Path,
    file_kind: str,
    damage: str,
    commands: list[tuple[str, list[str]]],
) -> list[Outcome]:
    """Copy `pristine` to `work`, damage its `file_kind` file with `damage`, then run each command
    (name, argv with "{index}" for the index folder). Returns one Outcome per command."""
    if work.exists():
        restore_permissions(work)
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    DAMAGES[damage](index_files(work)[file_kind])
    outcomes = []
    for name, argv in commands:
        code, _, err = run_cli(main, [a.replace("{index}", str(work)) for a in argv])
        outcomes.append(Outcome(name, code, err.strip(), classify(name, code, err, work)))
    return outcomes


def writer_holds_lock(index: Path) -> bool:
    """Whether some process holds the index's write lock now (the lock file is flock'ed by writers)."""
    import fcntl

    try:
        with open(index / "lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def kill_while_writing(
    argv: list[str], index: Path, rng: np.random.Generator, *, max_delay_s: float = 0.03, env: dict[str, str] | None = None
) -> bool:
    """Run `python -m copyseek.cli ARGV`, wait until it holds the write lock of `index`, and kill -9 it
    a random moment (uniform in [0, max_delay_s] seconds) later. Returns whether it was killed (it may
    have finished first)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "copyseek.cli", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while process.poll() is None and not writer_holds_lock(index):
        time.sleep(0.002)
    time.sleep(rng.uniform(0, max_delay_s))
    killed = process.poll() is None
    if killed:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return killed
