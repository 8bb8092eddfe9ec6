"""The targeted mismatch attack on copyseek-small, side by side with the paper's settings, and what
copyseek's pipelines make of the adversarial images (`copyseek.attack.report`).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_attack.py BENCH --workdir runs/attack [--configs paper ssim budget multires]

BENCH is a `copyseek bench build --holdout 0.3` benchmark. The adversarial images of each
configuration are kept in WORKDIR (a re-run with the same settings reuses them), so the
work can be shared by separate processes (`--configs X --shard I/N`) and tabulated together
afterwards by a run without --shard. Attacks run on one thread: 256 px carriers, 100-400 steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from copyseek.attack.mismatch import AttackParams
from copyseek.attack.models import load_attack_model
from copyseek.attack.report import DEFAULT_PIPELINES, ReportParams, calibrate, draw_pairs, make_adversarials, pipeline_verdicts, run_report

CONFIGS = {
    # Tolias et al.'s settings (global descriptor, Adam lr 0.01, 100 steps, no closeness term).
    "paper": AttackParams(loss="global", sizes=(160,), steps=100, lr=0.01, schedule="constant", goal=0.0, budget=0.0),
    # Session 4's: smaller steps and an SSIM term of weight 1 that keeps the carrier's look (with
    # the cosine schedule, goal and budget that were the defaults when it was measured).
    "ssim": AttackParams(loss="global+ssim", sizes=(160,), steps=150, lr=0.003, schedule="cosine", goal=0.99, budget=0.08),
    # Session 5's: a perceptual budget (SSIM to the carrier >= ~0.92, enforced by a heavy hinge) instead of a
    # fixed trade-off, a descriptor goal (cosine 0.99), a cosine learning-rate decay, and the change
    # optimised on the model's 160 x 160 input grid, upsampled to the carrier.
    "budget": AttackParams(loss="global+ssim@10", sizes=(160,), steps=400, lr=0.005, schedule="cosine", goal=0.99,
                           budget=0.08, lowres=160),
    # The default since session 6: the budget at the SSIM level (0.905 rather than 0.92),
    # twice the steps and a closer descriptor goal (the misses of `budget` are targets whose own
    # first result is a near tie, which only a nearly identical descriptor reproduces).
    "budget90": AttackParams(loss="global+ssim@10", sizes=(160,), steps=800, lr=0.005, schedule="cosine", goal=0.995,
                             budget=0.095, lowres=160),
    # The same at two sizes with a random size offset per step, for a system whose input size is
    # unknown; the report's unseen size (224) lies between the sizes it covers (144-176, 240-272).
    "multires": AttackParams(loss="global+ssim@10", sizes=(160, 256), steps=300, lr=0.005, jitter=16, schedule="cosine",
                             goal=0.99, budget=0.08),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--model", default="copyseek-small")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="only make the images of pairs I, I+N, ... and stop (several processes share the work)")
    parser.add_argument("--calibrate", action="store_true",
                        help="only index the references with each pipeline and find its threshold (kept for the report)")
    parser.add_argument("--verdicts", action="store_true",
                        help="only let the pipelines judge the images of --robustness (kept for the report)")
    parser.add_argument("--pipelines", nargs="*", default=list(DEFAULT_PIPELINES),
                        help="bench pipelines judging the images of --robustness (none: skip)")
    parser.add_argument("--finished-only", action="store_true",
                        help="attack nothing: tabulate the pairs every configuration has finished (a run cut short)")
    parser.add_argument("--robustness", default=None, choices=list(CONFIGS),
                        help="the configuration whose images the pipelines judge (default: the last of --configs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = ReportParams(pairs=args.pairs, pipelines=tuple(args.pipelines))
    configs = {name: CONFIGS[name] for name in args.configs}
    if args.calibrate:
        for name in args.pipelines:
            print(name, calibrate(args.bench, name, args.workdir))
        return
    if args.verdicts:
        model = load_attack_model(args.model)
        pairs = draw_pairs(args.bench, args.pairs, params.seed)
        name = args.robustness or list(configs)[-1]
        attack = CONFIGS[name]
        # shard -1 of 1 attacks nothing: the pairs finished so far are judged, the others later
        run = make_adversarials(model, pairs, attack, params, args.workdir / name, shard=(-1, 1))
        pipeline_verdicts(args.bench, params.pipelines, run, pairs, args.workdir)
        return
    if args.shard:
        index, count = (int(x) for x in args.shard.split("/"))
        model = load_attack_model(args.model)
        pairs = draw_pairs(args.bench, args.pairs, params.seed)
        for name, attack in configs.items():
            make_adversarials(model, pairs, attack, params, args.workdir / name, shard=(index, count))
        return
    for name, attack in configs.items():
        print(f"- {name}: {attack.spec()}")
    print(run_report(args.bench, args.model, configs, params, args.workdir, robustness=args.robustness,
                     finished_only=args.finished_only))


if __name__ == "__main__":
    main()
