"""Triage of user reports of copies with a graph convolutional network (copyseek.graph.gcn; Iscen et al.,
ECCV 2020): for each reference, its verified copies are clean examples and its reported copies noisy
ones; a two-layer GCN over that reference's images learns to tell them apart, and its output on a
report is the report's relevance. The review queue lists the most doubtful reports first.

With `GCNParams.context_references` = m > 0 (our extension, copyseek.graph.gcn): the clean images
(the reference itself and its verified copies) of the m other references of the index whose clean
prototypes are nearest to this reference's join its graph as labelled negatives.

With relevance="collection" (`copyseek triage --relevance collection`, our extension): ONE
multi-class GCN over the reported references and their m context references (one class each),
their verified copies and every reported query; a report's relevance is the probability the
network gives its reported reference (copyseek.graph.gcn.collection_relevance). Its relevance
weighs prototypes better on SSCD descriptors (BENCHMARKS.md, issue 15).

    rows = triage(index, verified, reports, "queries/")    # [(query_id, reference_id, relevance)], lowest first
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.gcn import GCNParams, collection_relevance, gcn_relevance, nearest_references
from copyseek.io.images import find_images, load_rgb
from copyseek.progress import progress_bar
from copyseek.store.graphs import index_vectors
from copyseek.store.index import Index


RELEVANCES = ("gcn", "collection")  # triage's relevance sources: one GCN per reference, or one over the collection


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
    relevance: str = "gcn",
) -> list[Relevance]:
    """Relevance of every reported (query, reference) pair, lowest first; query ids name image files
    below `queries`. `relevance`: "gcn", one GCN per reported reference (`per_reference`), or
    "collection", one multi-class GCN over every reported reference and its context references
    (`over_collection`)."""
    if relevance not in RELEVANCES:
        raise CopyseekError(f"unknown relevance {relevance!r}; choose one of {', '.join(RELEVANCES)}")
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
    nearest: dict[str, list[str]] = {r: [] for r in reported}
    if params.context_references:
        live = [image_id for image_id in index.ids if image_id is not None]
        # every live reference's clean prototype: its own vector plus its verified copies, normalised
        prototypes = references[[row_of[r] for r in live]]  # a float32 copy
        for node, r in enumerate(live):
            for q in verified_of.get(r, []):
                prototypes[node] += vectors[q]
        prototypes /= np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-12)
        node_of = {r: node for node, r in enumerate(live)}
        rows = nearest_references(prototypes, np.array([node_of[r] for r in reported]), params.context_references)
        nearest = {r: [live[node] for node in row] for r, row in zip(reported, rows)}
    clean_vector = {r: references[row_of[r]] for r in {*reported, *(o for others in nearest.values() for o in others)}}
    noisy = sorted(reports - verified)
    if not noisy:
        scores = np.zeros(0)
    elif relevance == "gcn":
        scores = per_reference(clean_vector, verified_of, noisy, vectors, nearest, params)
    else:
        scores = over_collection(clean_vector, verified_of, noisy, vectors, params)
    out = [Relevance(q, r, float(s)) for (q, r), s in zip(noisy, scores)]
    out += [Relevance(q, r, 1.0) for q, r in reports & verified]  # a verified report is relevant by definition
    return sorted(out, key=lambda r: (r.relevance, r.query_id, r.reference_id))


def per_reference(clean_vector: dict[str, np.ndarray], verified_of: dict[str, list[str]], noisy: list[tuple[str, str]],
                  vectors: dict[str, np.ndarray], nearest: dict[str, list[str]], params: GCNParams) -> np.ndarray:
    """(len(noisy),) relevance of each (query, reference) report from one GCN per reported reference:
    its graph holds the reference's vector and verified copies (clean), its reported queries (noisy)
    and the clean images of its `nearest` references (negatives, not ones already in the graph)."""
    out = np.zeros(len(noisy))
    for reference in sorted({r for _, r in noisy}):
        clean_q = verified_of.get(reference, [])
        mine = [i for i, (_, r) in enumerate(noisy) if r == reference]
        noisy_q = [noisy[i][0] for i in mine]
        own = {reference, *clean_q, *noisy_q}
        context = []
        for other in nearest[reference]:
            context += [clean_vector[other]] + [vectors[q] for q in verified_of.get(other, []) if q not in own]
        x = np.vstack([clean_vector[reference][None], *[vectors[q][None] for q in clean_q + noisy_q], *[c[None] for c in context]])
        node = np.arange(len(x))
        clean = node < 1 + len(clean_q)
        negative = node >= 1 + len(clean_q) + len(noisy_q)
        relevance = gcn_relevance(x, clean, ~clean & ~negative, params, negative=negative)
        out[mine] = relevance[1 + len(clean_q) : 1 + len(clean_q) + len(noisy_q)]
    return out


def over_collection(clean_vector: dict[str, np.ndarray], verified_of: dict[str, list[str]], noisy: list[tuple[str, str]],
                    vectors: dict[str, np.ndarray], params: GCNParams) -> np.ndarray:
    """(len(noisy),) relevance of each (query, reference) report from one multi-class GCN
    (`collection_relevance`) over the references of `clean_vector` (the reported ones and their
    context references, one class each: the reference and its verified copies) and every reported
    query (a noisy label of each reference it is reported for; one node per query)."""
    classes = sorted(clean_vector)
    if len(classes) < 2:
        raise CopyseekError("relevance over the collection needs at least two references (the reported ones and their "
                            "context references): with one, every report has relevance 1")
    queries = sorted({q for q, _ in noisy} | {q for r in classes for q in verified_of.get(r, [])})
    node_of = {q: len(classes) + i for i, q in enumerate(queries)}
    x = np.vstack([clean_vector[r][None] for r in classes] + [vectors[q][None] for q in queries])
    clean_nodes = list(range(len(classes))) + [node_of[q] for r in classes for q in verified_of.get(r, [])]
    clean_classes = classes + [r for r in classes for _ in verified_of.get(r, [])]
    return collection_relevance(x, np.array(clean_nodes), np.array(clean_classes), np.array([node_of[q] for q, _ in noisy]),
                                np.array([r for _, r in noisy]), params)
