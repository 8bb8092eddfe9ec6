"""Training pairs from user reports, weighted by their relevance (the review queue of `copyseek triage`).

A reported (query, reference) pair says "this query copies that reference"; many are wrong. The
queue gives each a relevance in [0, 1] (GCN cleaning, learn/triage.py). Here each reported reference
is a class whose members are the reference itself (weight 1) and its reported queries, drawn into
batches with probability proportional to their relevance (`PseudoLabelBatches`: the same
weighting by sampling as label propagation's pseudo-labels), so a doubtful report rarely
becomes a positive pair and one at relevance 0 never does.

    copyseek train --images refs/ --set pairs=queue.csv --set pair_queries=queries/ --out runs/r --minutes 10
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.io.images import find_images
from copyseek.learn.data import discover_photos
from copyseek.learn.pseudo import PseudoLabels


def read_queue(path: str | Path) -> list[tuple[str, str, float]]:
    """query_id,reference_id,relevance rows (the header optional), relevance in [0, 1]."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.reader(handle) if r]
    except OSError as exc:
        raise CopyseekError(f"cannot read pairs {path}: {exc}") from exc
    if rows and rows[0][:3] == ["query_id", "reference_id", "relevance"]:
        rows = rows[1:]
    out = []
    for number, row in enumerate(rows, 1):
        try:
            relevance = float(row[2])
        except (IndexError, ValueError):
            raise CopyseekError(f"{path} row {number}: expected query_id,reference_id,relevance, got {row}") from None
        if not 0 <= relevance <= 1:
            raise CopyseekError(f"{path} row {number}: relevance must be in [0, 1], got {relevance}")
        out.append((row[0], row[1], relevance))
    return out


def report_classes(images: str | Path, pairs: str | Path, queries: str | Path) -> tuple[list[Path], PseudoLabels]:
    """(paths: the training photos of `images` then the reported queries, labels and weights): one
    class per reported reference (its photo in `images`, named by file stem), its queries (found
    under `queries`) weighted by relevance; photos that no report names stay unlabelled."""
    references = discover_photos(images).paths
    rows = read_queue(pairs)
    reference_row = {p.stem: i for i, p in enumerate(references)}
    unknown = sorted({r for _, r, _ in rows} - set(reference_row))
    if unknown:
        raise CopyseekError(f"{len(unknown)} reported reference(s) are not training photos, e.g. {unknown[0]}")
    files = {f.id: f.path for f in find_images(queries)[0]}
    missing = sorted({q for q, _, _ in rows} - set(files))
    if missing:
        raise CopyseekError(f"{len(missing)} query image(s) not found under {queries}, e.g. {missing[0]}")
    classes = sorted({r for _, r, _ in rows})
    paths = list(references) + [files[q] for q, _, _ in rows]
    labels = np.full(len(paths), -1, np.int64)
    confidence = np.zeros(len(paths))
    for c, reference in enumerate(classes):
        labels[reference_row[reference]] = c
        confidence[reference_row[reference]] = 1.0
    for i, (_, reference, relevance) in enumerate(rows):
        labels[len(references) + i] = classes.index(reference)
        confidence[len(references) + i] = relevance
    seed = np.zeros(len(paths), bool)
    seed[: len(references)] = labels[: len(references)] >= 0
    return paths, PseudoLabels(labels, confidence, seed, np.ones(len(classes)))
