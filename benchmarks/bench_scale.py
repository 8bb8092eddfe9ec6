"""Search at scale (issue 13): each branch's searcher at 10k / 100k / 1M references, next to exact search.

For every size: build time (wall and CPU), bytes per reference, latency of one query at a time on one
thread (p50 / p99 wall, p50 CPU: the machine is shared, so CPU time is the steadier number), and
recall. Prints markdown tables.

Global branch (`global`): the searcher `factory="auto"` builds (`auto_factory`), extra `--factories`,
and exact search (`Flat`) on the same vectors.
- Real part: the 2,000 real SSCD descriptors of benchmarks/graph_descriptors.py (200 photos and 9
  DISC21-style edited copies of each, square:320). The 200 originals are the first references; the
  1,800 edited copies are the queries, each with its true reference.
- Grown part: every other reference is made like `graph_descriptors.grow` makes a new family's
  original: normalise(o + mix * g), o a real original drawn at random, g a unit Gaussian direction,
  mix set so that its cosine to o is the median cosine between a real photo and its nearest other
  real photo. So a grown reference is as far from the real ones as real photos are from each other.
  Blocks of 65,536 are drawn from seeded generators, so the first N references are the same at
  every size (10k is a prefix of 100k, of 1M) and nothing of 2 GB is ever held twice.
- recall@1 (of exact): among the queries that exact search answers with their true reference, the
  share the searcher answers with it too. copy@1: the share of all queries answered with their true
  reference.

Local branch (`local`): the local searcher (RootSIFT, 320 keypoints x 16-byte PQ per reference,
IVF over the codec's 4096 lists) at each size and IVF nprobe, next to its flat (exhaustive) scan at
the smallest size.
- Real part: --local-refs photos of ../shared/images are the first references; --local-queries
  DISC21-style copies of them (paste_into, collage, crop, hflip, a random chain; bench_local.py's
  edits, donors from the other photos) are the queries, each with its true reference.
- Simulated part: the other photos' RootSIFT descriptors are the pool. A simulated reference has
  320 descriptors, each a pool descriptor (drawn at random) plus Gaussian noise whose length is the
  median distance from a pool descriptor to its nearest descriptor in another photo, PQ-encoded by
  the codec and kept in its source's IVF list (assigning 10^8 descriptors to 4096 lists would take
  hours on one core); positions are uniform at random, so a simulated reference takes votes and
  neighbours from the true one like an unrelated photo does, but never passes verification by
  geometry. Blocks come from seeded generators: each size's references begin with the smaller's.
- recall: the true reference is among the verified candidates (k = 10, inliers > 0); top-1: first.
- memory: stored bytes per reference (what the index files hold, `nbytes`), and in RAM: those
  arrays plus Faiss's copy of the codes (16 B per descriptor, and an 8-byte id in an IVF list).

    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py global --sizes 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from tqdm import tqdm

from copyseek.describe.global_branch import VectorSearcher, auto_factory

BLOCK = 1 << 16
REAL = Path("/work/scratch/graph/real.npz")


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class RealLike:
    """The real descriptors and the recipe for grown references (see the module docstring)."""

    originals: np.ndarray  # (f, dim) the real photos, references 0..f-1
    queries: np.ndarray  # (q, dim) real edited copies
    truth: np.ndarray  # (q,) the reference each query copies
    mix: float
    seed: int = 0

    @classmethod
    def load(cls, path: Path, seed: int = 0) -> "RealLike":
        with np.load(path) as data:
            vectors, family, original = data["vectors"], data["family"], data["original"]
        heads = np.flatnonzero(original)
        order = np.argsort(family[heads])
        heads = heads[order]
        row_of_family = {int(family[h]): i for i, h in enumerate(heads)}
        edits = np.flatnonzero(~original)
        originals = unit(vectors[heads])
        sims = originals @ originals.T
        np.fill_diagonal(sims, -1)
        target = float(np.median(sims.max(1)))
        return cls(
            originals,
            unit(vectors[edits]),
            np.array([row_of_family[int(f)] for f in family[edits]], np.int64),
            float(np.sqrt(1 / target**2 - 1)),
            seed,
        )

    @property
    def dim(self) -> int:
        return self.originals.shape[1]

    def blocks(self, size: int):
        """The first `size` references, in (<= BLOCK, dim) float32 blocks (chunks of an index)."""
        done = 0
        yield self.originals[: min(size, len(self.originals))]
        done = min(size, len(self.originals))
        b = 0
        while done < size:
            n = min(BLOCK, size - done)
            rng = np.random.default_rng([self.seed, b])
            source = self.originals[rng.integers(len(self.originals), size=n)]
            yield unit(source + self.mix * unit(rng.standard_normal((n, self.dim), dtype=np.float32)))
            done, b = done + n, b + 1


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def latencies(search, queries: np.ndarray) -> tuple[float, float, float]:
    """p50 / p99 wall ms and p50 CPU ms of one query at a time."""
    wall, cpu = [], []
    for q in queries:
        w, c = time.perf_counter(), time.process_time()
        search(q[None])
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.percentile(wall, 50) * 1e3), float(np.percentile(wall, 99) * 1e3), float(np.percentile(cpu, 50) * 1e3)


def build(data: RealLike, size: int, factory: str) -> tuple[VectorSearcher, float, float]:
    """The searcher over the first `size` references, chunk by chunk, trained and filled (timed)."""

    def fill():
        searcher = VectorSearcher(data.dim, factory)
        for block in data.blocks(size):
            searcher.add({"vectors": block})
        searcher.search_vectors(data.queries[:1], 1)  # resolves "auto", trains, adds
        return searcher

    return timed(fill)


def global_rows(data: RealLike, size: int, factories: list[str], nprobes: list[int], timing_queries: int,
                search_threads: tuple[int, ...] = (1,)) -> list[str]:
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    exact, wall, cpu = build(data, size, "Flat")
    truth = exact.search_vectors(data.queries, 1)[1][:, 0]
    found = truth == data.truth
    timing = data.queries[:: max(1, len(data.queries) // timing_queries)][:timing_queries]

    def row(name: str, searcher: VectorSearcher, wall: float, cpu: float, parameter: str = "-") -> str:
        top = searcher.search_vectors(data.queries, 1)[1][:, 0]
        p50, p99, cpu50 = latencies(lambda q: searcher.search_vectors(q, 10), timing)
        recall = float(np.mean(top[found] == data.truth[found]))
        return (
            f"| {size:,} | {name} | {parameter} | {wall:.1f} / {cpu:.1f} | {searcher.nbytes() / size:.0f} | "
            f"{p50:.2f} / {p99:.2f} / {cpu50:.2f} | {recall:.3f} | {np.mean(top == data.truth):.3f} |"
        )

    rows.append(row("Flat (exact)", exact, wall, cpu))
    print(rows[-1], flush=True)
    del exact
    for factory in factories:
        searcher, wall, cpu = build(data, size, factory)
        name = f"auto = {searcher.structure}" if factory == "auto" else factory
        print(f"{name} at {size:,}: reopened from its saved file in {reopen_seconds(searcher, data.dim, factory)}", flush=True)
        parameters = searcher.search_parameters()
        if "nprobe" in parameters:
            default = parameters["nprobe"]
            for nprobe in sorted({default, *nprobes}):
                for threads in search_threads if "threads" in parameters else [1]:
                    searcher.set_search_parameters(nprobe=nprobe, **({"threads": threads} if "threads" in parameters else {}))
                    label = f"nprobe={nprobe}" + (" (default)" if nprobe == default else "")
                    label += f", {threads} threads" if threads > 1 else ""
                    rows.append(row(name, searcher, wall, cpu, label))
                    print(rows[-1], flush=True)
        else:
            rows.append(row(name, searcher, wall, cpu))
            print(rows[-1], flush=True)
        del searcher
    return rows


def reopen_seconds(searcher: VectorSearcher, dim: int, factory: str) -> str:
    """Wall / CPU seconds to load the searcher from the file an index saves it to
    (store/saved_searchers.py) and answer a first query, instead of rebuilding it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "searcher.bin"
        if not searcher.save(path):
            return "- (not saved: exact)"
        reopened = VectorSearcher(dim, factory)
        _, wall, cpu = timed(lambda: (reopened.load(path), reopened.search_vectors(np.zeros((1, dim), np.float32), 1)))
        return f"{wall:.2f} s wall / {cpu:.2f} s CPU ({path.stat().st_size / 1e6:.0f} MB file)"


GLOBAL_HEADER = [
    "| references | index | search-time parameter | build s (wall / CPU) | B/ref | ms/query p50 / p99 / CPU p50 | recall@1 of exact | copy@1 |",
    "|---:|---|---|---|---:|---|---:|---:|",
]

LOCAL_HEADER = [
    "| references | index | nprobe | threads | build s (wall / CPU) | stored B/ref | in RAM B/ref | ms/query p50 / p99 / CPU p50 | recall (verified) | top-1 |",
    "|---:|---|---:|---:|---|---:|---:|---|---:|---:|",
]
LOCAL_BLOCK = 8192


@dataclass
class LocalSimulation:
    """Real reference features, real copies as queries, and the pool simulated references draw from."""

    branch: object
    real: dict  # the real references' chunk
    queries: list  # query features
    truth: np.ndarray  # (q,) the reference row each query copies
    pool: np.ndarray  # (p, 64) projected descriptors of the other photos
    pool_lists: np.ndarray  # (p,) their IVF lists
    noise: float  # per-dimension standard deviation of the simulated descriptors' noise
    seed: int = 0

    @classmethod
    def make(cls, images: Path, refs: int, queries: int, pool: int, seed: int = 0) -> "LocalSimulation":
        import faiss
        from PIL import Image

        from bench_local import COPY_EDITS, make_query
        from copyseek.local.branch import LocalBranch

        files = sorted(images.glob("*.jpg"))[: refs + pool]
        photos = []
        for f in tqdm(files, "decoding", unit="img"):
            image = Image.open(f).convert("RGB")
            image.thumbnail((800, 800))
            photos.append(np.asarray(image))
        rng = np.random.default_rng(seed)
        others = photos[refs:]
        donors = [Image.fromarray(p) for p in others[: len(others) // 2]]
        rows = rng.choice(refs, queries, replace=False)
        edited = [make_query(photos[r], COPY_EDITS[i % len(COPY_EDITS)], donors, rng) for i, r in enumerate(rows)]
        branch = LocalBranch()
        real = branch.pack([f for lo in tqdm(range(0, refs, 32), "references x32")
                            for f in branch.extract(photos[lo : min(refs, lo + 32)])])
        query_features = [f for lo in tqdm(range(0, queries, 16), "queries x16")
                          for f in branch.extract(edited[lo : lo + 16], query=True)]
        pool_features = [f for lo in tqdm(range(0, len(others), 32), "pool x32")
                         for f in branch.extract(others[lo : lo + 32])]
        pool = np.concatenate([f["desc"] for f in pool_features]).astype(np.float32)
        photo_of = np.repeat(np.arange(len(pool_features)), [len(f["desc"]) for f in pool_features])
        # median distance from a pool descriptor to its nearest one in another photo
        index = faiss.IndexFlatL2(pool.shape[1])
        index.add(pool)
        sample = rng.choice(len(pool), 2000, replace=False)
        distances, ids = index.search(pool[sample], 50)
        other = photo_of[ids] != photo_of[sample][:, None]
        nearest = distances[np.arange(len(sample)), other.argmax(1)]
        return cls(branch, real, query_features, rows.astype(np.int64), pool,
                   branch.codec.assign(pool).astype(np.uint16), float(np.sqrt(np.median(nearest) / pool.shape[1])), seed)

    def chunks(self, size: int):
        """The first `size` references as chunks: the real ones, then simulated blocks."""
        from copyseek.local.search import XY_SCALE

        codec = self.branch.codec
        keypoints = self.branch.sift.max_keypoints
        yield self.real
        done, b = len(self.real["counts"]), 0
        while done < size:
            n = min(LOCAL_BLOCK, size - done)
            rng = np.random.default_rng([self.seed, 1, b])
            source = rng.integers(len(self.pool), size=n * keypoints)
            desc = self.pool[source] + rng.standard_normal((len(source), self.pool.shape[1]), dtype=np.float32) * self.noise
            yield {
                "codes": codec.encode(desc),
                "lists": self.pool_lists[source],
                "xy": rng.integers(0, XY_SCALE + 1, size=(len(source), 2)).astype(np.uint16),
                "counts": np.full(n, keypoints, np.int32),
                "sizes": np.tile(np.array([[800, 600]], np.int32), (n, 1)),
            }
            done, b = done + n, b + 1


    def stored(self, size: int, cache: Path | None = None):
        """The first `size` references' arrays as chunks; with `cache`, as one chunk of .npy files
        memory-mapped from that folder, written there first if missing (simulating 1M references
        takes ~40 min of CPU, mostly PQ encoding)."""
        from numpy.lib.format import open_memmap

        from copyseek.local.search import CHUNK_ARRAYS

        blocks = tqdm(self.chunks(size), f"{size:,} references", total=1 + -(-(size - len(self.real["counts"])) // LOCAL_BLOCK))
        if cache is None:
            yield from blocks
            return
        path = {name: cache / f"{size}.{name}.npy" for name in CHUNK_ARRAYS}
        if not all(p.exists() for p in path.values()):
            cache.mkdir(parents=True, exist_ok=True)
            descriptors = int(self.real["counts"].sum()) + (size - len(self.real["counts"])) * self.branch.sift.max_keypoints
            rows = {"codes": descriptors, "lists": descriptors, "xy": descriptors, "counts": size, "sizes": size}
            out = {name: open_memmap(p.with_suffix(".tmp"), "w+", self.real[name].dtype, (rows[name], *self.real[name].shape[1:]))
                   for name, p in path.items()}
            done = {name: 0 for name in path}
            for chunk in blocks:  # streamed: the arrays are never whole in memory
                for name, array in out.items():
                    array[done[name] : done[name] + len(chunk[name])] = chunk[name]
                    done[name] += len(chunk[name])
            for name, array in out.items():
                array.flush()
                path[name].with_suffix(".tmp").rename(path[name])
        yield {name: np.load(p, mmap_mode="r") for name, p in path.items()}


def local_rows(sim: LocalSimulation, size: int, nprobes: list[int], splits: list[int], threads: tuple[int, ...] = (1,),
               cache: Path | None = None) -> list[str]:
    """One row per (split, threads, nprobe): the index is rebuilt for each split (`SearchParams.split`,
    0 = the default by collection size) on all `threads`, every query searched alone with each number
    of Faiss threads."""
    import faiss

    from copyseek.local.search import LocalSearcher
    from copyseek.local.sublists import auto_split

    searcher = LocalSearcher(sim.branch.codec, sim.branch.search_params, sim.branch.verify_params)
    for chunk in sim.stored(size, cache):
        searcher.add(chunk)
    rows = []
    for split in splits:
        searcher.params = replace(sim.branch.search_params, split=split)
        searcher.index = searcher.quantizer = None  # frees the previous split's index first
        faiss.omp_set_num_threads(max(threads))
        _, wall, cpu = timed(lambda: searcher.search(sim.queries[:1], 10))  # concatenates, builds the Faiss index
        print(f"{size:,} references, split {split}: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB "
              "(memory-mapped cache files included)", flush=True)
        kind = type(searcher.index).__name__
        ivf = hasattr(searcher.index, "nprobe")
        used = split or auto_split(len(searcher.codes), searcher.codec.nlist)
        if ivf:
            kind += f" {searcher.index.nlist:,} lists" + (f" (split {used}{', auto' if not split else ''})")
        in_ram = searcher.nbytes() + len(searcher.codes) * (searcher.codec.code_size + (8 if ivf else 0))
        default = searcher.index.nprobe if ivf else 0  # the effective default: split_nprobe when split
        for n_threads, nprobe in [(t, n) for t in threads for n in (sorted({default, *nprobes}) if ivf else [0])]:
            faiss.omp_set_num_threads(n_threads)
            if nprobe:
                searcher.index.nprobe = nprobe
            found, wall_ms, cpu_ms = [], [], []
            for query in sim.queries:
                (candidates,), w, c = timed(lambda: searcher.search([query], 10))
                found.append(candidates.rows)
                wall_ms.append(w * 1e3)
                cpu_ms.append(c * 1e3)
            recall = np.mean([t in f for t, f in zip(sim.truth, found)])
            top1 = np.mean([len(f) > 0 and f[0] == t for t, f in zip(sim.truth, found)])
            label = "-" if not nprobe else f"{nprobe}" + (" (default)" if nprobe == default else "")
            rows.append(
                f"| {size:,} | {kind} | {label} | {n_threads} | {wall:.1f} / {cpu:.1f} | {searcher.nbytes() / size:.0f} | {in_ram / size:.0f} | "
                f"{np.percentile(wall_ms, 50):.0f} / {np.percentile(wall_ms, 99):.0f} / {np.percentile(cpu_ms, 50):.0f} | "
                f"{recall:.3f} | {top1:.3f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("branch", choices=["global", "local", "both"])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="numbers of references, comma-separated")
    parser.add_argument("--real", type=Path, default=REAL, help="real descriptors (benchmarks/graph_descriptors.py describe)")
    parser.add_argument("--factories", nargs="*", default=["auto"], help="global: indexes besides Flat")
    parser.add_argument("--nprobe", default="", help="global: nprobe values besides the default, comma-separated")
    parser.add_argument("--search-threads", default="1", help="global: threads per query to time, comma-separated "
                        "(IVF fast-scan indexes; the machine's other cores should be idle)")
    parser.add_argument("--timing-queries", type=int, default=300, help="global: queries timed one at a time")
    parser.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "images")
    parser.add_argument("--local-sizes", default="", help="local: sizes if not --sizes (memory: ~15 KB per reference)")
    parser.add_argument("--local-refs", type=int, default=300, help="local: real photos among the references")
    parser.add_argument("--local-queries", type=int, default=100, help="local: copies of them as queries")
    parser.add_argument("--local-pool", type=int, default=247, help="local: other photos whose descriptors simulate references")
    parser.add_argument("--local-nprobe", default="", help="local: IVF nprobe values besides the default")
    parser.add_argument("--local-split", default="0", help="local: sub-lists per codec list to compare, comma-separated "
                        "(0 = the default by collection size)")
    parser.add_argument("--local-pair-matching", action="store_true",
                        help="local: verify with tentative matches within each pair (SearchParams.pair_matching)")
    parser.add_argument("--local-threads", default="1", help="local: Faiss threads per query to time, comma-separated "
                        "(the index is built on the most)")
    parser.add_argument("--local-cache", type=Path, help="local: folder keeping each size's simulated arrays (.npy), "
                        "written once, memory-mapped after")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    nprobes = [int(n) for n in args.nprobe.split(",") if n]
    print(f"# bench_scale {args.branch} sizes {sizes}; load average {os.getloadavg()[0]:.1f}\n", flush=True)
    if args.branch in ("global", "both"):
        data = RealLike.load(args.real)
        print(f"global: {len(data.originals)} real references + grown ones (mix {data.mix:.3f}), "
              f"{len(data.queries)} real edited copies as queries, dim {data.dim}; "
              f"auto: {', '.join(f'{s:,} -> {auto_factory(s, data.dim)}' for s in sizes)}\n")
        lines = list(GLOBAL_HEADER)
        for size in sizes:
            lines += global_rows(data, size, args.factories, nprobes, args.timing_queries,
                                 tuple(int(t) for t in args.search_threads.split(",")))
        print("\n".join(lines), flush=True)
    if args.branch in ("local", "both"):
        sim = LocalSimulation.make(args.images, args.local_refs, args.local_queries, args.local_pool)
        if args.local_pair_matching:
            sim.branch.search_params = replace(sim.branch.search_params, pair_matching=True)
        print(f"\nlocal: {args.local_refs} real references + simulated ones, {len(sim.queries)} real copies as "
              f"queries, pool of {len(sim.pool):,} descriptors, noise {sim.noise:.4f} per dimension\n")
        lines = list(LOCAL_HEADER)
        local_sizes = [int(s) for s in (args.local_sizes or args.sizes).split(",")]
        for size in local_sizes:
            lines += local_rows(sim, size, [int(n) for n in args.local_nprobe.split(",") if n],
                                [int(n) for n in args.local_split.split(",")],
                                tuple(int(t) for t in args.local_threads.split(",")), args.local_cache)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
