"""copyseek.graph benchmarks on real SSCD descriptors of our photos and their edited versions, grown to
10k / 100k by benchmarks/graph_descriptors.py (its docstring says how). Prints markdown tables.

    python benchmarks/bench_graph.py diffusion --real real.npz --sizes 10000 100000 --ranks 16 64 256 1024 --repeats 3
    python benchmarks/bench_graph.py cg-blocks --real real.npz --sizes 10143 100000   # CG's columns 4 ... all at a time
    python benchmarks/bench_graph.py labels --real real.npz --size 10000 --draws 10   # LP vs 1-NN over 10 label draws
    python benchmarks/bench_graph.py labels --real real.npz --size 10000 --draws 10 --self-train 0.1 0.3 --self-weight 0.5 1
        # and LP with self-training: the grid's best on the dev families over --self-draws draws, then reported
    python benchmarks/bench_graph.py labels --real real.npz --size 10143 --draws 10 --confidence margin   # + margin confidence
    python benchmarks/bench_graph.py dedup-scale --real real.npz --sizes 1000 10000 100000
    python benchmarks/bench_graph.py labels-scale --real real.npz --sizes 10143 100000   # copyseek label's memory

diffusion: one edited member of each of --queries families is the query (left out of the graph); the
other members are its positives. Seeds: its k nearest descriptors. mAP over the whole ranking, top-100
overlap with the exact solution (temporal CG at tol 1e-8), time per query (the queries solved --block
at a time, all in one block by default, the total divided by the queries; the median of --repeats runs), offline time, the memory a solver keeps (eigenvectors;
for hybrid on aggregates its sparse basis and factors), CG iterations.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import time
import warnings
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_descriptors import grow, load  # noqa: E402

import copyseek.graph.diffusion as diffusion_module  # noqa: E402
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


def split_families(family: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Family ids in two seeded halves: "dev" (settings are tuned there) and "test" (reported)."""
    order = np.random.default_rng([seed, 31]).permutation(np.unique(family))
    return {"dev": np.sort(order[: len(order) // 2]), "test": np.sort(order[len(order) // 2 :])}


def split_queries(
    family: np.ndarray, original: np.ndarray, n_queries: int, seed: int, among: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, database rows): one edited member each of n_queries random families (of `among`,
    all families by default)."""
    rng = np.random.default_rng(seed)
    pool = np.unique(family) if among is None else among
    chosen = rng.choice(pool, size=min(n_queries, len(pool)), replace=False)
    queries = []
    for f in chosen:
        members = np.flatnonzero((family == f) & ~original)
        queries.append(int(rng.choice(members)))
    queries = np.array(sorted(queries))
    database = np.setdiff1d(np.arange(len(family)), queries)
    return queries, database


COLUMNS = ["method", "r", "mAP", "top100", "ms/query", "CPU ms/query", "offline s", "MB", "CG iters"]


def query_setup(
    data: dict, n_queries: int, k: int, seed: int, split: str, kq: int = 10, gamma: float = 3.0, symmetrize: str = "mutual"
):
    """The left-out queries of `split`'s families, the graph over the rest, the queries' kq nearest
    database rows (the seeds) and each query's positives (its family's other members)."""
    vectors, family = data["vectors"], data["family"]
    among = split_families(family, seed)[split]
    queries, database = split_queries(family, data["original"], n_queries, seed, among)
    db = np.ascontiguousarray(vectors[database])
    factory = "IVF1024,Flat" if len(db) > 50_000 else "Flat"
    params = GraphParams(k=k, gamma=gamma, symmetrize=symmetrize, factory=factory)
    graph = knn_graph(db, **params.spec())
    q = vectors[queries]
    sims, rows = search(db, q, kq, params)
    positives = [family[database] == family[r] for r in queries]
    return graph, q, db, sims, rows, positives


def mean_ap(scores: np.ndarray, positives: list[np.ndarray]) -> float:
    return float(np.mean([average_precision(scores[:, j], positives[j]) for j in range(len(positives))]))


def diffusion_sweep(
    data: dict, ranks: list[int], n_queries: int, k: int, seed: int, whole_ranks: list[int], repeats: int = 1,
    block: int | None = None,
) -> list[dict]:
    """Temporal (whole graph, per component, truncated), hybrid on aggregates (whole graph, per
    component), spectral and hybrid at each r (eigenpairs per connected component), and hybrid on the
    whole graph at `whole_ranks`, on the test families. Times are the median of `repeats` runs of
    each solver on the queries (the CG solvers' runs interleaved), `block` at a time (all at once by
    default; 1: one by one, as an online service solves them); CG iters: the most any solve took."""
    start = time.perf_counter()
    graph, q, db, sims, rows, positives = query_setup(data, n_queries, k, seed, "test")
    graph.normalized()
    graph_seconds = time.perf_counter() - start
    n_queries = len(positives)
    block = block or n_queries
    rows_out: list[dict] = []

    def run_once(d: Diffusion) -> tuple[float, float, int, np.ndarray]:
        """(wall s, CPU s, most CG iterations, scores) of one pass over the queries, `block` at a time."""
        wall, cpu = time.perf_counter(), time.process_time()
        parts, iterations = [], 0
        for start in range(0, y.shape[1], block):
            parts.append(d.rank(y[:, start : start + block]))
            iterations = max(iterations, d.iterations_)
        return time.perf_counter() - wall, time.process_time() - cpu, iterations, np.concatenate(parts, axis=1)

    def report(name, r, d: Diffusion | None, runs: list, scores=None, offline=0.0, exact=None):
        """One table row from `runs` (run_once's results: the median time is reported)."""
        wall, cpu = (float(np.median([run[0] for run in runs])), float(np.median([run[1] for run in runs]))) if runs else (0.0, 0.0)
        iterations = max((run[2] for run in runs), default=0)
        scores = runs[-1][3] if runs else scores
        overlap = float("nan")
        if exact is not None:
            top = lambda s: set(np.argsort(-s, kind="stable")[:100])  # noqa: E731
            overlap = np.mean([len(top(scores[:, j]) & top(exact[:, j])) / 100 for j in range(n_queries)])
        rows_out.append(
            {"method": name, "r": r, "mAP": mean_ap(scores, positives), "top100": overlap,
             "ms/query": 1000 * wall / n_queries if d else 0.0, "CPU ms/query": 1000 * cpu / n_queries if d else 0.0,
             "offline s": offline, "MB": (d.solver_.nbytes() if d else 0) / 1e6, "CG iters": iterations}
        )
        print(table(rows_out[-1:], COLUMNS).splitlines()[-1], flush=True)  # each row as soon as it is measured

    def evaluate(name, r, d: Diffusion | None, scores=None, offline=0.0, exact=None):
        report(name, r, d, [run_once(d) for _ in range(repeats)] if d is not None else [], scores, offline, exact)

    def fitted(name: str, **options) -> tuple[Diffusion, float]:
        start = time.perf_counter()
        d = Diffusion(0.99, name, **options).fit(graph)
        return d, time.perf_counter() - start

    evaluate("cosine", "-", None, scores=(q @ db.T).T)
    exact_d = Diffusion(0.99, "temporal", tol=1e-8, max_iter=3000, components=True).fit(graph)
    y = exact_d.seeds(rows, sims)
    exact = exact_d.rank(y)
    # The CG solvers' repeats are interleaved (one pass of each, `repeats` times), so that the machine's
    # drift over minutes moves them alike (at 100k the ratio still moves with the heap's state: BENCHMARKS).
    contenders = {}
    for name, solver, options in [
        ("temporal", "temporal", {}),
        ("temporal, truncated 1000", "temporal", {"truncate": 1000}),
        ("temporal, per component", "temporal", {"components": True}),
        ("hybrid, {} aggregates", "hybrid-agg", {}),  # the default strength, chosen on dev queries
        ("hybrid, {} aggregates, per component", "hybrid-agg", {"components": True}),
    ]:
        d, offline = fitted(solver, tol=1e-4, max_iter=3000, **options)
        if solver == "hybrid-agg":
            name = name.format(d.solver_.aggregates_.max() + 1)
        contenders[name] = (d, offline, [])
    for _ in range(repeats):
        for d, _, runs in contenders.values():
            runs.append(run_once(d))
    for name, (d, offline, runs) in contenders.items():
        report(name, "-", d, runs, offline=offline, exact=exact)
    # The eigenpairs are computed once, at the largest r (per component, dense eigh or eigsh as
    # component_eigenpairs chooses); a smaller r keeps their prefix, which is what it would compute.
    start = time.perf_counter()
    largest = Diffusion(0.99, "hybrid", rank=max(ranks), tol=1e-4, max_iter=3000, components=True).fit(graph)
    offline = time.perf_counter() - start
    print(f"eigenpairs at r={max(ranks)}: {offline:.1f} s; lambda_r at each r: "
          + ", ".join(f"{r}: {largest.solver_.values_[r - 1]:.4f}" for r in ranks), flush=True)
    for r in ranks:
        hybrid = largest.solver_.keep_rank(r)
        evaluate("spectral", r, Diffusion.from_fitted(graph, hybrid.spectral()), offline=offline, exact=exact)
        evaluate("hybrid, per component", r, Diffusion.from_fitted(graph, hybrid), offline=offline, exact=exact)
        if r in whole_ranks:  # the same eigenpairs, CG over the whole graph (the paper's setting)
            hybrid.params = dataclasses.replace(hybrid.params, components=False)
            evaluate("hybrid, whole graph", r, Diffusion.from_fitted(graph, hybrid), offline=offline, exact=exact)
    components = exact_d.solver_.components_
    sizes = np.bincount(components.labels)
    rows_out.append({"graph s": graph_seconds, "n": len(db), "k": k, "edges": graph.affinity().nnz // 2,
                     "isolated": len(graph.isolated()), "components": len(sizes), "largest": int(sizes.max())})
    return rows_out


def cg_block_sweep(data: dict, n_queries: int, k: int, seed: int, blocks: list[int], repeats: int) -> list[dict]:
    """Temporal and hybrid-agg on the test families' queries with conjugate_gradient solving `blocks`
    columns at a time (0: all queries in one block, as before session 29): CPU ms per query (the
    median of `repeats` runs, every (block, solver) pass interleaved), CG iterations, mAP."""
    graph, _, _, sims, rows, positives = query_setup(data, n_queries, k, seed, "test")
    solvers = {name: Diffusion(0.99, name, tol=1e-4, max_iter=3000).fit(graph) for name in ("temporal", "hybrid-agg")}
    y = solvers["temporal"].seeds(rows, sims)
    default, times, results = diffusion_module.CG_BLOCK, {}, {}
    try:
        for _ in range(repeats):
            for block in blocks:
                diffusion_module.CG_BLOCK = block or y.shape[1]
                for name, d in solvers.items():
                    start = time.process_time()
                    results[block, name] = (d.rank(y), d.iterations_)
                    times.setdefault((block, name), []).append(time.process_time() - start)
    finally:
        diffusion_module.CG_BLOCK = default
    out = []
    for block in blocks:
        ms = {name: 1000 * float(np.median(times[block, name])) / y.shape[1] for name in solvers}
        out.append({"CG block": block or f"all ({y.shape[1]})", "temporal CPU ms/query": ms["temporal"],
                    "hybrid-agg CPU ms/query": ms["hybrid-agg"], "ratio": ms["hybrid-agg"] / ms["temporal"],
                    "CG iters temporal / hybrid-agg": f"{results[block, 'temporal'][1]} / {results[block, 'hybrid-agg'][1]}",
                    "mAP temporal / hybrid-agg": f"{mean_ap(results[block, 'temporal'][0], positives):.4f} / "
                                                 f"{mean_ap(results[block, 'hybrid-agg'][0], positives):.4f}"})
    return out


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "n/a" if np.isnan(v) else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def labels_benchmark(
    data: dict, seeds_per_family: list[int], k: int, seed: int, abstain: float, alpha: float, split: str,
    symmetrize: str = "sum", gamma: float = 3.0, draw: int = 0, variants: dict[str, dict] | None = None,
) -> list[dict]:
    """Half the families get seeds (1/2/5 labelled members), the other half none (LP should abstain
    there). Accuracy on the unlabelled members of the seeded families of `split` (dev or test): LP vs
    the nearest seed (1-NN). `draw` redraws which families are seeded and which members are their
    seeds; the dev/test split stays the one of `seed` (draw 0 is the draw of the earlier tables).
    `variants`: name -> more LabelPropagation options (self-training), each fitted on the same labels:
    columns "<name> acc" and "<name> acc (confident half)"."""
    vectors, family = data["vectors"], data["family"]
    rng = np.random.default_rng(seed if draw == 0 else [seed, draw])
    present = np.unique(family)
    seeded_families = rng.permutation(present)[: len(present) // 2]
    measured = np.intersect1d(seeded_families, split_families(family, seed)[split])
    factory = "IVF1024,Flat" if len(vectors) > 50_000 else "Flat"
    graph = knn_graph(vectors, k=k, gamma=gamma, symmetrize=symmetrize, factory=factory)
    results = []
    for n_seeds in seeds_per_family:
        labels = np.full(len(family), -1)
        for f in seeded_families:
            members = np.flatnonzero(family == f)
            labels[rng.choice(members, size=min(n_seeds, len(members) - 1), replace=False)] = f
        seeded = labels >= 0
        in_seeded = np.isin(family, measured) & ~seeded
        unseeded = ~np.isin(family, seeded_families)
        start = time.perf_counter()
        lp = LabelPropagation(alpha=alpha, abstain=abstain).fit(graph, labels)
        lp_seconds = time.perf_counter() - start
        more = {}
        for name, options in (variants or {}).items():
            fitted = LabelPropagation(alpha=alpha, abstain=abstain, **options).fit(graph, labels)
            hit = fitted.labels_[in_seeded] == family[in_seeded]
            sure = fitted.confidence_[in_seeded] >= np.median(fitted.confidence_[in_seeded])
            more |= {f"{name} acc": hit.mean(), f"{name} acc (confident half)": hit[sure].mean()}
        seed_rows = np.flatnonzero(seeded)
        sims, nearest = search(np.ascontiguousarray(vectors[seed_rows]), vectors[in_seeded], 1, GraphParams())
        one_nn = labels[seed_rows[nearest[:, 0]]]
        truth = family[in_seeded]
        right = lp.labels_[in_seeded] == truth
        confident = lp.confidence_[in_seeded] >= np.median(lp.confidence_[in_seeded])
        # 1-NN's confident half: the nearer half by cosine
        nn_confident = sims[:, 0] >= np.median(sims[:, 0])
        results.append(
            {"draw": draw, "seeds/family": n_seeds, "LP acc": right.mean(), "1-NN acc": (one_nn == truth).mean(),
             "LP acc (confident half)": right[confident].mean(),
             "1-NN acc (nearer half)": (one_nn == truth)[nn_confident].mean(),
             "LP abstains (seeded fams)": (lp.labels_[in_seeded] < 0).mean(),
             "LP abstains (unseeded fams)": (lp.labels_[unseeded] < 0).mean(),
             "CG iters": lp.iterations_, "LP s": lp_seconds, **more}
        )
    return results


def gain(rows: list[dict], better: str, than: str) -> np.ndarray:
    """Per-draw accuracy differences "<better> acc" - "<than> acc" of `rows`."""
    return np.array([r[f"{better} acc"] - r[f"{than} acc"] for r in rows])


def draw_summary(rows: list[dict], variants: list[str] = ()) -> list[dict]:
    """One row per seeds/family over the draws of `rows`: mean accuracies and the gain of LP over 1-NN as
    mean ± standard deviation over draws, its smallest draw and the draws reaching the +0.05 target;
    for each of `variants` its accuracy and its gains over LP and over 1-NN (mean ± std)."""
    summary = []
    for n_seeds in sorted({r["seeds/family"] for r in rows}):
        mine = [r for r in rows if r["seeds/family"] == n_seeds]
        gains = gain(mine, "LP", "1-NN")
        summary.append(
            {"seeds/family": n_seeds, "draws": len(mine), "LP acc": np.mean([r["LP acc"] for r in mine]),
             "1-NN acc": np.mean([r["1-NN acc"] for r in mine]), "gain": f"{gains.mean():+.4f} ± {gains.std():.4f}",
             "smallest gain": f"{gains.min():+.4f}", "draws >= +0.05": f"{int((gains >= 0.05).sum())} of {len(gains)}",
             "LP acc (confident half)": np.mean([r["LP acc (confident half)"] for r in mine])}
        )
        for name in variants:
            over_lp, over_nn = gain(mine, name, "LP"), gain(mine, name, "1-NN")
            summary[-1] |= {f"{name} acc": np.mean([r[f"{name} acc"] for r in mine]),
                            f"{name} - LP": f"{over_lp.mean():+.4f} ± {over_lp.std():.4f}",
                            f"{name} draws > LP": f"{int((over_lp > 0).sum())} of {len(over_lp)}",
                            f"{name} - 1-NN": f"{over_nn.mean():+.4f} ± {over_nn.std():.4f}",
                            f"{name} acc (confident half)": np.mean([r[f"{name} acc (confident half)"] for r in mine])}
    return summary


def tune_self_training(data: dict, seed: int, setting: dict, grid: dict[str, list], draws: int) -> dict[str, dict]:
    """Every (self_train, self_weight, self_rounds, self_select) of `grid` on the dev families, draws 0..draws-1, with
    the LP `setting`; prints each one's gain over LP at 1/2/5 seeds per family (mean ± std over draws).
    Returns the chosen settings: "ST" the best mean gain over 1/2/5 among those that do not lose at 1
    seed (mean gain >= 0), "ST 2+" the best mean gain over 2 and 5 seeds (may be the same one)."""
    import itertools

    names = ("self_train", "self_weight", "self_rounds", "self_select")
    options = {f"F={f} W={w} R={r} {how}": dict(zip(names, (f, w, r, how)))
               for f, w, r, how in itertools.product(*(grid[name] for name in names)) if f > 0}
    rows = [row for draw in range(draws)
            for row in labels_benchmark(data, [1, 2, 5], setting["k"], seed, setting["abstain"], setting["alpha"], "dev",
                                        setting["symmetrize"], setting["gamma"], draw, options)]
    gains = {}
    for name in options:
        gains[name] = {n: gain([r for r in rows if r["seeds/family"] == n], name, "LP") for n in (1, 2, 5)}
        print(f"dev, {draws} draws: {name}: over LP at 1/2/5 seeds: "
              + ", ".join(f"{g.mean():+.4f} ± {g.std():.4f}" for g in gains[name].values()), flush=True)
    mean = lambda name, ns: float(np.mean([gains[name][n].mean() for n in ns]))  # noqa: E731
    safe = [name for name in options if gains[name][1].mean() >= 0]
    chosen = {}
    if safe:
        chosen["ST"] = options[max(safe, key=lambda name: mean(name, (1, 2, 5)))]
    chosen["ST 2+"] = options[max(options, key=lambda name: mean(name, (2, 5)))]
    if chosen.get("ST") == chosen["ST 2+"]:
        del chosen["ST 2+"]
    for name, option in chosen.items():
        print(f"chosen on dev: {name} = {option}", flush=True)
    return chosen


def tune_labels(data: dict, seed: int, grid: dict[str, list]) -> dict:
    """The (k, alpha, abstain, symmetrize, gamma) of `grid` with the best mean LP accuracy over 1/2/5
    seeds per family on the dev families; prints one line per setting."""
    import itertools

    best, best_acc = {}, -1.0
    names = ("k", "alpha", "abstain", "symmetrize", "gamma")
    for values in itertools.product(*(grid[name] for name in names)):
        setting = dict(zip(names, values))
        rows = labels_benchmark(data, [1, 2, 5], setting["k"], seed, setting["abstain"], setting["alpha"], "dev",
                                setting["symmetrize"], setting["gamma"])
        acc = float(np.mean([r["LP acc"] for r in rows]))
        gains = " ".join(f"{r['LP acc'] - r['1-NN acc']:+.4f}" for r in rows)
        print(f"dev: {setting}: LP acc {acc:.4f} (over 1-NN at 1/2/5 seeds: {gains})", flush=True)
        if acc > best_acc:
            best, best_acc = setting, acc
    return best


def variant_scores(f: np.ndarray, cosine: np.ndarray, reach: float | None, blend: float = 0.0) -> np.ndarray:
    """Diffusion scores as a ranking of every node. With `reach`, the nodes whose score is at least
    reach x the query's best come first, by diffusion, and every other node after them by cosine
    (diffusion gives nodes it barely reaches ~0, in no useful order); None: diffusion alone. With
    `blend` > 0, the diffusion part is f / (the query's best f) + blend x cosine."""
    top = np.maximum(f.max(axis=0, keepdims=True), 1e-300)
    mixed = f / top + blend * cosine if blend else f
    if reach is None:
        return mixed
    return np.where(f >= reach * top, 3.0 + blend + mixed, cosine)  # cosine <= 1 < 3: reached nodes first


def variants_benchmark(
    data: dict, n_queries: int, seed: int, grid: dict[str, list], fixed: dict[str, dict] | None = None
) -> tuple[list[dict], dict]:
    """Variant retrieval (one left-out edited member per family queries its family's other members):
    every setting of `grid` on the dev families, the best one, the papers' defaults and the `fixed`
    settings (name -> setting) on both halves, beside cosine ranking. "worse" is the fraction of
    queries whose AP falls below cosine's."""
    import itertools

    def run(split: str, k: int, kq: int, gamma: float, symmetrize: str, alphas: list[float], mixes: list[tuple]) -> dict:
        graph, q, db, sims, rows, positives = query_setup(data, n_queries, k, seed, split, kq, gamma, symmetrize)
        cosine = (q @ db.T).T
        base = np.array([average_precision(cosine[:, j], p) for j, p in enumerate(positives)])
        out = {"cosine": float(base.mean())}
        for alpha in alphas:
            d = Diffusion(alpha, "temporal", components=True).fit(graph)
            f = d.rank(d.seeds(rows, sims))
            for reach, blend in mixes:
                scores = variant_scores(f, cosine, reach, blend)
                ap = np.array([average_precision(scores[:, j], p) for j, p in enumerate(positives)])
                out[alpha, reach, blend] = (float(ap.mean()), float((ap < base - 1e-9).mean()))
        return out

    best, best_map = {}, -1.0
    mixes = list(itertools.product(grid["reach"], grid["blend"]))
    for k, kq, gamma, symmetrize in itertools.product(grid["k"], grid["kq"], grid["gamma"], grid["symmetrize"]):
        found = run("dev", k, kq, gamma, symmetrize, grid["alpha"], mixes)
        for (alpha, reach, blend), (m, _) in ((key, v) for key, v in found.items() if key != "cosine"):
            print(f"dev: k={k} kq={kq} gamma={gamma} {symmetrize} alpha={alpha} reach={reach} blend={blend}: "
                  f"mAP {m:.4f} (cosine {found['cosine']:.4f})", flush=True)
            if m > best_map:
                best_map = m
                best = {"k": k, "kq": kq, "gamma": gamma, "symmetrize": symmetrize, "alpha": alpha, "reach": reach, "blend": blend}
    default = {"k": 10, "kq": 10, "gamma": 3.0, "symmetrize": "mutual", "alpha": 0.99, "reach": None, "blend": 0.0}
    rows = []
    for name, setting in (("diffusion, papers' defaults", default), *(fixed or {}).items(), ("diffusion, tuned on dev", best)):
        for split in ("dev", "test"):
            found = run(split, setting["k"], setting["kq"], setting["gamma"], setting["symmetrize"], [setting["alpha"]],
                        [(setting["reach"], setting["blend"])])
            m, worse = found[setting["alpha"], setting["reach"], setting["blend"]]
            rows.append({"split": split, "method": name, **{key: str(v) for key, v in setting.items()},
                         "mAP": m, "cosine mAP": found["cosine"], "gain": m - found["cosine"], "worse": worse})
    return rows, best


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


def labels_scale(data: dict, sizes: list[int], seed: int) -> list[dict]:
    """`copyseek label`'s propagation on descriptor sets of each size, one labelled image in each of
    half the families (a label each): seconds and the peak of the memory numpy allocates during the fit
    (tracemalloc; the graph is built before) for the propagation as it was up to session 25 (one CG
    over the whole graph with a dense (n, c) seed matrix), and for LabelPropagation with and without
    its scores kept, plain and with the CLI's self-training. Graph and settings: the CLI's defaults.
    agree: the share of images whose plain label (or abstention) equals the dense solve's."""
    import tracemalloc

    from copyseek.graph.diffusion import conjugate_gradient, shifted_product

    out = []
    for size in sizes:
        grown = grow(data, size, seed)
        family = grown["family"]
        factory = "IVF1024,Flat" if size > 50_000 else "Flat"
        graph = knn_graph(grown["vectors"], k=20, gamma=1.0, symmetrize="union", factory=factory)
        s = graph.normalized("sym")
        rng = np.random.default_rng(seed)
        labels = np.full(len(family), -1)
        for f in rng.choice(np.unique(family), len(np.unique(family)) // 2, replace=False):
            labels[rng.choice(np.flatnonzero(family == f))] = f
        classes, seed_class = np.unique(labels[labels >= 0], return_inverse=True)

        def dense() -> np.ndarray:
            y = np.zeros((len(family), len(classes)))
            y[np.flatnonzero(labels >= 0), seed_class] = 1.0
            z, _ = conjugate_gradient(partial(shifted_product, s, 0.8), y, 1e-4, 500)
            return np.where(0.2 * z.max(axis=1) > 0.01, classes[z.argmax(axis=1)], -1)  # abstain as the class does

        arms = [("dense (n, c) solve, before session 26", dense)]
        for self_train in (0.0, 0.05):
            for keep in (True, False):
                options = {"alpha": 0.8, "abstain": 0.01, "confidence": "margin", "self_train": self_train,
                           "self_select": "class", "keep_scores": keep}
                name = f"LabelPropagation, {'scores kept' if keep else 'no scores'}{', self-training' if self_train else ''}"
                arms.append((name, lambda options=options: LabelPropagation(**options).fit(graph, labels)))
        reference = None
        for name, run in arms:
            tracemalloc.start()
            start = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - start
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            if reference is None:
                reference, agree = result, 1.0
            else:
                agree = float(np.mean(result.labels_ == reference)) if "self-training" not in name else float("nan")
            out.append({"images": size, "labels": len(classes), "arm": name, "seconds": seconds,
                        "peak GB (numpy, during the fit)": peak / 1e9, "agree": agree})
            print(table(out[-1:], list(out[-1])).splitlines()[-1], flush=True)
            del result
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
    d.add_argument("--whole-ranks", type=int, nargs="*", default=[], help="ranks also solved on the whole graph")
    d.add_argument("--queries", type=int, default=200)
    d.add_argument("--k", type=int, default=10)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--repeats", type=int, default=3, help="timed runs of each solver (the median is reported)")
    d.add_argument("--block", type=int, default=None,
                   help="queries solved together (default: all at once; 1: one by one, as an online service does)")
    cg = sub.add_parser("cg-blocks", help="temporal and hybrid-agg with conjugate gradient's columns in blocks")
    cg.add_argument("--real", type=Path, required=True)
    cg.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    cg.add_argument("--blocks", type=int, nargs="+", default=[4, 8, 16, 32, 0], help="columns per block (0: all)")
    cg.add_argument("--queries", type=int, default=200)
    cg.add_argument("--k", type=int, default=10)
    cg.add_argument("--seed", type=int, default=0)
    cg.add_argument("--repeats", type=int, default=3)
    lab = sub.add_parser("labels")
    lab.add_argument("--real", type=Path, required=True)
    lab.add_argument("--size", type=int, default=10_000)
    lab.add_argument("--k", type=int, nargs="+", default=[10], help="graph k (several: tuned on the dev families)")
    lab.add_argument("--alpha", type=float, nargs="+", default=[0.99])
    lab.add_argument("--abstain", type=float, nargs="+", default=[0.01])
    lab.add_argument("--symmetrize", nargs="+", default=["sum"])
    lab.add_argument("--gamma", type=float, nargs="+", default=[3.0])
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--draws", type=int, default=1, help="label draws reported (the setting is tuned on draw 0)")
    lab.add_argument("--self-train", type=float, nargs="+", default=[0.0],
                     help="self-training fractions to try (0: off); chosen on dev over --self-draws draws")
    lab.add_argument("--self-weight", type=float, nargs="+", default=[1.0], help="pseudo-seed weights to try")
    lab.add_argument("--self-rounds", type=int, nargs="+", default=[1], help="self-training rounds to try")
    lab.add_argument("--self-select", nargs="+", default=["global"], choices=["global", "class"],
                     help="pseudo-seeds: the most confident of all unlabelled nodes (global) or of each class's (class)")
    lab.add_argument("--self-draws", type=int, default=5, help="dev label draws self-training is chosen on")
    lab.add_argument("--confidence", nargs="*", default=[], choices=["entropy", "margin"],
                     help="also fit plain LP and each chosen self-training with these confidence measures (their "
                     "confident halves side by side; the others use the library's default, entropy)")
    v = sub.add_parser("variants")
    v.add_argument("--real", type=Path, required=True)
    v.add_argument("--size", type=int, default=10_000)
    v.add_argument("--queries", type=int, default=200)
    v.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50])
    v.add_argument("--kq", type=int, nargs="+", default=[5, 10])
    v.add_argument("--alpha", type=float, nargs="+", default=[0.8, 0.9, 0.99])
    v.add_argument("--reach", type=float, nargs="+", default=[0.0, 0.01], help="negative: diffusion alone")
    v.add_argument("--blend", type=float, nargs="+", default=[0.0, 0.5], help="weight of cosine added to diffusion")
    v.add_argument("--gamma", type=float, nargs="+", default=[3.0], help="edge weight exponent")
    v.add_argument("--symmetrize", nargs="+", default=["mutual"], help="graph symmetrisations to try")
    v.add_argument("--seed", type=int, default=0)
    ls = sub.add_parser("labels-scale")
    ls.add_argument("--real", type=Path, required=True)
    ls.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ls.add_argument("--seed", type=int, default=0)
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
            info = diffusion_sweep(grown, args.ranks, args.queries, args.k, args.seed, args.whole_ranks, args.repeats,
                                   args.block).pop()
            print(f"\nk={info['k']}, {info['n']} nodes, {info['edges']} edges, {info['isolated']} isolated, "
                  f"{info['components']} components (largest {info['largest']}), graph {info['graph s']:.1f} s")
    elif args.cmd == "cg-blocks":
        for size in args.sizes:
            grown = grow(real, size, args.seed)
            print(f"\n### {size} descriptors, {args.queries} queries: conjugate gradient's columns in blocks\n")
            rows = cg_block_sweep(grown, args.queries, args.k, args.seed, args.blocks, args.repeats)
            print("\n" + table(rows, list(rows[0])), flush=True)
    elif args.cmd == "labels":
        grown = grow(real, args.size, args.seed)
        grid = {"k": args.k, "alpha": args.alpha, "abstain": args.abstain, "symmetrize": args.symmetrize, "gamma": args.gamma}
        best = tune_labels(grown, args.seed, grid)
        self_grid = {"self_train": args.self_train, "self_weight": args.self_weight, "self_rounds": args.self_rounds,
                     "self_select": args.self_select}
        chosen = tune_self_training(grown, args.seed, best, self_grid, args.self_draws) if max(args.self_train) > 0 else {}
        chosen |= {f"{name} {measure}": options | {"confidence": measure}
                   for measure in args.confidence for name, options in [("LP", {}), *chosen.items()]}
        print(f"\n### labels on {args.size} descriptors, half the families seeded; tuned on dev: {best} {chosen}\n")
        for split in ("dev", "test"):
            rows = [row for draw in range(args.draws)
                    for row in labels_benchmark(grown, [1, 2, 5], best["k"], args.seed, best["abstain"], best["alpha"],
                                                split, best["symmetrize"], best["gamma"], draw, chosen)]
            print(f"\n{split} families:\n\n" + table(rows, list(rows[0])), flush=True)
            if args.draws > 1:
                summary = draw_summary(rows, list(chosen))
                print(f"\n{split} families, {args.draws} draws:\n\n" + table(summary, list(summary[0])), flush=True)
    elif args.cmd == "variants":
        grown = grow(real, args.size, args.seed)
        reach = [None if r < 0 else r for r in args.reach]
        grid = {"k": args.k, "kq": args.kq, "gamma": args.gamma, "symmetrize": args.symmetrize, "alpha": args.alpha,
                "reach": reach, "blend": args.blend}
        # last session's setting (mutual graph) beside this session's search
        fixed = {"diffusion, last session (mutual)": {"k": 20, "kq": 10, "gamma": 3.0, "symmetrize": "mutual", "alpha": 0.9,
                                                   "reach": 0.01, "blend": 0.0}}
        rows, best = variants_benchmark(grown, args.queries, args.seed, grid, fixed)
        print(f"\n### variants on {args.size} descriptors, {args.queries} queries per split; tuned on dev: {best}\n")
        print(table(rows, list(rows[0])))
    elif args.cmd == "labels-scale":
        rows = labels_scale(real, sorted(args.sizes), args.seed)
        print("\n" + table(rows, list(rows[0])))
    else:
        print(table(dedup_scale(real, sorted(args.sizes), args.seed), ["images", "P", "R", "F1", "seconds", "peak RSS GB"]))


if __name__ == "__main__":
    main()
