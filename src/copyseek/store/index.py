"""`Index`: a directory holding a reference collection's features for every branch of a pipeline.

Layout::

    INDEX/manifest.sqlite   configuration, images (id, path, sha1, size, status, row), chunks + sha256
    INDEX/chunks/N.npz      features of a batch of references, every branch's arrays in one file
    INDEX/background/*.npz  cached background descriptors for score normalisation
    INDEX/searchers/        searchers saved for the current chunks (store/saved_searchers.py)
    INDEX/graph/            the references' kNN graph (store/graphs.py)
    INDEX/skipped.csv       images that could not be used, with the reason
    INDEX/lock              held by the process that writes

Indexing is incremental (known images are not read again) and crash-safe (see manifest.py).
Readers (match, info, explain, verify, list) need no write access and see the references that were
committed when they loaded (a snapshot); writers (add, remove, compact, repair) take the lock, one
at a time, waiting up to `wait` seconds for each other.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.describe.base import Branch, Candidates, Features, Searcher
from copyseek.registry import (
    RUNTIME_OPTIONS,
    make_branch,
    options_from_spec,
    pipeline_branches,
    pipeline_options,
)
from copyseek.errors import CopyseekError, IndexDamaged
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded, one_line, resolved
from copyseek.progress import progress_bar
from copyseek.store.files import (
    ChunkError,
    ChunkFilesLock,
    WriteLock,
    check_chunk_size,
    chunk_path,
    load_chunk,
    read_chunk_bytes,
    remove_orphans,
    save_chunk,
    writable,
)
from copyseek.store import saved_searchers
from copyseek.store.manifest import ChunkRecord, Entry, ImageRow, Manifest, Snapshot

FORMAT_VERSION = 1
INDEX_FILES = frozenset({"manifest.sqlite", "manifest.sqlite-journal", "chunks", "background", "skipped.csv", "lock",
                         "graph", saved_searchers.FOLDER})
"""What an index folder may hold; a folder with anything else is not taken for an index."""


@dataclass
class AddReport:
    """What one `Index.add` did."""

    added: int = 0
    already_indexed: int = 0
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)
    previously_skipped: int = 0
    previously_removed: int = 0
    ignored_files: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.added / self.seconds:.1f} images/s)" if self.seconds > 0 and self.added else ""
        parts = [f"added {self.added}{rate}", f"already indexed {self.already_indexed}", f"skipped {len(self.skipped)}"]
        if self.previously_skipped:
            parts.append(f"skipped earlier {self.previously_skipped}")
        if self.previously_removed:
            parts.append(f"removed earlier (not added again) {self.previously_removed}")
        if self.ignored_files:
            parts.append(f"non-image files ignored {self.ignored_files}")
        return ", ".join(parts)


@dataclass
class RemoveReport:
    """What one `Index.remove` did: ids removed now, ids that were not searchable (already removed,
    skipped or lost) and ids the index never saw."""

    removed: list[str] = field(default_factory=list)
    not_searchable: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"removed {len(self.removed)}"]
        if self.not_searchable:
            parts.append(f"not searchable already {len(self.not_searchable)}")
        if self.unknown:
            parts.append(f"not in the index {len(self.unknown)}")
        return ", ".join(parts)


@dataclass
class CompactReport:
    """What one `Index.compact` did."""

    reclaimed: int = 0
    chunks_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> str:
        return (
            f"reclaimed {self.reclaimed} removed references, rewrote {self.chunks_rewritten} chunks, "
            f"chunk files {self.bytes_before / 1e6:.2f} MB -> {self.bytes_after / 1e6:.2f} MB"
        )


class Index:
    """A copy-detection index. Create with `Index.create`, reopen with `Index.open`.

    wait: seconds a writing method (add, remove, compact, repair) waits for another writer."""

    def __init__(self, path: Path, manifest: Manifest, branches: dict[str, Branch], wait: float = 0.0):
        self.path = path
        self.manifest = manifest
        self.branches = branches
        self.wait = wait
        self._writing = False
        self._snapshot: Snapshot | None = None
        self._raw: dict[str, Searcher] = {}
        self._searchers: dict[str, Searcher] | None = None
        self._ids: list[str | None] = []
        self._searcher_source: SearcherSource | None = None

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        pipeline: str = "global",
        options: dict[str, dict] | None = None,
        *,
        wait: float = 0.0,
    ) -> "Index":
        """A new, empty index at `path` for `pipeline`; options: branch name -> that branch's options
        (e.g. {"global": {"model": "sscd-fast", "factory": "Flat"}})."""
        path = Path(path)
        if (path / "manifest.sqlite").exists():
            raise CopyseekError(f"an index already exists at {path}; use Index.open to extend it")
        check_can_hold_index(path)
        options = pipeline_options(pipeline, options)
        stored = {name: strip_runtime(branch_options) for name, branch_options in options.items()}
        branches = {name: make_branch(name, branch_options) for name, branch_options in options.items()}
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "chunks").mkdir(exist_ok=True)
        except OSError as exc:
            raise CopyseekError(f"cannot create the index folder {path} ({exc.strerror})") from None
        manifest = Manifest(path / "manifest.sqlite", create=True)
        manifest.set_meta(
            format=FORMAT_VERSION,
            pipeline=pipeline,
            options=stored,
            specs={name: branch.spec() for name, branch in branches.items()},
        )
        return cls(path, manifest, branches, wait)

    @classmethod
    def open(cls, path: str | os.PathLike, runtime: dict | None = None, *, wait: float = 0.0) -> "Index":
        """Open an existing index (read-only folders included). runtime: speed options for every
        branch (threads, batch_size). wait: see the class."""
        path = Path(path)
        manifest_file = path / "manifest.sqlite"
        if not manifest_file.is_file():
            if (path / "chunks").is_dir() and any((path / "chunks").iterdir()):
                raise IndexDamaged(
                    f"{manifest_file} is missing (the index's chunk files are there)",
                    path,
                    f"restore it from a backup, or rebuild the index with: copyseek index REFERENCE_DIR --index {path}.new",
                )
            raise CopyseekError(f"no copyseek index at {path} (create one with: copyseek index FOLDER --index {path})")
        readonly = not (writable(path) and os.access(manifest_file, os.W_OK))
        manifest = Manifest(manifest_file, readonly=readonly)
        try:
            return cls._from_manifest(path, manifest, runtime, wait)
        except BaseException:
            manifest.close()
            raise

    @classmethod
    def _from_manifest(cls, path: Path, manifest: Manifest, runtime: dict | None, wait: float) -> "Index":
        if manifest.get_meta("format") != FORMAT_VERSION:
            raise CopyseekError(f"{path} was written by an incompatible copyseek version")
        options = manifest.get_meta("options")
        specs = manifest.get_meta("specs")
        if not isinstance(options, dict) or not isinstance(specs, dict) or set(options) - set(specs):
            raise manifest.damaged("its configuration is incomplete")
        branches = {}
        for name, branch_options in options.items():
            pinned = options_from_spec(name, specs[name])
            branch = make_branch(name, {**pinned, **branch_options, **(runtime or {})})
            if branch.spec() != specs[name]:
                raise CopyseekError(
                    f"the {name} branch of {path} was built with {describe_spec(specs[name])}, "
                    f"but that now loads as {describe_spec(branch.spec())}: its model or codebook file changed (a new "
                    "copyseek may ship new ones). Index the references again into a new --index, or use the copyseek "
                    "version or model file the index was built with"
                )
            branches[name] = branch
        return cls(path, manifest, branches, wait)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        pipeline: str | None = None,
        options: dict[str, dict] | None = None,
        runtime: dict | None = None,
        *,
        wait: float = 0.0,
    ) -> "Index":
        """Open `path` if it holds an index (checking that `pipeline` and `options`, when given, match
        what it was built with), else create it."""
        path = Path(path)
        if not (path / "manifest.sqlite").exists() and not (path / "chunks").is_dir():
            pipeline_options(pipeline or "global", options)  # options for branches the pipeline lacks raise
            merged = {name: {**(options or {}).get(name, {}), **(runtime or {})} for name in pipeline_branches(pipeline or "global")}
            return cls.create(path, pipeline or "global", merged, wait=wait)
        index = cls.open(path, runtime, wait=wait)
        try:
            index.check_compatible(pipeline, options)
        except BaseException:
            index.close()
            raise
        return index

    def check_compatible(self, pipeline: str | None, options: dict[str, dict] | None) -> None:
        """Raise CopyseekError if `pipeline` or branch `options` differ from what the index was built with."""
        built = self.manifest.get_meta("pipeline")
        if pipeline and pipeline != built:
            raise CopyseekError(f"{self.path} was built for pipeline {built!r}, not {pipeline!r}")
        stored: dict[str, dict] = self.manifest.get_meta("options")  # type: ignore[assignment]
        specs: dict[str, dict] = self.manifest.get_meta("specs")  # type: ignore[assignment]
        for name, wanted in (options or {}).items():
            for key, value in strip_runtime(wanted).items():
                have = stored.get(name, {}).get(key)
                if have != value and not same_as_default(name, stored.get(name, {}), specs.get(name, {}), key, value):
                    raise CopyseekError(
                        f"{self.path} was built with {name} {key}={have or 'default'!s}, not {value}: "
                        "an index only takes images described the same way (use another --index)"
                    )

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- writing: the lock
    @contextmanager
    def writing(self, check: str | None = "sizes") -> Iterator[None]:
        """Hold the write lock (waiting up to self.wait seconds for another writer), bring an index
        from an older copyseek up to date, and clear what a crashed writer left behind. check: refuse
        (IndexDamaged) if a chunk file is missing or has another size than recorded ("sizes"), or
        also does not match its checksum ("checksums"), so that writing never hides damage; None for
        repair. Re-entrant (repair adds references while it holds the lock)."""
        if self._writing:
            yield
            return
        with WriteLock(self.path / "lock", self.wait):
            if self.manifest.readonly:
                raise CopyseekError(f"cannot write to the index {self.path}: its manifest is read-only")
            self.manifest.upgrade()
            self.remove_unused_chunk_files()
            if check:
                self.check_chunk_files(checksums=check == "checksums")
            self._writing = True
            try:
                yield
            finally:
                self._writing = False

    def check_chunk_files(self, checksums: bool) -> None:
        """Raise IndexDamaged if a chunk file is missing or is not the size the manifest recorded,
        or with `checksums`, does not match its recorded sha256."""
        for record in self.manifest.chunks():
            path = chunk_path(self.path / "chunks", record.chunk)
            size = chunk_file_size(self.path, record.chunk)
            if not path.is_file():
                raise IndexDamaged(f"chunk file {path} is missing", self.path)
            if record.bytes is not None and size != record.bytes:
                raise IndexDamaged(f"chunk file {path} is damaged: {size} bytes, {record.bytes} recorded", self.path)
            if checksums:
                try:
                    read_chunk_bytes(self.path / "chunks", record.chunk, record.sha256)
                except ChunkError as exc:
                    raise IndexDamaged(str(exc), self.path) from None

    def remove_unused_chunk_files(self) -> int:
        """Delete chunk files the manifest does not name (a crashed writer's, or retired by compaction
        or repair), waiting for readers that are loading chunks. Call with the write lock held."""
        with ChunkFilesLock(self.path / "chunks", exclusive=True):
            return remove_orphans(self.path / "chunks", {c.chunk for c in self.manifest.chunks()})

    # ----------------------------------------------------------------- facts
    @property
    def pipeline(self) -> str:
        return str(self.manifest.get_meta("pipeline"))

    @property
    def ids(self) -> list[str | None]:
        """Reference id of each searcher row (None for a removed reference whose features are still
        stored), from the snapshot loaded on first use."""
        self._load()
        return self._ids

    def __len__(self) -> int:
        """Searchable references (committed, not removed)."""
        return self.manifest.counts()["indexed"]

    def list(self, statuses: Iterable[str] | None = None) -> list[Entry]:
        """Every image the index knows: id, path, status (indexed, skipped, removed, lost), reason."""
        return self.manifest.entries(statuses) if statuses is not None else self.manifest.entries()

    def info(self) -> dict:
        counts = self.manifest.counts()
        chunks = self.manifest.chunks()
        searchers = self.searchers() if counts["indexed"] else {}
        per_branch = {name: s.nbytes() for name, s in searchers.items()}
        stored = sum(c.count for c in chunks)
        return {
            "path": str(self.path),
            "pipeline": self.pipeline,
            "references": counts["indexed"],
            "skipped": counts["skipped"],
            "removed": counts["removed"],
            "lost": counts["lost"],
            "reclaimable": stored - counts["indexed"],
            "branches": self.manifest.get_meta("specs"),
            "disk_bytes": sum(chunk_file_size(self.path, c.chunk) for c in chunks),
            "search_bytes": per_branch,
            "bytes_per_reference": {n: b / stored for n, b in per_branch.items()} if stored else {},
        }

    # ----------------------------------------------------------------- adding
    def add(
        self,
        source: str | os.PathLike | Iterable[ImageFile],
        *,
        commit_every: int = 256,
        batch_size: int = 16,
        workers: int = 2,
        progress: bool = True,
        on_skip=None,
        ids: str = "stem",
        describer: "Describer | None" = None,
    ) -> AddReport:
        """Index the images of a folder (recursive) or a list of ImageFile, skipping known ones.

        ids: for a folder, how ids are made (io.images.ID_SCHEMES: file stems, or relative paths).

        on_skip(file, reason) is called for each image that cannot be used (default: a line on stderr).
        describer: what decodes and describes the images (default: `LocalDescriber(batch_size,
        workers)`, in this process; `copyseek.distributed` has one on a Ray cluster). Whatever
        describes them, the commits are the same.
        Work is committed every `commit_every` images: an interrupted run keeps what was committed,
        and running it again completes it. Removed references are not added again (unless the file
        changed).
        """
        import time

        start = time.perf_counter()
        report = AddReport()
        if isinstance(source, (str, os.PathLike)):
            files, ignored = find_images(source, ids)
            report.ignored_files = len(ignored)
        else:
            files = list(source)
        on_skip = on_skip or print_skip
        with self.writing(check="checksums"):  # a re-run must not report a damaged index as complete
            todo = self._plan(files, report)
            describe = describer or LocalDescriber(batch_size, workers)
            pending = PendingChunk()
            with progress_bar(len(todo), "indexing", disable=not progress) as bar:
                for group in describe(self.branches, todo):
                    for item in group:
                        if item.features is None:
                            on_skip(item.file, item.reason)
                            pending.skipped.append((item.file, item.reason))
                            report.skipped.append((item.file, item.reason))
                        else:
                            pending.rows.append(row_of(item.file, item.sha1, item.nbytes, item.width, item.height, "indexed"))
                            pending.features.append(item.features)
                    bar.update(len(group))
                    if len(pending.rows) >= commit_every:
                        report.added += self._commit(pending)
                        pending = PendingChunk()
                report.added += self._commit(pending)
            self._write_skip_report()
        report.seconds = time.perf_counter() - start
        return report

    def _plan(self, files: list[ImageFile], report: AddReport) -> list[ImageFile]:
        """Files still to index. Raises CopyseekError, before any work, if an id in `files` is
        already indexed from a different image."""
        known = self.manifest.known()
        todo, clashes = [], []
        for file in files:
            if file.id not in known:
                todo.append(file)
                continue
            sha1, status, path, size = known[file.id]
            if status == "lost":  # its features were in a damaged chunk: describe it again
                todo.append(file)
                continue
            # Same path and size is taken as the same file, so that re-runs read nothing.
            same = (path == resolved(file.path) and size == file_size(file.path)) or sha1_of(file.path) == sha1
            if same and status == "indexed":
                report.already_indexed += 1
            elif same and status == "removed":
                report.previously_removed += 1
            elif same:
                report.previously_skipped += 1
            elif status in ("skipped", "removed"):
                todo.append(file)  # changed since it was skipped or removed: a new image
            else:
                clashes.append(f"  {file.id}: {file.path} (indexed earlier from {path})")
        if clashes:
            shown = "\n".join(clashes[:10]) + ("\n  ..." if len(clashes) > 10 else "")
            raise CopyseekError(
                f"{len(clashes)} image id(s) are already in the index for a different image "
                f"(ids are file names without extension; nothing was added):\n{shown}"
            )
        return todo

    def _commit(self, pending: "PendingChunk") -> int:
        """Write one chunk file, then record it in the manifest; returns the images added."""
        if not pending.rows and not pending.skipped:
            return 0
        chunk, first_row = self.manifest.next_chunk_and_row()
        sha256 = nbytes = None
        if pending.rows:
            packed = {
                name: branch.pack([features[name] for features in pending.features])
                for name, branch in self.branches.items()
            }
            sha256, nbytes = save_chunk(self.path / "chunks", chunk, packed)
        skipped = [
            row_of(f, sha1_of(f.path), file_size(f.path), None, None, "skipped", reason) for f, reason in pending.skipped
        ]
        self.manifest.commit_chunk(chunk, first_row, pending.rows, skipped, sha256, nbytes)
        self._forget_snapshot()
        return len(pending.rows)

    def _write_skip_report(self) -> None:
        with open(self.path / "skipped.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["id", "path", "reason"])
            writer.writerows(self.manifest.skipped())

    # ----------------------------------------------------------------- removing
    def remove(self, ids: Iterable[str]) -> RemoveReport:
        """Make references unsearchable, in one transaction (crash-safe): they are never returned
        again, by this object or any reader that loads afterwards, and a re-run of `add` on the same
        files does not bring them back. Their features stay on disk until `compact`."""
        with self.writing():
            removed, inactive, unknown = self.manifest.remove(list(ids))
        if self._snapshot is not None and removed:
            gone = set(removed)
            self._ids = [None if i in gone else i for i in self._ids]
            self._wrap_searchers()
        return RemoveReport(removed, inactive, unknown)

    def compact(self, progress: bool = True) -> CompactReport:
        """Rewrite the chunks that hold removed references without them (new chunk files, one
        transaction, then the old files are deleted): the space is reclaimed and searching no longer
        skips them. Crash-safe: an interrupted compaction leaves the index as it was or as it will be."""
        report = CompactReport()
        with self.writing():
            snapshot = self.manifest.snapshot()
            report.bytes_before = sum(chunk_file_size(self.path, c.chunk) for c in snapshot.chunks)
            dirty = [c for c in snapshot.chunks if any(r not in snapshot.live for r in range(c.first_row, c.first_row + c.count))]
            next_chunk, _ = self.manifest.next_chunk_and_row()
            new: list[ChunkRecord] = []
            moved: dict[str, tuple[int, int]] = {}
            with progress_bar(len(dirty), "compacting", disable=not progress) as bar:
                for record in dirty:
                    arrays = self._load_chunk(record)
                    rows = range(record.first_row, record.first_row + record.count)
                    keep = np.array([k for k, r in enumerate(rows) if r in snapshot.live], np.int64)
                    report.reclaimed += record.count - len(keep)
                    if len(keep):
                        packed = {name: branch.take(arrays[name], keep) for name, branch in self.branches.items()}
                        sha256, nbytes = save_chunk(self.path / "chunks", next_chunk, packed)
                        # the same first row keeps the references in the order they were added
                        new.append(ChunkRecord(next_chunk, record.first_row, len(keep), sha256, nbytes))
                        for offset, k in enumerate(keep):
                            moved[snapshot.live[record.first_row + int(k)]] = (record.first_row + offset, next_chunk)
                        next_chunk += 1
                    bar.update(1)
            if dirty:
                self.manifest.replace_chunks([c.chunk for c in dirty], new, moved)
                self.remove_unused_chunk_files()
            report.chunks_rewritten = len(dirty)
            report.bytes_after = sum(chunk_file_size(self.path, c.chunk) for c in self.manifest.chunks())
        self._forget_snapshot()
        return report

    # ----------------------------------------------------------------- searching
    def _forget_snapshot(self) -> None:
        self._snapshot, self._raw, self._searchers, self._ids = None, {}, None, []

    def _load_chunk(self, record: ChunkRecord) -> dict[str, dict[str, np.ndarray]]:
        try:
            return load_chunk(self.path / "chunks", record.chunk, record.sha256)
        except ChunkError as exc:
            raise IndexDamaged(str(exc), self.path) from None

    def _load(self) -> None:
        """Read the manifest's snapshot and load the chunks it names (once; `refresh` updates it)."""
        if self._snapshot is not None:
            return
        with ChunkFilesLock(self.path / "chunks", exclusive=False):
            snapshot = self.manifest.snapshot()
            served = self._searcher_source(self, snapshot) if self._searcher_source is not None else {}
            saved = {name: saved_searchers.load_saved(self.path, name, branch.spec(), snapshot.chunks, branch.new_searcher)
                     for name, branch in self.branches.items() if name not in served}
            built = {name: self.branches[name].new_searcher() for name, searcher in saved.items() if searcher is None}
            ids: list[str | None] = []
            for record in snapshot.chunks:
                if built:
                    self._add_chunk(built, record)
                else:  # nothing reads the chunk, but a missing or cut one is still refused as when read
                    self._check_chunk_size(record)
                ids += [snapshot.live.get(r) for r in range(record.first_row, record.first_row + record.count)]
            for name, searcher in built.items():
                saved_searchers.save(self.path, name, self.branches[name].spec(), snapshot.chunks, searcher)
            raw = {name: served[name] if name in served else built.get(name, saved[name]) for name in self.branches}
        self._snapshot, self._raw, self._ids = snapshot, raw, ids
        self._wrap_searchers()

    def _check_chunk_size(self, record: ChunkRecord) -> None:
        try:
            check_chunk_size(self.path / "chunks", record.chunk, record.bytes)
        except ChunkError as exc:
            raise IndexDamaged(str(exc), self.path) from None

    def _add_chunk(self, raw: dict[str, Searcher], record: ChunkRecord) -> None:
        arrays = self._load_chunk(record)
        for name, searcher in raw.items():
            if name not in arrays:
                raise IndexDamaged(f"chunk file {chunk_path(self.path / 'chunks', record.chunk)} has no {name} features", self.path)
            before = searcher.ntotal
            try:
                searcher.add(arrays[name])
            except CopyseekError as exc:
                raise IndexDamaged(f"chunk file {chunk_path(self.path / 'chunks', record.chunk)} is damaged ({exc})", self.path) from None
            if searcher.ntotal - before != record.count:
                raise IndexDamaged(
                    f"chunk file {chunk_path(self.path / 'chunks', record.chunk)} holds {searcher.ntotal - before} "
                    f"{name} references, the manifest says {record.count}",
                    self.path,
                )

    def _wrap_searchers(self) -> None:
        dead = np.array([i is None for i in self._ids], bool)
        if dead.any():
            self._searchers = {name: MaskedSearcher(s, dead) for name, s in self._raw.items()}
        else:
            self._searchers = dict(self._raw)

    def refresh(self) -> bool:
        """Catch up with what writers committed since this object loaded (new chunks are added,
        removals applied; after a compaction or repair everything is reloaded). Returns whether
        anything changed. For long-lived readers such as a server."""
        if self._snapshot is None:
            return False
        with ChunkFilesLock(self.path / "chunks", exclusive=False):
            snapshot = self.manifest.snapshot()
            if snapshot == self._snapshot:
                return False
            old = self._snapshot.chunks
            if snapshot.chunks[: len(old)] != old:
                self._forget_snapshot()
                self._load()
                return True
            for record in snapshot.chunks[len(old) :]:
                self._add_chunk(self._raw, record)
        self._snapshot = snapshot
        self._ids = [snapshot.live.get(r) for c in snapshot.chunks for r in range(c.first_row, c.first_row + c.count)]
        self._wrap_searchers()
        return True

    def use_searcher_source(self, source: "SearcherSource | None") -> None:
        """Let `source(index, snapshot)` provide the searchers of some branches (e.g. an index split
        into shards served by other processes, `copyseek.distributed.shards`) instead of loading
        their chunks here; branches it does not return are loaded as usual. None: load everything
        here again. The next search loads a new snapshot."""
        self._searcher_source = source
        self._forget_snapshot()

    def searchers(self) -> dict[str, Searcher]:
        """Each branch's searcher over the references of the snapshot (built on first use); removed
        references are never among their results."""
        self._load()
        assert self._searchers is not None
        return self._searchers

    def reference_path(self, reference_id: str) -> Path:
        path = self.manifest.path_of(reference_id)
        if path is None:
            raise CopyseekError(f"reference {reference_id!r} is not in the index {self.path}")
        return Path(path)


class MaskedSearcher(Searcher):
    """A searcher whose results never include the rows marked dead (removed references whose
    features are still stored): it asks the wrapped searcher for k + dead rows and drops them.
    Other attributes (reconstruct, search_vectors...) are the wrapped searcher's, with
    search_vectors masked the same way."""

    def __init__(self, searcher: Searcher, dead: np.ndarray):
        self.searcher = searcher
        self.dead = dead
        self.n_dead = int(dead.sum())

    @property
    def ntotal(self) -> int:
        return self.searcher.ntotal

    def add(self, chunk) -> None:
        raise CopyseekError("a masked searcher is read-only; add references through the Index")

    def nbytes(self) -> int:
        return self.searcher.nbytes()

    def search_parameters(self) -> dict[str, int]:
        return self.searcher.search_parameters()

    def set_search_parameters(self, **values: int | None) -> None:
        self.searcher.set_search_parameters(**values)

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        found = self.searcher.search(queries, k + self.n_dead)
        out = []
        for c in found:
            keep = np.flatnonzero(~self.dead[c.rows])[:k]
            out.append(Candidates(c.rows[keep], c.scores[keep], {name: v[keep] for name, v in c.extra.items()}))
        return out

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        sims, rows = self.searcher.search_vectors(vectors, k + self.n_dead)  # type: ignore[attr-defined]
        k = min(k, rows.shape[1])
        out_sims = np.full((len(rows), k), -np.inf, np.float32)
        out_rows = np.full((len(rows), k), -1, np.int64)
        for q in range(len(rows)):
            keep = np.flatnonzero((rows[q] >= 0) & ~self.dead[np.maximum(rows[q], 0)])[:k]
            out_sims[q, : len(keep)], out_rows[q, : len(keep)] = sims[q, keep], rows[q, keep]
        return out_sims, out_rows

    def __getattr__(self, name: str):
        return getattr(self.searcher, name)


def check_can_hold_index(path: Path) -> None:
    """Refuse to make an index in a folder that holds other things (e.g. a photo folder given as
    --index by mistake), or one whose chunks outlived a deleted manifest."""
    if path.exists() and not path.is_dir():
        raise CopyseekError(f"{path} exists and is not a folder")
    if not path.is_dir():
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in INDEX_FILES)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise CopyseekError(
            f"{path} is not an empty folder nor a copyseek index (it holds {shown}); "
            "give --index a new or empty folder"
        )
    if (path / "chunks").is_dir() and any((path / "chunks").iterdir()):
        raise IndexDamaged(
            f"{path / 'manifest.sqlite'} is missing (the index's chunk files are there)",
            path,
            f"restore it from a backup, or rebuild the index in a new folder: copyseek index REFERENCE_DIR --index {path}.new",
        )


def chunk_file_size(index: Path, chunk: int) -> int:
    try:
        return chunk_path(index / "chunks", chunk).stat().st_size
    except OSError:
        return 0


def same_as_default(name: str, stored: dict, spec: dict, key: str, value) -> bool:
    """Whether an option given explicitly (e.g. `--factory Flat`, `--resize square:320`) is what the
    index was built with by default, as its stored spec records it."""
    if key == "model" and value == "sscd" and "model" not in stored:
        return True
    try:
        return make_branch(name, {**options_from_spec(name, spec), **stored, key: value}).spec() == spec
    except CopyseekError:
        return False


def extract_all(branches: dict[str, Branch], batch: list[DecodedImage], query: bool = False) -> list[dict[str, Features] | str]:
    """Every branch's features for each image of a batch; an image a branch fails on gets the reason
    (a string) instead, found by retrying the batch one image at a time."""
    pixels = [i.pixels for i in batch]
    try:
        per_branch = extract_side_by_side(branches, pixels, query)
        return [{name: per_branch[name][k] for name in branches} for k in range(len(batch))]
    except (ValueError, RuntimeError, MemoryError, CopyseekError) as exc:
        if len(batch) == 1:
            return [f"feature extraction failed: {one_line(exc)}"]
    return [result for image in batch for result in extract_all(branches, [image], query)]


def extract_side_by_side(branches: dict[str, Branch], pixels: list[np.ndarray], query: bool) -> dict[str, list[Features]]:
    """Each branch's features of the images, the branches running at the same time in threads: the
    models (onnxruntime) and OpenCV release the GIL, so one branch's Python and single-threaded
    parts overlap another's native work (the fused pipeline's SIFT beside its model passes). The
    first branch's error, if any, is raised."""
    if len(branches) == 1:
        return {name: branch.extract(pixels, query=query) for name, branch in branches.items()}
    with ThreadPoolExecutor(len(branches), thread_name_prefix="branch") as pool:
        running = {name: pool.submit(branch.extract, pixels, query=query) for name, branch in branches.items()}
        return {name: future.result() for name, future in running.items()}


@dataclass
class PendingChunk:
    """Features and manifest rows gathered for the next commit (pixels are not kept)."""

    rows: list[ImageRow] = field(default_factory=list)
    features: list[dict[str, Features]] = field(default_factory=list)
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)


SearcherSource = Callable[["Index", Snapshot], dict[str, Searcher]]
"""(index, snapshot) -> searchers, by branch name, over exactly the snapshot's chunks (rows numbered
as the index numbers them); see `Index.use_searcher_source`."""


@dataclass
class Described:
    """One image as a describer hands it to `Index.add`: its features per branch, or the reason it
    cannot be used (features None). width and height are None for an image that was not decoded;
    a decoded image counts towards a model batch even if extraction then failed."""

    file: ImageFile
    features: dict[str, Features] | None
    reason: str | None = None
    sha1: str = ""
    nbytes: int = 0
    width: int | None = None
    height: int | None = None


Describer = Callable[[dict[str, Branch], list[ImageFile]], Iterable[list[Described]]]
"""(branches, files) -> groups of `Described`, every file once, in the files' order (an image that
could not be decoded may come earlier in its group). `Index.add` commits after a group
once `commit_every` images are pending, so a describer that groups as `LocalDescriber` does (model
batches of `batch_size` decoded images) makes the same chunks."""


@dataclass(frozen=True)
class LocalDescriber:
    """Describe in this process: decoding on `workers` threads overlapped with model batches of
    `batch_size` decoded images."""

    batch_size: int = 16
    workers: int = 2

    def __call__(self, branches: dict[str, Branch], files: list[ImageFile]) -> Iterator[list[Described]]:
        decode_side = max(b.decode_side for b in branches.values())
        for images, skipped in batched_decodes(iter_decoded(files, min_side=decode_side, workers=self.workers), self.batch_size):
            yield [Described(file, None, reason) for file, reason in skipped] + describe_decoded(branches, images)


def describe_decoded(branches: dict[str, Branch], images: list[DecodedImage]) -> list[Described]:
    """`Described` for each decoded image of one model batch (features, or why extraction failed)."""
    out = []
    for image, per_branch in zip(images, extract_all(branches, images)):
        failed = isinstance(per_branch, str)
        out.append(
            Described(
                image.file,
                None if failed else per_branch,
                per_branch if failed else None,
                image.sha1,
                image.nbytes,
                image.width,
                image.height,
            )
        )
    return out


def batched_decodes(decoded: Iterator, size: int) -> Iterator[tuple[list[DecodedImage], list[tuple[ImageFile, str]]]]:
    """Group decoded images into model batches of `size`, with the skips met on the way."""
    images: list[DecodedImage] = []
    skipped: list[tuple[ImageFile, str]] = []
    for item in decoded:
        if isinstance(item, DecodedImage):
            images.append(item)
        else:
            file, skip = item
            skipped.append((file, skip.reason))
        if len(images) >= size:
            yield images, skipped
            images, skipped = [], []
    if images or skipped:
        yield images, skipped


def row_of(file: ImageFile, sha1: str, nbytes: int, width, height, status: str, reason: str | None = None) -> ImageRow:
    return ImageRow(file.id, resolved(file.path), sha1, nbytes, width, height, status, reason)


def sha1_of(path: Path) -> str:
    import hashlib

    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def print_skip(file: ImageFile, reason: str) -> None:
    print(f"skipped {file.path}: {reason}", file=sys.stderr)


def strip_runtime(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in RUNTIME_OPTIONS}


def describe_spec(spec: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(spec.items()))


