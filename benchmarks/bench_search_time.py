"""Recall of compressed / approximate global indexes against exact search, per search-time parameter.

An IVF index made with `--factory` used to be searched with Faiss's default nprobe of 1; the global
searcher now visits `default_nprobe(nlist)` lists (and HNSW gets efSearch 64, not 16). This script
measures what that changes, on the global searcher itself (`VectorSearcher`):

- recall@1: the exact search's first neighbour is the approximate search's first;
- recall@10: the share of the exact top-10 found in the approximate top-10;
- copy@1: the reference a query was made from is found first (queries are references plus noise);
- ms/query on one core.

The vectors are synthetic (a mixture of clusters in `--dim` dimensions, unit length, like global
descriptors; queries are references moved by noise, like edited copies), so the numbers show the
search's behaviour, not a descriptor's quality. Prints a markdown table.

    python benchmarks/bench_search_time.py --references 100000 --queries 2000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from copyseek.describe.global_branch import VectorSearcher


SWEEP = {"nprobe": (1, 4, 16, 64, 256), "efSearch": (16, 32, 64, 128, 256)}
"""Values measured besides Faiss's default and copyseek's (efSearch is never below k = 10)."""


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_vectors(references: int, queries: int, dim: int, clusters: int, spread: float, noise: float, seed: int = 0):
    """(references, dim) unit vectors around `clusters` centres (at `spread` times a centre's length
    from it), and (queries, dim) noisy copies of the first `queries` of them (query i copies
    reference i)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    refs = unit(centres[rng.integers(0, clusters, references)] + rng.normal(scale=spread, size=(references, dim)))
    copies = unit(refs[:queries] + rng.normal(scale=noise / np.sqrt(dim), size=(queries, dim)))
    return refs, copies


def run(searcher: VectorSearcher, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    _, rows = searcher.search_vectors(queries, k)
    return rows, (time.perf_counter() - start) * 1000 / len(queries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=2_000)
    parser.add_argument("--spread", type=float, default=1.5, help="references' distance to their cluster centre, "
                        "relative to the centre's length (1.5: weakly clustered, like global descriptors)")
    parser.add_argument("--noise", type=float, default=1.0, help="query noise, as a multiple of a unit vector's length")
    parser.add_argument("--factories", nargs="+", default=["IVF1024,Flat", "IVF1024,PQ32", "HNSW32"])
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    refs, queries = make_vectors(args.references, args.queries, args.dim, args.clusters, args.spread, args.noise)
    exact = VectorSearcher(args.dim, "Flat")
    exact.add({"vectors": refs})
    truth, exact_ms = run(exact, queries, 10)
    print(f"{args.references} references, {args.queries} queries, dim {args.dim}, {args.clusters} clusters, spread {args.spread}, noise {args.noise}\n")
    print("| factory | search-time parameter | recall@1 | recall@10 | copy@1 | ms/query |")
    print("|---|---|---|---|---|---|")
    copy_exact = float(np.mean(truth[:, 0] == np.arange(len(queries))))
    print(f"| Flat (exact) | - | 1.000 | 1.000 | {copy_exact:.3f} | {exact_ms:.2f} |")
    for factory in args.factories:
        searcher = VectorSearcher(args.dim, factory)
        searcher.add({"vectors": refs})
        searcher.search_vectors(queries[:1], 1)  # trains and fills the index outside the timing
        (name, default), = searcher.search_parameters().items()
        faiss_default = {"nprobe": 1, "efSearch": 16}[name]
        values = sorted({faiss_default, default, *SWEEP[name]})
        for value in values:
            searcher.set_search_parameters(**{name: value})
            rows, ms = run(searcher, queries, 10)
            recall_1 = float(np.mean(rows[:, 0] == truth[:, 0]))
            recall_10 = float(np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)]))
            copy_1 = float(np.mean(rows[:, 0] == np.arange(len(queries))))
            label = f"{name}={value}" + (" (Faiss default, before)" if value == faiss_default else "") + (
                " (copyseek default, after)" if value == default else ""
            )
            print(f"| {factory} | {label} | {recall_1:.3f} | {recall_10:.3f} | {copy_1:.3f} | {ms:.2f} |")


if __name__ == "__main__":
    main()
