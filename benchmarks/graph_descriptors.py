"""The descriptor sets the graph benchmarks run on: real SSCD descriptors of our photos and of edited
versions of them (families), grown to 10k / 100k by a documented synthetic step.

Real part (`describe`): every photo of --images and --variants edited versions of it (copyseek's
DISC21-style edits at --severity), described by SSCD (square:320). Family f = photo f. With
--donors N, N photos (a seeded draw) are set aside as donors and never head a family; every edit
chain may then draw the composite edits (paste, overlay, collage, blend), each edit with 4 donors,
as `copyseek bench build` makes its queries. Without donors, a family is exactly one photo's versions.

Synthetic part (`grow`): a new family is made from a real one, its members keeping their real edit
offsets: member' = normalise(c' + (member - original)), where the new original c' = normalise(
original + mix * (unit Gaussian direction)), so that new families are as far from each other and from
the real ones as real photos are (mix is set so that the new originals' cosine to their source original
matches the cosine between two different real photos' nearest neighbours). Everything is seeded.

    python benchmarks/graph_descriptors.py describe --images ../shared/images --out /work/scratch/graph/real.npz
    python benchmarks/graph_descriptors.py describe --variants 20 --severity 1.6 --donors 64 --out real10k.npz
    python benchmarks/graph_descriptors.py grow /work/scratch/graph/real.npz --size 100000 --out big.npz
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def describe(
    images: Path, out: Path, variants: int, severity: float, seed: int, limit: int | None, n_donors: int = 0
) -> None:
    from PIL import Image

    from copyseek.registry import make_branch
    from copyseek.edits import random_edits
    from copyseek.io.images import ImageFile, find_images, read_image
    from copyseek.progress import progress_bar

    files, _ = find_images(images)
    files = sorted(files, key=lambda f: f.path.name)
    donor_rows = set(np.random.default_rng([seed, 104729]).permutation(len(files))[:n_donors].tolist())
    donors = [thumbnail(read_image(ImageFile(files[i].id, files[i].path), min_side=320).pixels) for i in sorted(donor_rows)]
    files = [file for i, file in enumerate(files) if i not in donor_rows][:limit]
    branch = make_branch("global", {"threads": 1})
    vectors, family, original, names = [], [], [], []
    partial = out.with_suffix(".partial.npz")
    if partial.is_file():  # resume an interrupted run (describing takes long on shared cores)
        done = load(partial)
        vectors, family = [done["vectors"]], list(done["family"])
        original, names = list(done["original"]), list(done["names"])
    first = int(max(family)) + 1 if family else 0
    start = time.perf_counter()
    with progress_bar(len(files) * (1 + variants), "describing") as bar:
        bar.update(min(first, len(files)) * (1 + variants))
        for f, file in enumerate(files):
            if f < first:
                continue
            try:
                photo = read_image(ImageFile(file.id, file.path), min_side=320).pixels
            except Exception as exc:  # a bad photo is left out of the set, with a line
                print(f"skipped {file.path}: {exc}")
                continue
            rng = np.random.default_rng([seed, f])
            pil = thumbnail(photo)
            batch, edit_names = [np.asarray(pil)], ["original"]
            for _ in range(variants):
                picked = rng.choice(len(donors), size=min(4, len(donors)), replace=False) if donors else []
                edited, applied = random_edits(pil, rng, severity=severity, donors=[donors[i] for i in picked])
                batch.append(np.asarray(edited))
                edit_names.append("|".join(applied))
            vectors.append(branch.embed(batch))
            family += [f] * len(batch)
            original += [True] + [False] * variants
            names += [f"{file.path.name}:{e}" for e in edit_names]
            bar.update(len(batch))
            if f % 20 == 19:
                save(partial, vectors, family, original, names)
    save(out, vectors, family, original, names)
    partial.unlink(missing_ok=True)
    print(f"{len(family)} descriptors of {len(set(family))} families in {time.perf_counter() - start:.0f} s -> {out}")


def thumbnail(pixels: np.ndarray) -> "Image.Image":
    """The photo at 640 pixels on its longest side at most, as the edits get it."""
    from PIL import Image

    pil = Image.fromarray(pixels)
    pil.thumbnail((640, 640))
    return pil


def save(path: Path, vectors: list, family: list, original: list, names: list) -> None:
    np.savez(
        path,
        vectors=np.concatenate(vectors).astype(np.float32),
        family=np.asarray(family, np.int64),
        original=np.asarray(original),
        names=np.asarray(names),
    )


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def grow(real: dict, size: int, seed: int, mix: float | None = None) -> dict:
    """`size` descriptors: the real ones, then synthetic families made as the module docstring says.
    Returns vectors, family, original, synthetic (bool) and mix."""
    rng = np.random.default_rng(seed)
    vectors, family, original = real["vectors"], real["family"], real["original"]
    if size < len(vectors):  # a smaller set: the first real families, whole
        keep = family < family[size]  # families are contiguous rows
        vectors, family, original = vectors[keep], family[keep], original[keep]
    n_fam = int(family.max()) + 1
    heads = np.flatnonzero(original)
    head_of = np.zeros(n_fam, np.int64)
    head_of[family[heads]] = heads
    if mix is None:
        # nearest different real photo: its cosine is what two unrelated families look like here
        sims = vectors[heads] @ vectors[heads].T
        np.fill_diagonal(sims, -1)
        target = float(np.median(sims.max(1)))
        # for a Gaussian direction g nearly orthogonal to the original: cos(o, o + m g) = 1 / sqrt(1 + m^2)
        mix = float(np.sqrt(1 / target**2 - 1))
    present = np.unique(family)  # a photo that could not be read left its family number unused
    out_v, out_f, out_o = [vectors], [family], [original]
    total, next_family = len(vectors), n_fam
    while total < size:
        source = int(present[rng.integers(len(present))])
        members = np.flatnonzero(family == source)
        head = vectors[head_of[source]]
        center = unit(head + mix * unit(rng.standard_normal(head.shape)))
        new = unit(center + (vectors[members] - head))
        take = min(len(members), size - total)
        out_v.append(new[:take])
        out_f.append(np.full(take, next_family))
        out_o.append(original[members][:take])
        total += take
        next_family += 1
    synthetic = np.zeros(total, bool)
    synthetic[len(vectors) :] = True
    return {
        "vectors": np.concatenate(out_v),
        "family": np.concatenate(out_f),
        "original": np.concatenate(out_o),
        "synthetic": synthetic,
        "mix": mix,
    }


def load(path: Path) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("describe")
    d.add_argument("--images", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "images")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--variants", type=int, default=5)
    d.add_argument("--severity", type=float, default=1.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--limit", type=int, default=None)
    d.add_argument("--donors", type=int, default=0, help="photos set aside for composite edits (0: none)")
    g = sub.add_parser("grow")
    g.add_argument("real", type=Path)
    g.add_argument("--size", type=int, required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "describe":
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        describe(args.images, args.out, args.variants, args.severity, args.seed, args.limit, args.donors)
    else:
        grown = grow(load(args.real), args.size, args.seed)
        np.savez(args.out, **grown)
        print(f"{len(grown['family'])} descriptors, {grown['family'].max() + 1} families, mix {grown['mix']:.3f} -> {args.out}")


if __name__ == "__main__":
    main()
