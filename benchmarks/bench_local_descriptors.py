"""Describe cost and storage of the local branch with each keypoint descriptor, side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_local_descriptors.py --images ../shared/images --photos 40

For each descriptor: CPU milliseconds per image to extract a reference (448 px, 320 keypoints) and
a query (640 px, 1024 keypoints, mirrored descriptors too), in one thread, from decoded RGB to
projected descriptors; and stored bytes per reference (PQ codes, lists, positions). CPU time, not
wall time, so that a busy machine does not distort the comparison. Accuracy is measured by
`copyseek bench run ... --pipelines local local-mkd local-kdp` and `copyseek bench patches`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from copyseek.io.images import find_images, load_rgb
from copyseek.local.branch import LocalBranch


def cpu_ms_per_image(branch: LocalBranch, photos: list[np.ndarray], query: bool) -> float:
    start = time.process_time()
    branch.extract(photos, query=query)
    return 1000 * (time.process_time() - start) / len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--descriptors", nargs="+", default=["rootsift", "mkd", "kdp"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    files = sorted(find_images(Path(args.images))[0], key=lambda f: f.path)[: args.photos]
    photos = [load_rgb(f.path) for f in files]
    print("| descriptor | reference ms / image | query ms / image | bytes / reference | keypoints / reference |")
    print("|---|---|---|---|---|")
    for name in args.descriptors:
        branch = LocalBranch(threads=1, descriptor=name)
        branch.extract(photos[:1], query=True)  # load weights, warm up
        reference_ms = cpu_ms_per_image(branch, photos, query=False)
        query_ms = cpu_ms_per_image(branch, photos, query=True)
        chunk = branch.pack(branch.extract(photos))
        stored = sum(array.nbytes for array in chunk.values()) / len(photos)
        keypoints = chunk["counts"].mean()
        print(f"| {branch.describer.name} | {reference_ms:.0f} | {query_ms:.0f} | {stored:.0f} | {keypoints:.0f} |", flush=True)


if __name__ == "__main__":
    main()
