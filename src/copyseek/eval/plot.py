"""Precision-recall curves as PNG."""

from __future__ import annotations

import os

from copyseek.eval.metrics import Metrics


def plot_pr_curves(curves: dict[str, Metrics], path: str | os.PathLike, title: str = "Precision-recall") -> None:
    """One PNG with the PR curve of each named result, muAP and recall@P90 in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=110)
    for name, m in curves.items():
        recall = [0.0, *m.curve.recall.tolist()]
        precision = [1.0, *m.curve.precision.tolist()]
        ax.step(recall, precision, where="post", label=f"{name}: muAP {m.micro_ap:.3f}, R@P90 {m.recall_at_p90:.3f}")
    ax.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
