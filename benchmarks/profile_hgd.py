"""Where a distilled detector's training step spends its CPU time, next to the student alone's.

    .venv/bin/python benchmarks/profile_hgd.py --images bench/std/holdout.txt --pool 20000 \
        --pool-file pool-alt20k.npz --teacher runs/teacher-p20k/checkpoint.pt \
        --teacher-cache teacher-cache-i8 --cache-dtype int8 --locations 128 0 --steps 40

One thread, CPU milliseconds per step (mean over --steps after 3 warm-up steps) of each part of
`detect/train.py`'s loop, for the student alone and for each distillation setting: making the
batch, the student's forward and detection loss, drawing the imitation's locations, reading the
teacher (from the cache, or its forward pass without one), the imitation's forward, the backward
(student and adaptors), the optimiser. Also the imitation's own forward + backward on the same
batch's stage maps detached from the student, and the student's backward with the imitation's
gradient kept out of its stages, which tells the imitation's cost from what it adds to the
student's backward. The settings run interleaved, so that a change of the machine's load touches
every row alike. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from copyseek.detect.hgd import make_distiller, teacher_outputs
from copyseek.detect.model import STRIDE, DetectorNet
from copyseek.detect.targets import detection_loss
from copyseek.detect.teacher_cache import TeacherCache
from copyseek.detect.train import DetectorTrainConfig, _Batches, collate, load_checkpoint

PARTS = ["batch", "forward + loss", "draw", "teacher", "imitation", "backward", "optimiser"]


class Setting:
    """The student, and its distiller (None: alone), with an optimiser over both."""

    def __init__(self, config: DetectorTrainConfig, teacher: DetectorNet | None, kind: str, locations: int):
        torch.manual_seed(0)
        self.net = DetectorNet(config.net_config())
        self.distiller = make_distiller(kind, self.net, teacher, locations) if teacher is not None else None
        params = list(self.net.parameters()) + (list(self.distiller.parameters()) if self.distiller else [])
        self.optimiser = torch.optim.AdamW(params, lr=config.lr)
        self.net.train()
        self.ms: dict[str, float] = defaultdict(float)


def step(setting: Setting, batches: _Batches, grid: int, alternatives: float, cache: TeacherCache | None,
         detached: bool = False) -> dict[str, float]:
    """One training step; CPU ms of each part. `detached`: the imitation sees the stage maps cut
    from the student's graph (its gradient reaches only the adaptors)."""
    ms: dict[str, float] = {}
    clock = time.process_time()

    def lap(part: str) -> None:
        nonlocal clock
        now = time.process_time()
        ms[part] = ms.get(part, 0.0) + 1000 * (now - clock)
        clock = now

    samples, indices, mirrored = batches.next()
    images, targets = collate(samples, grid, alternatives)
    lap("batch")
    out = setting.net(images)
    total = detection_loss(out, targets)["total"]
    lap("forward + loss")
    if setting.distiller is not None:
        t_out, locations = None, None
        if cache is not None:
            locations = setting.distiller.draw_locations(len(indices), [tuple(m.shape[2:]) for m in out["stages"]])
            lap("draw")
            t_out = cache.lookup(indices, mirrored, locations)
        else:
            t_out = teacher_outputs(setting.distiller.teacher[0], images)
        lap("teacher")
        seen = {"stages": [m.detach() for m in out["stages"]]} if detached else out
        total = total + setting.distiller(images, seen, targets, t_out, locations)
        lap("imitation")
    setting.optimiser.zero_grad(set_to_none=True)
    total.backward()
    lap("backward")
    setting.optimiser.step()
    lap("optimiser")
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="photos (a folder or a list file) to make the pool from")
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--pool-file", default="", help="the pool, saved by train-detector (made and saved if absent)")
    parser.add_argument("--preset", default="student")
    parser.add_argument("--teacher", required=True, help="checkpoint.pt of the teacher")
    parser.add_argument("--distill", default="hgd", choices=["hgd", "plain"])
    parser.add_argument("--teacher-cache", default="", help="the teacher's outputs over the pool (built if absent)")
    parser.add_argument("--cache-dtype", default="float16", choices=["float16", "int8"])
    parser.add_argument("--locations", type=int, nargs="+", default=[128], help="imitation locations per image and stage (0: all)")
    parser.add_argument("--alternatives", type=float, default=0.3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    torch.set_num_threads(1)
    config = DetectorTrainConfig(images=args.images, preset=args.preset, pool=args.pool, pool_file=args.pool_file,
                                 alternatives=args.alternatives, steps=1)
    grid = config.net_config().input_size // STRIDE
    batches = _Batches(config, config.net_config().input_size, np.random.default_rng(0), progress=True)
    teacher, _ = load_checkpoint(args.teacher)
    cache = None
    if args.teacher_cache:
        cache = TeacherCache.open_or_build(args.teacher_cache, teacher.eval(), batches.pool, True, args.cache_dtype)
    rows = {"alone": Setting(config, None, args.distill, 0)}
    for locations in args.locations:
        rows[f"{args.distill}, {locations or 'all'} locations"] = Setting(config, teacher, args.distill, locations)
    detached = {name: defaultdict(float) for name in rows if name != "alone"}
    for repeat in range(3 + args.steps):
        for name, setting in rows.items():
            for part, ms in step(setting, batches, grid, args.alternatives, cache).items():
                if repeat >= 3:
                    setting.ms[part] += ms / args.steps
            if name in detached:
                for part, ms in step(setting, batches, grid, args.alternatives, cache, detached=True).items():
                    if repeat >= 3:
                        detached[name][part] += ms / args.steps
    alone_total = sum(rows["alone"].ms.values())
    print(f"CPU ms per step (one thread, batch {config.batch}, mean of {args.steps} steps; "
          f"teacher: {'cache, ' + args.cache_dtype if cache else 'forward pass'})\n")
    print("| setting | " + " | ".join(PARTS) + " | total | steps in equal time | backward with stages detached |")
    print("|---|" + "---:|" * (len(PARTS) + 3))
    for name, setting in rows.items():
        total = sum(setting.ms.values())
        backward_detached = f"{detached[name]['backward']:.1f}" if name in detached else ""
        print(f"| {name} | " + " | ".join(f"{setting.ms.get(p, 0.0):.1f}" for p in PARTS)
              + f" | {total:.1f} | {alone_total / total:.2f} | {backward_detached} |")


if __name__ == "__main__":
    main()
