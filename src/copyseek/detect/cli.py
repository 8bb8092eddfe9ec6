"""`copyseek train-detector` and `copyseek detect`: train the copy / overlay detector, and run it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from copyseek.errors import CopyseekError

EXAMPLES = """examples:
  copyseek train-detector --images BENCH/holdout.txt --out runs/det --minutes 15
  copyseek train-detector --out runs/det --resume --minutes 25          # continue with a larger budget
  copyseek train-detector --images BENCH/holdout.txt --out runs/teacher --preset teacher --minutes 20
  copyseek train-detector --images BENCH/holdout.txt --out runs/hgd --teacher runs/teacher/checkpoint.pt --distill hgd
  copyseek detect query.jpg                                            # boxes of the copy and overlays (JSON)
  copyseek detect queries/*.jpg --draw boxes/                          # ... and the images with their boxes drawn
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-detector",
        help="train the detector of copied regions and overlays",
        description="Train the copy / overlay detector on synthetic queries made from photos by random "
        "DISC21-style edits, which report their boxes themselves (no labelling). Writes config.json, "
        "checkpoint.pt, metrics.csv and detector.onnx (+ detector.json) to --out.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", metavar="DIR|LIST.txt", help="training photos (held-out ones): a folder or a .txt list")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR (its saved settings apply)")
    p.add_argument("--preset", help="network size: student (default, shipped), teacher, tiny")
    p.add_argument("--minutes", type=float, help="training time budget in minutes")
    p.add_argument("--steps", type=int, help="step budget")
    p.add_argument("--teacher", metavar="CHECKPOINT", help="distil from this trained detector's checkpoint.pt")
    p.add_argument("--distill", choices=("none", "plain", "hgd"), help="distillation (with --teacher)")
    p.add_argument("--selective", action="store_true", help="SCN: the network runs only on the crops a cheap guide selects")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                   help='any setting, e.g. --set pool=0 --set \'net={"input_size": 128}\' (repeatable)')
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_train)

    d = subparsers.add_parser("detect", help="find the copied region and overlays in images (JSON lines)",
                              description="Print one JSON line per image: its path and the regions found "
                              "(box x0, y0, x1, y1 in pixels, score, label copy|overlay).")
    d.add_argument("images", nargs="+", help="image files")
    d.add_argument("--model", help="an exported detector.onnx (default: the shipped one)")
    d.add_argument("--small", action="store_true",
                   help="the small shipped detector: a third of the time, copy AP50 0.857 instead of 0.859")
    d.add_argument("--min-score", type=float, default=0.2, help="leave out weaker regions (default 0.2)")
    d.add_argument("--draw", metavar="DIR", help="also write each image with its regions drawn as DIR/NAME.png")
    d.add_argument("--no-flip", action="store_true",
                   help="run the network on the image only, not also on its mirror (faster, slightly less accurate)")
    d.set_defaults(run=run_detect)


def settings(args: argparse.Namespace):
    from copyseek.detect.train import DetectorTrainConfig

    values: dict = {}
    if args.resume:
        saved = Path(args.out) / "config.json"
        if not saved.is_file():
            raise CopyseekError(f"--resume: {args.out} holds no run (no config.json)")
        values.update(json.loads(saved.read_text(encoding="utf-8")))
    for assignment in args.set:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise CopyseekError(f"--set wants KEY=VALUE, got {assignment!r}")
        try:
            values[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            values[key.strip()] = value
    options = {"images": args.images, "preset": args.preset, "minutes": args.minutes, "steps": args.steps,
               "teacher": args.teacher, "distill": args.distill}
    values.update({k: v for k, v in options.items() if v is not None})
    if args.selective:
        values["net"] = {**(values.get("net") or {}), "selective": True}
    if not values.get("images"):
        raise CopyseekError("--images is required (a folder or a .txt list of photos)")
    if args.teacher and not args.distill and values.get("distill", "none") == "none":
        values["distill"] = "hgd"
    return DetectorTrainConfig.from_dict(values)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from copyseek.detect.train import train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = train(settings(args), Path(args.out), resume=args.resume, progress=not args.quiet)
    print(f"detector: {model}")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    from copyseek.detect.regions import CLASSES, draw_regions
    from copyseek.detect.runtime import SMALL, load_detector
    from copyseek.io.images import ImageFile, read_image

    if args.model and args.small:
        raise CopyseekError("choose --model PATH or --small, not both")
    path = args.model or (str(SMALL) if args.small else None)
    detector = load_detector(path, flip=not args.no_flip)
    drawings = Path(args.draw) if args.draw else None
    if drawings is not None:
        drawings.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image = read_image(ImageFile(Path(path).stem, Path(path)))
        regions = detector.detect(image.pixels)
        if drawings is not None:
            draw_regions(image.pixels, regions, args.min_score).save(drawings / f"{Path(path).stem}.png")
        found = [
            {"box": [round(float(v), 1) for v in box], "score": round(float(s), 3), "label": CLASSES[int(label)]}
            for box, s, label in zip(regions.boxes, regions.scores, regions.labels) if s >= args.min_score
        ]
        print(json.dumps({"image": str(path), "regions": found}))
    return 0
