"""Geometric verification of one (query, reference) pair's tentative matches with RANSAC.

A copy maps the reference's keypoints onto the query's by one geometric transform (crop, scale,
rotation, paste; a mirrored copy by a reflection). The number of tentative matches that agree with
the best transform (inliers) is the local branch's score; the reference's outline carried through
that transform is where the copy lies in the query.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from copyseek.errors import CopyseekError
from copyseek.validation import check_number

MODELS = ("similarity", "homography")


@dataclass(frozen=True)
class VerifyParams:
    """model:     "similarity" (rotation, scale, translation: cv2.estimateAffinePartial2D with RANSAC)
                 or "homography" (cv2.findHomography with USAC_MAGSAC).
    ransac_threshold: RANSAC reprojection threshold, as a fraction of the query's longest side.
    max_scale:   transforms scaling the reference by more than this factor (or less than its inverse)
                 are rejected as degenerate.
    """

    model: str = "similarity"
    ransac_threshold: float = 0.01
    max_scale: float = 16.0

    def __post_init__(self) -> None:
        check_number("ransac_threshold", self.ransac_threshold)
        check_number("max_scale", self.max_scale)
        if self.model not in MODELS:
            raise CopyseekError(f"verification model must be one of {MODELS}, got {self.model!r}")
        if not 0.0 < self.ransac_threshold < 0.5:
            raise CopyseekError(
                f"ransac_threshold is a fraction of the image side in (0, 0.5), got {self.ransac_threshold}"
            )
        if self.max_scale <= 1.0:
            raise CopyseekError(f"max_scale must be above 1, got {self.max_scale}")


@dataclass(frozen=True)
class Verification:
    """inliers:  matches consistent with the transform (0 when none was found).
    pairs:    (inliers, 4) float32 inlier correspondences (xq, yq, xr, yr), pixels of each image.
    region:   (4,) float32 x0, y0, x1, y1: the reference's outline mapped into the query, clipped to
              the query image, in query pixels (all zeros when inliers == 0).
    mirrored: the copy is mirrored (matched through the query's mirrored descriptors).
    """

    inliers: int
    pairs: np.ndarray
    region: np.ndarray
    mirrored: bool = False

    @classmethod
    def none(cls) -> "Verification":
        return cls(0, np.zeros((0, 4), np.float32), np.zeros(4, np.float32))

    def coverage(self, query_size: tuple[int, int], reference_size: tuple[int, int]) -> float:
        """The smaller of the two images' shares (0-1) that the inliers' bounding box covers; sizes
        (width, height) in the pixels `pairs` is in. A copy matches over much of both images; two
        unrelated images that carry the same overlay (an emoji, a caption) match in a small patch."""
        if self.inliers == 0:
            return 0.0
        shares = []
        for x, y, (width, height) in ((0, 1, query_size), (2, 3, reference_size)):
            box = np.ptp(self.pairs[:, x]) * np.ptp(self.pairs[:, y])
            shares.append(float(box) / max(int(width) * int(height), 1))
        return min(shares)


def one_to_one(qi: np.ndarray, ri: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep, for each reference keypoint ri, its closest match, and for each query keypoint qi its
    closest remaining one, so repeated keypoints cannot vote twice for a transform. (n,) arrays in,
    (qi, ri) subsets out, sorted by qi."""
    order = np.argsort(distance, kind="stable")
    _, first = np.unique(ri[order], return_index=True)
    order = order[np.sort(first)]
    _, first = np.unique(qi[order], return_index=True)
    keep = np.sort(order[first])
    return qi[keep], ri[keep]


def _fit(src: np.ndarray, dst: np.ndarray, params: VerifyParams, pixels: float) -> tuple[np.ndarray | None, np.ndarray]:
    """Transform src -> dst ((n, 2) float32 each) and the (n,) bool inlier mask; None when it fails.

    The transform is returned as a (3, 3) float64 matrix."""
    minimum = 3 if params.model == "similarity" else 5
    if len(src) < minimum:
        return None, np.zeros(len(src), bool)
    if params.model == "similarity":
        matrix, mask = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=pixels, maxIters=2000, confidence=0.995
        )
        if matrix is not None:
            matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    else:
        matrix, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, pixels, maxIters=2000, confidence=0.995)
    if matrix is None or mask is None:
        return None, np.zeros(len(src), bool)
    scale = np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    if not 1.0 / params.max_scale <= scale <= params.max_scale:
        return None, np.zeros(len(src), bool)
    return matrix, mask.ravel().astype(bool)


def _outline(matrix: np.ndarray, ref_size: tuple[int, int], query_size: tuple[int, int]) -> np.ndarray:
    """The reference's corners mapped by `matrix` (3, 3), bounding box clipped to the query: (4,) float32."""
    width, height = ref_size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    mapped = cv2.perspectiveTransform(corners[None], matrix)[0]
    qw, qh = query_size
    x0, y0 = np.clip(mapped.min(0), 0, [qw, qh])
    x1, y1 = np.clip(mapped.max(0), 0, [qw, qh])
    return np.array([x0, y0, x1, y1], np.float32)


def verify(
    query_xy: np.ndarray,
    query_size: tuple[int, int],
    ref_xy: np.ndarray,
    ref_size: tuple[int, int],
    groups: list[tuple[np.ndarray, np.ndarray]],
    params: VerifyParams,
) -> Verification:
    """Best transform of the reference into the query over groups of tentative matches.

    query_xy: (n, 2) query keypoints in query pixels; query_size (width, height).
    ref_xy:   (nr, 2) reference keypoints in reference pixels; ref_size (width, height).
    groups:   [(qi, ri)] or [(qi, ri), (qi, ri) of the mirrored query descriptors]: index arrays of
              matched keypoints. For the mirrored group the query's x is mirrored before fitting, so
              a flipped copy is a plain similarity there.
    """
    best = Verification.none()
    pixels = params.ransac_threshold * max(query_size)
    for mirrored, (qi, ri) in enumerate(groups):
        dst = query_xy[qi].astype(np.float32)
        if mirrored:
            dst[:, 0] = query_size[0] - 1 - dst[:, 0]
        matrix, mask = _fit(ref_xy[ri].astype(np.float32), dst, params, pixels)
        if matrix is None or mask.sum() <= best.inliers:
            continue
        region = _outline(matrix, ref_size, query_size)
        if mirrored:
            region = np.array([query_size[0] - region[2], region[1], query_size[0] - region[0], region[3]], np.float32)
        pairs = np.hstack([query_xy[qi[mask]], ref_xy[ri[mask]]]).astype(np.float32)
        best = Verification(int(mask.sum()), pairs, region, bool(mirrored))
    return best
