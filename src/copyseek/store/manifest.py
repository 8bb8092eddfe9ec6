"""The SQLite manifest of an index: its configuration, every image seen, and the committed chunks.

The manifest is the commit point: chunk files are written (atomically) first, then one transaction
records the chunk, its checksum and its images. A crash between the two leaves an orphan chunk
file, which the next writer deletes; a crash inside the transaction is rolled back by SQLite.

Image status: `indexed` (searchable), `skipped` (could not be used, with the reason), `removed` (by
`Index.remove`: never returned again; its features stay in its chunk until `Index.compact`) and
`lost` (its chunk was damaged and `repair` could not describe it again: the file is gone).

Manifests written before checksums and removal existed (no `sha256` column, two statuses) open as
they are, read-only included; the first writer upgrades them in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from copyseek.errors import CopyseekError, IndexDamaged

STATUSES = ("indexed", "skipped", "removed", "lost")

IMAGES_TABLE = """images (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    sha1 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped', 'removed', 'lost')),
    reason TEXT,
    row INTEGER UNIQUE,
    chunk INTEGER,
    added REAL NOT NULL
)"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    chunk INTEGER PRIMARY KEY, first_row INTEGER NOT NULL, count INTEGER NOT NULL, sha256 TEXT, bytes INTEGER
);
CREATE TABLE IF NOT EXISTS {IMAGES_TABLE};
"""

MANIFEST_FIX = (
    "the chunks cannot be read without it: restore {index}/manifest.sqlite from a backup, "
    "or rebuild the index with: copyseek index REFERENCE_DIR --index NEW_INDEX"
)

IMAGE_COLUMNS = "id, path, sha1, bytes, width, height, status, reason, row, chunk, added"


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


@dataclass(frozen=True)
class ChunkRecord:
    """A committed chunk: rows first_row .. first_row + count - 1; sha256 of its file (None in
    indexes written before checksums were recorded)."""

    chunk: int
    first_row: int
    count: int
    sha256: str | None
    bytes: int | None


@dataclass(frozen=True)
class Entry:
    """One image the index knows, as `copyseek list` shows it."""

    id: str
    path: str
    status: str
    reason: str | None
    chunk: int | None
    row: int | None


@dataclass(frozen=True)
class Snapshot:
    """What a reader sees: the committed chunks (in row order) and the searchable id of each row,
    read in one transaction so that both belong to the same moment."""

    chunks: tuple[ChunkRecord, ...]
    live: dict[int, str]  # row -> id of every indexed (searchable) image


class Manifest:
    """Thin typed access to manifest.sqlite. Every SQLite failure becomes a CopyseekError that says
    what to do: IndexDamaged for a damaged file, a plain message for a busy or read-only one."""

    def __init__(self, path: Path, *, readonly: bool = False, create: bool = False):
        self.path = path
        self.readonly = readonly
        try:
            if readonly:
                self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=60)
            else:
                self.db = sqlite3.connect(str(path), isolation_level=None, timeout=60)  # explicit transactions
                self.db.execute("PRAGMA synchronous=FULL")
            if create:
                self.db.execute("PRAGMA journal_mode=DELETE")
                self.db.executescript(SCHEMA)
            self._columns = {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}
            images_sql = self.db.execute("SELECT sql FROM sqlite_master WHERE name = 'images'").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if not self._columns or images_sql is None:
            raise IndexDamaged(f"{path} is not a copyseek index manifest (tables are missing)", path.parent, MANIFEST_FIX.format(index=path.parent))
        self.upgraded = "sha256" in self._columns and "'removed'" in images_sql[0]

    # ----------------------------------------------------------------- plumbing
    def _error(self, exc: sqlite3.Error) -> CopyseekError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return CopyseekError(f"{self.path} is locked by another process for too long ({text}); try again")
        if "readonly" in text or "read-only" in text:
            return CopyseekError(f"cannot write {self.path}: the index folder is read-only")
        if "unable to open" in text:
            return CopyseekError(f"cannot open {self.path} ({text}): check that it exists and is readable")
        return IndexDamaged(f"the manifest {self.path} is damaged ({text})", self.path.parent, MANIFEST_FIX.format(index=self.path.parent))

    def damaged(self, problem: str) -> IndexDamaged:
        """The error for a manifest whose content is wrong though SQLite reads it."""
        return self._error(sqlite3.DatabaseError(problem))  # type: ignore[return-value]

    def _q(self, sql: str, params: Iterable = ()) -> list[tuple]:
        try:
            return self.db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self.db.close()

    def transaction(self, mode: str = "IMMEDIATE") -> "_Transaction":
        return _Transaction(self, mode)

    def upgrade(self) -> None:
        """Give an index written before checksums and removal existed the new columns and statuses
        (one transaction; the caller holds the write lock)."""
        if self.upgraded:
            return
        with self.transaction():
            if "sha256" not in self._columns:
                self._q("ALTER TABLE chunks ADD COLUMN sha256 TEXT")
                self._q("ALTER TABLE chunks ADD COLUMN bytes INTEGER")
            sql = self._q("SELECT sql FROM sqlite_master WHERE name = 'images'")[0][0]
            if "'removed'" not in sql:  # a CHECK constraint cannot be altered: copy into a new table
                self._q("ALTER TABLE images RENAME TO images_v1")
                self._q(f"CREATE TABLE {IMAGES_TABLE}")
                self._q(f"INSERT INTO images ({IMAGE_COLUMNS}) SELECT {IMAGE_COLUMNS} FROM images_v1")
                self._q("DROP TABLE images_v1")
        self._columns |= {"sha256", "bytes"}
        self.upgraded = True

    # ----------------------------------------------------------------- configuration
    def get_meta(self, key: str) -> object | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        try:
            return None if not rows else json.loads(rows[0][0])
        except ValueError:
            raise self.damaged(f"meta {key!r} is not JSON") from None

    def set_meta(self, **values: object) -> None:
        with self.transaction():
            for key, value in values.items():
                self._q("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    # ----------------------------------------------------------------- reading
    def chunks(self) -> list[ChunkRecord]:
        """Committed chunks in row order."""
        columns = "chunk, first_row, count, sha256, bytes" if "sha256" in self._columns else "chunk, first_row, count, NULL, NULL"
        return [ChunkRecord(*r) for r in self._q(f"SELECT {columns} FROM chunks ORDER BY first_row")]

    def snapshot(self) -> Snapshot:
        """The committed chunks and the searchable rows, read in one transaction."""
        with self.transaction("DEFERRED"):
            chunks = self.chunks()
            live = dict(self._q("SELECT row, id FROM images WHERE status = 'indexed'"))
        return Snapshot(tuple(chunks), live)

    def next_chunk_and_row(self) -> tuple[int, int]:
        # rows and chunk numbers are never reused, so a reader's old snapshot never names a new row
        chunk, end = self._q(
            "SELECT MAX(COALESCE((SELECT MAX(chunk) FROM chunks), 0), COALESCE((SELECT MAX(chunk) FROM images), 0)),"
            " MAX(COALESCE((SELECT MAX(first_row + count) FROM chunks), 0), COALESCE((SELECT MAX(row) + 1 FROM images), 0))"
        )[0]
        stored = self.get_meta("next_chunk") or 0  # chunks dropped by repair or compaction
        return max(int(chunk) + 1, int(stored)), int(end)  # type: ignore[arg-type]

    def known(self) -> dict[str, tuple[str, str, str, int]]:
        """id -> (sha1, status, path, bytes) of every image seen."""
        return {r[0]: r[1:] for r in self._q("SELECT id, sha1, status, path, bytes FROM images")}

    def path_of(self, image_id: str) -> str | None:
        rows = self._q("SELECT path FROM images WHERE id = ? AND status = 'indexed'", (image_id,))
        return rows[0][0] if rows else None

    def skipped(self) -> list[tuple[str, str, str]]:
        return self._q("SELECT id, path, reason FROM images WHERE status = 'skipped' ORDER BY path")

    def counts(self) -> dict[str, int]:
        counts = dict(self._q("SELECT status, COUNT(*) FROM images GROUP BY status"))
        return {status: counts.get(status, 0) for status in STATUSES}

    def entries(self, statuses: Iterable[str] = STATUSES) -> list[Entry]:
        """Every image with one of `statuses`, indexed ones in row order, then the others by id."""
        wanted = tuple(statuses)
        marks = ", ".join("?" * len(wanted))
        rows = self._q(
            f"SELECT id, path, status, reason, chunk, row FROM images WHERE status IN ({marks}) "
            "ORDER BY status != 'indexed', row, id",
            wanted,
        )
        return [Entry(*r) for r in rows]

    def integrity_problems(self) -> list[str]:
        """SQLite's own check of the file (empty when sound)."""
        problems = [r[0] for r in self._q("PRAGMA integrity_check")]
        return [] if problems == ["ok"] else problems

    def indexed_chunks(self) -> list[tuple[str, int | None]]:
        """(id, chunk) of every searchable image, by id."""
        return self._q("SELECT id, chunk FROM images WHERE status = 'indexed' ORDER BY id")

    def images_of_chunk(self, chunk: int) -> list[tuple[str, str, int]]:
        """(id, path, row) of the images whose features a chunk holds, removed ones included."""
        return self._q("SELECT id, path, row FROM images WHERE chunk = ? ORDER BY row", (chunk,))

    # ----------------------------------------------------------------- writing
    def commit_chunk(
        self,
        chunk: int,
        first_row: int,
        indexed: list[ImageRow],
        skipped: list[ImageRow],
        sha256: str | None = None,
        nbytes: int | None = None,
    ) -> None:
        """Record one chunk (already on disk) and its images, and skipped images, in one transaction."""
        now = time.time()
        with self.transaction():
            if indexed:
                self._q("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", (chunk, first_row, len(indexed), sha256, nbytes))
            for offset, image in enumerate(indexed):
                self._upsert(image, "indexed", None, first_row + offset, chunk, now)
            for image in skipped:
                self._upsert(image, "skipped", image.reason, None, None, now)

    def _upsert(self, image: ImageRow, status: str, reason, row, chunk, now) -> None:
        self._q(
            f"INSERT OR REPLACE INTO images ({IMAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (image.id, image.path, image.sha1, image.bytes, image.width, image.height, status, reason, row, chunk, now),
        )

    def set_checksums(self, checksums: dict[int, tuple[str, int]]) -> None:
        """Record chunk -> (sha256, bytes) for chunks that have none yet (indexes from before checksums)."""
        with self.transaction():
            for chunk, (sha256, nbytes) in checksums.items():
                self._q("UPDATE chunks SET sha256 = ?, bytes = ? WHERE chunk = ? AND sha256 IS NULL", (sha256, nbytes, chunk))

    def remove(self, ids: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Mark indexed images removed, in one transaction. Returns (removed, already removed or
        never searchable, unknown) ids."""
        removed, inactive, unknown = [], [], []
        with self.transaction():
            for image_id in dict.fromkeys(ids):
                status = self._q("SELECT status FROM images WHERE id = ?", (image_id,))
                if not status:
                    unknown.append(image_id)
                elif status[0][0] != "indexed":
                    inactive.append(image_id)
                else:
                    self._q("UPDATE images SET status = 'removed', added = ? WHERE id = ?", (time.time(), image_id))
                    removed.append(image_id)
        return removed, inactive, unknown

    def _retire(self, chunks: list[int]) -> None:
        """Remember the highest chunk number ever used, so that no chunk number is used twice (a
        reader's snapshot may still name a retired chunk)."""
        high = max([*chunks, int(self.get_meta("next_chunk") or 1) - 1])  # type: ignore[arg-type]
        self._q("INSERT OR REPLACE INTO meta VALUES ('next_chunk', ?)", (json.dumps(high + 1),))

    def replace_chunks(self, old: list[int], new: list[ChunkRecord], rows: dict[str, tuple[int, int]]) -> None:
        """Compaction's commit: forget chunks `old`, record chunks `new`, move images to their new
        (row, chunk) and detach removed images from any chunk. One transaction."""
        with self.transaction():
            self._retire(old + [c.chunk for c in new])
            self._q(f"UPDATE images SET row = NULL, chunk = NULL WHERE chunk IN ({','.join('?' * len(old))})", old)
            self._q(f"DELETE FROM chunks WHERE chunk IN ({','.join('?' * len(old))})", old)
            for c in new:
                self._q("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", (c.chunk, c.first_row, c.count, c.sha256, c.bytes))
            for image_id, (row, chunk) in rows.items():
                self._q("UPDATE images SET row = ?, chunk = ? WHERE id = ?", (row, chunk, image_id))
            self._q("UPDATE images SET row = NULL, chunk = NULL WHERE status != 'indexed'")

    def drop_chunks(self, chunks: list[int], reason: str) -> None:
        """Repair's first step: forget damaged chunks; their indexed images become `lost` (to be
        described again). One transaction."""
        with self.transaction():
            self._retire(chunks)
            for chunk in chunks:
                self._q(
                    "UPDATE images SET status = CASE status WHEN 'indexed' THEN 'lost' ELSE status END, "
                    "reason = CASE status WHEN 'indexed' THEN ? ELSE reason END, row = NULL, chunk = NULL "
                    "WHERE chunk = ?",
                    (reason.format(chunk=chunk), chunk),
                )
                self._q("DELETE FROM chunks WHERE chunk = ?", (chunk,))

    def mark_lost(self, ids: list[str], reason: str, detach: bool = False) -> None:
        """Give lost images their reason; detach: first make these indexed images lost (the manifest
        named a chunk it does not record)."""
        with self.transaction():
            for image_id in ids:
                if detach:
                    self._q("UPDATE images SET status = 'lost', row = NULL, chunk = NULL WHERE id = ? AND status = 'indexed'", (image_id,))
                self._q("UPDATE images SET reason = ? WHERE id = ? AND status = 'lost'", (reason, image_id))


class _Transaction:
    def __init__(self, manifest: Manifest, mode: str):
        self.manifest, self.mode = manifest, mode

    def __enter__(self):
        try:
            self.manifest.db.execute(f"BEGIN {self.mode}")
        except sqlite3.Error as exc:
            raise self.manifest._error(exc) from None
        return self.manifest.db

    def __exit__(self, kind, value, traceback):
        try:
            self.manifest.db.execute("ROLLBACK" if kind else "COMMIT")
        except sqlite3.Error as exc:
            if kind is None:
                raise self.manifest._error(exc) from None
        return False
