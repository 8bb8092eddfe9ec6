"""Atomic file writes, the index's chunk files and their checksums, and the index's locks."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError


class ChunkError(Exception):
    """A chunk file is missing or damaged (the caller knows which index and turns it into IndexDamaged).
    problem: what is wrong, e.g. "missing", "checksum mismatch (370 bytes)"."""

    def __init__(self, path: Path, problem: str):
        self.path, self.problem = path, problem
        super().__init__(f"chunk file {path} is {problem}" if problem == "missing" else f"chunk file {path} is damaged: {problem}")


def atomic_write(path: Path, write) -> None:
    """Write via `write(handle)` into a temporary file, fsync it, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def chunk_path(folder: Path, chunk: int) -> Path:
    return folder / f"{chunk:08d}.npz"


def save_chunk(folder: Path, chunk: int, arrays: dict[str, dict[str, np.ndarray]]) -> tuple[str, int]:
    """Save every branch's packed arrays of one chunk as one file (keys "branch/array").
    Returns the file's (sha256, bytes), which the manifest records."""
    flat = {f"{branch}/{key}": value for branch, packed in arrays.items() for key, value in packed.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    data = buffer.getvalue()
    atomic_write(chunk_path(folder, chunk), lambda handle: handle.write(data))
    return hashlib.sha256(data).hexdigest(), len(data)


def read_chunk_bytes(folder: Path, chunk: int, sha256: str | None) -> bytes:
    """The bytes of a chunk file, checked against its recorded sha256 (when one was recorded).
    Raises ChunkError saying what is wrong."""
    path = chunk_path(folder, chunk)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ChunkError(path, "missing") from None
    except OSError as exc:
        raise ChunkError(path, f"unreadable ({exc.strerror})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ChunkError(path, f"checksum mismatch ({len(data)} bytes)")
    return data


def check_chunk_size(folder: Path, chunk: int, size: int | None) -> None:
    """Raise ChunkError if a chunk file is missing or not of its recorded size (when recorded): the
    check of a chunk that is not read (its branch's searcher was saved, store/saved_searchers.py)."""
    path = chunk_path(folder, chunk)
    try:
        found = path.stat().st_size
    except FileNotFoundError:
        raise ChunkError(path, "missing") from None
    if size is not None and found != size:
        raise ChunkError(path, f"of {found} bytes, the manifest says {size}")


def load_chunk(folder: Path, chunk: int, sha256: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every branch's arrays of one chunk. Raises ChunkError if the file is missing, does not match
    its checksum, or cannot be decoded (indexes without checksums: the zip's CRC still catches
    most damage)."""
    data = read_chunk_bytes(folder, chunk, sha256)
    arrays: dict[str, dict[str, np.ndarray]] = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            for name in loaded.files:
                branch, _, key = name.partition("/")
                arrays.setdefault(branch, {})[key] = loaded[name]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
        raise ChunkError(chunk_path(folder, chunk), f"cannot be decoded ({' '.join(str(exc).split())[:120]})") from None
    return arrays


def remove_orphans(folder: Path, committed: set[int]) -> int:
    """Delete chunk files and temporary files not recorded in the manifest (left by a crash)."""
    removed = 0
    for path in folder.iterdir():
        stem = path.name.removesuffix(".npz")
        if path.name.startswith(".") and path.name.endswith(".tmp") or (stem.isdigit() and int(stem) not in committed):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


class WriteLock:
    """Exclusive lock on `INDEX/lock`: one writer at a time. The OS releases it if the process dies
    (kill -9 included). wait: seconds to wait for another writer to finish (0 = fail at once)."""

    def __init__(self, path: Path, wait: float = 0.0):
        self.path = path
        self.wait = wait

    def __enter__(self) -> "WriteLock":
        folder = self.path.parent
        try:
            self.handle = open(self.path, "a")
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise CopyseekError(
                    f"cannot write to the index {folder}: its folder is read-only "
                    "(reading works: info, match, explain, verify, list)"
                ) from None
            raise CopyseekError(f"cannot create the lock file {self.path} ({exc.strerror})") from None
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.handle.close()
                    waited = f" (waited {self.wait:g} s)" if self.wait else ""
                    raise CopyseekError(
                        f"another copyseek process is writing to {folder}{waited}; "
                        "try again when it is done, or wait for it with --wait SECONDS"
                    ) from None
                time.sleep(min(0.05, max(deadline - time.monotonic(), 0.001)))

    def __exit__(self, *exc) -> bool:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        return False


class ChunkFilesLock:
    """A lock on the `chunks/` folder itself (no file is created, so it works on read-only folders).

    Readers hold it shared while they read the manifest's snapshot and load the chunk files it
    names; a writer holds it exclusive only while it deletes chunk files (compaction, repair, crash
    leftovers), so a reader never finds a file of its snapshot gone. Adding chunks needs no lock:
    committed chunk files are never changed."""

    def __init__(self, folder: Path, exclusive: bool):
        self.folder = folder
        self.exclusive = exclusive
        self.fd: int | None = None

    def __enter__(self) -> "ChunkFilesLock":
        try:
            self.fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return self  # no chunks folder: nothing to protect (the snapshot will say what is missing)
        fcntl.flock(self.fd, fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH)
        return self

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        return False
