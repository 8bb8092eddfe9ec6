"""The DISC21 CSV files: predictions (`query_id,reference_id,score`) and ground truth
(`query_id,reference_id`, empty reference for queries that copy nothing)."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from copyseek.errors import CopyseekError


@dataclass(frozen=True)
class Prediction:
    """score: higher = more similar (what it means depends on the pipeline). evidence: what the
    pipeline based the score on (e.g. the fused pipeline's evidence per branch), for JSON output."""

    query_id: str
    reference_id: str
    score: float
    evidence: dict[str, float] | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class GroundTruth:
    """Which reference each query copies. `pairs` holds (query, reference); `queries` all query ids,
    those that copy nothing included."""

    pairs: frozenset[tuple[str, str]]
    queries: frozenset[str]


def _open_rows(path: str | os.PathLike, expected: list[str]) -> list[tuple[int, list[str]]]:
    path = Path(path)
    if not path.is_file():
        raise CopyseekError(f"file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CopyseekError(f"cannot read {path} as CSV: {exc}") from None
    if not rows:
        raise CopyseekError(f"{path} is empty; expected a header {','.join(expected)}")
    header = [cell.strip() for cell in rows[0]]
    if header[: len(expected)] != expected:
        raise CopyseekError(f"{path}: the header must start with {','.join(expected)}, found {','.join(header)}")
    return [(number, row) for number, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)]


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    """Read a predictions CSV. Raises CopyseekError on a malformed row (with its line number)."""
    predictions = []
    for number, row in _open_rows(path, ["query_id", "reference_id", "score"]):
        if len(row) < 3 or not row[0].strip() or not row[1].strip():
            raise CopyseekError(f"{path}, line {number}: expected query_id,reference_id,score, got {row}")
        try:
            score = float(row[2])
        except ValueError:
            raise CopyseekError(f"{path}, line {number}: score {row[2]!r} is not a number") from None
        if not math.isfinite(score):
            raise CopyseekError(f"{path}, line {number}: score {row[2]!r} is not finite")
        predictions.append(Prediction(row[0].strip(), row[1].strip(), score))
    return predictions


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """Read a ground-truth CSV (the DISC21 dev `public_ground_truth.csv` works as is)."""
    pairs: set[tuple[str, str]] = set()
    queries: set[str] = set()
    for number, row in _open_rows(path, ["query_id", "reference_id"]):
        query = row[0].strip()
        if not query:
            raise CopyseekError(f"{path}, line {number}: empty query_id")
        queries.add(query)
        reference = row[1].strip() if len(row) > 1 else ""
        if reference:
            pairs.add((query, reference))
    return GroundTruth(frozenset(pairs), frozenset(queries))


def format_score(score: float) -> str:
    """A score with 9 significant digits: every float32 value written differently stays different
    (6 decimals made close scores tie, and DISC21 counts ties worst case)."""
    return f"{score:.9g}"


def write_predictions(path: str | os.PathLike, predictions: list[Prediction]) -> None:
    """Write predictions atomically (a temporary file renamed into place), with LF line endings."""
    path = Path(path)
    check_output_path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        write_predictions_to(handle, predictions)
    os.replace(tmp, path)


def write_predictions_to(handle, predictions: list[Prediction]) -> None:
    """Write the predictions CSV to an open text handle (e.g. stdout)."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["query_id", "reference_id", "score"])
    for p in predictions:
        writer.writerow([p.query_id, p.reference_id, format_score(p.score)])


def check_output_path(path: str | os.PathLike) -> Path:
    """Raise CopyseekError if a file cannot be written at `path` (its folder is missing, or it is a
    folder), so that a command fails before its work, not after."""
    path = Path(path)
    if path.is_dir():
        raise CopyseekError(f"the output {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise CopyseekError(f"output folder does not exist: {path.parent}")
    return path
