"""Dedup of a folder with known families: `copyseek dedup` against perceptual hashes, each method in its
own process (its own time and peak memory). The folder is the references/ of a benchmark built with
`copyseek bench build --variants-per-reference N` (families.csv gives the truth: the versions of one
photo form a family).

    copyseek bench build --images ../shared/images --out fam --holdout 0.3 --variants-per-reference 4 \
        --references 200 --copied 1 --copies 1 --distractor-queries 0 --background 0
    python benchmarks/bench_dedup.py fam [--methods copyseek copyseek-nolimit copyseek-anycover copyseek-pdq copyseek-noverify pdq phash dhash ahash whash]

A folder of flat graphics instead of photos (`synthetic_graphic`: logos, banners, slides, where SIFT
finds few keypoints), each saved as PNG and in four near-duplicate versions (JPEG re-encoding, resize,
a small crop, a padded border):

    python benchmarks/bench_dedup.py graphics --make-graphics 200     # writes graphics/references, families.csv
    python benchmarks/bench_dedup.py graphicsdev --make-graphics 200 --seed 1   # another draw: a dev folder
    python benchmarks/bench_dedup.py graphics

Scores are pairwise precision, recall and F1 over groups (every method's duplicate pairs closed into
connected components, as `copyseek dedup` reports groups). Baselines: PDQ (pdqhash, ThreatExchange's
match threshold 31 of 256 bits) and the hashes imagededup uses, from imagehash (imagededup itself needs
torchvision, which copyseek does not install), at imagededup's default threshold of 10 of 64 bits.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HASH_THRESHOLDS = {"pdq": 31, "phash": 10, "dhash": 10, "ahash": 10, "whash": 10}


def hash_bits(method: str, path: Path) -> np.ndarray:
    from PIL import Image

    if method == "pdq":
        import pdqhash

        rgb = np.asarray(Image.open(path).convert("RGB"))
        bits, _ = pdqhash.compute(rgb)
        return np.asarray(bits, bool)
    import imagehash

    function = {"phash": imagehash.phash, "dhash": imagehash.dhash, "ahash": imagehash.average_hash, "whash": imagehash.whash}[method]
    return np.asarray(function(Image.open(path)).hash, bool).ravel()


def hash_groups(method: str, paths: list[Path]) -> np.ndarray:
    """Components of the pairs within the method's Hamming threshold (blockwise, never n x n at once)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    bits = np.stack([hash_bits(method, p) for p in paths]).astype(np.float32)
    i_all, j_all = [], []
    for start in range(0, len(bits), 2048):
        block = bits[start : start + 2048]
        distance = block @ (1 - bits).T + (1 - block) @ bits.T  # Hamming distance
        i, j = np.nonzero(distance <= HASH_THRESHOLDS[method])
        i_all.append(i + start)
        j_all.append(j)
    i, j = np.concatenate(i_all), np.concatenate(j_all)
    keep = i != j
    adjacency = sp.csr_matrix((np.ones(keep.sum()), (i[keep], j[keep])), shape=(len(paths),) * 2)
    _, labels = connected_components(adjacency, directed=False)
    sizes = np.bincount(labels)
    return np.where(sizes[labels] > 1, labels, -1)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def make_graphics(bench: Path, n: int, seed: int = 0) -> None:
    """bench/references/: n graphics, each as gNNNN_v0.png and four versions v1-v4; bench/families.csv."""
    from PIL import Image

    from copyseek.synthetic import synthetic_graphic

    rng = np.random.default_rng(seed)
    folder = bench / "references"
    folder.mkdir(parents=True, exist_ok=False)
    rows = []
    for g in range(n):
        original = synthetic_graphic(rng, int(rng.integers(240, 480)), int(rng.integers(180, 360)))
        w, h = original.size
        versions = [
            (original, "png", {}),
            (original, "jpg", {"quality": int(rng.integers(40, 91))}),
            (original.resize((int(w * rng.uniform(0.5, 0.9)), int(h * rng.uniform(0.5, 0.9)))), "jpg", {"quality": 85}),
            (original.crop((int(w * rng.uniform(0.02, 0.08)), int(h * rng.uniform(0.02, 0.08)), w, h)), "jpg", {"quality": 75}),
        ]
        pad = int(min(w, h) * rng.uniform(0.03, 0.08))
        padded = Image.new("RGB", (w + 2 * pad, h + 2 * pad), tuple(int(c) for c in rng.integers(0, 256, 3)))
        padded.paste(original, (pad, pad))
        versions.append((padded, "png", {}))
        for v, (image, suffix, options) in enumerate(versions):
            name = f"g{g:04d}_v{v}"
            image.save(folder / f"{name}.{suffix}", **options)
            rows.append((name, f"g{g:04d}"))
    with open(bench / "families.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["reference_id", "family"])
        writer.writerows(rows)
    print(f"{len(rows)} images of {n} graphics written to {folder}")


def run_one(method: str, folder: Path) -> dict:
    from copyseek.graph.dedup import DedupParams
    from copyseek.graph.folders import MIN_COVER, PDQ_MATCH_DISTANCE, dedup_folder

    start = time.perf_counter()
    if method.startswith("copyseek"):
        out = Path(os.environ.get("TMPDIR", "/tmp")) / f"dedup-{os.getpid()}.json"
        # copyseek: the command's defaults (SIFT + RANSAC on the doubtful pairs, inliers spanning
        # >= MIN_COVER of both images, merge limit); copyseek-anycover: any span and no merge limit (the
        # default before session 27);
        # copyseek-pdq: PDQ hashes first (--hash-distance 31); copyseek-noverify: no verification
        # copyseek-nolimit: plain connected components (merge_limit 0, the default before session 27)
        hash_distance = PDQ_MATCH_DISTANCE if method == "copyseek-pdq" else None
        min_cover = 0.0 if method == "copyseek-anycover" else MIN_COVER
        params = DedupParams(merge_limit=0) if method in ("copyseek-nolimit", "copyseek-anycover") else DedupParams()
        report = dedup_folder(folder, out, params=params, verify=method != "copyseek-noverify",
                              hash_distance=hash_distance, min_cover=min_cover, progress=False)
        names, labels = report.names, report.groups.labels
        extra = {"verified": report.groups.verified, "confirmed_by": report.confirmed_by, "refused": report.groups.refused}
    else:
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        names = [p.relative_to(folder).as_posix() for p in paths]
        labels = hash_groups(method, paths)
        extra = {}
    return {
        "method": method,
        "names": list(names),
        "labels": [int(x) for x in labels],
        "seconds": time.perf_counter() - start,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--methods", nargs="+",
                        default=["copyseek", "copyseek-nolimit", "copyseek-anycover", "copyseek-pdq", "copyseek-noverify", "pdq", "phash", "dhash", "ahash", "whash"])
    parser.add_argument("--make-graphics", type=int, metavar="N", help="write a folder of N flat graphics x 5 versions and stop")
    parser.add_argument("--seed", type=int, default=0, help="--make-graphics' draw (another seed: another folder, e.g. a dev one)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.bench / "references"
    if args.make_graphics:
        make_graphics(args.bench, args.make_graphics, args.seed)
        return
    if args.one:
        print(json.dumps(run_one(args.one, folder)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_graph import pairwise_prf, table

    with open(args.bench / "families.csv", newline="") as handle:
        family_of = {row["reference_id"]: row["family"] for row in csv.DictReader(handle)}
    rows = []
    for method in args.methods:
        done = subprocess.run([sys.executable, __file__, str(args.bench), "--one", method], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        families = sorted(set(family_of.values()))
        truth = np.array([families.index(family_of[Path(n).stem]) for n in result["names"]])
        p, r, f1 = pairwise_prf(np.array(result["labels"]), truth)
        rows.append({"method": method, "images": len(truth), "P": p, "R": r, "F1": f1, "seconds": result["seconds"],
                     "peak GB": result["peak_gb"], "verified (doubtful, confirmed)": str(result.get("verified", "-")),
                     "confirmed by": ", ".join(f"{name} {n}" for name, n in result.get("confirmed_by", {}).items()) or "-",
                     "refused by the merge limit": result.get("refused", "-")})
    print(table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
