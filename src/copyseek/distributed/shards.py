"""Searching an index split into shards by row range, each shard held by its own worker.

An index's snapshot is a list of chunks in row order; `split_chunks` cuts it into contiguous runs
of about equal size (whole chunks: a chunk is the unit on disk). Each run is loaded by a
`ShardWorker` in this process, in a separate process, or in a Ray actor, which reads its chunk
files itself (on a cluster, the index folder must be on a filesystem every node sees). A
`ShardedSearcher` asks every shard for its top k and merges them by (score descending, row
ascending), the order a single Faiss flat index returns, ties included; removed references are
dropped after the merge by the index's own `MaskedSearcher`, so the results are exactly those of
the unsharded index.

Exactness needs a searcher whose score for a reference depends on the query and that reference
alone and whose top k is exact: the global branch with the `Flat` factory (or `auto` while each
shard is small enough to be searched exactly). Other searchers (IVF
quantizers trained per shard, the local branch's votes across all descriptors, PDQ's best of eight
dihedral searches) would give other results split up, so `Shards` leaves them whole in the
calling process.

>>> from copyseek.describe.base import Candidates
>>> a = Candidates(np.array([0, 1]), np.array([0.9, 0.5], np.float32))
>>> b = Candidates(np.array([7, 5]), np.array([0.9, 0.7], np.float32))
>>> merge_candidates([a, b], 3).rows.tolist()
[0, 7, 5]
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from copyseek.describe.base import Candidates, Chunk, Features, Searcher
from copyseek.errors import CopyseekError
from copyseek.store.files import ChunkError, load_chunk
from copyseek.store.manifest import ChunkRecord, Snapshot
from copyseek.validation import check_int

BACKENDS = ("process", "ray", "local")
"""Where shards live: separate processes on this machine, Ray actors (on a cluster), or in this
process (for tests and debugging: no parallelism)."""


def exactly_shardable(name: str, spec: dict) -> bool:
    """Whether a branch's searcher gives the same results split into shards and merged."""
    # "auto" resolves by each searcher's own size: every shard's search is exact while it is small
    return name == "global" and spec.get("factory", "Flat") in ("Flat", "auto")


def split_chunks(chunks: tuple[ChunkRecord, ...] | list[ChunkRecord], shards: int) -> list[list[ChunkRecord]]:
    """Contiguous runs of whole chunks, at most `shards` of them, of about equal row counts.

    >>> runs = split_chunks([ChunkRecord(i, 10 * i, 10, None, None) for i in range(5)], 2)
    >>> [[c.chunk for c in run] for run in runs]
    [[0, 1], [2, 3, 4]]
    """
    check_int("shards", shards, minimum=1)
    total = sum(c.count for c in chunks)
    runs: list[list[ChunkRecord]] = [[] for _ in range(shards)]
    seen = 0
    for record in chunks:
        # the shard whose share of the rows this chunk's middle falls in
        runs[min(shards - 1, int((seen + record.count / 2) * shards / max(total, 1)))].append(record)
        seen += record.count
    return [run for run in runs if run]


class ShardWorker:
    """One shard: searchers over a run of an index's chunks, answering with the index's row
    numbers (`offset` + the row within the shard).

    searchers: empty searchers (branch name -> Searcher) to fill; chunks: (chunk, sha256) of the
    run, loaded from `index_path`/chunks."""

    def __init__(self, index_path: str, searchers: dict[str, Searcher], chunks: list[tuple[int, str | None]], offset: int):
        self.offset = offset
        self.searchers = searchers
        for chunk, sha256 in chunks:
            try:
                arrays = load_chunk(Path(index_path) / "chunks", chunk, sha256)
            except ChunkError as exc:
                raise CopyseekError(f"shard at row {offset}: {exc}") from None
            for name, searcher in searchers.items():
                searcher.add(arrays[name])

    def call(self, method: str, name: str, *args: Any) -> Any:
        """The one entry every backend uses: `method` on branch `name`'s searcher."""
        searcher = self.searchers[name]
        if method == "search":
            queries, k = args
            return [Candidates(c.rows + self.offset, c.scores, c.extra) for c in searcher.search(queries, k)]
        if method == "search_vectors":
            sims, rows = searcher.search_vectors(*args)
            return sims, np.where(rows >= 0, rows + self.offset, -1)
        if method == "reconstruct":
            return searcher.reconstruct(np.asarray(args[0]) - self.offset)
        if method == "add":  # -> the rows added
            before = searcher.ntotal
            searcher.add(args[0])
            return searcher.ntotal - before
        if method == "set_search_parameters":
            return searcher.set_search_parameters(**args[0])
        if method in ("ntotal", "nbytes", "search_parameters"):
            value = getattr(searcher, method)
            return value() if callable(value) else value
        raise CopyseekError(f"a shard has no method {method!r}")


class ShardHandle(Protocol):
    """A shard wherever it lives: `submit` sends a call and returns a ticket, `wait` its answer.
    Calls are answered in the order they were submitted."""

    def submit(self, method: str, name: str, *args: Any) -> Any: ...

    def wait(self, ticket: Any) -> Any: ...

    def close(self) -> None: ...


class LocalShard:
    """A shard in this process."""

    def __init__(self, *worker_args: Any):
        self.worker = ShardWorker(*worker_args)

    def submit(self, method: str, name: str, *args: Any) -> Any:
        return self.worker.call(method, name, *args)

    def wait(self, ticket: Any) -> Any:
        return ticket

    def close(self) -> None:
        self.worker = None  # type: ignore[assignment]


def serve_shard(connection, worker_args: tuple) -> None:
    """A shard process's loop: build the worker, then answer calls until told to stop (None)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        worker = ShardWorker(*worker_args)
        connection.send((True, None))
    except Exception as exc:  # reported to the parent, which raises it
        connection.send((False, f"{type(exc).__name__}: {exc}"))
        return
    while (message := connection.recv()) is not None:
        try:
            connection.send((True, worker.call(*message)))
        except Exception as exc:
            connection.send((False, f"{type(exc).__name__}: {exc}"))


class ProcessShard:
    """A shard in a separate process on this machine (spawned, so no model or thread pool is
    inherited half-initialised)."""

    def __init__(self, *worker_args: Any):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=serve_shard, args=(child, worker_args), daemon=True)
        self.process.start()
        child.close()
        self.wait(None)

    def submit(self, method: str, name: str, *args: Any) -> Any:
        self.connection.send((method, name, *args))

    def wait(self, ticket: Any) -> Any:
        try:
            ok, value = self.connection.recv()
        except EOFError:
            raise CopyseekError(f"shard process {self.process.pid} exited (code {self.process.exitcode})") from None
        if not ok:
            raise CopyseekError(f"shard process {self.process.pid}: {value}")
        return value

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.connection.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
            if self.process.is_alive():
                self.process.kill()
        self.connection.close()


class RayShard:
    """A shard in a Ray actor (one CPU reserved)."""

    def __init__(self, ray, *worker_args: Any):
        self.ray = ray
        self.actor = ray.remote(ShardWorker).options(num_cpus=1).remote(*worker_args)

    def submit(self, method: str, name: str, *args: Any) -> Any:
        return self.actor.call.remote(method, name, *args)

    def wait(self, ticket: Any) -> Any:
        try:
            return self.ray.get(ticket)
        except self.ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            raise CopyseekError(f"shard actor: {cause or exc}") from None

    def close(self) -> None:
        self.ray.kill(self.actor)


def merge_candidates(parts: list[Candidates], k: int) -> Candidates:
    """The top k of several shards' candidates for one query, by (score descending, row ascending)."""
    rows = np.concatenate([p.rows for p in parts]).astype(np.int64)
    scores = np.concatenate([p.scores for p in parts])
    order = np.lexsort((rows, -scores))[:k]
    keys = set().union(*(p.extra for p in parts))
    extra = {key: np.concatenate([p.extra[key] for p in parts])[order] for key in keys}
    return Candidates(rows[order], scores[order], extra)


def merge_top(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Several shards' (n, k) similarities and rows (-1 = none) merged into the top (n, k)."""
    sims = np.concatenate([s for s, _ in parts], axis=1)
    rows = np.concatenate([r for _, r in parts], axis=1).astype(np.int64)
    missing = rows < 0
    key_sims = np.where(missing, np.inf, -sims)
    key_rows = np.where(missing, np.iinfo(np.int64).max, rows)
    order = np.lexsort((key_rows, key_sims), axis=1)[:, :k]
    out_sims = np.take_along_axis(sims, order, axis=1)
    out_rows = np.take_along_axis(rows, order, axis=1)
    out_sims[out_rows < 0] = -np.inf
    return out_sims.astype(np.float32), out_rows


class ShardedSearcher(Searcher):
    """One branch's searcher spread over shards (rows: the index's, in shard order).

    Searches go to every shard at once and are merged (`merge_candidates`, `merge_top`);
    `reconstruct` asks each row's own shard; `add` (new chunks, `Index.refresh`) goes to the last."""

    def __init__(self, name: str, shards: list[ShardHandle], offsets: list[int], total: int):
        self.name = name
        self.shards = shards
        self.offsets = np.asarray(offsets, np.int64)
        self._ntotal = total

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def _all(self, method: str, *args: Any) -> list[Any]:
        tickets = [shard.submit(method, self.name, *args) for shard in self.shards]
        return [shard.wait(ticket) for shard, ticket in zip(self.shards, tickets)]

    def add(self, chunk: Chunk) -> None:
        last = self.shards[-1]
        self._ntotal += last.wait(last.submit("add", self.name, chunk))

    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        if not queries:
            return []
        per_shard = self._all("search", queries, k)
        return [merge_candidates([found[q] for found in per_shard], k) for q in range(len(queries))]

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return merge_top(self._all("search_vectors", vectors, k), k)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self._ntotal):
            raise CopyseekError(f"rows must be within 0..{self._ntotal - 1}")
        owner = np.searchsorted(self.offsets, rows, side="right") - 1
        wanted = [(s, np.flatnonzero(owner == s)) for s in range(len(self.shards))]
        tickets = [(s, at, self.shards[s].submit("reconstruct", self.name, rows[at])) for s, at in wanted if len(at)]
        parts = [(at, self.shards[s].wait(ticket)) for s, at, ticket in tickets]
        if not parts:
            return np.zeros((0, 0), np.float32)
        out = np.empty((len(rows), parts[0][1].shape[1]), parts[0][1].dtype)
        for at, vectors in parts:
            out[at] = vectors
        return out

    def nbytes(self) -> int:
        return int(sum(self._all("nbytes")))

    def search_parameters(self) -> dict[str, int]:
        return self._all("search_parameters")[0]

    def set_search_parameters(self, **values: int | None) -> None:
        self._all("set_search_parameters", values)


@dataclass
class Shards:
    """A searcher source for `Index.use_searcher_source`: the index's exactly shardable branches
    (`exactly_shardable`) served by up to `count` shards on `backend` ("process", "ray", "local");
    the other branches load in the calling process as usual. address: the Ray cluster for the ray
    backend (None: a local Ray). Close it (or use it as a context manager) to stop the shards.

    >>> Shards(0)
    Traceback (most recent call last):
    ...
    copyseek.errors.CopyseekError: shards must be an integer >= 1, got 0
    """

    count: int
    backend: str = "process"
    address: str | None = None

    def __post_init__(self) -> None:
        check_int("shards", self.count, minimum=1)
        if self.backend not in BACKENDS:
            raise CopyseekError(f"unknown shard backend {self.backend!r} (known: {', '.join(BACKENDS)})")
        self._handles: list[ShardHandle] = []

    def __call__(self, index, snapshot: Snapshot) -> dict[str, Searcher]:
        self.close()  # a reload (after a compaction) replaces the shards
        specs: dict[str, dict] = index.manifest.get_meta("specs")
        names = [name for name in index.branches if exactly_shardable(name, specs[name])]
        runs = split_chunks(snapshot.chunks, self.count)
        if not names or not runs:
            return {}
        offsets = list(np.cumsum([0] + [sum(c.count for c in run) for run in runs[:-1]]))
        ray = None
        if self.backend == "ray":
            from copyseek.distributed.cluster import connect

            ray = connect(self.address)
        for run, offset in zip(runs, offsets):
            worker_args = (
                str(index.path),
                {name: index.branches[name].new_searcher() for name in names},
                [(c.chunk, c.sha256) for c in run],
                int(offset),
            )
            if self.backend == "ray":
                self._handles.append(RayShard(ray, *worker_args))
            elif self.backend == "process":
                self._handles.append(ProcessShard(*worker_args))
            else:
                self._handles.append(LocalShard(*worker_args))
        if self.backend == "ray":  # the actors load their chunks now; wait so that errors show here
            for handle in self._handles:
                handle.wait(handle.submit("ntotal", names[0]))
        total = sum(c.count for c in snapshot.chunks)
        return {name: ShardedSearcher(name, self._handles, offsets, total) for name in names}

    @property
    def shards(self) -> int:
        """Shards running now."""
        return len(self._handles)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles = []

    def __enter__(self) -> "Shards":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
