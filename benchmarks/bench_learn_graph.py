"""Issue 15: learning on the graph, measured on benchmark families (prints markdown tables).

The collection: `copyseek bench build --variants-per-reference 4` on photos kept out of every
evaluation benchmark (/work/scratch/bench/std/holdout.txt): 150 families of 5 images (a photo and 4
edited versions); families.csv is the truth. Descriptors are computed once (`describe`) and cached:

    python benchmarks/bench_learn_graph.py describe FAM_BENCH --out CACHE.npz
    python benchmarks/bench_learn_graph.py mining CACHE.npz       # precision of mined pairs
    python benchmarks/bench_learn_graph.py lp CACHE.npz           # label propagation as a training loop
    python benchmarks/bench_learn_graph.py lp-graph CACHE.npz --setting 10 0.5 0.9   # propagation alone
    python benchmarks/bench_learn_graph.py lp-network FAM_BENCH --families test --workdir runs/lpnet
                                                                  # the loop training the whole network
                                                                  # (`copyseek train --pseudo-labels lp`)
    python benchmarks/bench_learn_graph.py split-photos holdout.txt --a partA.txt --b partB.txt
                                                                  # photos for a start model (A) and for
                                                                  # families it never saw (B), --init
    python benchmarks/bench_learn_graph.py gcn CACHE.npz          # GCN cleaning of wrong reports
    python benchmarks/bench_learn_graph.py gcn CACHE.npz --reports 20 --draws 0 --gcn-k 2 5 10   # on families
                                                                  # of 21 (--variants-per-reference 20); draw 0 picks k
    python benchmarks/bench_learn_graph.py gcn CACHE.npz --reports 20 --draws 0 --gcn-k 5 21 --context 0 2 5 10
                                                                  # + other families' clean images as negatives
    python benchmarks/bench_learn_graph.py gcn CACHE.npz --reports 20 --gcn-k --collection-gcn-k 10 --collection-graph reported
                                                                  # one multi-class GCN over the collection (triage
                                                                  # --relevance collection) and its weighted prototypes

CACHE.npz holds: names (n,), family (n,) ints, small (n, 512) copyseek-small descriptors, trunk
(n, 256) copyseek-small's pooled trunk features (its projection's input), and with --sscd sscd (n, 512).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np


def describe(bench: Path, out: Path, sscd: bool, views: int = 0) -> None:
    """Cache copyseek-small's descriptors and trunk features (and SSCD's with `sscd`) of the family images,
    and with `views` the trunk features of that many random crops and flips of each (the augmentation of
    the LP benchmark's training)."""
    import torch

    from copyseek.describe.models import load_model, model_path
    from copyseek.io.images import load_rgb
    from copyseek.learn.from_onnx import descriptor_from_onnx
    from copyseek.learn.mining import square_photo
    from copyseek.progress import progress_bar

    torch.set_num_threads(1)
    with open(bench / "families.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [r["reference_id"] for r in rows]
    families = sorted({r["family"] for r in rows})
    family = np.array([families.index(r["family"]) for r in rows])
    paths = [next((bench / "references").glob(f"{name}.*")) for name in names]
    teacher = load_model("sscd", threads=1) if sscd else None
    small = descriptor_from_onnx(model_path("copyseek-small")[1])
    arrays: dict[str, list[np.ndarray]] = {"sscd": [], "small": [], "trunk": []}
    started = time.process_time()
    with torch.no_grad(), progress_bar(len(paths), "describing") as bar:
        for start in range(0, len(paths), 16):
            part = paths[start : start + 16]
            if teacher is not None:
                size = teacher.preprocess.size
                arrays["sscd"].append(teacher.embed(np.stack([teacher.preprocess.apply(load_rgb(p, size)) for p in part])))
            x = torch.from_numpy(np.stack([square_photo(p, 160) for p in part])).permute(0, 3, 1, 2).float()
            trunk = small.pool(small.backbone((x - small.mean) / small.std))
            arrays["trunk"].append(trunk.numpy())
            arrays["small"].append(torch.nn.functional.normalize(small.projection(trunk), dim=1).numpy())
            bar.update(len(part))
    extra = {"trunk_views": augmented_trunk(small, paths, views)} if views else {}
    np.savez(out, names=np.array(names), family=family, **{k: np.concatenate(v) for k, v in arrays.items() if v}, **extra)
    print(f"{len(names)} images, {len(families)} families, {time.process_time() - started:.0f} s CPU -> {out}")


def augmented_trunk(small, paths: list[Path], views: int) -> np.ndarray:
    """(views, n, 256) trunk features of `views` random augmentations of each photo at square:160: the
    paper's kind (a random crop of 50-100% of the area, aspect 3:4-4:3, flipped half the time), seed 0."""
    import torch
    from PIL import Image

    from copyseek.io.images import load_rgb
    from copyseek.learn.data import square
    from copyseek.progress import progress_bar

    rng = np.random.default_rng(0)

    def augment(path: Path) -> np.ndarray:
        image = Image.fromarray(load_rgb(path, 320))
        area, aspect = rng.uniform(0.5, 1.0) * image.width * image.height, np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w, h = min(image.width, round((area * aspect) ** 0.5)), min(image.height, round((area / aspect) ** 0.5))
        left, top = rng.integers(0, image.width - w + 1), rng.integers(0, image.height - h + 1)
        image = image.crop((left, top, left + w, top + h))
        return square(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image, 160)

    out = np.zeros((views, len(paths), small.projection.in_features), np.float32)
    with torch.no_grad(), progress_bar(len(paths) * views, "augmented views") as bar:
        for v in range(views):
            for start in range(0, len(paths), 16):
                part = paths[start : start + 16]
                x = torch.from_numpy(np.stack([augment(p) for p in part])).permute(0, 3, 1, 2).float()
                out[v, start : start + len(part)] = small.pool(small.backbone((x - small.mean) / small.std)).numpy()
                bar.update(len(part))
    return out


def load(cache: Path) -> dict:
    data = np.load(cache)
    return {k: data[k] for k in data.files}


def fmt(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


# ---------------------------------------------------------------- mining


def mining(cache: Path) -> None:
    from copyseek.learn.mining import KnnMiner, ManifoldMiner, MiningParams, mining_precision

    data = load(cache)
    family = data["family"]
    print(f"Mining precision on {len(family)} images ({family.max() + 1} families of {np.bincount(family).max()})\n")
    print("| descriptors | miner | k_pos / k_neg / graph k / eucl. k / pool | anchors | positives | precision + | negatives | precision - | CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    settings = [MiningParams(), MiningParams(k_positive=2), MiningParams(k_positive=4), MiningParams(euclidean_k=2),
                MiningParams(manifold_pool=15), MiningParams(anchors="all")]
    for descriptors in [d for d in ("small", "sscd") if d in data]:
        for params in settings:
            for miner in (ManifoldMiner(params), KnnMiner(params)):
                started = time.process_time()
                mined = miner.mine(data[descriptors])
                seconds = time.process_time() - started
                p, n = mining_precision(mined, family)
                r = params.resolved(len(family))
                print(f"| {descriptors} | {type(miner).__name__.removesuffix('Miner').lower()} | {r.k_positive} / "
                      f"{r.k_negative} / {r.graph_k} / "
                      f"{f'{r.euclidean_k} / {r.manifold_pool}' if isinstance(miner, ManifoldMiner) else '- / -'} | "
                      f"{params.anchors} ({len(mined.anchors)}) | {(mined.positives >= 0).sum()} | {fmt(p)} | "
                      f"{(mined.negatives >= 0).sum()} | {fmt(n)} | {seconds:.1f} |")


# ---------------------------------------------------------------- label propagation as a training loop


class Head:
    """copyseek-small's projection (trunk features -> unit descriptor), trainable, with a cosine
    classifier over the families: the network of the LP benchmark (the trunk is frozen: CPU)."""

    def __init__(self, n_classes: int, seed: int):
        import torch

        from copyseek.describe.models import model_path
        from copyseek.learn.from_onnx import descriptor_from_onnx

        torch.manual_seed(seed)
        self.projection = descriptor_from_onnx(model_path("copyseek-small")[1]).projection
        self.classifier = torch.nn.Linear(self.projection.out_features, n_classes, bias=False)

    def describe(self, trunk: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.nn.functional.normalize(self.projection(torch.from_numpy(trunk)), dim=1).numpy()

    def set_prototypes(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Classifier weights = normalised mean descriptor of each class's labelled images."""
        import torch

        weights = np.zeros((self.classifier.out_features, vectors.shape[1]), np.float32)
        np.add.at(weights, labels[labels >= 0], vectors[labels >= 0])
        weights /= np.maximum(np.linalg.norm(weights, axis=1, keepdims=True), 1e-12)
        with torch.no_grad():
            self.classifier.weight.copy_(torch.from_numpy(weights))

    def fit(self, trunk: np.ndarray, targets: np.ndarray, weights: np.ndarray, epochs: int, seed: int,
            lr: float = 1e-3, views: np.ndarray | None = None) -> None:
        """Weighted cross-entropy (the paper's loss: per-image weight x class weight), cosine logits / 0.1,
        Adam, batches of 128. trunk (n, d); views (V, n, d) augmented versions of the images or None: each
        epoch shows every image as one of its V + 1 versions (the original included), at random."""
        import torch
        import torch.nn.functional as F

        keep = (targets >= 0) & (weights > 0)
        versions = trunk[None] if views is None else np.concatenate([trunk[None], views])
        x = torch.from_numpy(versions[:, keep].astype(np.float32))
        y, w = torch.from_numpy(targets[keep].astype(np.int64)), torch.from_numpy(weights[keep].astype(np.float32))
        params = [*self.projection.parameters(), *self.classifier.parameters()]
        optimiser = torch.optim.Adam(params, lr=lr)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            version = torch.randint(len(x), (len(y),), generator=generator)
            for batch in torch.randperm(len(y), generator=generator).split(128):
                logits = F.normalize(self.projection(x[version[batch], batch]), dim=1) @ F.normalize(self.classifier.weight, dim=1).T
                loss = (F.cross_entropy(logits / 0.1, y[batch], reduction="none") * w[batch]).sum() / w[batch].sum()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    def predict(self, trunk: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        return (self.describe(trunk) @ F.normalize(self.classifier.weight, dim=1).detach().numpy().T).argmax(axis=1)


def split_labels(family: np.ndarray, per_family: int, seed: int) -> np.ndarray:
    """(n,) family id for `per_family` random images of each family, -1 elsewhere."""
    rng = np.random.default_rng(seed)
    labels = np.full(len(family), -1)
    for f in np.unique(family):
        rows = rng.permutation(np.flatnonzero(family == f))[:per_family]
        labels[rows] = f
    return labels


def family_split(data: dict, part: str) -> dict:
    """The cache's arrays restricted to the families of `part`: "dev" (even family ids), "test" (odd)
    or "all"; family ids renumbered 0..c-1."""
    if part == "all":
        return data
    keep = data["family"] % 2 == (0 if part == "dev" else 1)
    out = {k: (v[:, keep] if k == "trunk_views" else v[keep]) for k, v in data.items()}
    out["family"] = np.unique(out["family"], return_inverse=True)[1]
    return out


def nearest_labelled(vectors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) 1-NN labels: each unlabelled row (labels -1) takes its most similar labelled row's label."""
    test = labels < 0
    predicted = labels.copy()
    predicted[test] = labels[~test][(vectors[test] @ vectors[~test].T).argmax(axis=1)]
    return predicted


def lp_graph(cache: Path, settings: list[tuple[int, float | None, float]], families: str = "all",
             draws: tuple[int, ...] = (1, 2, 3)) -> None:
    """Label propagation alone on copyseek-small's descriptors (no training): accuracy on the unlabelled
    images of `families` for each (k, k_per_class, alpha) of `settings`, against 1-NN; mean ± std over
    the label `draws`. The quick way to choose the graph on the dev families."""
    from copyseek.learn.pseudo import LPParams, propagate_labels

    data = family_split(load(cache), families)
    family, vectors = data["family"], data["small"]
    n_classes, size = int(family.max()) + 1, int(np.bincount(family).min())
    counts = [m for m in (1, 2, 5) if m < size]
    print(f"Label propagation alone ({families} families), {len(family)} images, {n_classes} families of {size}; "
          f"accuracy on the unlabelled images, label draws {draws}\n")
    print("| method | graph k | " + " | ".join(f"{m} label{'s' if m > 1 else ''}/family" for m in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    methods = [("1-NN (small)", None)] + [(f"LP k {k}" + ("" if kpc is None else f", k per class {kpc}") + f", alpha {a}",
                                           LPParams(k, a, k_per_class=kpc)) for k, kpc, a in settings]
    for name, params in methods:
        cells = []
        for m in counts:
            accuracy = []
            for seed in draws:
                labels = split_labels(family, m, seed)
                test = labels < 0
                predicted = nearest_labelled(vectors, labels) if params is None else propagate_labels(vectors, labels, params).labels
                accuracy.append(float((predicted[test] == family[test]).mean()))
            cells.append(f"{np.mean(accuracy):.3f} ± {np.std(accuracy):.3f}")
        graph_k = "-" if params is None else str(params.graph_k(len(family), n_classes))
        print(f"| {name} | {graph_k} | " + " | ".join(cells) + " |", flush=True)


def lp(cache: Path, k: int = 10, alpha: float = 0.99, k_per_class: float | None = None, rounds: int = 5,
       epochs: int = 10, lr: float = 1e-3, augment: bool = False, families: str = "all",
       draws: tuple[int, ...] = (1, 2, 3)) -> None:
    """Accuracy on the unlabelled images of `families`: 1-NN (copyseek-small and SSCD descriptors), the
    head trained on the labelled images alone (the same epochs, and the same optimiser steps, as the
    loop), and the LP loop after each round (the classifier's and label propagation's own labels);
    mean over the label `draws`, and the loop's last round minus the best of the baselines in each
    draw. augment: train on the cache's augmented views (trunk_views) too."""
    from copyseek.learn.pseudo import LPParams, propagate_labels

    data = family_split(load(cache), families)
    family, trunk = data["family"], data["trunk"].astype(np.float32)
    views = data["trunk_views"] if augment else None
    params = LPParams(k, alpha, k_per_class=k_per_class)
    n_classes, size = int(family.max()) + 1, int(np.bincount(family).min())
    print(f"Family classification ({families} families), {len(family)} images, {n_classes} families of {size}; "
          f"accuracy on the unlabelled images, mean of label draws {draws}; head = copyseek-small's projection over "
          f"its frozen trunk, {rounds} rounds of {epochs} epochs, Adam lr {lr}, augmented views: {augment}; "
          f"LP k {k} (per class {k_per_class}), alpha {alpha}\n")
    rows = []
    for per_family in (1, 2, 5):
        if per_family >= size:
            rows.append((per_family, None))
            continue
        results: dict[str, list[float]] = {}
        started = time.process_time()
        for seed in draws:
            labels = split_labels(family, per_family, seed)
            test = labels < 0

            def add(name: str, predicted: np.ndarray) -> None:
                results.setdefault(name, []).append(float((predicted[test] == family[test]).mean()))

            for name in [d for d in ("small", "sscd") if d in data]:
                add(f"1-NN ({name})", nearest_labelled(data[name], labels))
            # the loop's optimiser steps: rounds x epochs x batches of its (at most n) training images
            same_steps = rounds * epochs * -(-len(family) // 128) // -(-int((~test).sum()) // 128)
            for name, alone_epochs in (("labelled only (same epochs)", rounds * epochs),
                                       ("labelled only (same steps)", same_steps)):
                alone = Head(n_classes, seed)
                alone.set_prototypes(alone.describe(trunk), labels)
                alone.fit(trunk, labels, np.where(labels >= 0, 1.0, 0.0), alone_epochs, seed, lr, views)
                add(name, alone.predict(trunk))
            head = Head(n_classes, seed)
            head.set_prototypes(head.describe(trunk), labels)
            for r in range(1, rounds + 1):
                pseudo = propagate_labels(head.describe(trunk), labels, params)
                add(f"LP labels, round {r}", pseudo.labels)
                head.fit(trunk, pseudo.labels, pseudo.weights, epochs, seed * 100 + r, lr, views)
                add(f"LP loop, after round {r}", head.predict(trunk))
        baselines = np.max([v for name, v in results.items() if not name.startswith("LP")], axis=0)
        results["LP loop after the last round minus the best baseline (per draw)"] = list(
            np.subtract(results[f"LP loop, after round {rounds}"], baselines))
        rows.append((per_family, {k: (np.mean(v), np.std(v)) for k, v in results.items()}))
        print(f"({per_family} label(s) per family: {time.process_time() - started:.0f} s CPU)", flush=True)
    names = next(r for _, r in rows if r)
    print("\n| method | " + " | ".join(f"{m} label{'s' if m > 1 else ''}/family" for m, _ in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name in names:
        cells = [f"{r[name][0]:{'+' if 'minus' in name else ''}.3f} ± {r[name][1]:.3f}" if r else "n/a (all labelled)"
                 for _, r in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")


def split_photos(photos: Path, a: Path, b: Path, seed: int = 23) -> None:
    """Split a photo list in two by a seeded shuffle: the first floor(n/2) go to `a` (a start model is
    trained on them), the rest to `b` (families it never saw); each list in the input's order."""
    import random

    lines = [line for line in photos.read_text().splitlines() if line.strip()]
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    half = len(lines) // 2
    for path, rows in ((a, sorted(order[:half])), (b, sorted(order[half:]))):
        path.write_text("".join(f"{lines[i]}\n" for i in rows))
    print(f"{half} photos in {a}, {len(lines) - half} in {b}")


def train_labelled_only(config, run: Path, paths: list[Path], labels: np.ndarray, steps: int) -> Path:
    """The baseline the loop must beat: the same network and settings trained `steps` steps on the
    labelled photos alone (`copyseek.learn.lploop.train_labelled`, the loop's own round 0 when it has
    `labelled_steps`), in run/labelled-STEPS; returns its ONNX model (a finished run is re-read)."""
    from copyseek.learn.lploop import train_labelled

    out = run / f"labelled-{steps}"
    if (out / "model.onnx").exists():
        return out / "model.onnx"
    return train_labelled(config, paths, labels, [f"f{c}" for c in range(int(labels.max()) + 1)], out, steps,
                          progress=False)


def lp_network(bench: Path, workdir: Path, families: str = "test", per_family: int = 1, rounds: int = 4,
               steps: int = 30, draws: tuple[int, ...] = (1, 2, 3), settings: tuple[str, ...] = (),
               init: str = "copyseek-small", warmup: int = 0, tag: str = "", oracle: bool = False) -> None:
    """The LP loop as `copyseek train --pseudo-labels lp` runs it, training the whole network (the
    start model `init`, copyseek-small or one of our exported .onnx descriptors; batch norm statistics
    frozen) for `steps` steps a round: accuracy on the unlabelled images of `families` of the labels
    propagated at the start of each round (round 1: the start model untouched) and with the last
    round's model, against 1-NN and the network trained on the labelled photos alone; mean ± std over
    `draws`, each draw, and the paired differences the target reads (the rise from round 1 to 2, and
    the loop after its last round over the better baseline trained for as many steps). A draw whose
    models are in `workdir` already is re-read, not retrained. settings: extra KEY=VALUE training
    settings (TrainConfig). copyseek-small was trained on the photos kept out of every benchmark, the
    ones families are made of: a start model trained on other photos (`--init`) is one that has
    something left to learn from the family's images.
    warmup W > 0: the loop starts, as the paper's does, from the start model trained W steps on the
    labelled photos alone (what `labelled_steps = W` does in `copyseek train`; the baseline's own
    W-step run is reused), its runs in workdir/draw-N/warm-W (warm-W-TAG with a `tag`; draw-N/TAG without warm-up); the
    labelled-only baseline then gets the loop's whole budget, W + rounds x steps. oracle: the loop
    trains on every photo's true family instead of propagated labels (all right, all confident), the
    ceiling of what pseudo-labels could give; its accuracies still propagate the draw's few labels."""
    from dataclasses import replace

    from copyseek.describe.models import model_path
    from copyseek.learn.config import TrainConfig, parse_assignment, updated
    from copyseek.learn.lploop import train_lp
    from copyseek.learn.mining import describe_photos
    from copyseek.learn.pseudo import LPParams, propagate_labels
    from copyseek.learn.from_onnx import descriptor_from_onnx

    with open(bench / "families.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [r["reference_id"] for r in rows]
    family_names = sorted({r["family"] for r in rows})
    data = family_split({"family": np.array([family_names.index(r["family"]) for r in rows]), "names": np.array(names)},
                        families)
    family, names = data["family"], [str(n) for n in data["names"]]
    paths = [next((bench / "references").glob(f"{name}.*")) for name in names]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "images.txt").write_text("".join(f"{p.resolve()}\n" for p in paths))
    if oracle and not tag:
        raise SystemExit("--oracle: give it a --tag, so that its runs do not take the place of the loop's")
    if init != "copyseek-small" and Path(init).suffix != ".onnx":
        raise SystemExit(f"--init: copyseek-small or an exported .onnx descriptor, not {init}")
    start_onnx = model_path(init)[1] if init == "copyseek-small" else Path(init)
    config = TrainConfig(images=str(workdir / "images.txt"), init=init, freeze_norm=1, steps=steps,
                         classes_per_batch=min(32, int(family.max()) + 1), checkpoint_minutes=60.0)
    config = updated(config, dict(map(parse_assignment, settings)), "--set")
    print(f"LP loop training the whole network ({families} families): {len(family)} images, {family.max() + 1} "
          f"families, {per_family} label(s) per family, {rounds} rounds of {steps} steps (loss {config.loss}, lr "
          f"{config.lr}, {config.classes_per_batch} x {config.views_per_class} per batch), LP {LPParams()}, start model "
          f"{init}" + (f", {warmup} steps on the labelled photos first" if warmup else "") + "\n")
    results: dict[str, list[float]] = {}
    started = time.process_time()
    for seed in draws:
        labels = split_labels(family, per_family, seed)
        test = labels < 0
        run = workdir / f"draw-{seed}"
        labels_csv = workdir / f"labels-{seed}.csv"
        labels_csv.write_text("image,label\n" + "".join(f"{n},f{l}\n" for n, l in zip(names, labels) if l >= 0))

        train_labels = labels_csv
        if oracle:  # every photo named by its true family: what the rounds could learn at best
            train_labels = workdir / f"labels-{seed}-oracle.csv"
            train_labels.write_text("image,label\n" + "".join(f"{n},f{l}\n" for n, l in zip(names, family)))

        def add(name: str, predicted: np.ndarray) -> None:
            results.setdefault(name, []).append(float((predicted[test] == family[test]).mean()))

        def propagated(onnx: Path) -> np.ndarray:
            return propagate_labels(describe_photos(descriptor_from_onnx(onnx), paths, config.image_size,
                                                    progress=False), labels).labels

        start = describe_photos(descriptor_from_onnx(start_onnx), paths, config.image_size, progress=False)
        add("1-NN (start model)", nearest_labelled(start, labels))
        for budget in sorted({warmup, warmup + rounds * steps} - {0}):
            add(f"labelled only ({budget} steps), 1-NN", nearest_labelled(
                describe_photos(descriptor_from_onnx(train_labelled_only(config, run, paths, labels, budget)),
                                paths, config.image_size, progress=False), labels))
        loop, loop_config = run, config
        if warmup:
            loop = run / (f"warm-{warmup}" + (f"-{tag}" if tag else ""))
            loop_config = replace(config, init=str(run / f"labelled-{warmup}" / "last.pt"))
        elif tag:
            loop = run / tag
        model = loop / "model.onnx"
        if not model.exists():  # a finished draw is re-read, not retrained
            model = train_lp(loop_config, loop, train_labels, rounds, progress=False)
        for r in range(1, rounds + 1):
            if oracle:  # the round's pseudo-labels are the truth: propagate the draw's labels with its start model
                before = loop / f"round-{r - 1}" if r > 1 else run / f"labelled-{warmup}" if warmup else None
                add(f"LP labels at the start of round {r}", propagated(before / "model.onnx" if before else start_onnx))
                continue
            with open(loop / f"round-{r}" / "pseudo-labels.csv", newline="") as handle:
                by_name = {row["image"]: row["label"] for row in csv.DictReader(handle)}
            add(f"LP labels at the start of round {r}", np.array([int(by_name[n][1:]) if by_name[n] else -1 for n in names]))
        last = describe_photos(descriptor_from_onnx(model), paths, config.image_size, progress=False)
        add(f"LP labels with the model after round {rounds}", propagate_labels(last, labels).labels)
        add(f"1-NN with the model after round {rounds}", nearest_labelled(last, labels))
        print(f"(draw {seed}: {time.process_time() - started:.0f} s CPU so far)", flush=True)
    baselines = np.maximum(results["1-NN (start model)"], results[f"labelled only ({warmup + rounds * steps} steps), 1-NN"])
    for r in range(2, rounds + 1):
        results[f"round {r} minus round 1 (paired)"] = list(np.subtract(results[f"LP labels at the start of round {r}"],
                                                                        results["LP labels at the start of round 1"]))
    # the baseline trains for the loop's whole budget, so the loop is read after its last round, not at the
    # start of it (sessions 23-24 read the start, one round of steps short of the baseline's budget; kept for comparison)
    results[f"round {rounds} (start) minus the better baseline (paired)"] = list(
        np.subtract(results[f"LP labels at the start of round {rounds}"], baselines))
    results[f"the loop after round {rounds} minus the better baseline (paired, same steps)"] = list(
        np.subtract(results[f"LP labels with the model after round {rounds}"], baselines))
    print(f"\n| method | accuracy on the unlabelled images | {' | '.join(f'draw {d}' for d in draws)} |\n"
          f"|---|---|{'---|' * len(draws)}")
    for name, values in results.items():
        form = "+.3f" if "minus" in name else ".3f"  # differences carry their sign
        print(f"| {name} | {np.mean(values):{form}} ± {np.std(values):.3f} | "
              f"{' | '.join(f'{v:{form}}' for v in values)} |")


# ---------------------------------------------------------------- GCN cleaning of reports


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """AP of ranking by decreasing score, `positive` the items to find."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def rank_within(scores: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(n,) scores -> (n,) ranks normalised to [0, 1] within each group (0 = lowest, 1 = highest; ties
    in index order; a group of one gets 1)."""
    out = np.ones(len(scores))
    for g in np.unique(group):
        members = np.flatnonzero(group == g)
        if len(members) > 1:
            out[members[np.argsort(scores[members], kind="stable")]] = np.arange(len(members)) / (len(members) - 1)
    return out


# ways of turning a report's relevance r (n,) in [0, 1] into its weight in its family's prototype;
# `group` (n,) is the reported family
WEIGHTINGS = {
    "r^2": lambda r, group: r**2,
    "r": lambda r, group: r,
    "r^0.5": lambda r, group: r**0.5,
    "r^0.25": lambda r, group: r**0.25,
    "r >= 0.3": lambda r, group: (r >= 0.3).astype(float),
    "r >= 0.4": lambda r, group: (r >= 0.4).astype(float),
    "r >= 0.5": lambda r, group: (r >= 0.5).astype(float),
    "r >= 0.02": lambda r, group: (r >= 0.02).astype(float),
    "rank of r within the family": rank_within,
}
CEILING = "ceiling (uses the truth): every member of the family, the held-out ones too"
LOW_RELEVANCE = 0.02  # the diagnostic row: the true reports a GCN scores below this are the ones thresholds drop


def make_reports(vectors: np.ndarray, family: np.ndarray, seed: int, clean_per_family: int = 2,
                 reports_per_family: int = 4):
    """Per family: clean = `clean_per_family` random members; reports = `reports_per_family`, half of them
    other members (true), a quarter random images and a quarter look-alikes (the images of other families
    most similar to the clean prototype), so 50% of reports are wrong; test = the members left (for the
    prototypes; never a wrong report). The defaults on families of 5 are 2 clean, 2 true + 1 random +
    1 look-alike, 1 test. Returns (clean [(family, rows)], reports [(family, row, kind)], test rows)."""
    if reports_per_family % 4:
        raise ValueError(f"reports per family must be a multiple of 4 (half true, a quarter of each wrong kind), got {reports_per_family}")
    n_true, n_wrong = reports_per_family // 2, reports_per_family // 4
    rng = np.random.default_rng(seed)
    n_families = int(family.max()) + 1
    members = [rng.permutation(np.flatnonzero(family == f)) for f in range(n_families)]
    if min(len(m) for m in members) <= clean_per_family + n_true:
        raise ValueError(f"families of {min(len(m) for m in members)} leave no test member for {clean_per_family} clean + {n_true} true reports")
    test = np.concatenate([m[clean_per_family + n_true :] for m in members])
    clean, reports = [], []
    for f, m in enumerate(members):
        clean.append((f, m[:clean_per_family]))
        reports += [(f, int(r), "true") for r in m[clean_per_family : clean_per_family + n_true]]
        outside = np.flatnonzero((family != f) & ~np.isin(np.arange(len(family)), test))
        randoms = rng.choice(outside, n_wrong, replace=False)
        reports += [(f, int(r), "random") for r in randoms]
        candidates = outside[~np.isin(outside, randoms)]
        sims = vectors[candidates] @ vectors[m[:clean_per_family]].mean(axis=0)
        reports += [(f, int(r), "look-alike") for r in candidates[np.argsort(-sims)[:n_wrong]]]
    return clean, reports, test


def report_relevance(vectors: np.ndarray, clean: list, reports: list, params) -> np.ndarray:
    """(len(reports),) GCN relevance of each report (`make_reports`' clean and reports over (n, d) unit
    `vectors`): one `gcn_relevance` per family over its clean images, its reports and, as negatives,
    the clean images of the `params.context_references` families with the nearest clean prototypes."""
    from copyseek.graph.gcn import gcn_relevance, nearest_references

    clean_rows = dict(clean)
    unit = np.stack([vectors[clean_rows[f]].mean(axis=0) for f in range(len(clean))])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    nearest = nearest_references(unit, np.arange(len(clean)), params.context_references)
    relevance = np.zeros(len(reports))
    for f, rows in clean:
        mine = [i for i, (g, _, _) in enumerate(reports) if g == f]
        others = np.concatenate([clean_rows[g] for g in nearest[f]]) if len(nearest[f]) else np.zeros(0, int)
        x = np.vstack([vectors[rows], vectors[[reports[i][1] for i in mine]], vectors[others]])
        node = np.arange(len(x))
        is_clean, is_negative = node < len(rows), node >= len(rows) + len(mine)
        relevance[mine] = gcn_relevance(x, is_clean, ~is_clean & ~is_negative, params,
                                        negative=is_negative)[len(rows) : len(rows) + len(mine)]
    return relevance


def collection_relevance(vectors: np.ndarray, clean: list, reports: list, params, graph: str = "all") -> np.ndarray:
    """(len(reports),) relevance of each report from `copyseek.graph.gcn.collection_relevance`, ONE
    multi-class GCN over the collection: every family's clean images are clean labels, every report
    a noisy label of its reported family. `graph`: "all" puts every image of the collection in the
    graph (the held-out members too, unlabelled), "reported" only the clean and reported images (what
    `copyseek triage --relevance collection` has: the index's references, verified and reported queries)."""
    from copyseek.graph.gcn import collection_relevance as relevance

    clean_rows = np.concatenate([rows for _, rows in clean])
    report_rows = np.array([r for _, r, _ in reports])
    nodes = np.arange(len(vectors)) if graph == "all" else np.unique(np.r_[clean_rows, report_rows])
    node_of = np.full(len(vectors), -1)
    node_of[nodes] = np.arange(len(nodes))
    return relevance(vectors[nodes], node_of[clean_rows], np.concatenate([np.full(len(rows), f) for f, rows in clean]),
                     node_of[report_rows], np.array([f for f, _, _ in reports]), params)


def gcn(cache: Path, descriptors: str = "sscd", gcn_k: tuple[int, ...] = (5, 2), draws: tuple[int, ...] = (1, 2, 3),
        clean_per_family: int = 2, reports_per_family: int = 4, context: tuple[int, ...] = (0,),
        collection_k: tuple[int, ...] = (), collection_graph: tuple[str, ...] = ("all",)) -> None:
    """AP of ranking wrong reports first (all wrong ones, and the look-alike half against the true
    reports) for GCN relevance, cosine to the clean prototype and label propagation; then the
    accuracy of nearest-prototype classification of each family's held-out members. Test draws are
    1.., draw 0 is the one GCN k is chosen on (GCNParams' default k is 10 since session 10); `make_reports` says
    what a family's clean images and reports are. `context`: numbers m of context references (our
    extension: the clean images of the m families whose clean prototypes are nearest join a family's
    graph as labelled negatives; 0 = the paper's per-family graph). `collection_k`: k values of
    `collection_relevance`, one multi-class GCN over the whole collection (`copyseek triage --relevance
    collection`), over the graphs `collection_graph` ("all" and/or "reported")."""
    from copyseek.graph.gcn import GCNParams
    from copyseek.graph.knn import knn_graph
    from copyseek.graph.propagation import LabelPropagation

    data = load(cache)
    family = data["family"]
    n_families = int(family.max()) + 1
    q = reports_per_family // 4
    print(f"Report cleaning on {descriptors} descriptors, {n_families} families of {np.bincount(family).min()}; per family "
          f"{clean_per_family} clean images, {2 * q} true reports, {q} random and {q} look-alike wrong reports (50% wrong); "
          f"mean of draws {', '.join(map(str, draws))}\n")
    aps: dict[str, dict[str, list[float]]] = {}
    accuracy: dict[str, list[float]] = {}
    hub: dict[str, list[int]] = {}  # per draw, the most held-out members misclassified into one prototype
    cpu: dict[str, float] = {}
    for seed in draws:
        vectors = data[descriptors]
        clean, reports, test = make_reports(vectors, family, seed, clean_per_family, reports_per_family)
        kinds = np.array([k for _, _, k in reports])
        wrong = kinds != "true"
        scores: dict[str, np.ndarray] = {}  # relevance of each report, higher = more likely a true copy
        started = time.process_time()
        prototype = {f: vectors[rows].mean(axis=0) for f, rows in clean}
        scores["cosine to clean prototype"] = np.array([vectors[r] @ prototype[f] / np.linalg.norm(prototype[f])
                                                        for f, r, _ in reports])
        cpu["cosine to clean prototype"] = time.process_time() - started
        started = time.process_time()
        labels = np.full(len(family), -1)
        for f, rows in clean:
            labels[rows] = f
        # the share of the report's propagated class mass that goes to the reported family
        mass = LabelPropagation(balance=True).fit(knn_graph(vectors, k=10, symmetrize="sum"), labels).scores_
        share = mass / np.maximum(mass.sum(axis=1, keepdims=True), 1e-12)
        scores["label propagation"] = np.array([share[r, f] for f, r, _ in reports])
        cpu["label propagation"] = time.process_time() - started
        for k in gcn_k:
            for m in context:
                name = f"GCN relevance (k = {k})" if m == 0 else f"GCN relevance (k = {k}, context m = {m})"
                started = time.process_time()
                scores[name] = report_relevance(vectors, clean, reports, GCNParams(k=k, seed=seed, context_references=m))
                cpu[name] = time.process_time() - started
        for k in collection_k:
            for graph in collection_graph:
                name = f"GCN relevance over the whole collection (k = {k}, graph: {graph})"
                started = time.process_time()
                scores[name] = collection_relevance(vectors, clean, reports, GCNParams(k=k, seed=seed), graph)
                cpu[name] = time.process_time() - started
        look = kinds == "look-alike"
        own_clean = np.zeros(len(family), bool)
        own_clean[np.concatenate([rows for _, rows in clean])] = True
        # the look-alikes that are not another family's clean image (those sit in a context graph as negatives)
        look_unseen = look & ~own_clean[[r for _, r, _ in reports]]
        print(f"draw {seed}: {int(look.sum() - look_unseen.sum())} of {int(look.sum())} "
              "look-alikes are another family's clean image", flush=True)
        for name, score in scores.items():
            entry = aps.setdefault(name, {"all": [], "look-alike": [], "random": [], "unseen look-alike": []})
            entry["all"].append(average_precision(-score, wrong))
            for half, mask in (("look-alike", look), ("random", kinds == "random"), ("unseen look-alike", look_unseen)):
                entry[half].append(average_precision(-score[mask | ~wrong], mask[mask | ~wrong]))
        # prototypes from the clean images and the reports, weighted by a relevance; the oracle keeps the true ones
        reported = np.array([f for f, _, _ in reports])
        gcns = {name: score for name, score in scores.items() if name.startswith("GCN")}
        weightings = {"clean only": np.zeros(len(reports)), "unweighted": np.ones(len(reports)),
                      "oracle (clean + the true reports only)": (~wrong).astype(float),
                      **{f"diagnostic: the true reports with {name} >= {LOW_RELEVANCE}": (~wrong & (score >= LOW_RELEVANCE)).astype(float)
                         for name, score in gcns.items()},
                      "weighted by label propagation: r": scores["label propagation"],
                      **{f"weighted by {name}: {how}": weigh(score, reported)
                         for name, score in gcns.items() for how, weigh in WEIGHTINGS.items()}}
        for name, weight in weightings.items():
            protos = np.zeros((n_families, vectors.shape[1]))
            for f, rows in clean:
                protos[f] += vectors[rows].sum(axis=0)
            np.add.at(protos, reported, weight[:, None] * vectors[[r for _, r, _ in reports]])
            protos /= np.linalg.norm(protos, axis=1, keepdims=True)
            predicted = (vectors[test] @ protos.T).argmax(axis=1)
            accuracy.setdefault(name, []).append(float((predicted == family[test]).mean()))
            hub.setdefault(name, []).append(int(np.bincount(predicted[predicted != family[test]], minlength=1).max()))
        # the ceiling of any weighting: each family's prototype from all its members, the held-out ones too
        protos = np.stack([vectors[family == f].mean(axis=0) for f in range(n_families)])
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        predicted = (vectors[test] @ protos.T).argmax(axis=1)
        accuracy.setdefault(CEILING, []).append(float((predicted == family[test]).mean()))
        hub.setdefault(CEILING, []).append(int(np.bincount(predicted[predicted != family[test]], minlength=1).max()))
    cosine = aps["cosine to clean prototype"]

    def cell(values: list[float]) -> str:
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}"

    def gain(entry: dict, half: str) -> str:
        difference = np.subtract(entry[half], cosine[half])
        return f"{np.mean(difference):+.3f} ± {np.std(difference):.3f}"

    print("| relevance score | AP, all wrong reports | AP, look-alike half | AP, random half | CPU s per draw | "
          "look-alike AP minus cosine's | AP, look-alikes that are no family's clean image | the same minus cosine's |")
    print("|---|---|---|---|---|---|---|---|")
    for name, entry in aps.items():
        print(f"| {name} | " + " | ".join(cell(entry[k]) for k in ("all", "look-alike", "random")) + f" | {cpu[name]:.1f} | "
              f"{gain(entry, 'look-alike')} | {cell(entry['unseen look-alike'])} | {gain(entry, 'unseen look-alike')} |")
    print(f"\nNearest-prototype classification of each family's held-out members ({len(test)} images, "
          f"{n_families} families); minus unweighted: the per-draw difference\n")
    print("| prototype | accuracy | minus unweighted | errors into the prototype that draws the most |")
    print("|---|---|---|---|")
    for name, values in accuracy.items():
        gain = np.subtract(values, accuracy["unweighted"])
        print(f"| {name} | {np.mean(values):.3f} ± {np.std(values):.3f} | {np.mean(gain):+.3f} ± {np.std(gain):.3f} | "
              f"{np.mean(hub[name]):.1f} ({min(hub[name])}-{max(hub[name])}) |")


# ---------------------------------------------------------------- fine-tuning with mined pairs


def trunk_features(paths: list[Path]) -> np.ndarray:
    """(n, 256) copyseek-small trunk features (its projection's input) of image files, at square:160."""
    import torch

    from copyseek.describe.models import model_path
    from copyseek.learn.from_onnx import descriptor_from_onnx
    from copyseek.learn.mining import square_photo

    small = descriptor_from_onnx(model_path("copyseek-small")[1])
    out = []
    with torch.no_grad():
        for start in range(0, len(paths), 32):
            x = torch.from_numpy(np.stack([square_photo(p, 160) for p in paths[start : start + 32]]))
            x = x.permute(0, 3, 1, 2).float()
            out.append(small.pool(small.backbone((x - small.mean) / small.std)).numpy())
    return np.concatenate(out)


def bench_features(bench: Path, scratch: Path) -> dict:
    """Trunk features of a calibrated benchmark's references, queries and background (cached)."""
    from copyseek.io.images import find_images

    cache = scratch / f"trunk-{bench.name}.npz"
    if not cache.exists():
        arrays = {}
        for part in ("references", "queries", "background"):
            files = find_images(bench / part)[0]
            arrays[f"{part}_ids"] = np.array([f.id for f in files])
            arrays[part] = trunk_features([f.path for f in files])
        np.savez(cache, **arrays)
    return load(cache)


def edited_views(bench: Path, views: int, scratch: Path) -> tuple[np.ndarray, np.ndarray]:
    """(trunk features, class) of each family's original photo and `views` random edits of it (the
    synthetic-edit pairs of today's training, severity 1.0), cached."""
    cache = scratch / f"edits-{bench.name}-{views}.npz"
    if not cache.exists():
        from PIL import Image

        from copyseek.io.images import load_rgb
        from copyseek.learn.data import EditAugment

        with open(bench / "families.csv", newline="") as handle:
            originals = sorted({r["family"] for r in csv.DictReader(handle)})
        photos = [Image.fromarray(load_rgb(next((bench / "references").glob(f"{o}.*")), 320)) for o in originals]
        augment, rng = EditAugment(1.0), np.random.default_rng(0)
        tmp = scratch / "edit-views"
        tmp.mkdir(exist_ok=True)
        paths, classes = [], []
        for c, photo in enumerate(photos):
            for v in range(views + 1):
                image = photo if v == 0 else augment(photo, rng, [photos[d] for d in rng.choice(len(photos), 2)])
                path = tmp / f"{c:04d}-{v}.png"
                image.save(path)
                paths.append(path)
                classes.append(c)
        np.savez(cache, trunk=trunk_features(paths), classes=np.array(classes))
    data = load(cache)
    return data["trunk"], data["classes"]


def muap(projection, features: dict, ground_truth) -> float:
    """muAP of copyseek-small with `projection` on a benchmark, score normalisation (beta 1, top-3
    background), 10 predictions per query: what `copyseek match --background` does."""
    import torch

    from copyseek.eval.metrics import evaluate
    from copyseek.io.csvfiles import Prediction

    with torch.no_grad():
        emb = {p: torch.nn.functional.normalize(projection(torch.from_numpy(features[p])), dim=1).numpy()
               for p in ("references", "queries", "background")}
    sims = emb["queries"] @ emb["references"].T
    offsets = np.sort(emb["queries"] @ emb["background"].T, axis=1)[:, -3:].mean(axis=1)
    scores = sims - offsets[:, None]
    top = np.argsort(-scores, axis=1)[:, :10]
    predictions = [Prediction(q, features["references_ids"][r], float(scores[i, r]))
                   for i, q in enumerate(features["queries_ids"]) for r in top[i]]
    return evaluate(predictions, ground_truth).micro_ap


def finetune(cache: Path, fam: Path, benches: list[Path], steps: int, lr: float, seeds: int) -> None:
    """copyseek-small's projection (its trunk frozen) fine-tuned with the contrastive loss on (a)
    manifold-mined pairs, (b) Euclidean-kNN pairs, (c) synthetic-edit pairs, the same number of
    steps and about the same batch size; muAP (+ score normalisation) on held-out benchmarks."""
    import copy

    import torch

    from copyseek.describe.models import model_path
    from copyseek.io.csvfiles import read_ground_truth
    from copyseek.learn.from_onnx import descriptor_from_onnx
    from copyseek.learn.losses import Contrastive
    from copyseek.learn.mining import KnnMiner, ManifoldMiner, MinedBatches, mining_precision
    from copyseek.learn.pseudo import PseudoLabelBatches, PseudoLabels

    torch.set_num_threads(1)
    data = load(cache)
    scratch = cache.parent
    base = descriptor_from_onnx(model_path("copyseek-small")[1]).projection
    evals = [(b.name, bench_features(b, scratch), read_ground_truth(b / "gt.csv")) for b in benches]
    edits, edit_class = edited_views(fam, 4, scratch)
    samplers = {}
    for name, miner in (("(a) manifold-mined pairs", ManifoldMiner()), ("(b) Euclidean-kNN pairs", KnnMiner())):
        mined = miner.mine(data["small"])
        samplers[name] = (data["trunk"], MinedBatches(mined, 20, 4), mining_precision(mined, data["family"]))
    n = len(edit_class)
    samplers["(c) synthetic-edit pairs"] = (edits, PseudoLabelBatches(
        PseudoLabels(edit_class, np.ones(n), np.ones(n, bool), np.ones(edit_class.max() + 1)), 32, 4), None)
    print(f"copyseek-small's projection fine-tuned (trunk frozen), contrastive loss, {steps} steps, Adam lr {lr}, "
          f"mean of {seeds} seeds; muAP with score normalisation\n")
    print("| training pairs | precision + / - | " + " | ".join(f"muAP {b}" for b, _, _ in evals) + " | CPU s |")
    print("|---|---|" + "---|" * len(evals) + "---|")
    print("| none (copyseek-small) | - | " + " | ".join(f"{muap(base, f, gt):.4f}" for _, f, gt in evals) + " | 0 |")
    for name, (features, sampler, precision) in samplers.items():
        results, started = [], time.process_time()
        for seed in range(seeds):
            torch.manual_seed(seed)
            rng = np.random.default_rng(seed)
            projection = copy.deepcopy(base)
            optimiser = torch.optim.Adam(projection.parameters(), lr=lr)
            loss_fn = Contrastive()
            for _ in range(steps):
                rows, labels = sampler.sample(rng)
                emb = torch.nn.functional.normalize(projection(torch.from_numpy(features[rows])), dim=1)
                loss = loss_fn(emb, torch.from_numpy(labels))
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
            results.append([muap(projection, f, gt) for _, f, gt in evals])
        mean, std = np.mean(results, axis=0), np.std(results, axis=0)
        prec = "-" if precision is None else f"{precision[0]:.3f} / {precision[1]:.3f}"
        print(f"| {name} | {prec} | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(mean, std))
              + f" | {(time.process_time() - started) / seeds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("describe")
    p.add_argument("bench", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sscd", action="store_true", help="SSCD descriptors too (for the gcn table)")
    p.add_argument("--views", type=int, default=0, help="augmented views (crops, flips) per image, for lp --augment (default 0)")
    for name in ("mining", "lp", "gcn"):
        p = sub.add_parser(name)
        p.add_argument("cache", type=Path)
        if name == "lp":
            p.add_argument("--k", type=int, default=10, help="LP graph neighbours (default 10, the paper's)")
            p.add_argument("--alpha", type=float, default=0.99, help="LP alpha (default 0.99, the paper's)")
            p.add_argument("--k-per-class", type=float, help="LP graph k = this share of the mean family size, "
                           "within [1, --k] (default: none, k = --k)")
            p.add_argument("--rounds", type=int, default=5)
            p.add_argument("--epochs", type=int, default=10, help="epochs per round (default 10)")
            p.add_argument("--lr", type=float, default=1e-3)
            p.add_argument("--augment", action="store_true", help="train on the cache's augmented views too (describe --views)")
            p.add_argument("--families", default="all", choices=("all", "dev", "test"),
                           help="dev: the even family ids (for choosing settings), test: the odd ones (default all)")
            p.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3], help="label draws (default 1 2 3)")
        if name == "gcn":
            p.add_argument("--descriptors", default="sscd", choices=("sscd", "small"))
            p.add_argument("--gcn-k", type=int, nargs="*", default=[5, 2], help="GCN graph k values (default 5 2; none: no per-family GCN)")
            p.add_argument("--collection-gcn-k", type=int, nargs="*", default=[],
                           help="k values of one multi-class GCN over the whole collection (default none)")
            p.add_argument("--collection-graph", nargs="+", default=["all"], choices=("all", "reported"),
                           help="the collection GCN's graph: every image (all, default) or the clean and reported "
                                "ones only (reported: what copyseek triage has)")
            p.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3],
                           help="report draws (default 1 2 3; draw 0 is for choosing k)")
            p.add_argument("--clean", type=int, default=2, help="clean images per family (default 2)")
            p.add_argument("--reports", type=int, default=4,
                           help="reports per family, half true, a quarter random, a quarter look-alike (default 4)")
            p.add_argument("--context", type=int, nargs="+", default=[0],
                           help="GCN context references m values: the clean images of the m families with the "
                                "nearest clean prototypes join each graph as negatives (our extension; default 0)")
    p = sub.add_parser("lp-graph")
    p.add_argument("cache", type=Path)
    p.add_argument("--setting", nargs=3, action="append", required=True, metavar=("K", "K_PER_CLASS", "ALPHA"),
                   help="a graph to try: k, k per class (or 'none'), alpha; repeat")
    p.add_argument("--families", default="all", choices=("all", "dev", "test"))
    p.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3])
    p = sub.add_parser("split-photos")
    p.add_argument("photos", type=Path, help="a .txt list of photo paths")
    p.add_argument("--a", type=Path, required=True, help="the first half's list (the start model's photos)")
    p.add_argument("--b", type=Path, required=True, help="the rest (the families' photos)")
    p.add_argument("--seed", type=int, default=23)
    p = sub.add_parser("lp-network")
    p.add_argument("bench", type=Path, help="the family benchmark (families.csv)")
    p.add_argument("--workdir", type=Path, required=True, help="run directories of the loop, one per draw")
    p.add_argument("--families", default="test", choices=("all", "dev", "test"))
    p.add_argument("--per-family", type=int, default=1)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=30, help="training steps per round (default 30)")
    p.add_argument("--draws", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a training setting (repeatable)")
    p.add_argument("--init", default="copyseek-small",
                   help="the start model: copyseek-small (default; trained on these photos) or an exported .onnx")
    p.add_argument("--warmup", type=int, default=0,
                   help="steps on the labelled photos alone before the rounds, as the paper starts (default 0)")
    p.add_argument("--tag", default="", help="the loop's runs in draw-N/warm-W-TAG (draw-N/TAG without --warmup), "
                   "beside other settings' loops of the same draw (default: draw-N/warm-W, or draw-N)")
    p.add_argument("--oracle", action="store_true", help="the loop trains on every photo's true family: the "
                   "ceiling of what pseudo-labels could give (use with --tag)")
    p = sub.add_parser("finetune")
    p.add_argument("cache", type=Path)
    p.add_argument("--fam", type=Path, required=True, help="the family benchmark the cache was made from")
    p.add_argument("--bench", type=Path, nargs="+", required=True, help="held-out calibrated benchmarks")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.command == "split-photos":
        split_photos(args.photos, args.a, args.b, args.seed)
    elif args.command == "lp-graph":
        settings = [(int(k), None if kpc == "none" else float(kpc), float(a)) for k, kpc, a in args.setting]
        lp_graph(args.cache, settings, args.families, tuple(args.draws))
    elif args.command == "lp-network":
        lp_network(args.bench, args.workdir, args.families, args.per_family, args.rounds, args.steps, tuple(args.draws),
                   tuple(args.set), args.init, args.warmup, args.tag, args.oracle)
    elif args.command == "finetune":
        finetune(args.cache, args.fam, args.bench, args.steps, args.lr, args.seeds)
    elif args.command == "describe":
        describe(args.bench, args.out, args.sscd, args.views)
    else:
        options = {"lp": lambda: {"k": args.k, "alpha": args.alpha, "k_per_class": args.k_per_class, "rounds": args.rounds,
                             "epochs": args.epochs, "lr": args.lr, "augment": args.augment, "families": args.families,
                             "draws": tuple(args.draws)}, "gcn": lambda: {"descriptors": args.descriptors, "gcn_k": tuple(args.gcn_k), "draws": tuple(args.draws),
                                                       "clean_per_family": args.clean, "reports_per_family": args.reports,
                                                       "context": tuple(args.context), "collection_k": tuple(args.collection_gcn_k),
                                                       "collection_graph": tuple(args.collection_graph)},
                   "mining": dict}[args.command]()
        {"mining": mining, "lp": lp, "gcn": gcn}[args.command](args.cache, **options)


if __name__ == "__main__":
    main()
