"""`Index`: a directory holding a reference collection's features for every branch of a pipeline.

Layout::

    INDEX/manifest.sqlite   configuration, images (id, path, sha1, size, status, row), chunks
    INDEX/chunks/N.npz      features of a batch of references, every branch's arrays in one file
    INDEX/background/*.npy  cached background descriptors for score normalisation
    INDEX/skipped.csv       images that could not be used, with the reason
    INDEX/lock              held by the process that writes

Indexing is incremental (known images are not read again) and crash-safe (see manifest.py).
"""

from __future__ import annotations

import csv
import fcntl
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


from copyseek.describe.base import Branch, Features, Searcher
from copyseek.registry import (
    RUNTIME_OPTIONS,
    make_branch,
    options_from_spec,
    pipeline_branches,
    pipeline_options,
)
from copyseek.errors import CopyseekError
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded, one_line
from copyseek.progress import progress_bar
from copyseek.store.files import chunk_path, load_chunk, remove_orphans, save_chunk
from copyseek.store.manifest import ImageRow, Manifest

FORMAT_VERSION = 1


@dataclass
class AddReport:
    """What one `Index.add` did."""

    added: int = 0
    already_indexed: int = 0
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)
    previously_skipped: int = 0
    ignored_files: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.added / self.seconds:.1f} images/s)" if self.seconds > 0 and self.added else ""
        parts = [f"added {self.added}{rate}", f"already indexed {self.already_indexed}", f"skipped {len(self.skipped)}"]
        if self.previously_skipped:
            parts.append(f"skipped earlier {self.previously_skipped}")
        if self.ignored_files:
            parts.append(f"non-image files ignored {self.ignored_files}")
        return ", ".join(parts)


class Index:
    """A copy-detection index. Create with `Index.create`, reopen with `Index.open`."""

    def __init__(self, path: Path, manifest: Manifest, branches: dict[str, Branch]):
        self.path = path
        self.manifest = manifest
        self.branches = branches
        self._searchers: dict[str, Searcher] | None = None
        self._ids: list[str] | None = None

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(
        cls, path: str | os.PathLike, pipeline: str = "global", options: dict[str, dict] | None = None
    ) -> "Index":
        """A new, empty index at `path` for `pipeline`; options: branch name -> that branch's options
        (e.g. {"global": {"model": "sscd-fast", "factory": "Flat"}})."""
        path = Path(path)
        if (path / "manifest.sqlite").exists():
            raise CopyseekError(f"an index already exists at {path}; use Index.open to extend it")
        if path.exists() and not path.is_dir():
            raise CopyseekError(f"{path} exists and is not a folder")
        options = pipeline_options(pipeline, options)
        stored = {name: strip_runtime(branch_options) for name, branch_options in options.items()}
        branches = {name: make_branch(name, branch_options) for name, branch_options in options.items()}
        path.mkdir(parents=True, exist_ok=True)
        (path / "chunks").mkdir(exist_ok=True)
        manifest = Manifest(path / "manifest.sqlite")
        manifest.set_meta(
            format=FORMAT_VERSION,
            pipeline=pipeline,
            options=stored,
            specs={name: branch.spec() for name, branch in branches.items()},
        )
        return cls(path, manifest, branches)

    @classmethod
    def open(cls, path: str | os.PathLike, runtime: dict | None = None) -> "Index":
        """Open an existing index. runtime: speed options for every branch (threads, batch_size)."""
        path = Path(path)
        if not (path / "manifest.sqlite").is_file():
            raise CopyseekError(f"no copyseek index at {path} (create one with: copyseek index FOLDER --index {path})")
        manifest = Manifest(path / "manifest.sqlite")
        if manifest.get_meta("format") != FORMAT_VERSION:
            raise CopyseekError(f"{path} was written by an incompatible copyseek version")
        options: dict[str, dict] = manifest.get_meta("options")  # type: ignore[assignment]
        specs: dict[str, dict] = manifest.get_meta("specs")  # type: ignore[assignment]
        branches = {}
        for name, branch_options in options.items():
            pinned = options_from_spec(name, specs[name])
            branch = make_branch(name, {**pinned, **branch_options, **(runtime or {})})
            if branch.spec() != specs[name]:
                raise CopyseekError(
                    f"the {name} branch of {path} was built with {describe_spec(specs[name])}, "
                    f"but that now loads as {describe_spec(branch.spec())} (did the model file change?)"
                )
            branches[name] = branch
        index = cls(path, manifest, branches)
        index._recover()
        return index

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        pipeline: str | None = None,
        options: dict[str, dict] | None = None,
        runtime: dict | None = None,
    ) -> "Index":
        """Open `path` if it holds an index (checking that `pipeline` and `options`, when given, match
        what it was built with), else create it."""
        path = Path(path)
        if not (path / "manifest.sqlite").exists():
            pipeline_options(pipeline or "global", options)  # options for branches the pipeline lacks raise
            merged = {name: {**(options or {}).get(name, {}), **(runtime or {})} for name in pipeline_branches(pipeline or "global")}
            return cls.create(path, pipeline or "global", merged)
        index = cls.open(path, runtime)
        index.check_compatible(pipeline, options)
        return index

    def check_compatible(self, pipeline: str | None, options: dict[str, dict] | None) -> None:
        """Raise CopyseekError if `pipeline` or branch `options` differ from what the index was built with."""
        built = self.manifest.get_meta("pipeline")
        if pipeline and pipeline != built:
            raise CopyseekError(f"{self.path} was built for pipeline {built!r}, not {pipeline!r}")
        stored: dict[str, dict] = self.manifest.get_meta("options")  # type: ignore[assignment]
        for name, wanted in (options or {}).items():
            for key, value in strip_runtime(wanted).items():
                have = stored.get(name, {}).get(key)
                if have != value and not (key == "model" and have is None and value == "sscd"):
                    raise CopyseekError(
                        f"{self.path} was built with {name} {key}={have or 'default'!s}, not {value}: "
                        "an index only takes images described the same way (use another --index)"
                    )

    def _recover(self) -> None:
        """Remove what a crashed writer left behind (orphan chunk files, temporary files)."""
        with self._lock():
            remove_orphans(self.path / "chunks", {c for c, _, _ in self.manifest.chunks()})

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- facts
    @property
    def pipeline(self) -> str:
        return str(self.manifest.get_meta("pipeline"))

    @property
    def ids(self) -> list[str]:
        """Reference ids in row order."""
        if self._ids is None:
            self._ids = self.manifest.ids_by_row()
        return self._ids

    def __len__(self) -> int:
        return self.manifest.counts()["indexed"]

    def info(self) -> dict:
        counts = self.manifest.counts()
        chunk_bytes = sum(chunk_path(self.path / "chunks", c).stat().st_size for c, _, _ in self.manifest.chunks())
        searchers = self.searchers() if counts["indexed"] else {}
        per_branch = {name: s.nbytes() for name, s in searchers.items()}
        return {
            "path": str(self.path),
            "pipeline": self.pipeline,
            "references": counts["indexed"],
            "skipped": counts["skipped"],
            "branches": self.manifest.get_meta("specs"),
            "disk_bytes": chunk_bytes,
            "search_bytes": per_branch,
            "bytes_per_reference": {n: b / counts["indexed"] for n, b in per_branch.items()} if counts["indexed"] else {},
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
    ) -> AddReport:
        """Index the images of a folder (recursive) or a list of ImageFile, skipping known ones.

        on_skip(file, reason) is called for each image that cannot be used (default: a line on stderr).
        Work is committed every `commit_every` images: an interrupted run keeps what was committed,
        and running it again completes it.
        """
        import time

        start = time.perf_counter()
        report = AddReport()
        if isinstance(source, (str, os.PathLike)):
            files, ignored = find_images(source)
            report.ignored_files = len(ignored)
        else:
            files = list(source)
        on_skip = on_skip or print_skip
        with self._lock():
            todo = self._plan(files, report)
            decode_side = max(b.decode_side for b in self.branches.values())
            decoded = iter_decoded(todo, min_side=decode_side, workers=workers)
            pending = PendingChunk()
            with progress_bar(len(todo), "indexing", disable=not progress) as bar:
                for images, skipped in batched_decodes(decoded, batch_size):
                    for image, per_branch in zip(images, extract_all(self.branches, images)):
                        if isinstance(per_branch, str):
                            skipped.append((image.file, per_branch))
                        else:
                            pending.rows.append(row_of(image.file, image.sha1, image.nbytes, image.width, image.height, "indexed"))
                            pending.features.append(per_branch)
                    for file, reason in skipped:
                        on_skip(file, reason)
                    pending.skipped += skipped
                    report.skipped += skipped
                    bar.update(len(images) + len(skipped))
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
            # Same path and size is taken as the same file, so that re-runs read nothing.
            same = (path == str(file.path.resolve()) and size == file_size(file.path)) or sha1_of(file.path) == sha1
            if same and status == "indexed":
                report.already_indexed += 1
            elif same:
                report.previously_skipped += 1
            elif status == "skipped":
                todo.append(file)  # changed since it was skipped: try again
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
        if pending.rows:
            packed = {
                name: branch.pack([features[name] for features in pending.features])
                for name, branch in self.branches.items()
            }
            save_chunk(self.path / "chunks", chunk, packed)
        skipped = [
            row_of(f, sha1_of(f.path), file_size(f.path), None, None, "skipped", reason) for f, reason in pending.skipped
        ]
        self.manifest.commit_chunk(chunk, first_row, pending.rows, skipped)
        self._searchers, self._ids = None, None
        return len(pending.rows)

    def _write_skip_report(self) -> None:
        with open(self.path / "skipped.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "path", "reason"])
            writer.writerows(self.manifest.skipped())

    def _lock(self):
        return _DirectoryLock(self.path / "lock")

    # ----------------------------------------------------------------- searching
    def searchers(self) -> dict[str, Searcher]:
        """Each branch's searcher over all committed references (built on first use)."""
        if self._searchers is None:
            searchers = {name: branch.new_searcher() for name, branch in self.branches.items()}
            for chunk, _, _ in self.manifest.chunks():
                arrays = load_chunk(self.path / "chunks", chunk)
                for name, searcher in searchers.items():
                    searcher.add(arrays[name])
            self._searchers = searchers
        return self._searchers

    def reference_path(self, reference_id: str) -> Path:
        path = self.manifest.path_of(reference_id)
        if path is None:
            raise CopyseekError(f"reference {reference_id!r} is not in the index {self.path}")
        return Path(path)


def extract_all(branches: dict[str, Branch], batch: list[DecodedImage], query: bool = False) -> list[dict[str, Features] | str]:
    """Every branch's features for each image of a batch; an image a branch fails on gets the reason
    (a string) instead, found by retrying the batch one image at a time."""
    pixels = [i.pixels for i in batch]
    try:
        per_branch = {name: branch.extract(pixels, query=query) for name, branch in branches.items()}
        return [{name: per_branch[name][k] for name in branches} for k in range(len(batch))]
    except (ValueError, RuntimeError, MemoryError, CopyseekError) as exc:
        if len(batch) == 1:
            return [f"feature extraction failed: {one_line(exc)}"]
    return [result for image in batch for result in extract_all(branches, [image], query)]


@dataclass
class PendingChunk:
    """Features and manifest rows gathered for the next commit (pixels are not kept)."""

    rows: list[ImageRow] = field(default_factory=list)
    features: list[dict[str, Features]] = field(default_factory=list)
    skipped: list[tuple[ImageFile, str]] = field(default_factory=list)


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
    return ImageRow(file.id, str(file.path.resolve()), sha1, nbytes, width, height, status, reason)


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


class _DirectoryLock:
    """Exclusive lock on a file; the OS releases it if the process dies (kill -9 included)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.handle = open(self.path, "a")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise CopyseekError(f"another copyseek process is writing to {self.path.parent}") from None
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        return False
