"""copyseek.graph benchmarks on real SSCD descriptors of our photos and their edited versions, grown to
10k / 100k by benchmarks/graph_descriptors.py (its docstring says how). Prints markdown tables.

    python benchmarks/bench_graph.py diffusion --real real.npz --sizes 10000 100000 --ranks 16 64 256 1024
    python benchmarks/bench_graph.py labels --real real.npz --size 10000
    python benchmarks/bench_graph.py dedup-scale --real real.npz --sizes 1000 10000 100000

diffusion: one edited member of each of --queries families is the query (left out of the graph); the
other members are its positives. Seeds: its k nearest descriptors. mAP over the whole ranking, top-100
overlap with the exact solution (temporal CG at tol 1e-8), time per query (queries solved in one
block, divided), offline time, eigenvector memory, CG iterations.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_descriptors import grow, load  # noqa: E402

from copyseek.graph import Diffusion, LabelPropagation, knn_graph  # noqa: E402
from copyseek.graph.knn import search  # noqa: E402
from copyseek.graph.knn import GraphParams  # noqa: E402


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """AP of ranking all nodes by `scores` (ties broken by row) for the boolean `positives`."""
    if not positives.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = positives[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def split_queries(family: np.ndarray, original: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, database rows): one edited member each of n_queries random families."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(int(family.max()) + 1, size=n_queries, replace=False)
    queries = []
    for f in chosen:
        members = np.flatnonzero((family == f) & ~original)
        queries.append(int(rng.choice(members)))
    queries = np.array(sorted(queries))
    database = np.setdiff1d(np.arange(len(family)), queries)
    return queries, database


COLUMNS = ["method", "r", "mAP", "top100", "ms/query", "offline s", "MB", "CG iters"]


def diffusion_sweep(data: dict, ranks: list[int], n_queries: int, k: int, seed: int) -> list[dict]:
    vectors, family = data["vectors"], data["family"]
    queries, database = split_queries(family, data["original"], n_queries, seed)
    db = np.ascontiguousarray(vectors[database])
    params = GraphParams(k=k, factory="IVF1024,Flat" if len(db) > 50_000 else "Flat")
    start = time.perf_counter()
    graph = knn_graph(db, **params.spec())
    graph.normalized()
    graph_seconds = time.perf_counter() - start
    q = vectors[queries]
    sims, rows = search(db, q, k, params)
    positives = [family[database] == family[r] for r in queries]
    cosine = q @ db.T
    rows_out: list[dict] = []

    def evaluate(name: str, r: int | str, scores: np.ndarray, seconds: float, offline: float, nbytes: int, iterations: int, exact=None):
        m = np.mean([average_precision(scores[:, j], positives[j]) for j in range(len(queries))])
        overlap = float("nan")
        if exact is not None:
            top = lambda s: set(np.argsort(-s, kind="stable")[:100])  # noqa: E731
            overlap = np.mean([len(top(scores[:, j]) & top(exact[:, j])) / 100 for j in range(len(queries))])
        rows_out.append(
            {"method": name, "r": r, "mAP": m, "top100": overlap, "ms/query": 1000 * seconds / len(queries),
             "offline s": offline, "MB": nbytes / 1e6, "CG iters": iterations}
        )
        print(table(rows_out[-1:], COLUMNS).splitlines()[-1], flush=True)  # each row as soon as it is measured

    evaluate("cosine", "-", cosine.T, 0.0, 0.0, 0, 0)
    exact_d = Diffusion(0.99, "temporal", tol=1e-8, max_iter=2000).fit(graph)
    y = exact_d.seeds(rows, sims)
    exact = exact_d.rank(y)
    for tol in (1e-4,):
        d = Diffusion(0.99, "temporal", tol=tol, max_iter=2000).fit(graph)
        start = time.perf_counter()
        f = d.rank(y)
        evaluate(f"temporal (tol {tol:g})", "-", f, time.perf_counter() - start, 0.0, 0, d.iterations_, exact)
    for r in ranks:
        for name in ("spectral", "hybrid"):
            options = {"rank": r} if name == "spectral" else {"rank": r, "tol": 1e-4, "max_iter": 2000}
            start = time.perf_counter()
            d = Diffusion(0.99, name, **options).fit(graph)
            offline = time.perf_counter() - start
            start = time.perf_counter()
            f = d.rank(y)
            evaluate(name, r, f, time.perf_counter() - start, offline, d.solver_.nbytes(), d.iterations_, exact)
    rows_out.append({"graph s": graph_seconds, "n": len(db), "k": k, "edges": graph.affinity().nnz // 2, "isolated": len(graph.isolated())})
    return rows_out


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "n/a" if np.isnan(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def labels_benchmark(data: dict, seeds_per_family: list[int], k: int, seed: int, abstain: float) -> list[dict]:
    """Half the families get seeds (1/2/5 labelled members), the other half none (LP should abstain
    there). Accuracy on the unlabelled members of seeded families: LP vs the nearest seed (1-NN)."""
    vectors, family = data["vectors"], data["family"]
    rng = np.random.default_rng(seed)
    n_fam = int(family.max()) + 1
    seeded_families = rng.permutation(n_fam)[: n_fam // 2]
    graph = knn_graph(vectors, k=k, symmetrize="sum", factory="IVF1024,Flat" if len(vectors) > 50_000 else "Flat")
    results = []
    for n_seeds in seeds_per_family:
        labels = np.full(len(family), -1)
        for f in seeded_families:
            members = np.flatnonzero(family == f)
            labels[rng.choice(members, size=min(n_seeds, len(members) - 1), replace=False)] = f
        seeded = labels >= 0
        in_seeded = np.isin(family, seeded_families) & ~seeded
        unseeded = ~np.isin(family, seeded_families)
        start = time.perf_counter()
        lp = LabelPropagation(alpha=0.99, abstain=abstain).fit(graph, labels)
        lp_seconds = time.perf_counter() - start
        seed_rows = np.flatnonzero(seeded)
        sims, nearest = search(np.ascontiguousarray(vectors[seed_rows]), vectors[in_seeded], 1, GraphParams())
        one_nn = labels[seed_rows[nearest[:, 0]]]
        truth = family[in_seeded]
        right = lp.labels_[in_seeded] == truth
        confident = lp.confidence_[in_seeded] >= np.median(lp.confidence_[in_seeded])
        # 1-NN's confident half: the nearer half by cosine
        nn_confident = sims[:, 0] >= np.median(sims[:, 0])
        results.append(
            {"seeds/family": n_seeds, "LP acc": right.mean(), "1-NN acc": (one_nn == truth).mean(),
             "LP acc (confident half)": right[confident].mean(),
             "1-NN acc (nearer half)": (one_nn == truth)[nn_confident].mean(),
             "LP abstains (seeded fams)": (lp.labels_[in_seeded] < 0).mean(),
             "LP abstains (unseeded fams)": (lp.labels_[unseeded] < 0).mean(),
             "CG iters": lp.iterations_, "LP s": lp_seconds}
        )
    return results


def dedup_scale(data: dict, sizes: list[int], seed: int) -> list[dict]:
    """copyseek's grouping on descriptor sets of each size: pairwise P/R/F1 against the families,
    time and peak memory, each size in this process in increasing order (peak RSS is cumulative)."""
    from copyseek.graph.dedup import DedupParams, find_groups

    out = []
    for size in sizes:
        grown = grow(data, size, seed)
        factory = "IVF1024,Flat" if size > 50_000 else "Flat"
        start = time.perf_counter()
        groups = find_groups(grown["vectors"], DedupParams(factory=factory))
        seconds = time.perf_counter() - start
        p, r, f1 = pairwise_prf(groups.labels, grown["family"])
        out.append({"images": size, "P": p, "R": r, "F1": f1, "seconds": seconds,
                    "peak RSS GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6})
    return out


def pairwise_prf(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Pairwise precision, recall, F1 of grouping `predicted` (-1 = alone) against `truth` groups,
    from the contingency counts (no pair is enumerated)."""
    from collections import Counter

    def pairs(counts) -> int:
        return sum(c * (c - 1) // 2 for c in counts)

    grouped = predicted >= 0
    predicted_pairs = pairs(Counter(predicted[grouped]).values())
    true_pairs = pairs(Counter(truth).values())
    both = pairs(Counter(zip(predicted[grouped], truth[grouped])).values())
    p = both / predicted_pairs if predicted_pairs else 0.0
    r = both / true_pairs if true_pairs else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("diffusion")
    d.add_argument("--real", type=Path, required=True)
    d.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    d.add_argument("--ranks", type=int, nargs="+", default=[16, 64, 256])
    d.add_argument("--queries", type=int, default=200)
    d.add_argument("--k", type=int, default=10)
    d.add_argument("--seed", type=int, default=0)
    lab = sub.add_parser("labels")
    lab.add_argument("--real", type=Path, required=True)
    lab.add_argument("--size", type=int, default=10_000)
    lab.add_argument("--k", type=int, default=10)
    lab.add_argument("--abstain", type=float, default=0.01)
    lab.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("dedup-scale")
    s.add_argument("--real", type=Path, required=True)
    s.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    s.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    real = load(args.real)
    warnings.simplefilter("once")
    if args.cmd == "diffusion":
        for size in args.sizes:
            grown = grow(real, size, args.seed)
            print(f"\n### {size} descriptors ({len(real['family'])} real, the rest grown; mix {grown['mix']:.2f}), {args.queries} queries\n")
            print("\n".join(table([], COLUMNS).splitlines()[:2]), flush=True)
            info = diffusion_sweep(grown, args.ranks, args.queries, args.k, args.seed).pop()
            print(f"\nk={info['k']}, {info['n']} nodes, {info['edges']} edges, {info['isolated']} isolated, graph {info['graph s']:.1f} s")
    elif args.cmd == "labels":
        grown = grow(real, args.size, args.seed)
        print(f"\n### labels on {args.size} descriptors, half the families seeded, k={args.k}, abstain={args.abstain}\n")
        rows = labels_benchmark(grown, [1, 2, 5], args.k, args.seed, args.abstain)
        print(table(rows, list(rows[0])))
    else:
        print(table(dedup_scale(real, sorted(args.sizes), args.seed), ["images", "P", "R", "F1", "seconds", "peak RSS GB"]))


if __name__ == "__main__":
    main()
