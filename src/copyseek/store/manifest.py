"""The SQLite manifest of an index: its configuration, every image seen, and the committed chunks.

The manifest is the commit point: chunk files are written (atomically) first, then one transaction
records the chunk and its images. A crash between the two leaves an orphan chunk file, which the
next open deletes; a crash inside the transaction is rolled back by SQLite.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from copyseek.errors import CopyseekError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (chunk INTEGER PRIMARY KEY, first_row INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sha1 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')),
    reason TEXT,
    row INTEGER UNIQUE,
    chunk INTEGER REFERENCES chunks(chunk),
    added REAL NOT NULL
);
"""


@dataclass(frozen=True)
class ImageRow:
    id: str
    path: str
    sha1: str
    bytes: int
    width: int | None
    height: int | None
    status: str
    reason: str | None = None
    row: int | None = None


class Manifest:
    """Thin typed access to manifest.sqlite."""

    def __init__(self, path: Path):
        try:
            self.db = sqlite3.connect(str(path), isolation_level=None)  # explicit transactions only
            self.db.execute("PRAGMA journal_mode=DELETE")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CopyseekError(f"{path} is not a copyseek index manifest ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def get_meta(self, key: str) -> object | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, **values: object) -> None:
        with self.transaction():
            for key, value in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def transaction(self):
        return _Transaction(self.db)

    def chunks(self) -> list[tuple[int, int, int]]:
        """(chunk, first_row, count) in row order."""
        return self.db.execute("SELECT chunk, first_row, count FROM chunks ORDER BY first_row").fetchall()

    def next_chunk_and_row(self) -> tuple[int, int]:
        chunk, end = self.db.execute("SELECT COALESCE(MAX(chunk), 0), COALESCE(MAX(first_row + count), 0) FROM chunks").fetchone()
        return int(chunk) + 1, int(end)

    def known(self) -> dict[str, tuple[str, str, str, int]]:
        """id -> (sha1, status, path, bytes) of every image seen."""
        return {r[0]: r[1:] for r in self.db.execute("SELECT id, sha1, status, path, bytes FROM images")}

    def ids_by_row(self) -> list[str]:
        """Indexed ids in row order (row i is the i-th reference of every branch)."""
        return [r[0] for r in self.db.execute("SELECT id FROM images WHERE status = 'indexed' ORDER BY row")]

    def path_of(self, image_id: str) -> str | None:
        row = self.db.execute("SELECT path FROM images WHERE id = ? AND status = 'indexed'", (image_id,)).fetchone()
        return None if row is None else row[0]

    def skipped(self) -> list[tuple[str, str, str]]:
        return self.db.execute("SELECT id, path, reason FROM images WHERE status = 'skipped' ORDER BY path").fetchall()

    def counts(self) -> dict[str, int]:
        counts = dict(self.db.execute("SELECT status, COUNT(*) FROM images GROUP BY status").fetchall())
        return {"indexed": counts.get("indexed", 0), "skipped": counts.get("skipped", 0)}

    def commit_chunk(self, chunk: int, first_row: int, indexed: list[ImageRow], skipped: list[ImageRow]) -> None:
        """Record one chunk (already on disk) and its images, and skipped images, in one transaction."""
        now = time.time()
        with self.transaction():
            if indexed:
                self.db.execute("INSERT INTO chunks VALUES (?, ?, ?)", (chunk, first_row, len(indexed)))
            for offset, image in enumerate(indexed):
                self._upsert(image, "indexed", None, first_row + offset, chunk, now)
            for image in skipped:
                self._upsert(image, "skipped", image.reason, None, None, now)

    def _upsert(self, image: ImageRow, status: str, reason, row, chunk, now) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image.id, image.path, image.sha1, image.bytes, image.width, image.height, status, reason, row, chunk, now),
        )


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, value, traceback):
        self.db.execute("ROLLBACK" if kind else "COMMIT")
        return False
