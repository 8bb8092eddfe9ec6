"""Dedup of a folder of images, end to end: describe every image with a global model, group with
`dedup.find_groups`, verify doubtful edges (the local branch's SIFT + RANSAC; optionally PDQ hashes first), write the outputs,
and optionally move the duplicates a keep policy does not keep (nothing is moved unless asked).

    report = dedup_folder("photos/", "groups.json", plot="groups.png", keep="largest")
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.dedup import (
    DedupParams,
    Groups,
    contact_sheet,
    duplicates_json,
    find_groups,
    keep_plan,
    write_groups_csv,
)
from copyseek.io.images import DecodedImage, ImageFile, find_images, iter_decoded, load_rgb
from copyseek.progress import progress_bar


@dataclass
class DedupReport:
    names: list[str]
    groups: Groups
    keep: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    confirmed_by: dict[str, int] = field(default_factory=dict)
    moved: int = 0
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        duplicates = int((~self.keep).sum())
        doubtful, confirmed = self.groups.verified
        return (
            f"{len(self.names)} images, {self.groups.n_groups} groups, {duplicates} duplicates beyond the kept ones"
            f"; {confirmed} of {doubtful} doubtful pairs confirmed"
            + (" (" + ", ".join(f"{count} by {name}" for name, count in self.confirmed_by.items()) + ")" if doubtful else "")
            + (f", {self.groups.refused} of them left out by the merge limit" if self.groups.refused else "")
            + f"; skipped {len(self.skipped)}"
            + (f"; moved {self.moved}" if self.moved else "; dry run: nothing moved")
        )


def describe_folder(
    folder: Path, model: str = "sscd", batch_size: int = 16, workers: int = 2, progress: bool = True
) -> tuple[list[ImageFile], np.ndarray, list[tuple[str, str]]]:
    """(files kept, (n, dim) global vectors, skipped (relative name, reason)); file ids are paths
    relative to `folder` (two files may share a stem in different sub-folders)."""
    from copyseek.describe.global_branch import GlobalBranch

    found, _ = find_images(folder, unique_ids=False)
    files = [ImageFile(f.path.relative_to(folder).as_posix(), f.path) for f in found]
    branch = GlobalBranch.from_options({"model": model, "batch_size": batch_size})
    kept: list[ImageFile] = []
    vectors: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    batch: list[DecodedImage] = []

    def flush() -> None:
        vectors.append(branch.embed([image.pixels for image in batch]))
        kept.extend(image.file for image in batch)
        batch.clear()

    with progress_bar(len(files), "describing", disable=not progress) as bar:
        for item in iter_decoded(files, branch.decode_side, workers):
            if isinstance(item, DecodedImage):
                batch.append(item)
                if len(batch) == batch_size:
                    flush()
            else:
                skipped.append((item[0].id, item[1].reason))
            bar.update(1)
        if batch:
            flush()
    dim = branch.model.dim
    return kept, (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), skipped


PDQ_MATCH_DISTANCE = 31
"""ThreatExchange's PDQ match threshold: Hamming distance of the 256-bit hashes."""
PDQ_MIN_QUALITY = 50
"""PDQ's quality floor (ThreatExchange's): a hash under it (a nearly flat image) does not match."""


def check_hash_distance(bits: int) -> int:
    """`bits` as a PDQ Hamming distance (a whole number in [0, 256]), or a clear error."""
    if int(bits) != bits or not 0 <= bits <= 256:
        raise CopyseekError(f"the PDQ distance must be a whole number of bits in [0, 256], got {bits}")
    return int(bits)


def check_cover(share: float) -> float:
    """`share` as a share of an image in [0, 1], or a clear error."""
    if not 0.0 <= share <= 1.0:
        raise CopyseekError(f"min_cover is a share of the image in [0, 1], got {share}")
    return float(share)


class HashVerifier:
    """verify(i, j) -> whether images i and j have PDQ hashes within `max_distance` bits, both of
    quality >= PDQ_MIN_QUALITY: a re-encoded, resized or lightly edited copy. It confirms what SIFT
    cannot on images with little texture (graphics, logos, screenshots), and costs ~2 ms an image
    instead of a RANSAC match; hashes are computed once per image, for the doubtful edges only."""

    def __init__(self, paths: list[Path], max_distance: int = PDQ_MATCH_DISTANCE):
        self.paths, self.max_distance = paths, check_hash_distance(max_distance)
        self._hashes: dict[int, np.ndarray | None] = {}

    def _hash(self, row: int) -> np.ndarray | None:
        from copyseek.describe.pdq_branch import PDQ_SIDE, pdq_hashes

        if row not in self._hashes:
            try:
                hashes, quality = pdq_hashes(load_rgb(self.paths[row], PDQ_SIDE), dihedral=False)
            except CopyseekError:  # an image unreadable now: its edges stay unconfirmed
                hashes, quality = None, 0
            self._hashes[row] = hashes[0] if quality >= PDQ_MIN_QUALITY else None
        return self._hashes[row]

    def __call__(self, i: int, j: int) -> bool:
        a, b = self._hash(i), self._hash(j)
        if a is None or b is None:
            return False
        return int(np.unpackbits(np.bitwise_xor(a, b)).sum()) <= self.max_distance


class AnyVerifier:
    """verify(i, j) -> whether any of `verifiers` confirms the pair, asked in order (the cheap first);
    `confirmed` counts the pairs each one confirmed."""

    def __init__(self, verifiers: dict[str, Callable[[int, int], bool]]):
        self.verifiers = verifiers
        self.confirmed = dict.fromkeys(verifiers, 0)

    def __call__(self, i: int, j: int) -> bool:
        for name, verify in self.verifiers.items():
            if verify(i, j):
                self.confirmed[name] += 1
                return True
        return False


MIN_COVER = 0.1
"""Share of both images the inliers must span for a local verification to confirm a pair (chosen on
a dev folder, BENCHMARKS.md dedup, session 27): overlays shared by unrelated images match in a
small patch."""


class LocalVerifier:
    """verify(i, j) -> whether images i and j share >= min_inliers RANSAC inliers (copyseek's local
    branch) whose bounding box covers >= min_cover of both images; local features extracted once per
    image and kept for the doubtful edges only."""

    def __init__(self, paths: list[Path], min_inliers: int = 12, min_cover: float = MIN_COVER):
        from copyseek.local.branch import LocalBranch

        self.paths, self.min_inliers, self.min_cover = paths, min_inliers, check_cover(min_cover)
        self.branch = LocalBranch.from_options({})
        self._features: dict[tuple[int, bool], dict] = {}

    def _extract(self, row: int, query: bool) -> dict:
        if (row, query) not in self._features:
            rgb = load_rgb(self.paths[row], self.branch.decode_side)
            self._features[(row, query)] = self.branch.extract([rgb], query=query)[0]
        return self._features[(row, query)]

    def __call__(self, i: int, j: int) -> bool:
        try:
            query, reference = self._extract(i, True), self._extract(j, False)
            verification = self.branch.verify_pair(query, reference)
        except CopyseekError:  # an image unreadable now: the edge stays unconfirmed
            return False
        return (
            verification.inliers >= self.min_inliers
            and verification.coverage(query["size"], reference["size"]) >= self.min_cover
        )


def dedup_folder(
    folder: str | os.PathLike,
    output: str | os.PathLike,
    *,
    params: DedupParams | None = None,
    plot: str | os.PathLike | None = None,
    keep: str = "largest",
    move_to: str | os.PathLike | None = None,
    verify: bool = True,
    min_inliers: int = 12,
    min_cover: float = MIN_COVER,
    hash_distance: int | None = None,
    model: str = "sscd",
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
) -> DedupReport:
    """Find the groups of duplicates in `folder`; write `output` (imagededup-shaped JSON), its
    `.groups.csv` sibling (group,path,confidence,keep), a `.skipped.csv` sibling (path,reason) when
    some files could not be read, and the contact sheet `plot` (PNG). With
    `move_to`, the images the keep policy drops are moved there (their relative paths kept);
    otherwise nothing is touched. `hash_distance` (e.g. PDQ_MATCH_DISTANCE): doubtful pairs whose PDQ
    hashes are that close are confirmed too (before SIFT): more recall, and on our folders less
    pairwise precision, since right pairs then join groups that wrong ones had chained (BENCHMARKS.md,
    dedup); None (default): SIFT + RANSAC alone."""
    start = time.perf_counter()
    folder = Path(folder)
    output = Path(output)
    if not output.parent.exists():
        raise CopyseekError(f"output folder does not exist: {output.parent}")
    check_cover(min_cover)  # before describing the folder, which can take hours
    if hash_distance is not None:
        check_hash_distance(hash_distance)
    if move_to is not None and Path(move_to).resolve().is_relative_to(folder.resolve()):
        raise CopyseekError(f"--move-to {move_to} is inside {folder}: moved images would be found again next run")
    files, vectors, skipped = describe_folder(folder, model, batch_size, workers, progress)
    paths = [f.path for f in files]
    names = [f.id for f in files]
    verifier = None
    if verify:
        hashes = {} if hash_distance is None else {"PDQ hash": HashVerifier(paths, hash_distance)}
        verifier = AnyVerifier(hashes | {"local verification": LocalVerifier(paths, min_inliers, min_cover)})
    groups = find_groups(vectors, params, verifier)
    kept = keep_plan(groups, paths, keep)
    report = DedupReport(names, groups, kept, skipped, confirmed_by=verifier.confirmed if verifier else {})
    output.write_text(json.dumps(duplicates_json(groups, names, vectors), indent=1) + "\n", encoding="utf-8")
    csv_path = output.with_suffix(".groups.csv")
    write_groups_csv(csv_path, groups, names, kept)
    report.outputs += [output, csv_path]
    if skipped:  # files that could not be read are in no group: say which, and why
        skipped_path = output.with_suffix(".skipped.csv")
        with open(skipped_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["path", "reason"])
            writer.writerows(skipped)
        report.outputs.append(skipped_path)
    if plot is not None and groups.n_groups:
        report.outputs.append(contact_sheet(groups, lambda row: load_rgb(paths[row], 128), plot, kept))
    if move_to is not None:
        for row in np.flatnonzero(~kept):
            target = Path(move_to) / names[row]
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(paths[row], target)
            report.moved += 1
    report.seconds = time.perf_counter() - start
    return report
