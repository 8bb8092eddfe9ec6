"""Measurements behind docs/learn.md: indexing throughput, benchmark muAP, muAP over training time.

    python -m copyseek.learn.measure speed --images BENCH/references --models sscd copyseek-small
    python -m copyseek.learn.measure muap --bench BENCH --models sscd onnx:runs/r1/model.onnx
    python -m copyseek.learn.measure curve --bench BENCH --run runs/r1

Throughput is the full indexing path on one thread of decoding: decode (JPEG draft mode at the
model's size, as the index does), resize, model; model threads as given (default: all cores).
muAP is raw (no background normalisation) unless --background.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from copyseek.describe.models import load_model
from copyseek.eval.metrics import Metrics, evaluate
from copyseek.io.csvfiles import read_ground_truth
from copyseek.io.images import load_rgb
from copyseek.learn.data import discover_photos


def throughput(spec: str, paths: list[Path], batch_size: int = 16, threads: int = 0, passes: int = 2) -> float:
    """Images per second through decode + resize + model, best of `passes` passes (after a warm-up)."""
    model = load_model(spec, threads=threads)
    side = model.preprocess.size

    def one_pass() -> float:
        started = time.perf_counter()
        for start in range(0, len(paths), batch_size):
            batch = [model.preprocess.apply(load_rgb(p, side)) for p in paths[start:start + batch_size]]
            model.embed(np.stack(batch))  # square resizing: one shape per batch
        return len(paths) / (time.perf_counter() - started)

    model.embed(np.zeros((batch_size, side, side, 3), np.uint8))
    return max(one_pass() for _ in range(passes))


def benchmark_metrics(spec: str, bench: Path, background: bool = False) -> Metrics:
    """Index BENCH/references with model `spec`, match BENCH/queries, score against BENCH/gt.csv."""
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    with tempfile.TemporaryDirectory() as work:
        with Index.create(Path(work) / "index", "global", {"global": {"model": spec}}) as index:
            index.add(bench / "references", progress=False, on_skip=lambda *_: None)
            options = MatchOptions(background=bench / "background" if background else None)
            predictions = match(index, bench / "queries", options, progress=False).predictions
    return evaluate(predictions, read_ground_truth(bench / "gt.csv"))


def snapshot_curve(run: Path, bench: Path, background: bool = False) -> list[tuple[float, int, float, float]]:
    """(training minutes, step, muAP, accuracy@1) of every snapshot of a run, and of its last checkpoint."""
    import torch

    from copyseek.describe.preprocess import Preprocess
    from copyseek.learn.export import export_onnx
    from copyseek.learn.train import load_checkpoint_model

    points = []
    with tempfile.TemporaryDirectory() as work:
        for checkpoint in [*sorted((run / "snapshots").glob("*.pt")), run / "last.pt"]:
            model, config = load_checkpoint_model(checkpoint)
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]
            path = export_onnx(model, Path(work) / f"{checkpoint.stem}.onnx", Preprocess("square", config.image_size),
                               name=checkpoint.stem)
            metrics = benchmark_metrics(f"onnx:{path}", bench, background)
            points.append((state["seconds"] / 60, state["step"], metrics.micro_ap, metrics.accuracy_at_1))
    return points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m copyseek.learn.measure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    speed = sub.add_parser("speed", help="indexing throughput of models")
    speed.add_argument("--images", required=True, help="folder or .txt list of images")
    speed.add_argument("--models", nargs="+", required=True)
    speed.add_argument("--limit", type=int, default=200, help="images used (default 200)")
    speed.add_argument("--threads", type=int, default=0)
    muap = sub.add_parser("muap", help="benchmark muAP of models")
    muap.add_argument("--bench", required=True, type=Path)
    muap.add_argument("--models", nargs="+", required=True)
    curve = sub.add_parser("curve", help="benchmark muAP of a run's snapshots against training time")
    curve.add_argument("--bench", required=True, type=Path)
    curve.add_argument("--run", required=True, type=Path)
    for p in (muap, curve):
        p.add_argument("--background", action="store_true", help="normalise scores with BENCH/background")
    args = parser.parse_args(argv)
    if args.what == "speed":
        paths = discover_photos(args.images).paths[: args.limit]
        print("| model | images/s (decode + resize + model) |\n|---|---|")
        for spec in args.models:
            print(f"| {spec} | {throughput(spec, paths, threads=args.threads):.1f} |")
    elif args.what == "muap":
        print("| model | muAP | accuracy@1 | recall@P90 |\n|---|---|---|---|")
        for spec in args.models:
            m = benchmark_metrics(spec, args.bench, args.background)
            print(f"| {spec} | {m.micro_ap:.4f} | {m.accuracy_at_1:.4f} | {m.recall_at_p90:.4f} |")
    else:
        print("| training minutes | step | muAP | accuracy@1 |\n|---|---|---|---|")
        for minutes, step, micro_ap, acc in snapshot_curve(args.run, args.bench, args.background):
            print(f"| {minutes:.1f} | {step} | {micro_ap:.4f} | {acc:.4f} |")


if __name__ == "__main__":
    main()
