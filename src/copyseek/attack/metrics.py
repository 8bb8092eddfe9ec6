"""How well an attack worked: image similarity (SSIM) and retrieval agreement."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from copyseek.attack.losses import ssim_index
from copyseek.errors import CopyseekError


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two (H, W, 3) uint8 images (`losses.ssim_index`, range 255), `b`
    resized (bilinear) to `a`'s size when the sizes differ. 1 = identical."""
    if a.ndim != 3 or a.shape[2] != 3 or b.ndim != 3 or b.shape[2] != 3:
        raise CopyseekError(f"ssim compares (H, W, 3) images, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < 11:
        raise CopyseekError(f"ssim needs images of at least 11x11 pixels, got {a.shape[:2]}")
    if a.shape != b.shape:
        b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BILINEAR))
    x, y = (torch.from_numpy(np.array(z)).permute(2, 0, 1)[None].double() / 255 for z in (a, b))
    return float(ssim_index(x, y)[0])


def top_k(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k most similar database vectors per query, best first: (Q, D), (N, D) unit rows
    -> (Q, min(k, N)) int."""
    if queries.shape[1] != database.shape[1]:
        raise CopyseekError(f"queries have dimension {queries.shape[1]}, the database {database.shape[1]}")
    sims = queries @ database.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def retrieval_agreement(adversarial: np.ndarray, targets: np.ndarray, database: np.ndarray, k: int = 10) -> dict[str, float]:
    """How much retrieving with each adversarial vector looks like retrieving with its target.

    adversarial, targets: (Q, D) unit rows, pair i = (adversarial image i, its target);
    database: (N, D) unit rows. Returns rank-1 agreement (share of pairs whose first result is the
    same) and top-k overlap (mean share of the k results in common, order ignored).
    """
    if adversarial.shape != targets.shape:
        raise CopyseekError(f"adversarial and target vectors must pair up, got {adversarial.shape} and {targets.shape}")
    a, t = top_k(adversarial, database, k), top_k(targets, database, k)
    rank1 = float(np.mean(a[:, 0] == t[:, 0]))
    overlap = float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, t)]))
    return {"rank1": rank1, f"top{k}": overlap}


TIE_MARGIN = 0.03
"""A target whose first result leads its second by less than this cosine is a near tie: which of
the two comes first is decided by noise, and only an almost identical descriptor reproduces it."""


def rank1_by_margin(adversarial: np.ndarray, targets: np.ndarray, database: np.ndarray,
                    tie_margin: float = TIE_MARGIN) -> dict[str, float]:
    """Rank-1 agreement split by how decided each target's own first result is.

    adversarial, targets: (Q, D) unit rows paired as in `retrieval_agreement`; database: (N >= 2, D)
    unit rows; tie_margin: cosine. Returns "decided" (share of targets whose first result leads the
    second by >= tie_margin), and the rank-1 agreement on those ("rank1 decided") and on the near
    ties ("rank1 tied"), NaN where a group is empty.
    """
    if adversarial.shape != targets.shape:
        raise CopyseekError(f"adversarial and target vectors must pair up, got {adversarial.shape} and {targets.shape}")
    if len(database) < 2:
        raise CopyseekError(f"a margin needs at least 2 database vectors, got {len(database)}")
    order = top_k(targets, database, 2)
    sims = targets @ database.T
    rows = np.arange(len(targets))
    decided = sims[rows, order[:, 0]] - sims[rows, order[:, 1]] >= tie_margin
    agree = top_k(adversarial, database, 1)[:, 0] == order[:, 0]
    share = lambda group: float(np.mean(agree[group])) if group.any() else float("nan")  # noqa: E731
    return {"decided": float(np.mean(decided)), "rank1 decided": share(decided), "rank1 tied": share(~decided)}
