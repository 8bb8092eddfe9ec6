"""Fusing the global and local branches into one calibrated score (the `fused` pipeline).

For each query the candidate references are the union of
  - the global branch's top `candidates` (SSCD similarity, normalised against the background set),
  - the local branch's verified references (RootSIFT votes + RANSAC inliers, and where the copy
    lies in the query),
  - the global branch searched again with crops of the query: the regions the local branch found
    and a fixed set (2x2 grid, centre, halves), so a copy that fills only part of the query (a
    paste, a collage tile) is seen by the global descriptor too ("region-global").
The pipeline's global branch is SSCD and 0.4 x copyseek-small side by side
(`--model sscd,copyseek-small@0.4`), and describes each whole image at two resizings, squashed to
a square and with its aspect kept (`--resize square:224+short:256`), summing the two vectors;
crops are described at the first resizing only, as they are most of a query's cost.
Each (query, reference) gets five pieces of evidence:
    g  = global similarity of the whole query, minus its background offset when normalising,
    c  = best region-global similarity over the crops (each crop normalised by its own background
         offset, so a crop of sky does not win by being bland), at least g,
    e  = log(1 + max(0, n - CHANCE_INLIERS)), n the inliers of the geometric verification (0 when not
         verified): inliers beyond what a chance fit on wrong matches reaches,
    o  = the reference's own background offset (0 without normalisation): a bland or generic
         reference is near many queries, as a bland query is near many references,
    m  = margin: c minus the best c of the query's other candidates, leaving out the reference's own
         near-duplicates (a copy stands out from the rest of the collection; a pair that is only
         "the least unlike" does not),
and the score is a logistic model of them, the log-odds that the pair is a copy:
    score = w0 + wg * g + wc * c + we * e + wo * o + wm * m,   probability = 1 / (1 + exp(-score))
(0 = even odds, 2.2 = 90 %, 4.6 = 99 %). Predictions carry the log-odds, not the probability: the
probability of clear copies rounds to 1.0, and equal scores would tie in DISC21's ranking.
Evidence adds up in log-odds, as for independent tests, so one strong branch suffices and two
weak ones agree. The weights are fitted once (benchmarks/fit_fusion.py, on benchmarks built from
photos disjoint from every evaluation benchmark) and shipped here; because the output is a
probability estimate, a threshold such as 2.2 (90 %) keeps its meaning across collections (as far as
the normalised similarities do, which is what the background set is for).

The `fused-how` pipeline adds the HOW branch (copyseek/how, ASMK-aggregated deep local
descriptors) as a sixth piece of evidence,
    h  = log(1 + a / HOW_SCALE), a the ASMK similarity of the query's HOW descriptors to the
         reference's (the better of the query and its mirror; 0 when they share no visual word),
with a sixth weight fitted like the others (FITTED_HOW_WEIGHTS), and, with
`FusionParams.how_candidates`, HOW's top references among the candidates.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from copyseek.describe.base import Candidates
from copyseek.describe.preprocess import Preprocess
from copyseek.detect.runtime import CROP_DETECTOR
from copyseek.errors import CopyseekError
from copyseek.match.normalize import DUPLICATE_SIMILARITY, BackgroundNormalizer
from copyseek.match.scoring import QueryBatch, normalized_global
from copyseek.registry import PIPELINE_DEFAULTS
from copyseek.store.index import Index
from copyseek.validation import check_bool, check_int, check_number

FEATURES = ("global", "region", "excess_inliers", "reference_offset", "margin")

HOW_FEATURE = "how"
"""The sixth evidence of an index with the HOW branch (fused-how): ASMK similarity, after FEATURES."""


HOW_SCALE = 1e-4
"""ASMK similarities are small and heavy-tailed (training benchmarks: copies' median 1e-3, 90% of
non-copies below 6e-4), so the HOW evidence is log(1 + a / HOW_SCALE): in leave-one-benchmark-out
fits on the fusion training benchmarks it did as well as 1e-3 and the raw similarity on muAP and
better on recall at P90 (BENCHMARKS.md, issue 16)."""


def how_evidence(similarity: np.ndarray) -> np.ndarray:
    """(m,) ASMK similarities -> (m,) the HOW evidence, log(1 + a / HOW_SCALE) (0 for a <= 0)."""
    return np.log1p(np.maximum(np.asarray(similarity, np.float64), 0.0) / HOW_SCALE)


def evidence_names(with_how: bool) -> tuple[str, ...]:
    """Names of the evidence columns: FEATURES, then HOW_FEATURE for an index with the HOW branch."""
    return FEATURES + (HOW_FEATURE,) if with_how else FEATURES

CHANCE_INLIERS = 3
"""Inliers a RANSAC similarity fit reaches on wrong matches alone (non-copies reach 3-4, rarely 6);
counting only those beyond it made the fit sharper than log(1 + n) on the training benchmarks."""

CHANCE_PAIR_INLIERS = 6
"""The same with the local branch's tentative matches taken within the pair (`pair_matching`):
without the rest of the collection to take them, a non-copy's descriptors keep more chance
matches (2-6 inliers; the level chosen by leave-one-benchmark-out muAP, BENCHMARKS.md issue 13)."""


def chance_inliers(pair_matching: bool) -> int:
    """Inliers a chance fit reaches with the local branch's matching (CHANCE_INLIERS or CHANCE_PAIR_INLIERS)."""
    return CHANCE_PAIR_INLIERS if pair_matching else CHANCE_INLIERS

def margins(region: np.ndarray, reference_vectors: np.ndarray) -> np.ndarray:
    """(m,) region-global evidence of one query's candidates and their (m, dim) global vectors ->
    (m,) margin of each over the best other candidate that is not its near-duplicate (raw cosine
    above DUPLICATE_SIMILARITY: they do not compete for a query), over 0 when none is left."""
    competing = reference_vectors @ reference_vectors.T <= DUPLICATE_SIMILARITY
    np.fill_diagonal(competing, False)
    best_other = np.where(competing, region[None, :], -np.inf).max(axis=1, initial=-np.inf)
    return region - np.where(np.isfinite(best_other), best_other, 0.0)


def excess_inliers(inliers: np.ndarray, chance: int = CHANCE_INLIERS) -> np.ndarray:
    """(m,) inlier counts -> (m,) log(1 + inliers beyond `chance`), the local evidence."""
    return np.log1p(np.maximum(np.asarray(inliers, np.float64) - chance, 0))


@dataclass(frozen=True)
class FusionWeights:
    """Logistic weights: bias, then one per evidence in FEATURES order, and optionally a sixth for
    HOW_FEATURE (weights fitted for the fused-how pipeline)."""

    bias: float
    weights: tuple[float, ...]

    def __post_init__(self):
        check_number("fusion bias", self.bias)
        if not isinstance(self.weights, tuple) or len(self.weights) not in (len(FEATURES), len(FEATURES) + 1):
            raise CopyseekError(
                f"fusion needs a tuple of {len(FEATURES)} weights ({', '.join(FEATURES)}), or "
                f"{len(FEATURES) + 1} with {HOW_FEATURE}, got {self.weights!r}")
        for name, weight in zip(self.names, self.weights):
            check_number(f"fusion weight of {name}", weight)

    @property
    def names(self) -> tuple[str, ...]:
        """The evidence these weights score, in column order."""
        return evidence_names(len(self.weights) > len(FEATURES))

    def log_odds(self, evidence: np.ndarray) -> np.ndarray:
        """(m, 5 or 6) evidence rows -> (m,) log-odds that each pair is a copy (the fused score).
        Five weights score the first five columns: the HOW evidence of a fused-how index, if any, is
        then left out (as the fused pipeline scores the same pair)."""
        if evidence.shape[1] < len(self.weights):
            raise CopyseekError(f"these fusion weights score {', '.join(self.names)}; the evidence has {evidence.shape[1]} columns")
        return self.bias + evidence[:, : len(self.weights)] @ np.asarray(self.weights, np.float64)

    def probability(self, evidence: np.ndarray) -> np.ndarray:
        """(m, 5 or 6) evidence rows -> (m,) probability that each pair is a copy."""
        return 1.0 / (1.0 + np.exp(-self.log_odds(evidence)))


# Fitted by `benchmarks/fit_fusion.py` (see BENCHMARKS.md for the command and the data).
WEIGHTS_NORMALISED = FusionWeights(-3.812, (5.894, 10.153, 4.643, -1.471, 14.022))
WEIGHTS_RAW = FusionWeights(-4.649, (3.475, 6.455, 4.623, 0.0, 17.185))

FITTED_WEIGHTS: dict[str, tuple[FusionWeights, FusionWeights]] = {"rootsift": (WEIGHTS_NORMALISED, WEIGHTS_RAW)}
"""Local descriptor (resolved name, as the local branch's spec records it) -> (normalised, raw)
weights fitted with its inlier counts. Another descriptor verifies a different number of inliers
per copy, so an index scores with the weights of its own descriptor; one without fitted weights
uses RootSIFT's, with a warning."""


FITTED_HOW_WEIGHTS: dict[str, FusionWeights] = {
    "rootsift": FusionWeights(-4.435, (4.419, 9.027, 4.733, -0.790, 14.054, 0.456)),
}
"""Local descriptor -> six weights (FEATURES + HOW_FEATURE, normalised scores) for an index with the
HOW branch (fused-how), fitted by benchmarks/bench_fused_how.py on the fusion training benchmarks.
Without an entry (or without a background set) a fused-how index is scored with the fused weights,
its HOW evidence left out, with a warning."""


FITTED_PAIR_WEIGHTS: dict[str, tuple[FusionWeights, FusionWeights]] = {
    "rootsift": (FusionWeights(-3.807, (7.004, 8.326, 3.566, -0.296, 12.553)), FusionWeights(-4.568, (3.859, 5.961, 3.544, 0.0, 16.167))),
}
"""Local descriptor -> (normalised, raw) weights for a local branch that takes tentative matches
within the pair (`pair_matching`, its excess inliers counted beyond CHANCE_PAIR_INLIERS), fitted by
`benchmarks/fit_fusion.py --pair-matching`. A descriptor without an entry uses FITTED_WEIGHTS."""


def weights_for(local_descriptor: str, normalised: bool, how: bool = False, pair_matching: bool = False) -> FusionWeights:
    """The shipped weights for an index whose local branch uses `local_descriptor` (and, with `how`,
    that has the HOW branch; with `pair_matching`, whose tentative matches are taken within the
    pair). HOW's weights were fitted with collection-wide matches only."""
    if how and normalised and not pair_matching and local_descriptor in FITTED_HOW_WEIGHTS:
        return FITTED_HOW_WEIGHTS[local_descriptor]
    fitted = FITTED_PAIR_WEIGHTS if pair_matching and local_descriptor in FITTED_PAIR_WEIGHTS else FITTED_WEIGHTS
    normalised_weights, raw_weights = fitted.get(local_descriptor, FITTED_WEIGHTS["rootsift"])
    return normalised_weights if normalised else raw_weights


def warn_if_not_fitted_for(global_spec: dict, local_descriptor: str = "rootsift", pipeline: str = "fused") -> None:
    """Warns when the shipped weights meet a global descriptor or a local descriptor they were not
    fitted for (`pipeline`: the fused preset whose global descriptor the index should have).

    `global_spec` is the global branch's spec (model, preprocess, flip_average). Another descriptor
    shifts the similarities g and c (or the inlier counts e), so the scores still rank pairs but 0.9
    no longer means 90%.
    """
    if local_descriptor not in FITTED_WEIGHTS:
        warnings.warn(
            f"no fusion weights were fitted for the local descriptor {local_descriptor} (only for "
            f"{', '.join(FITTED_WEIGHTS)}): scores still rank pairs but are not calibrated probabilities; "
            "fit weights with benchmarks/fit_fusion.py --local-descriptor and pass them as FusedScorer(weights=...)",
            stacklevel=3,
        )
    fitted = PIPELINE_DEFAULTS[pipeline if pipeline in PRESET_PARAMS else "fused"]["global"]
    used = {"model": global_spec.get("model"), "resize": global_spec.get("preprocess")}
    flip = bool(global_spec.get("flip_average"))
    if used != fitted or flip:
        described = ", ".join(f"{k}={v}" for k, v in used.items()) + (", flip_average" if flip else "")
        warnings.warn(
            f"the fusion weights were fitted for the fused pipeline's default global descriptor "
            f"(model={fitted['model']}, resize={fitted['resize']}), this index has {described}: "
            "scores still rank pairs but are not calibrated probabilities; re-index with the defaults, "
            "or fit weights with benchmarks/fit_fusion.py and pass them as FusedScorer(weights=...)",
            stacklevel=3,
        )


@dataclass(frozen=True)
class FusionParams:
    """candidates: global candidates per query; region_k: candidates per crop;
    max_regions: local regions re-searched, from candidates with at least min_region_inliers
    (non-copies reach about 4 inliers);
    skip_crops_above: no crops for a query whose best candidate is already this probable;
    flip_average_crops: describe crops with their mirrors too when the global branch does so for
    whole images (off: the crops are most of a query's cost, and doubling it gained nothing on the
    calibrated benchmark: 0.883 vs 0.885 muAP, 4.9 vs 6.5 queries/s);
    all_views_for_crops: describe crops at every view of the global branch, not only its first
    (off: at square:256+short:320 with SSCD alone, that cost 4.1 vs 7.2 queries/s for lower muAP,
    0.879 vs 0.884 on the fresh benchmark);
    crop_policy: which crops to describe (match/crops.py: grid, best, boxes, boxes+grid,
    best-else-grid, partial-else-grid, sure-else-grid; the detector-based ones run
    `copyseek.detect` on the query); box_threshold: least score of a detected box;
    frame_threshold: least score of a whole-frame copy box that replaces the grid (sure-else-grid;
    0.65 chosen on `std` from 0.5-0.7, BENCHMARKS.md issue 18); detector: an exported
    detector.onnx (default: the shipped one);
    max_crops: describe at most this many of a query's crops, in the policy's order (the grid
    policy: the local regions, the 2x2 grid, the centre, then the halves); None: all;
    crop_size: describe crops squashed to crop_size x crop_size pixels instead of at the global
    branch's first view (a crop at 160 costs half of one at 224);
    how_candidates: with the HOW branch (fused-how), its top references added to the candidates
    (0: HOW is evidence for the other branches' candidates only)."""

    candidates: int = 30
    region_k: int = 5
    max_regions: int = 3
    min_region_inliers: int = 6
    skip_crops_above: float = 0.95
    flip_average_crops: bool = False
    all_views_for_crops: bool = False
    crop_policy: str = "grid"
    box_threshold: float = 0.3
    frame_threshold: float = 0.65
    detector: str | None = None
    max_crops: int | None = None
    crop_size: int | None = None
    how_candidates: int = 0

    def __post_init__(self) -> None:
        from copyseek.match.crops import check_policy

        check_policy(self.crop_policy)
        check_number("fusion box_threshold", self.box_threshold, minimum=0.0, maximum=1.0)
        check_number("fusion frame_threshold", self.frame_threshold, minimum=0.0, maximum=1.0)
        if self.detector is not None and (not isinstance(self.detector, str) or not self.detector):
            raise CopyseekError(f"fusion detector must be the path of a detector.onnx, got {self.detector!r}")
        check_int("fusion candidates", self.candidates, minimum=1)
        check_int("fusion region_k", self.region_k, minimum=1)
        check_int("fusion max_regions", self.max_regions, minimum=0)
        check_int("fusion min_region_inliers", self.min_region_inliers, minimum=0)
        check_int("fusion how_candidates", self.how_candidates, minimum=0)
        check_number("fusion skip_crops_above", self.skip_crops_above, minimum=0.0, maximum=1.0, open_minimum=True)
        for name in ("flip_average_crops", "all_views_for_crops"):
            check_bool(f"fusion {name}", getattr(self, name))
        if self.max_crops is not None:
            check_int("fusion max_crops", self.max_crops, minimum=1)
        if self.crop_size is not None:
            check_int("fusion crop_size", self.crop_size, minimum=32)


PRESET_PARAMS: dict[str, FusionParams] = {
    # the detector's copy box replaces the fixed crops where it places the copy: on five calibrated
    # benchmarks 42% fewer crop descriptions than the grid for the same muAP (BENCHMARKS.md, issue 18)
    "fused": FusionParams(crop_policy="sure-else-grid", detector=str(CROP_DETECTOR)),
    # the fixed crops (2x2 grid, centre, halves) are most of a query's cost and add little: only
    # the regions the local branch located (BENCHMARKS.md, issues 13 and 18)
    "fused-fast": FusionParams(crop_policy="local"),
    "fused-how": FusionParams(),  # the grid: its HOW evidence was measured and fitted with it
}
"""Pipeline preset -> the FusionParams its scorer uses. fused-fast scores with the shipped weights
(FITTED_WEIGHTS), fitted for fused's two-view descriptor, not refitted for its one view: its
accuracy and calibration (threshold at P90) are measured in BENCHMARKS.md (issue 13)."""


class FusedScorer:
    """Scores the union of the branches' candidates with a logistic model of their evidence."""

    def __init__(
        self,
        index: Index,
        normalizer: BackgroundNormalizer | None,
        params: FusionParams | None = None,
        weights: FusionWeights | None = None,
    ):
        """params: default, the preset's (PRESET_PARAMS of the index's pipeline); weights: default,
        the shipped ones for the index's local descriptor (FITTED_WEIGHTS), with a warning if the
        index's global descriptor is not its preset's."""
        if "global" not in index.branches or "local" not in index.branches:
            raise CopyseekError("the fused pipeline needs an index with the global and local branches")
        self.global_branch = index.branches["global"]
        self.global_searcher = index.searchers()["global"]
        # HOW's ASMK similarity is the sixth evidence of an index with the HOW branch (fused-how)
        self.how_searcher = index.searchers()["how"] if "how" in index.branches else None
        self.features = evidence_names(self.how_searcher is not None)
        self.normalizer = normalizer
        self.params = params or PRESET_PARAMS.get(index.pipeline, FusionParams())
        # read at every batch: `match --pair-matching` sets it on the searcher after this is made
        self.local_searcher = index.searchers()["local"]
        self.local_descriptor = index.branches["local"].spec()["features"]
        if weights is None:
            warn_if_not_fitted_for(self.global_branch.spec(), self.local_descriptor, index.pipeline)
        self.given_weights = weights
        if weights is None and len(self.weights.weights) < len(self.features):
            warnings.warn(
                "no fusion weights with HOW evidence were fitted for this index (local descriptor "
                f"{self.local_descriptor}{'' if normalizer is not None else ', without a background set'}): "
                "it is scored with the fused pipeline's weights, its HOW evidence left out"
                + (" (they were fitted with collection-wide matches: --no-pair-matching keeps it)" if self.pair_matching else ""),
                stacklevel=2)
        self._reference_offsets: dict[int, float] = {}
        self.crops_described = 0  # crop descriptions so far (descriptor passes beyond the whole query)
        self.queries_cropped = 0

    @property
    def pair_matching(self) -> bool:
        """Whether the local branch takes tentative matches within the pair now (SearchParams)."""
        return bool(self.local_searcher.search_parameters()["pair_matching"])

    @property
    def weights(self) -> FusionWeights:
        """The weights given, or the shipped ones for this index and the local branch's matching now."""
        if self.given_weights is not None:
            return self.given_weights
        return weights_for(self.local_descriptor, self.normalizer is not None, self.how_searcher is not None, self.pair_matching)

    def __call__(self, batch: QueryBatch) -> list[Candidates]:
        from threadpoolctl import threadpool_limits

        scored = []
        # The products here are small (tens of candidates); BLAS threads only spin against the
        # model's threads (0.1 s per product instead of 1 ms on a loaded 2-core machine).
        with threadpool_limits(1, user_api="blas"):
            per_query = self.evidence(batch)
        for rows, evidence in per_query:
            log_odds = self.weights.log_odds(evidence)
            named = {name: evidence[:, k] for k, name in enumerate(self.features)}
            extra = {"evidence": evidence, **named, "probability": 1.0 / (1.0 + np.exp(-log_odds))}
            scored.append(Candidates(rows, log_odds.astype(np.float32), extra))
        return scored

    def evidence(self, batch: QueryBatch) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: candidate rows (m,) and their evidence (m, 5, or 6 with HOW) in `self.features` order."""
        whole = normalized_global(batch, self.normalizer)
        return [self.pair_evidence(batch, q, whole[q].rows, found) for q, found in enumerate(self.crop_evidence(batch))]

    def crop_evidence(self, batch: QueryBatch) -> list[dict[int, float]]:
        """Per query: reference row -> the best normalised similarity of any crop of the query ({}
        for a query not cropped).

        The crops cost most of a query's time, so they are searched only when the whole query
        leaves the best candidate below `skip_crops_above`."""
        from copyseek.match.crops import CROP_POLICIES, USES_DETECTOR, CropRequest

        policy = CROP_POLICIES[self.params.crop_policy]
        detector = None
        if self.params.crop_policy in USES_DETECTOR:
            from copyseek.detect import load_detector

            # without the mirror: the preset's crop thresholds were chosen on the plain maps
            detector = load_detector(self.params.detector, flip=False)
        whole = normalized_global(batch, self.normalizer)
        out = [self.pair_evidence(batch, q, whole[q].rows, {}) for q in range(len(batch.images))]
        cropped = [
            q for q, (rows, evidence) in enumerate(out)
            if not (len(rows) and self.weights.probability(evidence).max() >= self.params.skip_crops_above)
        ]  # fmt: skip
        crops = []
        for q in cropped:
            local = batch.candidates["local"][q]
            # regions of chance fits (a few inliers) are arbitrary boxes: crop only trusted ones
            trusted = local.extra.get("inliers", local.scores) >= self.params.min_region_inliers
            regions = local.extra.get("region", np.zeros((0, 4)))[trusted][: self.params.max_regions]
            detected = detector.detect(batch.images[q]) if detector is not None else None
            request = CropRequest(batch.images[q], regions, detected, self.params.box_threshold, self.params.frame_threshold)
            crops.append(policy(request)[: self.params.max_crops])
        self.crops_described += sum(map(len, crops))
        self.queries_cropped += len(cropped)
        found: list[dict[int, float]] = [{} for _ in out]
        for q, region_best in zip(cropped, self.search_crops_of(crops)):
            found[q] = region_best
        return found

    def pair_evidence(
        self, batch: QueryBatch, q: int, global_rows: np.ndarray, region_best: dict[int, float],
        how_candidates: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidate rows of query q and their (m, 5 or 6) evidence, given the crops' best
        similarities; how_candidates: HOW's top references added (default: the params')."""
        local = batch.candidates["local"][q]
        query_vector = batch.features["global"][q]["vector"]
        offset = self.offsets(query_vector[None])[0]
        found = [global_rows[: self.params.candidates], local.rows, np.array(list(region_best), np.int64)]
        if self.how_searcher is not None:
            how_candidates = self.params.how_candidates if how_candidates is None else how_candidates
            found.append(batch.candidates["how"][q].rows[:how_candidates])
        rows = np.unique(np.concatenate(found)).astype(np.int64)
        evidence = np.zeros((len(rows), len(self.features)))
        reference_vectors = self.global_searcher.reconstruct(rows)
        evidence[:, 0] = reference_vectors @ query_vector - offset
        evidence[:, 1] = [max(region_best.get(int(r), -np.inf), g) for r, g in zip(rows, evidence[:, 0])]
        inliers = dict(zip(local.rows.tolist(), local.extra.get("inliers", local.scores).tolist()))
        evidence[:, 2] = excess_inliers([inliers.get(int(r), 0) for r in rows], chance_inliers(self.pair_matching))
        evidence[:, 3] = self.reference_offsets(rows)
        evidence[:, 4] = margins(evidence[:, 1], reference_vectors)
        if self.how_searcher is not None:
            evidence[:, 5] = how_evidence(self.how_searcher.query_scores(batch.features["how"][q])[rows])
        return rows, evidence

    def offsets(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n,) background offsets (zeros without normalisation)."""
        return np.zeros(len(vectors), np.float32) if self.normalizer is None else self.normalizer.offsets(vectors)

    def reference_offsets(self, rows: np.ndarray) -> np.ndarray:
        """(m,) reference rows -> (m,) their background offsets (zeros without normalisation).
        Computed on first use and kept: a reference's offset never changes."""
        rows = np.asarray(rows, np.int64)
        if self.normalizer is None:
            return np.zeros(len(rows), np.float32)
        missing = np.array(sorted({int(r) for r in rows} - self._reference_offsets.keys()), np.int64)
        if len(missing):
            offsets = self.normalizer.offsets(self.global_searcher.reconstruct(missing))
            self._reference_offsets.update(zip(missing.tolist(), offsets.tolist()))
        return np.array([self._reference_offsets[int(r)] for r in rows], np.float32)

    def search_crops(self, crops: list[np.ndarray]) -> dict[int, float]:
        """Best normalised similarity of any crop to each reference found."""
        return self.search_crops_of([crops])[0]

    def search_crops_of(self, crops: list[list[np.ndarray]]) -> list[dict[int, float]]:
        """search_crops for the crops of several queries at once: one model batch and one search for
        all of them."""
        flat = [crop for of_query in crops for crop in of_query]
        if not flat:
            return [{} for _ in crops]
        if self.params.crop_size is not None:
            views = (Preprocess("square", self.params.crop_size),)
        else:
            views = None if self.params.all_views_for_crops else self.global_branch.views[:1]
        vectors = self.global_branch.embed(flat, flip_average=self.params.flip_average_crops, views=views)
        sims, rows = self.global_searcher.search_vectors(vectors, self.params.region_k)
        sims = sims - self.offsets(vectors)[:, None]
        found = []
        start = 0
        for of_query in crops:
            best: dict[int, float] = {}
            end = start + len(of_query)
            for s, r in zip(sims[start:end].ravel(), rows[start:end].ravel()):
                if r >= 0 and s > best.get(int(r), -np.inf):
                    best[int(r)] = float(s)
            found.append(best)
            start = end
        return found


def fit_weights(evidence: np.ndarray, is_copy: np.ndarray, l2: float = 1e-6) -> FusionWeights:
    """Logistic regression of is_copy (m,) on evidence (m, 5), by L-BFGS on the mean log-loss."""
    from scipy.optimize import minimize

    x = np.hstack([np.ones((len(evidence), 1)), evidence])
    y = is_copy.astype(np.float64)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        logits = x @ w
        log_p = -np.logaddexp(0, -logits)
        log_not_p = -np.logaddexp(0, logits)
        value = -np.mean(y * log_p + (1 - y) * log_not_p) + l2 * np.sum(w[1:] ** 2)
        gradient = x.T @ (1 / (1 + np.exp(-logits)) - y) / len(y) + 2 * l2 * np.r_[0, w[1:]]
        return value, gradient

    result = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B")
    return FusionWeights(float(result.x[0]), tuple(float(v) for v in result.x[1:]))  # type: ignore[arg-type]
