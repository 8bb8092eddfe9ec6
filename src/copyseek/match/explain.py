"""`copyseek explain`: why a query matches (or not) a reference, as a picture.

Both images side by side, the local branch's inlier correspondences drawn, the copied region
outlined in the query, and each branch's score: global similarity (whole query and best crop),
local inliers and the fused log-odds.

Two fused scores, because they answer different questions:
- `fused (pair alone)`: the pair by itself, no other reference competing (the margin is the region
  similarity itself) and no background normalisation, scored with the weights fitted for matching
  within the pair (`match --pair-matching`), which is how the pair is verified. High for any pair
  that looks alike.
- `fused (as match)`: the score `copyseek match` gives this pair (without --background), when the
  index is a fused one and the reference is among the query's candidates. Other references compete,
  so a non-copy that is only "the least unlike" scores low here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from copyseek.registry import make_branch
from copyseek.errors import CopyseekError
from copyseek.io.images import load_rgb
from copyseek.match.fusion import CHANCE_PAIR_INLIERS, excess_inliers, weights_for

if TYPE_CHECKING:
    from copyseek.describe.global_branch import GlobalBranch
    from copyseek.local.branch import LocalBranch


@dataclass
class Explanation:
    scores: dict[str, float]
    region: np.ndarray
    inliers: int
    path: Path


def explain_pair(
    query: str | os.PathLike,
    reference: str | os.PathLike,
    output: str | os.PathLike,
    index_path: str | os.PathLike | None = None,
) -> Explanation:
    """Score one (query, reference) pair with every branch and draw it to `output` (PNG).

    reference: an image path, or with `index_path`, the id of an indexed reference. The index's
    global model is used when given (else SSCD); scores are not background-normalised. The fused
    log-odds take the pair alone (no other reference competes for the query, so the margin is the
    region-global similarity itself); with a fused index and a reference id, the score `match`
    gives the pair is added as "fused (as match)" (see the module's docstring).
    """
    from copyseek.store.index import Index

    options: dict = {}
    as_match: float | None = None
    if index_path is not None:
        with Index.open(index_path) as index:
            if not Path(reference).is_file():
                reference_id = str(reference)
                reference = index.reference_path(reference_id)
                as_match = score_as_match(index, query, reference_id)
            options = index.manifest.get_meta("options").get("global", {})  # type: ignore[union-attr]
    elif not Path(reference).is_file():
        raise CopyseekError(f"reference image not found: {reference} (give --index to look up an id)")
    global_branch = make_branch("global", options)
    local_branch = make_branch("local", {})
    side = max(global_branch.decode_side, local_branch.decode_side)
    query_rgb, reference_rgb = load_rgb(query, side), load_rgb(reference, side)
    return explain_images(query_rgb, reference_rgb, global_branch, local_branch, output, as_match)


def explain_images(
    query_rgb: np.ndarray,
    reference_rgb: np.ndarray,
    global_branch: "GlobalBranch",
    local_branch: "LocalBranch",
    output: str | os.PathLike,
    as_match: float | None = None,
) -> Explanation:
    """`explain_pair` on decoded (H, W, 3) uint8 RGB images with branches already loaded (a
    service keeps them warm): scores the pair and draws it to `output`. as_match: the score
    `match` gives the pair, shown beside the pair-alone fused score when known."""
    from copyseek.local.explain import draw_pair
    from copyseek.local.regions import query_crops

    query_vector, reference_vector = global_branch.embed([query_rgb, reference_rgb])
    whole = float(query_vector @ reference_vector)
    verification = local_branch.verify_pair(
        local_branch.extract([query_rgb], query=True)[0], local_branch.extract([reference_rgb])[0]
    )
    crops = query_crops(query_rgb, verification.region[None] if verification.inliers else None)
    crop_sims = global_branch.embed(crops) @ reference_vector if crops else np.zeros(0)
    region = max(whole, float(crop_sims.max()) if len(crop_sims) else whole)
    # verify_pair takes the tentative matches within the pair, so the weights and chance level
    # fitted for matching within the pair apply (match --pair-matching)
    evidence = [whole, region, excess_inliers(verification.inliers, CHANCE_PAIR_INLIERS), 0.0, region]  # in FEATURES order
    weights = weights_for(local_branch.describer.name, normalised=False, pair_matching=True)
    fused = float(weights.log_odds(np.array([evidence]))[0])
    scores = {"global": whole, "region-global": region, "local inliers": float(verification.inliers), "fused (pair alone)": fused}
    if as_match is not None:
        scores["fused (as match)"] = as_match
    path = draw_pair(query_rgb, reference_rgb, verification.pairs, verification.region, scores, output)
    return Explanation(scores, verification.region, verification.inliers, Path(path))


def score_as_match(index, query: str | os.PathLike, reference_id: str) -> float | None:
    """The fused score `match` gives (query, reference_id) without background normalisation, or None
    when the index is not fused or the reference is not among the query's candidates."""
    from copyseek.io.images import ImageFile
    from copyseek.match.fusion import FusionParams
    from copyseek.match.matcher import MatchOptions, match

    if index.pipeline != "fused":
        return None
    query = Path(query)
    result = match(
        index, [ImageFile(query.stem, query)], MatchOptions(k=FusionParams().candidates, workers=0),
        progress=False, on_skip=lambda *_: None,
    )  # fmt: skip
    return next((p.score for p in result.predictions if p.reference_id == reference_id), None)
