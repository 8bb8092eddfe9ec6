"""The local branch with each keypoint descriptor, side by side: describe cost, storage, and
end-to-end accuracy on calibrated benchmarks.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_local_descriptors.py cost --images ../shared/images --photos 40
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_local_descriptors.py e2e bench/std bench/seed1 bench/e2 bench/e3 bench/e4

`cost`: for each descriptor, CPU milliseconds per image to extract a reference (448 px, 320
keypoints) and a query (640 px, 1024 keypoints, mirrored descriptors too), in one thread, from
decoded RGB to projected descriptors; and stored bytes per reference (PQ codes, lists, positions).
CPU time, not wall time, so that a busy machine does not distort the comparison.

`e2e`: on each benchmark, `copyseek bench run` of the local pipeline with each descriptor in one
run (muAP, recall@P90, bytes per reference; no normalisation), then the describe cost measured on
the benchmark's own first `--sample` references and queries (wall and CPU ms per image, one
thread); one table per benchmark and one of muAP / R@P90 across benchmarks with their mean.
The patch-level comparison is `copyseek bench patches`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from copyseek.io.images import find_images, load_rgb
from copyseek.local.branch import LocalBranch

PIPELINES = {"rootsift": "local-rootsift", "mkd": "local-mkd", "kdp": "local-kdp"}
"""Descriptor -> the bench pipeline that indexes with it (copyseek.bench.run.PIPELINES)."""


def describe_ms(branch: LocalBranch, photos: list[np.ndarray], query: bool) -> tuple[float, float]:
    """(wall, CPU) milliseconds per image of branch.extract on decoded photos."""
    wall, cpu = time.perf_counter(), time.process_time()
    branch.extract(photos, query=query)
    return 1000 * (time.perf_counter() - wall) / len(photos), 1000 * (time.process_time() - cpu) / len(photos)


def first_photos(folder: Path, n: int) -> list[np.ndarray]:
    return [load_rgb(f.path) for f in sorted(find_images(folder)[0], key=lambda f: f.path)[:n]]


def cost(args: argparse.Namespace) -> None:
    photos = first_photos(Path(args.images), args.photos)
    print("| descriptor | reference ms / image | query ms / image | bytes / reference | keypoints / reference |")
    print("|---|---|---|---|---|")
    for name in args.descriptors:
        branch = LocalBranch(threads=1, descriptor=name)
        branch.extract(photos[:1], query=True)  # load weights, warm up
        reference_ms = describe_ms(branch, photos, query=False)[1]
        query_ms = describe_ms(branch, photos, query=True)[1]
        chunk = branch.pack(branch.extract(photos))
        stored = sum(array.nbytes for array in chunk.values()) / len(photos)
        keypoints = chunk["counts"].mean()
        print(f"| {branch.describer.name} | {reference_ms:.0f} | {query_ms:.0f} | {stored:.0f} | {keypoints:.0f} |", flush=True)


def e2e(args: argparse.Namespace) -> None:
    from copyseek.bench.run import run_benchmark

    summary: dict[str, list[str]] = {name: [] for name in args.descriptors}
    means: dict[str, list[tuple[float, float]]] = {name: [] for name in args.descriptors}
    for bench in args.benches:
        results = run_benchmark(bench, [PIPELINES[name] for name in args.descriptors], workdir=args.workdir, progress=False)
        references = first_photos(bench / "references", args.sample)
        queries = first_photos(bench / "queries", args.sample)
        print(f"\n{bench}:\n")
        print(
            "| descriptor | muAP | recall@P90 | accuracy@1 | bytes/reference | reference ms/image (CPU) "
            "| query ms/image (CPU) | queries/s (bench run) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name, result in zip(args.descriptors, results):
            branch = LocalBranch(threads=1, descriptor=name)
            branch.extract(references[:1], query=True)  # load weights, warm up
            ref_wall, ref_cpu = describe_ms(branch, references, query=False)
            query_wall, query_cpu = describe_ms(branch, queries, query=True)
            m = result.metrics
            print(
                f"| {branch.describer.name} | {m.micro_ap:.4f} | {m.recall_at_p90:.4f} | {m.accuracy_at_1:.4f} | "
                f"{result.bytes_per_reference:.0f} | {ref_wall:.0f} ({ref_cpu:.0f}) | {query_wall:.0f} ({query_cpu:.0f}) | "
                f"{result.query_rate:.1f} |",
                flush=True,
            )
            summary[name].append(f"{m.micro_ap:.3f} / {m.recall_at_p90:.3f}")
            means[name].append((m.micro_ap, m.recall_at_p90))
    print("\nmuAP / R@P90:\n")
    print("| descriptor | " + " | ".join(b.name for b in args.benches) + " | mean |")
    print("|---|" + "---|" * (len(args.benches) + 1))
    for name in args.descriptors:
        mean = np.mean(means[name], axis=0)
        print(f"| {name} | " + " | ".join(summary[name]) + f" | {mean[0]:.3f} / {mean[1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("cost", help="describe cost and storage on a photo folder")
    c.add_argument("--images", required=True)
    c.add_argument("--photos", type=int, default=40)
    e = sub.add_parser("e2e", help="the local pipeline with each descriptor on benchmarks")
    e.add_argument("benches", type=Path, nargs="+")
    e.add_argument("--sample", type=int, default=30, help="references and queries timed per benchmark")
    e.add_argument("--workdir", type=Path, default=None, help="scratch folder for the indexes")
    for p in (c, e):
        p.add_argument("--descriptors", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.what == "cost":
        cost(args)
    else:
        e2e(args)


if __name__ == "__main__":
    main()
