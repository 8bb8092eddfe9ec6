"""Groups of near-duplicates and edited copies in one collection, from its kNN graph: idealo/imagededup's
job, without a dense n x n matrix (a 100k-image collection is a (100k, k) list of neighbours).

    groups = find_groups(vectors, DedupParams(), verify=None)   # verify(i, j) -> bool for doubtful edges
    groups.labels        # (n,) group id, -1 for images with no duplicate
    groups.confidence    # (n,) the member's strongest kept edge, in [0, 1]

An edge of the graph (k nearest neighbours, union of both directions) is a duplicate when its cosine
is >= `accept`; an edge in [`candidate`, `accept`) is doubtful and kept only if `verify` confirms it
(copyseek's local branch: RANSAC inliers) and it does not merge two groups of more than
`merge_limit` images; below `candidate` it is dropped. Groups are the connected components of the
kept edges. Output helpers write the imagededup-shaped JSON, the groups CSV, a keep plan and a
contact sheet.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from copyseek.errors import CopyseekError
from copyseek.graph.knn import check_vectors, knn_graph

KEEP_POLICIES = ("largest", "oldest", "first")
"""Which member of a group stays: the most pixels, the oldest modification time, the first path in
sorted order (ties go to the first path)."""


@dataclass(frozen=True)
class DedupParams:
    """k:         neighbours searched per image (a group larger than k + 1 still forms through chains).
    accept:    cosine at or above which an edge is a duplicate without verification.
    candidate: cosine at or above which a doubtful edge is verified (accept >= candidate).
    factory:   Faiss index for the neighbour search ("Flat" exact; e.g. "IVF1024,Flat" past ~50k).
    merge_limit: a verified doubtful edge joins two groups only if one of them has at most this many
               images (0: no limit, plain connected components). One wrong verified pair between two
               large groups would otherwise merge them whole; a fragment of a few images still joins.
    Defaults fit SSCD descriptors (BENCHMARKS.md, dedup section)."""

    k: int = 10
    accept: float = 0.75
    candidate: float = 0.45
    factory: str = "Flat"
    merge_limit: int = 2

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise CopyseekError(f"dedup k must be a whole number >= 1, got {self.k}")
        if not -1.0 <= self.candidate <= self.accept <= 1.0:
            raise CopyseekError(f"dedup needs -1 <= candidate <= accept <= 1, got candidate={self.candidate}, accept={self.accept}")
        if int(self.merge_limit) != self.merge_limit or self.merge_limit < 0:
            raise CopyseekError(f"dedup merge_limit must be a whole number >= 0 (0: no limit), got {self.merge_limit}")


@dataclass
class Groups:
    """labels: (n,) group id (0..g-1, largest group first) or -1; confidence: (n,) strongest kept edge
    of each member (0 for singletons); edges: (e, 3) kept edges as rows (i, j, score); verified: edges
    sent to `verify` and how many it confirmed; refused: confirmed edges left out by the merge limit."""

    labels: np.ndarray
    confidence: np.ndarray
    edges: np.ndarray
    verified: tuple[int, int] = (0, 0)
    refused: int = 0

    @property
    def n_groups(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) and self.labels.max() >= 0 else 0

    def members(self) -> list[np.ndarray]:
        """Rows of each group, in group order (sorted rows within a group)."""
        order = np.argsort(self.labels, kind="stable")
        sorted_labels = self.labels[order]
        start = np.searchsorted(sorted_labels, 0)
        bounds = np.flatnonzero(np.diff(sorted_labels[start:])) + 1
        return np.split(order[start:], bounds) if start < len(order) else []


def find_groups(
    vectors: np.ndarray,
    params: DedupParams | None = None,
    verify: Callable[[int, int], bool] | None = None,
) -> Groups:
    """Group the rows of (n, d) unit `vectors`; see the module docstring."""
    from scipy.sparse.csgraph import connected_components

    params = params or DedupParams()
    vectors = check_vectors(vectors)
    n = len(vectors)
    if n == 0:
        return Groups(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 3)))
    graph = knn_graph(vectors, k=params.k, gamma=1.0, symmetrize="union", factory=params.factory)
    i, j, sims = graph.edges(min_similarity=params.candidate)
    keep = sims >= params.accept
    doubtful = np.flatnonzero(~keep)
    confirmed = np.zeros(len(sims), bool)
    if verify is not None:
        for e in doubtful:
            confirmed[e] = verify(int(i[e]), int(j[e]))
    joined = guarded_joins(n, i, j, sims, keep, confirmed, params.merge_limit)
    refused = int(confirmed.sum() - joined.sum())
    keep |= joined
    i, j, sims = i[keep], j[keep], sims[keep]
    adjacency = sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(adjacency, directed=False)
    sizes = np.bincount(component)
    # groups numbered by size, largest first; components of one image are not groups
    ranked = np.argsort(-sizes, kind="stable")
    new_id = np.full(len(sizes), -1)
    multi = ranked[sizes[ranked] > 1]
    new_id[multi] = np.arange(len(multi))
    confidence = np.zeros(n)
    np.maximum.at(confidence, i, sims)
    np.maximum.at(confidence, j, sims)
    edges = np.column_stack([i, j, sims]) if len(i) else np.zeros((0, 3))
    verified = (len(doubtful) if verify else 0, int(confirmed.sum()))
    return Groups(new_id[component], np.clip(confidence, 0, 1), edges, verified, refused)


def guarded_joins(
    n: int, i: np.ndarray, j: np.ndarray, sims: np.ndarray, accepted: np.ndarray, confirmed: np.ndarray, limit: int
) -> np.ndarray:
    """(e,) bool: the confirmed edges kept. The accepted edges' components come first; then each
    confirmed edge, the most similar first, joins the groups of its two ends only if one of them has
    at most `limit` images (limit 0: every confirmed edge is kept, as plain components would)."""
    from scipy.sparse.csgraph import connected_components

    if limit == 0 or not confirmed.any():
        return confirmed.copy()
    adjacency = sp.csr_matrix((np.ones(int(accepted.sum())), (i[accepted], j[accepted])), shape=(n, n))
    _, group = connected_components(adjacency, directed=False)
    parent = np.arange(group.max() + 1)
    size = np.bincount(group)

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    kept = np.zeros(len(sims), bool)
    for e in np.flatnonzero(confirmed)[np.argsort(-sims[confirmed], kind="stable")]:
        a, b = root(group[i[e]]), root(group[j[e]])
        if a != b and min(size[a], size[b]) > limit:
            continue  # two established groups: one pair is not enough to merge them
        if a != b:
            a, b = (a, b) if size[a] >= size[b] else (b, a)
            parent[b], size[a] = a, size[a] + size[b]
        kept[e] = True
    return kept


def duplicates_json(groups: Groups, names: Sequence[str], vectors: np.ndarray, max_listed: int = 200) -> dict[str, list]:
    """imagededup's shape: {name: [[duplicate name, score], ...]} for every image (an empty list when
    it has no duplicate), duplicates best first, score = cosine similarity rounded to 4 digits. In a
    group larger than `max_listed` an image lists its `max_listed` most similar members."""
    vectors = check_vectors(vectors)
    result: dict[str, list] = {name: [] for name in names}
    for rows in groups.members():
        for start in range(0, len(rows), 1024):  # bounded blocks: a huge group is never squared at once
            part = rows[start : start + 1024]
            sims = vectors[part] @ vectors[rows].T
            for a, row in enumerate(part):
                order = [b for b in np.argsort(-sims[a], kind="stable") if rows[b] != row][:max_listed]
                result[names[row]] = [[names[rows[b]], round(float(sims[a, b]), 4)] for b in order]
    return result


def keep_plan(groups: Groups, paths: Sequence[Path], policy: str = "largest", pixels: Sequence[int] | None = None) -> np.ndarray:
    """(n,) bool: True for the image each group keeps (and every image in no group). pixels: per image
    (width x height) for `largest` (default: file size in bytes)."""
    if policy not in KEEP_POLICIES:
        raise CopyseekError(f"keep policy must be one of {', '.join(KEEP_POLICIES)}, got {policy!r}")
    keep = groups.labels < 0
    for rows in groups.members():
        by_path = sorted(rows, key=lambda r: str(paths[r]))
        if policy == "first":
            chosen = by_path[0]
        elif policy == "oldest":
            chosen = min(by_path, key=lambda r: os.stat(paths[r]).st_mtime)
        else:
            size = (lambda r: pixels[r]) if pixels is not None else (lambda r: os.stat(paths[r]).st_size)
            chosen = max(by_path, key=size)  # max keeps the first of equals
        keep[chosen] = True
    return keep


def write_groups_csv(path: str | Path, groups: Groups, names: Sequence[str], keep: np.ndarray | None = None) -> None:
    """`group,path,confidence,keep` for every member of every group, groups largest first."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["group", "path", "confidence", "keep"])
        for g, rows in enumerate(groups.members()):
            for row in rows:
                writer.writerow([g, names[row], f"{groups.confidence[row]:.4f}", int(keep[row]) if keep is not None else ""])


def contact_sheet(
    groups: Groups,
    load: Callable[[int], np.ndarray],
    output: str | Path,
    keep: np.ndarray | None = None,
    max_groups: int = 20,
    max_members: int = 8,
    thumb: int = 112,
) -> Path:
    """A PNG with one row per group (the largest `max_groups`), thumbnails of up to `max_members`
    members with their confidence; kept images framed green, the others red. load(row) -> (H, W, 3)
    uint8 RGB."""
    from PIL import Image, ImageDraw

    shown = groups.members()[:max_groups]
    if not shown:
        raise CopyseekError("no group of duplicates to draw")
    pad, label = 6, 16
    width = pad + max_members * (thumb + pad)
    height = pad + len(shown) * (thumb + label + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for g, rows in enumerate(shown):
        top = pad + g * (thumb + label + pad)
        for m, row in enumerate(rows[:max_members]):
            left = pad + m * (thumb + pad)
            image = Image.fromarray(load(int(row)))
            image.thumbnail((thumb - 4, thumb - 4))
            colour = "grey" if keep is None else ("green" if keep[row] else "red")
            draw.rectangle([left, top, left + thumb - 1, top + thumb - 1], outline=colour, width=2)
            sheet.paste(image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2))
            draw.text((left, top + thumb + 2), f"g{g} {groups.confidence[row]:.2f}", fill="black")
        if len(rows) > max_members:
            draw.text((width - 60, top + thumb + 2), f"+{len(rows) - max_members} more", fill="black")
    output = Path(output)
    sheet.save(output)
    return output
