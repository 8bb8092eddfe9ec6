"""Detector accuracy and speed on built benchmarks' queries (their layouts.json is the truth).

    .venv/bin/python benchmarks/bench_detect.py bench/std bench/seed1 \
        --model shipped=src/copyseek/models/detector.onnx --model teacher=runs/teacher/checkpoint.pt ...
    .venv/bin/python benchmarks/bench_detect.py bench/std --scn direct=runs/scn-direct/checkpoint.pt
    .venv/bin/python benchmarks/bench_detect.py bench/e2 bench/e3 bench/e4 --model shipped=... --decoding --by-edit

--model NAME=PATH (an exported .onnx, or a training checkpoint.pt run in torch): box AP50 / AP per
class (COCO rules, detect/ap.py), ms per image (one image per call, resizing included, 1 thread),
the ONNX network's CPU ms alone, and multiply-accumulates of the network, decoded with --max-copies
copy boxes per query after box suppression at --copy-nms-iou (the shipped defaults); --flip: with
the mirror pass (on, the runtime's default), without it (off), or both, one row each; --decoding: copy AP50 / AP over a grid of
both (how the defaults were chosen); --by-edit: the share of queries whose copy is found by the
best copy box, and by any kept one, by composite edit. --scn NAME=CHECKPOINT (a selective net): the same net run
densely and selectively (at each --scn-threshold and --scn-halo, and with an oracle guide that
selects the cells the true copy boxes cover), the area computed, wall time,
CPU time and MACs per image by the share of the image the copy covers, and AP of each; with
--scn-runtime onnx the network's passes run in onnxruntime. --profile PRESET: CPU ms per image of each part of the network (stem, stages,
neck, heads; batch 1, 1 thread), i.e. the most a selective part can save, and of the whole network
on smaller square crops (what SCN's crops cost), in torch and in onnxruntime. --oracle: the copy AP50
that no detector can beat on these queries, because two edits are ambiguous by construction (below).
Prints markdown tables.

The ambiguity oracle. `paste_into` (the copy pasted into a donor photo) and `paste_over` (a donor
photo pasted over the copy) both make a photo with a photo inset; which of the two is the copy
depends only on which one is the reference. A `collage` puts the copy in one of 2-4 identical grid
cells at random. The oracle knows every photo rectangle exactly and which edit made the query, but
not which rectangle is the reference: on a paste it answers the inset with the benchmarks' own
share of `paste_into` among pastes as its score (and the frame with the rest), on a collage each
cell with 1 / cells; every other query gets its true box with score 1. `one box` keeps its best
answer per query (what `decode(max_copies=1)` does), `every box` all of them. Collage draws are
averaged over 100 seeded draws.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from copyseek.detect.ap import evaluate_regions
from copyseek.detect.evaluate import TorchDetector, evaluate_detector, load_queries
from copyseek.detect.model import NetConfig, macs
from copyseek.detect.regions import COPIES_PER_IMAGE, COPY_NMS_IOU, ONE_COPY, decode
from copyseek.detect.runtime import FLIP, Detector, squash


AMBIGUOUS_PASTES = ("paste_into", "paste_over")
DECODING_GRID = ((0.3, 0.4, 0.5, 0.6, 0.7, 1.0), (1, 2, 4, 8, 0))
"""--decoding: copy box suppression IoUs (1: none) x copy boxes kept per query (0: every one)."""
ORACLE_DRAWS = 100


def query_edits(bench: Path) -> list[list[str]]:
    """Each query's edit chain, in query id order (as `load_queries`)."""
    import csv

    with open(bench / "edits.csv", newline="", encoding="utf-8") as f:
        chains = {row["query_id"]: row["edits"].split("|") for row in csv.DictReader(f)}
    return [chains[query_id] for query_id in sorted(chains)]


def oracle_ap50(edits: list[list[str]], truths: list[dict], sizes: list[tuple[int, int]], one_box: bool,
                seed: int = 0) -> float:
    """Copy AP50 of the ambiguity oracle (module docstring), mean over ORACLE_DRAWS collage draws.

    edits: each query's edit chain; truths: its boxes ({class name: (m, 4)}); sizes: its (height, width)."""
    from copyseek.detect.regions import Regions

    def pastes_into(chain):
        return next(e for e in chain if e in AMBIGUOUS_PASTES) == "paste_into"

    pastes = [chain for chain in edits if "collage" not in chain and any(e in AMBIGUOUS_PASTES for e in chain)]
    p_inset = float(np.mean([pastes_into(chain) for chain in pastes])) if pastes else 1.0
    miss = np.array([[-2.0, -2.0, -1.0, -1.0]])  # a box that overlaps nothing
    rng = np.random.default_rng(seed)
    aps = []
    for _ in range(ORACLE_DRAWS):
        predicted = []
        for chain, truth, (height, width) in zip(edits, truths, sizes):
            copy = truth["copy"][:1] if len(truth["copy"]) else miss
            if "collage" in chain:  # the number of cells from the copy cell's share of the collage
                share = float((copy[0, 2:] - copy[0, :2]).prod()) / (height * width)
                cells = int(np.clip(round(1 / max(share, 1e-3)), 2, 4))
                hit = int(rng.integers(cells))
                answers = [(copy if i == hit else miss, 1 / cells) for i in range(cells)]
            elif any(e in AMBIGUOUS_PASTES for e in chain):
                inset_right = pastes_into(chain)
                answers = [(copy if inset_right else miss, p_inset), (miss if inset_right else copy, 1 - p_inset)]
            else:
                answers = [(copy, 1.0)]
            answers = sorted(answers, key=lambda a: -a[1])[: 1 if one_box else None]
            predicted.append(Regions(np.concatenate([b for b, _ in answers]).astype(np.float32),
                                     np.array([s for _, s in answers], np.float32), np.zeros(len(answers), np.int64)))
        aps.append(evaluate_regions(predicted, truths)["copy"]["AP50"])
        if not any("collage" in chain for chain in edits):
            break
    return float(np.mean(aps))


EDIT_GROUPS = ("collage", "paste_into", "paste_over", "screenshot", "meme")


def found_by_edit(detector, images: list[np.ndarray], truths: list[dict], edits: list[list[str]],
                  boxes_per_query: int = 1) -> dict[str, float]:
    """Share of queries of which one of the `boxes_per_query` best copy boxes (0: every one kept)
    overlaps the true one at IoU >= 0.5, by the first of EDIT_GROUPS in the query's chain ("other":
    none of them), and over all queries ("all")."""
    from copyseek.detect.regions import box_iou

    hits: dict[str, list[bool]] = {}
    for image, truth, chain in zip(images, truths, edits):
        regions = detector.detect_batch([image])[0]
        boxes = regions.boxes[regions.labels == 0][: boxes_per_query or None]
        hit = bool(len(boxes) and len(truth["copy"]) and box_iou(boxes, truth["copy"]).max() >= 0.5)
        group = next((g for g in EDIT_GROUPS if g in chain), "other")
        hits.setdefault(group, []).append(hit)
    return {"all": float(np.mean(sum(hits.values(), []))), **{group: float(np.mean(h)) for group, h in hits.items()}}


def load_model(path: str, max_copies: int, copy_nms_iou: float = COPY_NMS_IOU, one_copy: bool = ONE_COPY,
               flip: bool = FLIP):
    """(detector, NetConfig) for an .onnx (with sidecar; `flip`: with the mirror pass) or a checkpoint.pt."""
    import json

    settings = {"max_copies": max_copies, "copy_nms_iou": copy_nms_iou, "one_copy": one_copy}
    if path.endswith(".onnx"):
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        return Detector(path, **settings, flip=flip), NetConfig.from_dict(meta["net"])
    detector = TorchDetector(path, **settings)
    return detector, detector.net.config


def models_to_run(specs: list[str], flip: str) -> list[tuple[str, str, bool]]:
    """NAME=PATH specs -> (name, path, mirror pass) for --flip on / off / both (both: NAME without
    it, NAME+mirror with it; a checkpoint.pt runs in torch, without)."""
    runs = []
    for spec in specs:
        name, _, path = spec.partition("=")
        for mirrored in {"on": (True,), "off": (False,), "both": (False, True)}[flip]:
            if mirrored and not path.endswith(".onnx"):
                continue
            runs.append((f"{name}+mirror" if mirrored and flip == "both" else name, path, mirrored))
    return runs


def decoding_rows(name: str, path: str, images: list[np.ndarray], truths: list[dict], flip: bool = FLIP) -> list[str]:
    """Copy AP50 / AP for each (copy box suppression IoU, copy boxes kept) of DECODING_GRID, with
    and without the one-copy scores: the net runs once, every peak kept, and the boxes are
    suppressed and rescored afterwards as `decode` does."""
    from copyseek.detect.regions import Regions, one_copy_scores, suppress_copies

    detector, _ = load_model(path, max_copies=0, copy_nms_iou=1.0, one_copy=False, flip=flip)
    # `decode` keeps its top_k regions after suppression: here after each setting's
    limit, detector.top_k = detector.top_k, 10_000
    found = [detector.detect_batch([image])[0] for image in images]
    rows = []
    for one_copy in (False, True):
        for iou in DECODING_GRID[0]:
            cells = []
            for copies in DECODING_GRID[1]:
                kept = [suppress_copies(r.boxes, r.labels, iou, copies, limit) for r in found]
                regions = [Regions(f.boxes[k], f.scores[k], f.labels[k]) for f, k in zip(found, kept)]
                r = evaluate_regions([one_copy_scores(g) for g in regions] if one_copy else regions, truths)
                cells.append(f"{r['copy']['AP50']:.3f} / {r['copy']['AP']:.3f}")
            rows.append(f"| {name} | {'yes' if one_copy else 'no'} | {iou:g} | " + " | ".join(cells) + " |")
    return rows


def copy_share(truth: dict, image: np.ndarray) -> float:
    """The share of the image its (first) true copy box covers (1 when it has none)."""
    if not len(truth["copy"]):
        return 1.0
    return float(np.prod(truth["copy"][0, 2:] - truth["copy"][0, :2]) / (image.shape[0] * image.shape[1]))


def scn_rows(name: str, checkpoint: str, images: list[np.ndarray], truths: list[dict], max_copies: int,
             thresholds: list[float], halos: list[int], one_copy: bool = ONE_COPY, runtime: str = "torch") -> list[str]:
    """The same selective net run densely, with its guide at each threshold and halo, and with an
    oracle guide (the cells the true copy boxes cover; the learned guide's cost still paid), by the
    share of the image the copy covers: cells computed, MACs (guide included), wall and CPU ms, AP50.
    runtime "onnx": the network's dense passes (the whole image, or each crop) run in onnxruntime
    (`free_size_session`), the guide and the cropping in torch, as a deployment would."""
    from copyseek.detect.model import count_macs
    from copyseek.detect.scn import guide_targets
    from copyseek.detect.targets import make_targets

    detector = TorchDetector(checkpoint)
    net, size = detector.net, detector.input_size
    shares = np.array([copy_share(t, im) for im, t in zip(images, truths)])
    groups = {"copy <= 30% of the image": shares <= 0.3, "30-70%": (shares > 0.3) & (shares <= 0.7),
              "> 70%": shares > 0.7, "all": np.ones(len(images), bool)}
    inputs = [torch.from_numpy(squash(im, size)).permute(2, 0, 1)[None].float() / 255.0 for im in images]

    def oracle_logits(truth: dict, image: np.ndarray) -> torch.Tensor:
        """+-20 where the true copy boxes cover a guide cell (a guide that knows the answer)."""
        scale = np.array([size / image.shape[1], size / image.shape[0]] * 2, np.float32)
        boxes = truth["copy"] * scale
        cover = make_targets(boxes, np.zeros(len(boxes), np.int64), size // 4, 4)["cover"]
        return torch.where(guide_targets(torch.from_numpy(cover)[None]) > 0, 20.0, -20.0)

    network = net.dense if runtime == "torch" else onnx_dense(net)

    def run(mode: str) -> tuple:
        net.selective.dense = mode == "dense"  # for counting the MACs: the net itself is run by `network`
        regions, seconds, cpu, computed, work = [], [], [], [], []
        for image, truth, x in zip(images, truths, inputs):
            oracle = oracle_logits(truth, image) if mode == "oracle" else None
            started, cpu_started = time.perf_counter(), time.process_time()
            with torch.no_grad():
                if mode == "dense":
                    out = network(x)
                else:  # an oracle still pays for the learned guide: its answer is replaced
                    logits = net.selective.guide(x)
                    out = net.selective.run(network, x, logits if oracle is None else oracle, net.heads.classes)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            computed.append(float(out["tiles"].float().mean()) if "tiles" in out else 1.0)
            work.append(count_macs(net, x) if mode != "oracle" else
                        count_macs(net.selective.guide, x) + macs(net.config) * computed[-1])
            heat = torch.sigmoid(out["heat"])[0].numpy()
            regions.append(decode(heat, out["size"][0].numpy(), out["offset"][0].numpy(), (image.shape[1], image.shape[0]),
                                  max_copies=max_copies, one_copy=one_copy))
        return regions, np.array(seconds), np.array(cpu), np.array(computed), np.array(work)

    dense = run("dense")
    rows = []
    for threshold, halo in [(t, h) for t in [*thresholds, "oracle"] for h in halos]:
        net.selective.halo = halo
        if threshold != "oracle":
            net.selective.threshold = threshold
        selective = run("oracle" if threshold == "oracle" else "guide")
        for group, keep in groups.items():
            if not keep.any():
                continue
            idx = np.nonzero(keep)[0]
            cells = []
            for regions, seconds, cpu, computed, work in (dense, selective):
                result = evaluate_regions([regions[i] for i in idx], [truths[i] for i in idx])
                cells.append((1000 * np.median(seconds[idx]), 1000 * cpu[idx].mean(), work[idx].mean() / 1e6,
                              result["copy"]["AP50"], result["overlay"]["AP50"], computed[idx].mean()))
            (dt, dc, dm, dap, dov, _), (st, sc, sm, sap, sov, share) = cells
            rows.append(f"| {name} | {threshold} | {halo} | {group} | {len(idx)} | {share:.2f} | "
                        f"{dm:.1f} / {sm:.1f} ({1 - sm / dm:.0%} less) | {dt:.1f} / {st:.1f} ({1 - st / dt:.0%} less) | "
                        f"{dc:.1f} / {sc:.1f} ({1 - sc / dc:.0%} less) | {dap:.3f} / {sap:.3f} | {dov:.3f} / {sov:.3f} |")
    net.selective.dense = False
    return rows


def network_cpu_ms(detector, images: list[np.ndarray]) -> float:
    """CPU ms per image of the ONNX network alone (one prepared image per call, as at match time;
    with the mirror pass if the detector makes it): without resizing and decoding, which cost
    every detector the same; nan for a checkpoint run in torch."""
    if not isinstance(detector, Detector):
        return float("nan")
    prepared = [detector.prepare(image)[None] for image in images]
    started = time.process_time()
    for batch in prepared:
        detector.network(batch)
    return 1000 * (time.process_time() - started) / max(1, len(prepared))


def profile_rows(config: NetConfig, repeats: int = 100) -> list[str]:
    """CPU ms per image of each part of a (randomly initialised) net: timing does not depend on the weights."""
    from copyseek.detect.model import DetectorNet

    net = DetectorNet(config).eval()

    def cpu_ms(fn) -> float:
        for _ in range(5):
            fn()
        started = time.process_time()
        for _ in range(repeats):
            fn()
        return 1000 * (time.process_time() - started) / repeats

    x = torch.rand(1, 3, config.input_size, config.input_size)
    parts = {}
    with torch.no_grad():
        y = net.stem(x - 0.5)
        parts["stem (stride 2)"] = cpu_ms(lambda: net.stem(x - 0.5))
        features = []
        for i, stage in enumerate(net.stages):
            parts[f"stage {i + 1} (stride {4 * 2 ** i})"] = cpu_ms(lambda: stage(y))
            y = stage(y)
            features.append(y)
        features[-1] = net.context(features[-1])
        parts["neck (to stride 4)"] = cpu_ms(lambda: net.neck(features))
        neck = net.neck(features)
        parts["heads (stride 4)"] = cpu_ms(lambda: net.heads(neck))
        total = cpu_ms(lambda: net(x))
        # what a crop costs (SCN runs the whole net on crops): time falls slower than the area
        crops = {side: torch.rand(1, 3, side, side) for side in (128, 96, 64, 32)}
        crops = {side: cpu_ms(lambda: net(crop)) for side, crop in crops.items()}
    onnx_ms = onnx_crop_ms(net, [config.input_size, *crops], repeats)
    return ([f"| {part} | {ms:.2f} | {ms / total:.0%} |" for part, ms in parts.items()] + [f"| whole net | {total:.2f} | 100% |"]
            + [f"| whole net on a {side}-px crop ({(side / config.input_size) ** 2:.0%} of the area) | {ms:.2f} | {ms / total:.0%} |"
               for side, ms in crops.items()]
            + [f"| whole net in onnxruntime, {side} px ({(side / config.input_size) ** 2:.0%} of the area) | {ms:.2f} | "
               f"{ms / onnx_ms[config.input_size]:.0%} of its whole pass |" for side, ms in onnx_ms.items()])


def onnx_crop_ms(net, sides: list[int], repeats: int) -> dict[int, float]:
    """CPU ms per square input of each side for `net` exported with free height and width (the
    runtime's export fixes them) and run by onnxruntime, one thread, as at match time: what SCN's
    crops would cost there, where per-call overheads are smaller than torch's."""
    session = free_size_session(net)
    times = {}
    for side in sides:
        feed = {"image": np.zeros((1, side, side, 3), np.uint8)}
        for _ in range(5):
            session.run(None, feed)
        started = time.process_time()
        for _ in range(repeats):
            session.run(None, feed)
        times[side] = 1000 * (time.process_time() - started) / repeats
    return times


def free_size_session(net):
    """An onnxruntime session (one thread) of `net`'s dense network exported with free height and
    width (`export_detector(free_size=True)`: uint8 NHWC in; centre probabilities, sizes, offsets out)."""
    import tempfile

    from copyseek.detect.export import export_detector
    from copyseek.io.onnx import cpu_session

    with tempfile.TemporaryDirectory() as folder:
        return cpu_session(export_detector(net.eval(), Path(folder) / "free-size.onnx", free_size=True), 1,
                           what="detector")


def onnx_dense(net):
    """`net.dense` run by onnxruntime: (1, 3, h, w) images in [0, 1] (made from uint8 pixels) -> the
    output maps `scn.Selective.run` writes back (heat as logits, as torch's)."""
    session = free_size_session(net)

    def dense(images: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        heat, size, offset = (torch.from_numpy(a) for a in session.run(None, {"image": pixels}))
        return {"heat": torch.logit(heat, eps=1e-7), "size": size, "log_size": torch.log(size), "offset": offset}

    return dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="+", type=Path)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--scn", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--scn-threshold", type=float, nargs="+", default=[0.5],
                        help="guide probabilities above which a cell is computed (one row group each)")
    parser.add_argument("--scn-halo", type=int, nargs="+", default=[0], help="guide cells added around each crop")
    parser.add_argument("--scn-runtime", nargs="+", choices=("torch", "onnx"), default=["torch"],
                        help="where the network's dense passes run (onnx: onnxruntime, the guide still in torch)")
    parser.add_argument("--digits", type=int, default=3, help="decimals of the AP columns in the model table")
    parser.add_argument("--limit", type=int, default=0, help="queries per benchmark (0: all)")
    parser.add_argument("--max-copies", type=int, default=COPIES_PER_IMAGE,
                        help=f"copy boxes kept per image (default {COPIES_PER_IMAGE}; 0: every peak)")
    parser.add_argument("--copy-nms-iou", type=float, default=COPY_NMS_IOU,
                        help=f"a copy box overlapping a better one more than this is dropped (default {COPY_NMS_IOU}; 1: none)")
    parser.add_argument("--raw-scores", action="store_true",
                        help="the runners-up keep their heat-map scores (no one-copy rescoring, regions.ONE_COPY; --model, --by-edit, --scn)")
    parser.add_argument("--flip", choices=("on", "off", "both"), default="on",
                        help="ONNX models with the mirror pass (runtime.FLIP, the default), without it (as before "
                             "session 15), or both (NAME and NAME+mirror)")
    parser.add_argument("--decoding", action="store_true",
                        help="each --model's copy AP50 / AP over a grid of box suppression IoUs and copy boxes kept")
    parser.add_argument("--by-edit", action="store_true", help="each --model's found share by composite edit")
    parser.add_argument("--oracle", action="store_true", help="the copy AP50 no detector can beat (ambiguous edits)")
    parser.add_argument("--profile", action="append", default=[], metavar="PRESET[+split]",
                        help="CPU time of each part of a preset's net (+split: split heads)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for spec in args.profile:
        preset, _, split = spec.partition("+")
        print(f"\n{spec}: CPU ms per image by part (batch 1, 1 thread)\n\n| part | CPU ms | share |\n|---|---|---|")
        print("\n".join(profile_rows(NetConfig.preset(preset, split_heads=bool(split)))) + "\n", flush=True)
    if not args.model and not args.scn and not args.oracle:
        return
    images, truths, edits = [], [], []
    for bench in args.benches:
        more_images, more_truths = load_queries(bench, args.limit)
        images += more_images
        truths += more_truths
        edits += query_edits(bench)[: len(more_images)]
    print(f"{len(images)} queries from {', '.join(b.name for b in args.benches)}\n")
    if args.oracle:
        sizes = [im.shape[:2] for im in images]
        ambiguous = sum(any(e in AMBIGUOUS_PASTES + ("collage",) for e in chain) for chain in edits)
        print(f"ambiguous queries (a paste or a collage): {ambiguous} of {len(edits)}\n")
        print("| ambiguity oracle | copy AP50 |\n|---|---|")
        for one_box in (True, False):
            print(f"| {'one box' if one_box else 'every box'} | {oracle_ap50(edits, truths, sizes, one_box):.3f} |",
                  flush=True)
        print()
    if args.model:
        print("| model | copy AP50 | copy AP | overlay AP50 | overlay AP | ms / image (wall) | CPU ms / image | "
              "network CPU ms / image | MMACs |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, path, flip in models_to_run(args.model, args.flip):
            detector, config = load_model(path, args.max_copies, args.copy_nms_iou, not args.raw_scores, flip)
            r = evaluate_detector(detector, images, truths)
            d = args.digits
            print(f"| {name} | {r['copy']['AP50']:.{d}f} | {r['copy']['AP']:.{d}f} | {r['overlay']['AP50']:.{d}f} | "
                  f"{r['overlay']['AP']:.{d}f} | {r['ms_per_image']:.1f} | {r['cpu_ms_per_image']:.1f} | "
                  f"{network_cpu_ms(detector, images):.2f} | {macs(config) / 1e6:.0f} |", flush=True)
        if args.decoding:
            print("\ncopy AP50 / AP by copy box suppression IoU (1: none) and copy boxes kept per query (0: every one)\n")
            print("| model | IoU | " + " | ".join(f"{k or 'every'} kept" for k in DECODING_GRID[1]) + " |\n|---|---|"
                  + "---|" * len(DECODING_GRID[1]))
            for name, path, flip in models_to_run(args.model, args.flip):
                print("\n".join(decoding_rows(name, path, images, truths, flip)), flush=True)
        if args.by_edit:
            groups = [*EDIT_GROUPS, "other", "all"]
            counts = {g: sum(next((e for e in EDIT_GROUPS if e in c), "other") == g for c in edits) for g in groups}
            counts["all"] = len(edits)
            print("\na copy box at IoU >= 0.5 among the best 1 / every kept, by edit (queries: "
                  + ", ".join(f"{g} {counts[g]}" for g in groups) + ")\n")
            print("| model | boxes | " + " | ".join(groups) + " |\n|---|---|" + "---|" * len(groups))
            for name, path, flip in models_to_run(args.model, args.flip):
                detector = load_model(path, args.max_copies, args.copy_nms_iou, not args.raw_scores, flip)[0]
                for boxes in (1, 0):
                    found = found_by_edit(detector, images, truths, edits, boxes)
                    print(f"| {name} | {boxes or 'every kept'} | " + " | ".join(f"{found.get(g, float('nan')):.2f}" for g in groups)
                          + " |", flush=True)
    if args.scn:
        small = [next((g for g in EDIT_GROUPS if g in chain), "other") for chain, t, im in zip(edits, truths, images)
                 if copy_share(t, im) <= 0.3]
        print("\nqueries whose copy covers <= 30% of the image, by composite edit: "
              + ", ".join(f"{g} {small.count(g)}" for g in (*EDIT_GROUPS, "other") if small.count(g)))
        print("\n| SCN net | threshold | halo | images | n | area computed | MMACs dense / selective | "
              "wall ms dense / selective (median) | CPU ms dense / selective (mean) | copy AP50 dense / selective | "
              "overlay AP50 dense / selective |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for spec in args.scn:
            name, _, path = spec.partition("=")
            for runtime in args.scn_runtime:
                label = name if runtime == "torch" else f"{name} (onnxruntime)"
                print("\n".join(scn_rows(label, path, images, truths, args.max_copies, args.scn_threshold, args.scn_halo,
                                          not args.raw_scores, runtime)), flush=True)


if __name__ == "__main__":
    main()
