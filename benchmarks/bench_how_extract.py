"""Extraction time of the HOW and RootSIFT local branches on one thread, measured interleaved (image by
image, each branch in turn, twice) so that both see the same machine load:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_how_extract.py bench/std
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from copyseek.io.images import find_images, load_rgb
from copyseek.registry import make_branch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="a benchmark made by copyseek bench build")
    parser.add_argument("--images", type=int, default=20, help="references timed (default 20)")
    args = parser.parse_args()
    files = find_images(args.bench / "references")[0][: args.images]
    branches = {"local": make_branch("local", {"threads": 1}), "how": make_branch("how", {"threads": 1})}
    images = {name: [load_rgb(f.path, b.decode_side) for f in files] for name, b in branches.items()}
    seconds = dict.fromkeys(branches, 0.0)
    for _ in range(2):
        for i in range(len(files)):
            for name, branch in branches.items():
                start = time.perf_counter()
                branch.extract([images[name][i]])
                seconds[name] += time.perf_counter() - start
    for name, total in seconds.items():
        print(f"{name}: {1000 * total / (2 * len(files)):.1f} ms/image")


if __name__ == "__main__":
    main()
