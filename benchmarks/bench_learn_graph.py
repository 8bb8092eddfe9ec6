"""Issue 15: learning on the graph, measured on benchmark families (prints markdown tables).

The collection: `copyseek bench build --variants-per-reference 4` on photos kept out of every
evaluation benchmark (/work/scratch/bench/std/holdout.txt): 150 families of 5 images (a photo and 4
edited versions); families.csv is the truth. Descriptors are computed once (`describe`) and cached:

    python benchmarks/bench_learn_graph.py describe FAM_BENCH --out CACHE.npz
    python benchmarks/bench_learn_graph.py mining CACHE.npz       # precision of mined pairs
    python benchmarks/bench_learn_graph.py lp CACHE.npz           # label propagation as a training loop
    python benchmarks/bench_learn_graph.py gcn CACHE.npz          # GCN cleaning of wrong reports

CACHE.npz holds: names (n,), family (n,) ints, sscd (n, 512), small (n, 512) copyseek-small
descriptors, trunk (n, 256) copyseek-small's pooled trunk features (its projection's input).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def describe(bench: Path, out: Path) -> None:
    import torch

    from copyseek.describe.models import load_model
    from copyseek.io.images import load_rgb
    from copyseek.learn.from_onnx import descriptor_from_onnx
    from copyseek.describe.models import model_path
    from copyseek.learn.mining import square_photo
    from copyseek.progress import progress_bar

    torch.set_num_threads(1)
    with open(bench / "families.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [r["reference_id"] for r in rows]
    families = sorted({r["family"] for r in rows})
    family = np.array([families.index(r["family"]) for r in rows])
    paths = [next((bench / "references").glob(f"{name}.*")) for name in names]
    sscd = load_model("sscd", threads=1)
    small = descriptor_from_onnx(model_path("copyseek-small")[1])
    out_sscd, out_small, out_trunk = [], [], []
    started = time.process_time()
    with torch.no_grad(), progress_bar(len(paths), "describing") as bar:
        for start in range(0, len(paths), 16):
            part = paths[start : start + 16]
            out_sscd.append(sscd.embed(np.stack([sscd.preprocess.apply(load_rgb(p, sscd.preprocess.size)) for p in part])))
            x = torch.from_numpy(np.stack([square_photo(p, 160) for p in part])).permute(0, 3, 1, 2).float()
            trunk = small.pool(small.backbone((x - small.mean) / small.std))
            out_trunk.append(trunk.numpy())
            out_small.append(torch.nn.functional.normalize(small.projection(trunk), dim=1).numpy())
            bar.update(len(part))
    np.savez(out, names=np.array(names), family=family, sscd=np.concatenate(out_sscd),
             small=np.concatenate(out_small), trunk=np.concatenate(out_trunk))
    print(f"{len(names)} images, {len(families)} families, {time.process_time() - started:.0f} s CPU -> {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe")
    p.add_argument("bench", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "describe":
        describe(args.bench, args.out)


if __name__ == "__main__":
    main()
