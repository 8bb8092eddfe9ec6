"""Atomic file writes and the index's chunk files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


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


def save_chunk(folder: Path, chunk: int, arrays: dict[str, dict[str, np.ndarray]]) -> None:
    """Save every branch's packed arrays of one chunk as one file (keys "branch/array")."""
    flat = {f"{branch}/{key}": value for branch, packed in arrays.items() for key, value in packed.items()}
    atomic_write(chunk_path(folder, chunk), lambda handle: np.savez(handle, **flat))


def load_chunk(folder: Path, chunk: int) -> dict[str, dict[str, np.ndarray]]:
    arrays: dict[str, dict[str, np.ndarray]] = {}
    with np.load(chunk_path(folder, chunk)) as data:
        for name in data.files:
            branch, _, key = name.partition("/")
            arrays.setdefault(branch, {})[key] = data[name]
    return arrays


def remove_orphans(folder: Path, committed: set[int]) -> int:
    """Delete chunk files and temporary files not recorded in the manifest (left by a crash)."""
    removed = 0
    for path in folder.iterdir():
        stem = path.name.removesuffix(".npz")
        if path.name.startswith(".") and path.name.endswith(".tmp") or (stem.isdigit() and int(stem) not in committed):
            path.unlink()
            removed += 1
    return removed
