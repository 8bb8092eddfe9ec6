"""Learning curves of detector runs (their val.csv, written by `copyseek train-detector --set val=BENCH`).

    .venv/bin/python benchmarks/plot_detector_curves.py --out docs/detect-curves.png \
        student=runs/student teacher=runs/teacher hgd=runs/hgd-hgd

Plots copy and overlay AP50 against the run's budget clock (CPU or wall minutes, as the run's
`clock` setting counts them) and prints the last row of each run as a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_curve(run: Path) -> list[dict[str, float]]:
    with open(run / "val.csv", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--out", type=Path, required=True, help="the .png to write")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    print("| run | steps | minutes (clock) | copy AP50 | copy AP | overlay AP50 | overlay AP |")
    print("|---|---|---|---|---|---|---|")
    for spec in args.runs:
        name, _, path = spec.partition("=")
        run = Path(path)
        curve = read_curve(run)
        clock = json.loads((run / "config.json").read_text(encoding="utf-8")).get("clock", "wall")
        minutes = [row["elapsed_s"] / 60 for row in curve]
        for ax, cls in zip(axes, ("copy", "overlay")):
            ax.plot(minutes, [row[f"{cls}_AP50"] for row in curve], marker=".", label=name)
        last = curve[-1]
        print(f"| {name} | {int(last['step'])} | {last['elapsed_s'] / 60:.1f} ({clock}) | {last['copy_AP50']:.3f} | "
              f"{last['copy_AP']:.3f} | {last['overlay_AP50']:.3f} | {last['overlay_AP']:.3f} |")
    for ax, cls in zip(axes, ("copy", "overlay")):
        ax.set_title(f"{cls} AP50 (validation queries)")
        ax.set_xlabel("training minutes (run's clock)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AP50")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
