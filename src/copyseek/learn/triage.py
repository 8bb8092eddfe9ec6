"""Triage of user reports of copies with a graph convolutional network (copyseek.graph.gcn; Iscen et al.,
ECCV 2020): for each reference, its verified copies are clean examples and its reported copies noisy
ones; a two-layer GCN over that reference's images learns to tell them apart, and its output on a
report is the report's relevance. The review queue lists the most doubtful reports first.

With `GCNParams.context_references` = m > 0 (our extension, copyseek.graph.gcn): the clean images
(the reference itself and its verified copies) of the m other references of the index whose clean
prototypes are nearest to this reference's join its graph as labelled negatives.

    rows = triage(index, verified, reports, "queries/")    # [(query_id, reference_id, relevance)], lowest first
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.gcn import GCNParams, gcn_relevance, nearest_references
from copyseek.io.images import find_images, load_rgb
from copyseek.progress import progress_bar
from copyseek.store.graphs import index_vectors
from copyseek.store.index import Index


@dataclass(frozen=True)
class Relevance:
    query_id: str
    reference_id: str
    relevance: float


def triage(
    index: Index,
    verified: set[tuple[str, str]],
    reports: set[tuple[str, str]],
    queries: str | os.PathLike,
    params: GCNParams | None = None,
    progress: bool = True,
) -> list[Relevance]:
    """Relevance of every reported (query, reference) pair, lowest first. The graph of a reference
    holds the reference itself and its verified copies (clean) and its reported copies (noisy);
    query ids name image files below `queries`."""
    if "global" not in index.branches:
        raise CopyseekError("triage needs an index with the global branch")
    row_of = {image_id: row for row, image_id in enumerate(index.ids) if image_id is not None}
    unknown = sorted({r for _, r in verified | reports} - set(row_of))
    if unknown:
        raise CopyseekError(f"{len(unknown)} reference(s) are not in the index, e.g. {', '.join(unknown[:5])}")
    files = {f.id: f.path for f in find_images(queries)[0]}
    needed = sorted({q for q, _ in verified | reports})
    missing = [q for q in needed if q not in files]
    if missing:
        raise CopyseekError(f"{len(missing)} query image(s) not found under {queries}, e.g. {', '.join(missing[:5])}")
    branch = index.branches["global"]
    vectors: dict[str, np.ndarray] = {}
    with progress_bar(len(needed), "describing", disable=not progress) as bar:
        for start in range(0, len(needed), 16):
            part = needed[start : start + 16]
            embedded = branch.embed([load_rgb(files[q], branch.decode_side) for q in part])
            vectors.update(zip(part, embedded))
            bar.update(len(part))
    params = params or GCNParams()
    references = index_vectors(index)
    verified_of: dict[str, list[str]] = {}
    for q, r in sorted(verified):
        verified_of.setdefault(r, []).append(q)
    reported = sorted({r for _, r in reports})
    if params.context_references:
        # every live reference's clean prototype: its own vector plus its verified copies, normalised
        live = [image_id for image_id in index.ids if image_id is not None]
        prototypes = references[[row_of[r] for r in live]]  # a float32 copy
        for node, r in enumerate(live):
            for q in verified_of.get(r, []):
                prototypes[node] += vectors[q]
        prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
        node_of = {r: node for node, r in enumerate(live)}
        nearest = nearest_references(prototypes, np.array([node_of[r] for r in reported]), params.context_references)
    out: list[Relevance] = []
    for i, reference in enumerate(reported):
        clean_q = verified_of.get(reference, [])
        noisy_q = sorted(q for q, r in reports if r == reference and (q, r) not in verified)
        own = {reference, *clean_q, *noisy_q}
        context = []  # the other references' clean images (not ones already in this graph)
        if params.context_references:
            for other in (live[node] for node in nearest[i]):
                context += [references[row_of[other]]] + [vectors[q] for q in verified_of.get(other, []) if q not in own]
        x = np.vstack([references[row_of[reference]][None], *[vectors[q][None] for q in clean_q + noisy_q], *[c[None] for c in context]])
        node = np.arange(len(x))
        clean = node < 1 + len(clean_q)
        negative = node >= 1 + len(clean_q) + len(noisy_q)
        relevance = gcn_relevance(x, clean, ~clean & ~negative, params, negative=negative)
        out += [Relevance(q, reference, float(s)) for q, s in zip(noisy_q, relevance[1 + len(clean_q) : 1 + len(clean_q) + len(noisy_q)])]
    out += [Relevance(q, r, 1.0) for q, r in reports & verified]  # a verified report is relevant by definition
    return sorted(out, key=lambda r: (r.relevance, r.query_id, r.reference_id))
