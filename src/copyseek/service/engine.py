"""The served index: one `Index`, its models kept warm, reads that never wait for writes.

Writes (adding, removing references) run one at a time on a single writer thread, through the
index's own API, so they are committed with its crash-safe protocol. After each write the writer
builds a new `IndexView` (the ids and searchers of the committed references) and swaps it in with one
assignment; the write's request returns only then, so a new reference is matchable as soon as its add
returns. Matches run on any thread against the view current when they start: a view is never
changed after it is built, so readers take no lock and are answered while a write is in progress.

The SQLite manifest is only touched by the writer thread (Python's sqlite3 connections belong to
the thread that opened them).
"""

from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.describe.base import Candidates, Searcher
from copyseek.errors import CopyseekError, ImageSkip
from copyseek.io.images import IMAGE_EXTENSIONS, ImageFile
from copyseek.match.matcher import MatchOptions, QueryBatch, Scorer, match
from copyseek.registry import scorer_factory
from copyseek.store.files import atomic_write
from copyseek.store.index import Index
from copyseek.validation import check_bool

UPLOADS = "uploads"
"""Folder of the index that keeps references added through the service (the index records paths)."""

REFERENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

DEFAULT_THRESHOLDS = {"global": 0.5, "fused": 0.0, "fused-fast": 0.0, "local": 20.0, "pdq": 0.88}
"""Score at which the page calls a match a copy, per pipeline, unless `--threshold` says otherwise:
fused scores are log-odds (0 = even odds, i.e. probability 0.5); global ones cosine similarities (SSCD's copies mostly score above
0.5); local ones RANSAC inliers; pdq 1 - Hamming/256 (0.88 is ThreatExchange's 31 bits)."""


def release_free_memory() -> None:
    """Give freed heap memory back to the OS (glibc's malloc_trim). Each write replaces the searchers,
    and without this the old ones' memory stays in the process, so RSS creeps up with every write."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


class UnreadableImage(CopyseekError):
    """An uploaded file that is not a usable image (answered 422)."""


class TooLarge(CopyseekError):
    """An upload over the service's byte limit (answered 413)."""


class NotFound(CopyseekError):
    """An unknown reference id (answered 404)."""


class Conflict(CopyseekError):
    """An id that is already taken by another image (answered 409)."""


@dataclass(frozen=True)
class Upload:
    """One uploaded image: its bytes and the name it was sent with."""

    data: bytes
    name: str = "upload"


@dataclass(frozen=True)
class ReferenceInfo:
    id: str
    path: str
    sha1: str
    bytes: int
    row: int


class IndexView:
    """What `match` reads of an `Index` (path, pipeline, branches, ids, searchers, len), frozen at one
    commit. Build it on the writer thread; use it from any thread."""

    def __init__(self, index: Index):
        self.path = index.path
        self.pipeline = index.pipeline
        self.branches = index.branches
        self.ids: list[str | None] = list(index.ids)
        self.scorer: Scorer | None = None  # the pipeline's scorer over this view, set by the service
        self._searchers: dict[str, Searcher] = index.searchers() if len(index) else {}
        known = index.manifest.known()
        # a removed reference's row stays in the searchers (masked) with no id until compaction
        self.references = {
            ref_id: ReferenceInfo(ref_id, known[ref_id][2], known[ref_id][0], int(known[ref_id][3]), row)
            for row, ref_id in enumerate(self.ids)
            if ref_id is not None
        }
        self.live_ids = list(self.references)

    def searchers(self) -> dict[str, Searcher]:
        return self._searchers

    def __len__(self) -> int:
        return len(self.references)


@dataclass
class QueryOutcome:
    """One query's answer: scored matches, best first, or the reason it could not be used."""

    name: str
    matches: list[dict] = field(default_factory=list)
    error: str | None = None
    descriptor: list[float] | None = None


@dataclass
class MatchAnswer:
    queries: list[QueryOutcome]
    timings: dict[str, float]
    references: int


class _Recorder:
    """Wraps a pipeline's scorer to keep what `match` does not return: each query's scored
    candidates with their evidence, its global descriptor, and the time spent scoring."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self.scored: dict[str, Candidates] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def __call__(self, batch: QueryBatch) -> list[Candidates]:
        start = time.perf_counter()
        out = self.scorer(batch)
        self.seconds += time.perf_counter() - start
        self.scored.update(zip(batch.ids, out))
        if "global" in batch.features:
            self.vectors.update((q, f["vector"]) for q, f in zip(batch.ids, batch.features["global"]))
        return out

    def evidence(self, query_id: str, row: int) -> dict[str, float]:
        """Per-branch evidence of one (query, reference row) pair, by name."""
        from copyseek.match.fusion import FEATURES

        scored = self.scored.get(query_id)
        if scored is None:
            return {}
        where = np.flatnonzero(scored.rows == row)
        if not len(where):
            return {}
        out: dict[str, float] = {}
        for key, values in scored.extra.items():
            values = np.asarray(values)
            if key == "evidence" and values.ndim == 2 and values.shape[1] == len(FEATURES):
                out.update(zip(FEATURES, map(float, values[where[0]])))
            elif values.ndim == 1:
                out[key] = float(values[where[0]])
        return out


@dataclass(frozen=True)
class ServiceOptions:
    """How the service treats requests. Sizes in bytes / pixels, times in seconds. collapse_versions:
    answer each query with its best reference of every group of versions only (as `match
    --collapse-versions`)."""

    threshold: float | None = None
    candidates: int = 30
    max_upload_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_batch: int = 64
    max_request_bytes: int = 100_000_000
    timeout: float = 60.0
    background: str | None = None
    collapse_versions: bool = False

    def __post_init__(self) -> None:
        for name in ("candidates", "max_upload_bytes", "max_request_bytes", "max_pixels", "max_batch", "timeout"):
            if not getattr(self, name) > 0:
                raise CopyseekError(f"service option {name} must be > 0, got {getattr(self, name)}")
        check_bool("collapse_versions", self.collapse_versions)


class IndexService:
    """An index served to many threads: `match`/`explain` from any thread, writes on one thread."""

    def __init__(self, index_path: str | os.PathLike, options: ServiceOptions = ServiceOptions(), runtime: dict | None = None):
        self.path = Path(index_path)
        self.options = options
        self._runtime = runtime or {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="copyseek-writer")
        self._index: Index | None = None
        self._view: IndexView | None = None
        self._scorer_factory = None
        self._explain_branches: dict = {}
        self._explain_lock = threading.Lock()
        self._scratch = Path(tempfile.mkdtemp(prefix="copyseek-serve-"))
        self.load_error: str | None = None
        self.loading: Future = self._writer.submit(self._load)

    # ----------------------------------------------------------------- life
    def _load(self) -> None:
        try:
            self._index = Index.open(self.path, self._runtime)
            normalizer = None
            if self.options.background:
                from copyseek.match.normalize import BackgroundNormalizer, background_vectors

                if "global" not in self._index.branches:
                    raise CopyseekError("--background needs a pipeline with the global branch")
                vectors = background_vectors(self._index.branches["global"], self.options.background, self.path / "background", progress=False)
                normalizer = BackgroundNormalizer(vectors)
            factory = scorer_factory(self._index.pipeline)
            self._scorer_factory = lambda view: factory(view, normalizer)
            self._publish()
        except Exception as exc:  # reported by /readyz and the CLI; the process stays up to say so
            self.load_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, CopyseekError) else str(exc)
            raise

    def _publish(self) -> None:
        """Build the view of what is committed now and make it the one readers get."""
        assert self._index is not None
        view = IndexView(self._index)
        view.scorer = self._scorer_factory(view) if len(view) else None
        self._view = view
        release_free_memory()

    @property
    def ready(self) -> bool:
        return self._view is not None

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until loaded; raises the load's error."""
        self.loading.result(timeout)

    def view(self) -> IndexView:
        if self._view is None:
            raise CopyseekError(self.load_error or "the index is still loading")
        return self._view

    def close(self) -> None:
        self._writer.submit(self._close_index).result()
        self._writer.shutdown(wait=True)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _close_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    @property
    def threshold(self) -> float:
        if self.options.threshold is not None:
            return self.options.threshold
        return DEFAULT_THRESHOLDS.get(self.view().pipeline, 0.5)

    def info(self) -> dict:
        view = self.view()
        return {
            "path": str(view.path),
            "pipeline": view.pipeline,
            "references": len(view),
            "branches": {name: branch.spec() for name, branch in view.branches.items()},
            "threshold": self.threshold,
            "limits": {
                "max_upload_bytes": self.options.max_upload_bytes,
                "max_pixels": self.options.max_pixels,
                "max_batch": self.options.max_batch,
                "timeout_s": self.options.timeout,
            },
        }

    # ----------------------------------------------------------------- reading
    def check_image(self, upload: Upload) -> None:
        """Refuse, before any decoding, an upload over the size limits or with no image header."""
        from PIL import Image, UnidentifiedImageError

        if not upload.data:
            raise UnreadableImage(f"{upload.name}: empty (0 bytes)")
        if len(upload.data) > self.options.max_upload_bytes:
            raise TooLarge(f"{upload.name}: {len(upload.data):,} bytes is over the upload limit of {self.options.max_upload_bytes:,}")
        try:
            with Image.open(io.BytesIO(upload.data)) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise UnreadableImage(f"{upload.name}: not an image, or a format Pillow cannot read ({type(exc).__name__})") from None
        except Exception as exc:  # Pillow's format plugins raise many kinds on hostile headers
            raise UnreadableImage(f"{upload.name}: unreadable image header ({type(exc).__name__})") from None
        if width * height > self.options.max_pixels:
            raise CopyseekError(f"{upload.name}: {width}x{height} pixels exceeds the limit of {self.options.max_pixels:,}")

    def match(self, uploads: list[Upload], k: int = 10, descriptor: bool = False) -> MatchAnswer:
        """Match each upload with `copyseek.match.matcher.match`, against the current view."""
        start = time.perf_counter()
        view = self.view()
        if len(uploads) > self.options.max_batch:
            raise CopyseekError(f"{len(uploads)} images in one request; the limit is {self.options.max_batch}")
        outcomes = [QueryOutcome(u.name) for u in uploads]
        if not len(view):
            raise CopyseekError("the index holds no references yet")
        folder = Path(tempfile.mkdtemp(dir=self._scratch))
        try:
            files = []
            for q, upload in enumerate(uploads):
                try:
                    self.check_image(upload)
                except UnreadableImage as exc:
                    outcomes[q].error = str(exc)
                    continue
                path = folder / f"q{q}"
                path.write_bytes(upload.data)
                files.append(ImageFile(f"q{q}", path))
            recorder = _Recorder(view.scorer)
            skipped: dict[str, str] = {}
            prepared = time.perf_counter()
            result = match(
                view,  # type: ignore[arg-type]  # IndexView reads like an Index
                files,
                MatchOptions(k=k, candidates=max(k, self.options.candidates), workers=0,
                             collapse_versions=self.options.collapse_versions),
                progress=False,
                on_skip=lambda file, reason: skipped.__setitem__(file.id, reason),
                scorer=recorder,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        matched = time.perf_counter()
        for q, outcome in enumerate(outcomes):
            if f"q{q}" in skipped:
                outcome.error = f"{outcome.name}: {skipped[f'q{q}']}"
            if descriptor and f"q{q}" in recorder.vectors:
                outcome.descriptor = [float(v) for v in recorder.vectors[f"q{q}"]]
        for p in result.predictions:
            ref = view.references[p.reference_id]
            outcomes[int(p.query_id[1:])].matches.append(
                {"id": p.reference_id, "path": ref.path, "score": p.score, "evidence": recorder.evidence(p.query_id, ref.row)}
            )
        timings = {
            "check_s": prepared - start,
            "decode_describe_search_s": max(0.0, matched - prepared - recorder.seconds),
            "score_s": recorder.seconds,
            "total_s": time.perf_counter() - start,
        }
        return MatchAnswer(outcomes, timings, len(view))

    def reference(self, reference_id: str) -> ReferenceInfo:
        info = self.view().references.get(reference_id)
        if info is None:
            raise NotFound(f"reference {reference_id!r} is not in the index")
        return info

    def explain(self, upload: Upload, reference_id: str) -> bytes:
        """The explain picture (PNG bytes) of an uploaded query against one reference."""
        from copyseek.registry import make_branch
        from copyseek.io.images import decode_image, load_rgb
        from copyseek.match.explain import explain_images

        self.check_image(upload)
        info = self.reference(reference_id)
        view = self.view()
        with self._explain_lock:  # the first explain loads the branches the index lacks, once
            if not self._explain_branches:
                self._explain_branches = {
                    name: view.branches.get(name) or make_branch(name, {}) for name in ("global", "local")
                }
        global_branch, local_branch = self._explain_branches["global"], self._explain_branches["local"]
        side = max(global_branch.decode_side, local_branch.decode_side)
        try:
            query_rgb = decode_image(upload.data, side)
        except ImageSkip as skip:
            raise UnreadableImage(f"{upload.name}: {skip.reason}") from None
        reference_rgb = load_rgb(info.path, side)
        output = Path(tempfile.mkdtemp(dir=self._scratch)) / "pair.png"
        try:
            explain_images(query_rgb, reference_rgb, global_branch, local_branch, output)
            return output.read_bytes()
        finally:
            shutil.rmtree(output.parent, ignore_errors=True)

    # ----------------------------------------------------------------- writing
    def add(self, uploads: list[Upload], ids: list[str] | None = None) -> dict:
        """Add references (on the writer thread); returns what was added and skipped."""
        if ids is not None and len(ids) != len(uploads):
            raise CopyseekError(f"{len(ids)} ids for {len(uploads)} images")
        if not uploads:
            raise CopyseekError("no images to add")
        if len(uploads) > self.options.max_batch:
            raise CopyseekError(f"{len(uploads)} images in one request; the limit is {self.options.max_batch}")
        ids = ids or [Path(u.name).stem for u in uploads]
        for ref_id in ids:
            if not REFERENCE_ID.match(ref_id):
                raise CopyseekError(f"reference id {ref_id!r}: use 1-128 letters, digits and _ . - (not starting with . _ -)")
        if len(set(ids)) != len(ids):
            raise CopyseekError("the same id is given twice")
        for upload in uploads:
            self.check_image(upload)
        return self._writer.submit(self._add, uploads, ids).result()

    def _add(self, uploads: list[Upload], ids: list[str]) -> dict:
        index = self._require_index()
        known = index.manifest.known()
        taken = [i for i in ids if i in known and known[i][1] == "indexed"]
        if taken:
            raise Conflict(f"reference id(s) already in the index: {', '.join(taken[:10])} (remove them first)")
        folder = self.path / UPLOADS
        folder.mkdir(exist_ok=True)
        files = []
        for ref_id, upload in zip(ids, uploads):
            suffix = Path(upload.name).suffix.lower()
            path = folder / f"{ref_id}{suffix if suffix in IMAGE_EXTENSIONS else '.img'}"
            atomic_write(path, lambda handle, data=upload.data: handle.write(data))
            files.append(ImageFile(ref_id, path))
        skipped: dict[str, str] = {}
        report = index.add(files, commit_every=len(files), workers=0, progress=False, on_skip=lambda f, r: skipped.__setitem__(f.id, r))
        self._publish()
        indexed = self.view().references
        for file in files:
            if file.id not in indexed:
                skipped.setdefault(file.id, "this image was skipped earlier as unusable")
                file.path.unlink(missing_ok=True)
        if not report.added:
            raise UnreadableImage("; ".join(f"{i}: {r}" for i, r in skipped.items()))
        return {"added": [f.id for f in files if f.id in indexed], "skipped": skipped, "references": len(indexed)}

    def remove(self, reference_id: str) -> dict:
        """Remove one reference with the index's own removal (on the writer thread); it is never
        matched again once this returns."""
        return self._writer.submit(self._remove, reference_id).result()

    def _remove(self, reference_id: str) -> dict:
        report = self._require_index().remove([reference_id])
        if not report.removed:
            why = " (removed already)" if report.not_searchable else ""
            raise NotFound(f"reference {reference_id!r} is not in the index{why}")
        self._publish()
        return {"removed": report.removed, "references": len(self.view())}

    def _require_index(self) -> Index:
        if self._index is None:
            raise CopyseekError(self.load_error or "the index is still loading")
        return self._index
