"""Detector accuracy and speed on built benchmarks' queries (their layouts.json is the truth).

    .venv/bin/python benchmarks/bench_detect.py bench/std bench/seed1 \
        --model shipped=src/copyseek/models/detector.onnx --model teacher=runs/teacher/checkpoint.pt ...
    .venv/bin/python benchmarks/bench_detect.py bench/std --scn direct=runs/scn-direct/checkpoint.pt

--model NAME=PATH (an exported .onnx, or a training checkpoint.pt run in torch): box AP50 / AP per
class (COCO rules, detect/ap.py), ms per image (one image per call, resizing included, 1 thread),
and multiply-accumulates of the network. --scn NAME=CHECKPOINT (a selective net): the same net run
densely and selectively, wall time and MACs per image by the share of the image the copy covers,
and AP of each. --profile PRESET: CPU ms per image of each part of the network (stem, stages,
neck, heads; batch 1, 1 thread), i.e. the most a selective part can save. Prints markdown tables.
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
from copyseek.detect.regions import COPIES_PER_IMAGE, decode
from copyseek.detect.runtime import Detector


def load_model(path: str, max_copies: int):
    """(detector, NetConfig) for an .onnx (with sidecar) or a checkpoint.pt."""
    import json

    if path.endswith(".onnx"):
        meta = json.loads(Path(path).with_suffix(".json").read_text())
        return Detector(path, max_copies=max_copies), NetConfig.from_dict(meta["net"])
    detector = TorchDetector(path, max_copies=max_copies)
    return detector, detector.net.config


def head_macs(net) -> int:
    """MACs of the stride-4 heads (the part SCN makes selective)."""
    g = net.config.input_size // 4
    return g * g * net.heads.macs_per_cell()


def scn_rows(name: str, checkpoint: str, images: list[np.ndarray], truths: list[dict], max_copies: int) -> list[str]:
    from PIL import Image

    detector = TorchDetector(checkpoint)
    net, size = detector.net, detector.input_size
    dense_macs = macs(net.config)
    guide_macs = (size // 16) ** 2 * (net.config.widths[3] * 16 * 9 + 16)
    shares = np.array([float(np.prod(t["copy"][0, 2:] - t["copy"][0, :2]) / (im.shape[0] * im.shape[1]))
                       if len(t["copy"]) else 1.0 for im, t in zip(images, truths)])
    groups = {"copy <= 30% of the image": shares <= 0.3, "30-70%": (shares > 0.3) & (shares <= 0.7),
              "> 70%": shares > 0.7, "all": np.ones(len(images), bool)}
    results = {}
    for mode in ("dense", "selective"):
        net.selective.dense = mode == "dense"
        regions, seconds, cpu, selected = [], [], [], []
        for image in images:
            x = torch.from_numpy(np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)))
            x = x.permute(2, 0, 1)[None].float() / 255.0
            started, cpu_started = time.perf_counter(), time.process_time()
            with torch.no_grad():
                out = net(x)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            selected.append(float(out["tiles"].float().mean()))
            heat = torch.sigmoid(out["heat"])[0].numpy()
            regions.append(decode(heat, out["size"][0].numpy(), out["offset"][0].numpy(), (image.shape[1], image.shape[0]),
                                  max_copies=max_copies))
        results[mode] = (regions, np.array(seconds), np.array(cpu), np.array(selected))
    net.selective.dense = False
    rows = []
    for group, keep in groups.items():
        if not keep.any():
            continue
        idx = np.nonzero(keep)[0]
        cells = []
        for mode in ("dense", "selective"):
            regions, seconds, cpu, selected = results[mode]
            ap = evaluate_regions([regions[i] for i in idx], [truths[i] for i in idx])["copy"]["AP50"]
            mean_macs = dense_macs if mode == "dense" else dense_macs - head_macs(net) * (1 - selected[idx].mean()) + guide_macs
            cells.append((1000 * np.median(seconds[idx]), 1000 * cpu[idx].mean(), mean_macs / 1e6, ap, selected[idx].mean()))
        (dt, dc, dm, dap, _), (st, sc, sm, sap, share) = cells
        rows.append(f"| {name} | {group} | {len(idx)} | {share:.2f} | {dm:.1f} / {sm:.1f} ({1 - sm / dm:.0%} less) | "
                    f"{dt:.1f} / {st:.1f} ({1 - st / dt:.0%} less) | {dc:.1f} / {sc:.1f} ({1 - sc / dc:.0%} less) | "
                    f"{dap:.3f} / {sap:.3f} |")
    return rows


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
    return [f"| {part} | {ms:.2f} | {ms / total:.0%} |" for part, ms in parts.items()] + [f"| whole net | {total:.2f} | 100% |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benches", nargs="+", type=Path)
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--scn", action="append", default=[], metavar="NAME=CHECKPOINT")
    parser.add_argument("--limit", type=int, default=0, help="queries per benchmark (0: all)")
    parser.add_argument("--max-copies", type=int, default=COPIES_PER_IMAGE,
                        help=f"copy boxes kept per image (default {COPIES_PER_IMAGE}; 0: every peak)")
    parser.add_argument("--profile", action="append", default=[], metavar="PRESET[+split]",
                        help="CPU time of each part of a preset's net (+split: split heads)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for spec in args.profile:
        preset, _, split = spec.partition("+")
        print(f"\n{spec}: CPU ms per image by part (batch 1, 1 thread)\n\n| part | CPU ms | share |\n|---|---|---|")
        print("\n".join(profile_rows(NetConfig.preset(preset, split_heads=bool(split)))) + "\n", flush=True)
    if not args.model and not args.scn:
        return
    images, truths = [], []
    for bench in args.benches:
        more_images, more_truths = load_queries(bench, args.limit)
        images += more_images
        truths += more_truths
    print(f"{len(images)} queries from {', '.join(b.name for b in args.benches)}\n")
    if args.model:
        print("| model | copy AP50 | copy AP | overlay AP50 | overlay AP | ms / image (wall) | CPU ms / image | MMACs |")
        print("|---|---|---|---|---|---|---|---|")
        for spec in args.model:
            name, _, path = spec.partition("=")
            detector, config = load_model(path, args.max_copies)
            r = evaluate_detector(detector, images, truths)
            print(f"| {name} | {r['copy']['AP50']:.3f} | {r['copy']['AP']:.3f} | {r['overlay']['AP50']:.3f} | "
                  f"{r['overlay']['AP']:.3f} | {r['ms_per_image']:.1f} | {r['cpu_ms_per_image']:.1f} | "
                  f"{macs(config) / 1e6:.0f} |", flush=True)
    if args.scn:
        print("\n| SCN net | images | n | tiles selected | MMACs dense / selective | wall ms dense / selective (median) | "
              "CPU ms dense / selective (mean) | copy AP50 dense / selective |")
        print("|---|---|---|---|---|---|---|---|")
        for spec in args.scn:
            name, _, path = spec.partition("=")
            print("\n".join(scn_rows(name, path, images, truths, args.max_copies)), flush=True)


if __name__ == "__main__":
    main()
