"""Training speed with fresh views made in the training process (workers 0) or ahead of it by worker
processes (`workers` N, learn/data.py PrefetchedViews), side by side in one process run:

    .venv/bin/python benchmarks/bench_train_workers.py --config configs/how.toml --images bench/std/holdout.txt \
        --steps 60 --workers 0 1

Each row is one short run of the config (no export); steps/s and images/s are over its training
steps, the first `--warmup` steps left out (the workers start and fill their queue there).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from dataclasses import replace
from pathlib import Path

from copyseek.learn.config import TrainConfig, parse_assignment, read_toml, updated
from copyseek.learn.train import Trainer


def speed(config: TrainConfig, workdir: Path, warmup: int) -> tuple[float, float]:
    """(steps per second, images per second) of the run's steps after the first `warmup`."""
    trainer = Trainer(config, workdir, progress=False)
    try:
        trainer.train()
    finally:
        trainer.close()
    with open(workdir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[warmup:]
    seconds = 60 * (float(rows[-1]["minutes"]) - float(rows[0]["minutes"]))
    steps = len(rows) - 1
    return steps / seconds, steps * int(rows[-1]["batch_size"]) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a training config (configs/*.toml)")
    parser.add_argument("--images", required=True, help="training images: a folder or a .txt list")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of the speed (default 5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting over the config's")
    args = parser.parse_args()
    base = updated(TrainConfig(), read_toml(args.config), str(args.config))
    base = updated(base, dict(parse_assignment(a) for a in args.set), "--set")
    base = replace(base, images=args.images, steps=args.steps, minutes=0.0, bank_views=0, snapshot_minutes=0.0,
                   checkpoint_minutes=1e9)
    print(f"{args.config}, {args.steps} steps ({args.warmup} left out), batch {base.classes_per_batch} x "
          f"{base.views_per_class} at {base.image_size} px\n")
    print("| workers | steps/s | images/s | vs workers 0 |\n|---|---|---|---|")
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            steps_per_s, images_per_s = speed(replace(base, workers=workers), Path(tmp) / f"w{workers}", args.warmup)
            first = first or steps_per_s
            print(f"| {workers} | {steps_per_s:.3f} | {images_per_s:.1f} | {steps_per_s / first:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
