"""Extraction time of the HOW and RootSIFT local branches on one thread, measured interleaved (image by
image, each branch in turn, twice) so that both see the same machine load:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_how_extract.py bench/std
"""

import sys
import time
from pathlib import Path
from copyseek.registry import make_branch
from copyseek.io.images import find_images, load_rgb
bench = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/std")
files = find_images(bench / "references")[0][:20]
local = make_branch("local", {"threads": 1}); how = make_branch("how", {"threads": 1})
imgs = {n: [load_rgb(f.path, b.decode_side) for f in files] for n, b in (("local", local), ("how", how))}
t = {"local": 0.0, "how": 0.0}
for rep in range(2):
    for i in range(len(files)):
        for n, b in (("local", local), ("how", how)):
            s = time.perf_counter(); b.extract([imgs[n][i]]); t[n] += time.perf_counter() - s
for n in t: print(n, f"{1000 * t[n] / (2 * len(files)):.1f} ms/image")
