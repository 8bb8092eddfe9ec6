"""Checking an index (`verify`) and mending it (`repair`).

verify reads every file the index holds and reports what is damaged: the manifest (SQLite's own
check), each chunk (its recorded sha256, that it decodes, that it holds as many references of every
branch as the manifest says), references the manifest places in chunks it does not have, and the
background caches. It writes nothing, so it works on read-only folders.

repair forgets damaged chunks in one transaction (their references become `lost`), deletes their
files and damaged caches, then describes the lost references again from their recorded paths; those
whose file is gone stay `lost` and are listed. Afterwards verify is clean and matching gives the
predictions it gave before the damage (the same images, described by the same models).
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError, IndexDamaged
from copyseek.io.images import ImageFile
from copyseek.store import saved_searchers
from copyseek.store.files import ChunkError, chunk_path, load_chunk
from copyseek.store.index import AddReport, Index
from copyseek.store.manifest import MANIFEST_FIX, ChunkRecord


@dataclass(frozen=True)
class Damage:
    """One damaged file, what is wrong with it, and the reference ids whose features it held."""

    path: Path
    problem: str
    references: tuple[str, ...] = ()
    chunk: int | None = None

    def line(self) -> str:
        held = ""
        if self.references:
            shown = ", ".join(self.references[:10]) + (", ..." if len(self.references) > 10 else "")
            held = f"; it held {len(self.references)} references: {shown}"
        return f"damaged: {self.path}: {self.problem}{held}"


@dataclass
class VerifyReport:
    chunks: int = 0
    references: int = 0
    caches: int = 0
    unchecked: int = 0  # chunks without a recorded checksum (indexes from before checksums)
    damaged: list[Damage] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)  # indexed ids whose chunk the manifest lacks
    leftovers: int = 0

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.dangling

    def lines(self, index: Path) -> list[str]:
        out = [
            f"checked {index}: manifest, {self.chunks} chunks ({self.references} references), "
            f"{self.caches} background caches"
        ]
        out += [d.line() for d in self.damaged]
        if self.dangling:
            out.append(f"damaged: {index / 'manifest.sqlite'}: {len(self.dangling)} references name chunks it does not record: {', '.join(self.dangling[:10])}")
        if self.unchecked:
            out.append(
                f"note: {self.unchecked} chunks have no recorded checksum (made by an older copyseek); "
                f"they decode, and `copyseek repair {index}` records their checksums"
            )
        if self.leftovers:
            out.append(f"note: {self.leftovers} unused files in {index / 'chunks'} (left by an interrupted writer; the next writer deletes them)")
        out.append("ok" if self.ok else f"the index is damaged; fix: copyseek repair {index}")
        return out


@dataclass
class RepairReport:
    dropped: list[Damage] = field(default_factory=list)
    redescribed: AddReport | None = None
    lost: list[tuple[str, str]] = field(default_factory=list)  # (id, path) that could not be described again
    caches_removed: int = 0
    checksums_recorded: int = 0

    def lines(self) -> list[str]:
        out = [d.line().replace("damaged:", "dropped:", 1) for d in self.dropped]
        if self.redescribed is not None:
            out.append(f"described again: {self.redescribed.added}")
        out += [f"lost (file gone or unusable, run copyseek index again once it is back): {i} {p}" for i, p in self.lost]
        if self.caches_removed:
            out.append(f"removed {self.caches_removed} damaged background caches (they are recomputed on the next match)")
        if self.checksums_recorded:
            out.append(f"recorded the checksums of {self.checksums_recorded} chunks")
        out.append("nothing to repair" if not (self.dropped or self.caches_removed or self.lost) else "repaired")
        return out


def verify(index: Index) -> VerifyReport:
    """Check every file of `index` (read-only)."""
    report = VerifyReport()
    manifest = index.manifest
    problems = manifest.integrity_problems()
    if problems:
        raise IndexDamaged(f"the manifest {manifest.path} is damaged ({'; '.join(problems[:3])})", index.path, MANIFEST_FIX.format(index=index.path))
    records = manifest.chunks()
    report.chunks = len(records)
    for record in records:
        report.references += record.count
        report.unchecked += record.sha256 is None
        problem = chunk_problem(index, record)
        if problem:
            held = tuple(i for i, _, _ in manifest.images_of_chunk(record.chunk))
            report.damaged.append(Damage(chunk_path(index.path / "chunks", record.chunk), problem, held, record.chunk))
    known = {r.chunk for r in records}
    report.dangling = [image_id for image_id, chunk in manifest.indexed_chunks() if chunk not in known]
    chunk_folder = index.path / "chunks"
    if chunk_folder.is_dir():
        report.leftovers = sum(
            1 for p in chunk_folder.iterdir() if p.name.endswith(".tmp") or (p.name.removesuffix(".npz").isdigit() and int(p.name.removesuffix(".npz")) not in known)
        )
    else:
        report.damaged.append(Damage(chunk_folder, "the chunks folder is missing"))
    for cache in sorted((index.path / "background").glob("*.np[yz]")):
        report.caches += 1
        problem = cache_problem(cache)
        if problem:
            report.damaged.append(Damage(cache, f"{problem} (a damaged cache is recomputed by itself)"))
    for saved in sorted((index.path / saved_searchers.FOLDER).glob("*.bin")):
        report.caches += 1
        problem = saved_searchers.saved_problem(saved)
        if problem:
            report.damaged.append(Damage(saved, f"{problem} (a damaged saved searcher is rebuilt by itself)"))
    return report


def chunk_problem(index: Index, record: ChunkRecord) -> str | None:
    """What is wrong with one chunk file, or None."""
    try:
        arrays = load_chunk(index.path / "chunks", record.chunk, record.sha256)
    except ChunkError as exc:
        return exc.problem
    for name, branch in index.branches.items():
        if name not in arrays:
            return f"it has no {name} features"
        searcher = branch.new_searcher()
        try:
            searcher.add(arrays[name])
        except (CopyseekError, ValueError, IndexError) as exc:
            return f"its {name} features do not fit ({exc})"
        if searcher.ntotal != record.count:
            return f"it holds {searcher.ntotal} {name} references, the manifest says {record.count}"
    return None


def cache_problem(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            vectors = data["vectors"] if isinstance(data, np.lib.npyio.NpzFile) else data
            if not np.isfinite(vectors).all():
                return "it holds non-finite values"
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        return " ".join(str(exc).split())[:100] or type(exc).__name__
    return None


def repair(index: Index, *, progress: bool = True, workers: int = 2, batch_size: int = 16) -> RepairReport:
    """Drop damaged chunks and caches, describe their references again from their recorded paths,
    record missing checksums. Needs a readable manifest (see MANIFEST_FIX otherwise)."""
    report = RepairReport()
    with index.writing(check=None):
        found = verify(index)
        damaged_chunks = [d for d in found.damaged if d.chunk is not None]
        report.dropped = damaged_chunks
        index.manifest.drop_chunks([d.chunk for d in damaged_chunks], "its chunk {chunk} was damaged")  # type: ignore[misc]
        if found.dangling:
            index.manifest.mark_lost(found.dangling, "the manifest named a chunk it does not record", detach=True)
        index.remove_unused_chunk_files()
        for damage in found.damaged:
            if damage.chunk is None and damage.path.is_file():
                damage.path.unlink()
                if damage.path.parent.name == saved_searchers.FOLDER:
                    damage.path.with_suffix(".json").unlink(missing_ok=True)
                report.caches_removed += 1
        missing = {r.chunk: r for r in index.manifest.chunks() if r.sha256 is None}
        if missing:
            sums = {}
            for chunk in missing:
                data = chunk_path(index.path / "chunks", chunk).read_bytes()
                sums[chunk] = (hashlib.sha256(data).hexdigest(), len(data))
            index.manifest.set_checksums(sums)
            report.checksums_recorded = len(sums)
        # every lost reference, those an earlier repair could not describe included
        files = [ImageFile(e.id, Path(e.path)) for e in index.list(["lost"]) if Path(e.path).is_file()]
        unusable: list[tuple[str, str]] = []
        if files:
            report.redescribed = index.add(
                files, progress=progress, workers=workers, batch_size=batch_size,
                on_skip=lambda f, reason: unusable.append((f.id, str(f.path))),
            )  # fmt: skip
        report.lost = [(e.id, e.path) for e in index.list(["lost"])] + unusable
        if report.lost:
            index.manifest.mark_lost([i for i, _ in report.lost], "its chunk was damaged and the file is gone or unusable")
    return report

