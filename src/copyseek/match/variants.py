"""All variants of a match (`copyseek match --variants`): for each query's best-matched reference, the
other references that are versions of the same photo (banks and archives hold many), ranked by
diffusion on the references' kNN graph (copyseek.graph) from the query's global neighbours.

Diffusion follows the manifold the versions of one photo form, so a heavily edited version that is
far from the query in cosine terms still ranks high when it is near the other versions
(BENCHMARKS.md, graph section: variant mAP, diffusion against cosine).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.graph.diffusion import Diffusion
from copyseek.graph.knn import GraphParams
from copyseek.io.images import ImageFile
from copyseek.match.matcher import MatchOptions, MatchResult, make_scorer, match
from copyseek.match.scoring import QueryBatch
from copyseek.store.graphs import index_graph
from copyseek.store.index import Index


@dataclass(frozen=True)
class VariantOptions:
    """n: variants listed per query at most; min_score: least diffusion score, relative to the query's
    best-scored reference; k, gamma, symmetrize: the references' graph (GraphParams); seeds: the
    query's nearest references that diffusion starts from; alpha: diffusion reach.

    The defaults were tuned on the dev half of 483 hard reference families and measured on the other
    half (BENCHMARKS.md, issue 14: +0.054 mAP over cosine ranking): a `union` graph (an edge where
    either version lists the other: heavily edited versions are rarely mutual neighbours; +0.037
    on dev over `mutual` at the same setting), edge weight = cosine (gamma 1; gamma 3 was 0.003
    lower), three seeds and a short reach (the papers' alpha 0.99 spreads mass across families)."""

    n: int = 10
    min_score: float = 0.05
    k: int = 20
    alpha: float = 0.7
    seeds: int = 3
    gamma: float = 1.0
    symmetrize: str = "union"

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1 or self.seeds < 1:
            raise CopyseekError(f"variants n, k and seeds must be >= 1, got n={self.n}, k={self.k}, seeds={self.seeds}")
        if not 0.0 <= self.min_score <= 1.0:
            raise CopyseekError(f"variants min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.alpha < 1.0:
            raise CopyseekError(f"variants alpha must be in (0, 1), got {self.alpha}")
        self.graph_params()  # refuses a bad gamma or symmetrisation now, naming it

    def graph_params(self) -> GraphParams:
        """The references' kNN graph these options diffuse on."""
        return GraphParams(k=self.k, gamma=self.gamma, symmetrize=self.symmetrize)


@dataclass(frozen=True)
class Variant:
    query_id: str
    reference_id: str
    variant_id: str
    score: float


def rank_variants(
    index: Index, query_vectors: np.ndarray, matched_rows: np.ndarray, options: VariantOptions
) -> list[list[tuple[int, float]]]:
    """For each query ((m, dim) unit vectors) and its matched reference row, [(variant row, relative
    diffusion score), ...] best first (rows are the searchers' rows, as in Candidates)."""
    if "global" not in index.branches:
        raise CopyseekError("--variants needs a pipeline with the global branch (its vectors make the graph)")
    nodes = index_graph(index, options.graph_params())
    # per component: exact, and a query of a small family costs a few products on its own nodes
    diffusion = Diffusion(options.alpha, "temporal", components=True).fit(nodes.graph)
    sims, rows = index.searchers()["global"].search_vectors(query_vectors, options.seeds)
    seeds = nodes.nodes_of_rows(rows)
    matched_nodes = nodes.nodes_of_rows(matched_rows)
    found: list[list[tuple[int, float]]] = []
    for start in range(0, len(query_vectors), 256):  # a block of queries solved together
        part = slice(start, start + 256)
        f = diffusion.rank(diffusion.seeds(seeds[part], sims[part]))  # (nodes, queries in the block)
        for column, matched in enumerate(matched_nodes[part]):
            scores = f[:, column]
            top = scores.max()
            if top <= 0:
                found.append([])
                continue
            order = np.argsort(-scores, kind="stable")[: options.n + 1]
            kept = [r for r in order if r != matched and scores[r] / top >= options.min_score][: options.n]
            found.append([(int(nodes.rows[r]), float(scores[r] / top)) for r in kept])
    return found


def match_with_variants(
    index: Index,
    queries: str | os.PathLike | Iterable[ImageFile],
    options: MatchOptions | None = None,
    variants: VariantOptions | None = None,
    *,
    progress: bool = True,
) -> tuple[MatchResult, list[Variant]]:
    """`match` as usual (same predictions), plus the variants of each query's best-scored reference."""
    options = options or MatchOptions()
    variants = variants or VariantOptions()
    base = make_scorer(index, options, progress)
    vectors: dict[str, np.ndarray] = {}

    def capturing(batch: QueryBatch):  # the pipeline's own scorer; the query vectors kept on the way
        vectors.update((q, f["vector"]) for q, f in zip(batch.ids, batch.features.get("global", [])))
        return base(batch)

    result = match(index, queries, options, progress=progress, scorer=capturing)
    best: dict[str, tuple[float, str]] = {}
    for p in result.predictions:
        if p.query_id not in best or p.score > best[p.query_id][0]:
            best[p.query_id] = (p.score, p.reference_id)
    query_ids = [q for q in best if q in vectors]
    if not query_ids:
        return result, []
    row_of = {image_id: row for row, image_id in enumerate(index.ids) if image_id is not None}
    matched = np.array([row_of[best[q][1]] for q in query_ids])
    ranked = rank_variants(index, np.stack([vectors[q] for q in query_ids]), matched, variants)
    ids = index.ids
    rows = [
        Variant(q, best[q][1], ids[r], score) for q, found in zip(query_ids, ranked) for r, score in found
    ]
    return result, rows


def write_variants(path: str | os.PathLike, variants: list[Variant]) -> Path:
    """query_id,reference_id,variant_id,score (score: diffusion relative to the query's best)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "reference_id", "variant_id", "score"])
        writer.writerows((v.query_id, v.reference_id, v.variant_id, f"{v.score:.4f}") for v in variants)
    return path
