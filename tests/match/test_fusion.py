import numpy as np
import pytest
from PIL import Image

from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.match.fusion import (
    CHANCE_INLIERS, CHANCE_PAIR_INLIERS, FEATURES, FITTED_PAIR_WEIGHTS, FITTED_WEIGHTS, HOW_FEATURE, HOW_SCALE,
    PRESET_PARAMS, FusedScorer, FusionParams, FusionWeights, excess_inliers, fit_weights, margins,
    warn_if_not_fitted_for, weights_for,
)
from copyseek.match.normalize import BackgroundNormalizer
from copyseek.match.matcher import MatchOptions, match
from copyseek.io.images import find_images
from copyseek.store.index import Index
from tests.making import write_photos


def test_fit_weights_separates_copies_from_non_copies():
    rng = np.random.default_rng(0)
    copies = np.column_stack([
        rng.normal(0.4, 0.1, 200), rng.normal(0.5, 0.1, 200), excess_inliers(rng.integers(10, 60, 200)),
        rng.normal(0.1, 0.05, 200), rng.normal(0.3, 0.1, 200),
    ])
    others = np.column_stack([
        rng.normal(0.0, 0.1, 800), rng.normal(0.1, 0.1, 800), excess_inliers(rng.integers(0, 6, 800)),
        rng.normal(0.2, 0.05, 800), rng.normal(-0.2, 0.1, 800),
    ])
    weights = fit_weights(np.vstack([copies, others]), np.r_[np.ones(200), np.zeros(800)])
    wg, wc, we, wo, wm = weights.weights
    assert min(wg, wc, we, wm) > 0 > wo  # hubs are penalised
    assert weights.probability(copies).mean() > 0.9 > 0.1 > weights.probability(others).mean()


def test_probability_is_monotone_in_each_evidence():
    weights = FusionWeights(-3.0, (5.0, 4.0, 1.0, -2.0, 3.0))
    base = np.array([[0.1, 0.1, 1.0, 0.2, 0.0]])
    for j, sign in enumerate((1, 1, 1, -1, 1)):
        more = base.copy()
        more[0, j] += 0.5
        assert sign * (weights.probability(more)[0] - weights.probability(base)[0]) > 0


def test_weights_must_match_the_features():
    with pytest.raises(CopyseekError, match=f"{len(FEATURES)} weights"):
        FusionWeights(-3.0, (5.0, 4.0, 1.0, -2.0))


def test_excess_inliers_ignores_what_chance_fits_reach():
    counts = np.array([0, 1, CHANCE_INLIERS, CHANCE_INLIERS + 1, CHANCE_INLIERS + 10])
    np.testing.assert_allclose(excess_inliers(counts), [0, 0, 0, np.log(2), np.log(11)])
    assert CHANCE_PAIR_INLIERS > CHANCE_INLIERS  # within the pair chance fits reach more
    np.testing.assert_allclose(excess_inliers([CHANCE_PAIR_INLIERS, CHANCE_PAIR_INLIERS + 3], CHANCE_PAIR_INLIERS), [0, np.log(4)])


def test_the_scorer_follows_the_local_branchs_matching(fused_setup):
    """`match --pair-matching` switches the local searcher after the scorer is made: the scorer's
    weights and chance level follow it, and the searcher's own setting comes back after the run."""
    index, root = fused_setup
    scorer = FusedScorer(index, None)
    assert not scorer.pair_matching and scorer.weights == FITTED_WEIGHTS["rootsift"][1]
    seen = {}

    def record(batch):
        seen[scorer.pair_matching] = (scorer.weights, scorer.evidence(batch)[0][1][:, 2])
        return scorer(batch)

    for within in (False, True):
        match(index, [f for f in find_images(root / "queries")[0] if f.id == "paste"], MatchOptions(k=3, pair_matching=within),
              scorer=record, progress=False)
    assert seen[True][0] == FITTED_PAIR_WEIGHTS["rootsift"][1] != seen[False][0]
    assert seen[True][1].max() > 0 and seen[False][1].max() > 0  # the paste verifies either way
    match(index, root / "queries", MatchOptions(k=1), progress=False)  # None: the index's setting again
    assert not scorer.pair_matching and index.searchers()["local"].params.pair_matching is False


@pytest.fixture(scope="module")
def fused_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    refs = write_photos(root / "refs", 12, seed=21, size=(400, 300))
    hosts = write_photos(root / "hosts", 2, seed=22, size=(640, 480))
    (root / "queries").mkdir()
    # a copy pasted small into another photo: the global descriptor of the whole query misses it
    host = Image.open(hosts[0]).convert("RGB")
    host.paste(Image.open(refs[5]).convert("RGB").resize((200, 150)), (400, 300))
    host.save(root / "queries" / "paste.jpg", quality=90)
    Image.open(hosts[1]).save(root / "queries" / "nothing.jpg")
    index = Index.create(root / "idx", "fused")
    index.add(root / "refs", progress=False)
    return index, root


def test_fused_pipeline_finds_a_small_pasted_copy(fused_setup):
    index, root = fused_setup
    result = match(index, root / "queries", MatchOptions(k=3), progress=False)
    best = {}
    for p in result.predictions:
        best.setdefault(p.query_id, p)
    assert best["paste"].reference_id == "img0005"
    assert best["paste"].score > 0.5
    assert best.get("nothing") is None or best["nothing"].score < best["paste"].score


def test_explain_draws_the_pair_and_locates_the_paste(fused_setup, tmp_path, capsys):
    from copyseek.cli import main

    index, root = fused_setup
    out = tmp_path / "pair.png"
    code = main(["explain", str(root / "queries" / "paste.jpg"), "img0005", "--index", str(index.path), "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.stat().st_size > 10_000
    inliers = float(printed.split("local inliers:")[1].split()[0])
    assert inliers >= 10
    # the score match gives the pair is shown beside the pair-alone one, and is the same number
    as_match = float(printed.split("fused (as match):")[1].split()[0])
    from copyseek.io.images import ImageFile

    found = match(index, [ImageFile("paste", root / "queries" / "paste.jpg")], MatchOptions(k=30), progress=False)
    assert as_match == pytest.approx(next(p.score for p in found.predictions if p.reference_id == "img0005"), rel=1e-3)
    from copyseek.match.explain import explain_pair

    explanation = explain_pair(root / "queries" / "paste.jpg", root / "refs" / "img0005.jpg", tmp_path / "b.png")
    x0, y0, x1, y1 = explanation.region  # pasted at (400, 300)-(600, 450) in a 640x480 query
    overlap = max(0, min(x1, 600) - max(x0, 400)) * max(0, min(y1, 450) - max(y0, 300))
    union = (x1 - x0) * (y1 - y0) + 200 * 150 - overlap
    assert overlap / union > 0.6
    # the pair is verified on its own, so it is scored as matching within the pair does
    scores = explanation.scores
    evidence = [scores["global"], scores["region-global"], excess_inliers(scores["local inliers"], CHANCE_PAIR_INLIERS), 0.0, scores["region-global"]]
    within_pair = weights_for("rootsift", normalised=False, pair_matching=True).log_odds(np.array([evidence]))[0]
    collection_wide = weights_for("rootsift", normalised=False).log_odds(np.array([evidence]))[0]
    assert scores["fused (pair alone)"] == pytest.approx(within_pair) and abs(within_pair - collection_wide) > 0.1


def test_margin_is_over_the_best_competitor_that_is_not_a_near_duplicate():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(4, 64)).astype(np.float32)
    vectors[1] = vectors[0] + 0.1 * rng.normal(size=64)  # reference 1 is a near-duplicate of 0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    region = np.array([0.6, 0.55, 0.2, 0.1])
    np.testing.assert_allclose(margins(region, vectors), [0.4, 0.35, 0.2 - 0.6, 0.1 - 0.6], atol=1e-6)
    np.testing.assert_allclose(margins(region[:1], vectors[:1]), [0.6])  # no competitor: over 0


def test_reference_offsets_are_each_references_background_offset(fused_setup):
    index, root = fused_setup
    background = np.random.default_rng(3).normal(size=(20, index.branches["global"].model.dim)).astype(np.float32)
    background /= np.linalg.norm(background, axis=1, keepdims=True)
    normalizer = BackgroundNormalizer(background, n=3)
    scorer = FusedScorer(index, normalizer)
    rows = np.array([5, 0, 5, 11])
    expected = normalizer.offsets(scorer.global_searcher.reconstruct(rows))
    np.testing.assert_allclose(scorer.reference_offsets(rows), expected, rtol=1e-5)
    np.testing.assert_allclose(scorer.reference_offsets(rows[::-1]), expected[::-1], rtol=1e-5)  # from the cache
    assert not FusedScorer(index, None).reference_offsets(rows).any()


def test_fused_index_describes_whole_images_at_two_views_and_crops_at_the_first(fused_setup):
    index, root = fused_setup
    branch = index.branches["global"]
    assert index.manifest.get_meta("options")["global"]["resize"] == "square:224+short:256"
    assert branch.views == (Preprocess("square", 224), Preprocess("short", 256))
    scorer = FusedScorer(index, None)
    crop = np.asarray(Image.open(root / "queries" / "paste.jpg").convert("RGB"))[300:450, 400:600]
    first_view = branch.embed([crop], views=branch.views[:1])
    assert not np.allclose(first_view, branch.embed([crop]), atol=1e-3)
    sims, rows = scorer.global_searcher.search_vectors(first_view, scorer.params.region_k)
    assert scorer.search_crops([crop]) == pytest.approx({int(r): float(s) for s, r in zip(sims[0], rows[0])})


def test_shipped_weights_warn_only_for_a_global_descriptor_they_were_not_fitted_for(fused_setup, tmp_path):
    import warnings

    index, _ = fused_setup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FusedScorer(index, None)  # the defaults: silent
    fitted = {"model": "sscd,copyseek-small@0.4", "preprocess": "square:224+short:256"}
    for other in ({**fitted, "model": "sscd"}, {**fitted, "preprocess": "square:320"}, {**fitted, "flip_average": True}):
        with pytest.warns(UserWarning, match="not calibrated"):
            warn_if_not_fitted_for(other)
    old = Index.create(tmp_path / "old", "fused", {"global": {"model": "sscd", "resize": "square:320"}})
    with pytest.warns(UserWarning, match="model=sscd, resize=square:320"):
        FusedScorer(old, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FusedScorer(old, None, weights=FusionWeights(0.0, (1.0,) * len(FEATURES)))  # own weights: silent


def test_crops_of_several_queries_searched_at_once_score_as_one_by_one(fused_setup):
    index, root = fused_setup
    scorer = FusedScorer(index, None)
    image = np.asarray(Image.open(root / "queries" / "paste.jpg").convert("RGB"))
    first, second = [image[300:450, 400:600], image[:240, :320]], [image[100:400, 100:500]]
    batched = scorer.search_crops_of([first, [], second])
    assert batched[1] == {}
    for got, crops in zip((batched[0], batched[2]), (first, second)):
        assert got.keys() == scorer.search_crops(crops).keys()
        assert got == pytest.approx(scorer.search_crops(crops), abs=1e-4)


def test_max_crops_and_crop_size_bound_what_a_query_costs(fused_setup):
    index, root = fused_setup
    everything = FusedScorer(index, None, FusionParams(skip_crops_above=1.0))
    match(index, root / "queries", MatchOptions(k=3), progress=False, scorer=everything)
    capped = FusedScorer(index, None, FusionParams(skip_crops_above=1.0, max_crops=2, crop_size=96))
    result = match(index, root / "queries", MatchOptions(k=3), progress=False, scorer=capped)
    assert everything.queries_cropped == capped.queries_cropped == 2
    assert everything.crops_described > 4 == capped.crops_described
    assert result.predictions[0].query_id in ("paste", "nothing")
    crop = np.asarray(Image.open(root / "queries" / "paste.jpg").convert("RGB"))[300:450, 400:600]
    small = index.branches["global"].embed([crop], views=(Preprocess("square", 96),))
    sims, rows = capped.global_searcher.search_vectors(small, capped.params.region_k)
    assert capped.search_crops([crop]) == pytest.approx({int(r): float(s) for s, r in zip(sims[0], rows[0])})


def test_the_fast_preset_describes_one_view_and_uses_its_own_crop_settings(tmp_path, fused_setup):
    import warnings

    _, root = fused_setup
    with Index.create(tmp_path / "fast", "fused-fast") as index:
        index.add(root / "refs", progress=False)
        assert index.branches["global"].views == (Preprocess("square", 224),)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # its own global descriptor: no "not fitted" warning
            scorer = FusedScorer(index, None)
        assert scorer.params == PRESET_PARAMS["fused-fast"] != FusionParams()
        assert scorer.weights == FITTED_WEIGHTS["rootsift"][1]  # fused's weights, not refitted
        best = match(index, root / "queries", MatchOptions(k=1), progress=False).predictions
        assert [p.reference_id for p in best if p.query_id == "paste"] == ["img0005"]


def test_a_local_descriptor_without_fitted_weights_warns_and_uses_rootsifts(fused_setup, tmp_path, monkeypatch):
    from copyseek.match import fusion

    monkeypatch.setattr(fusion, "FITTED_WEIGHTS", {"rootsift": fusion.FITTED_WEIGHTS["rootsift"]})
    index, _ = fused_setup
    assert index.branches["local"].spec()["features"] == "rootsift"
    rootsift = fusion.FITTED_WEIGHTS["rootsift"]
    assert fusion.weights_for("rootsift", True) == rootsift[0] != fusion.weights_for("rootsift", False)
    fitted_global = {"model": "sscd,copyseek-small@0.4", "preprocess": "square:224+short:256"}
    with pytest.warns(UserWarning, match="local descriptor kdp:polar"):
        warn_if_not_fitted_for(fitted_global, "kdp:polar")
    other = Index.create(tmp_path / "kdp", "fused", {"local": {"descriptor": "kdp"}})
    with pytest.warns(UserWarning, match="local descriptor kdp:polar"):
        scorer = FusedScorer(other, None)
    assert scorer.weights == fusion.weights_for("kdp:polar", False) == rootsift[1]


def test_six_weights_score_the_how_evidence_and_five_leave_it_out():
    five = FusionWeights(-3.0, (5.0, 4.0, 1.0, -2.0, 3.0))
    six = FusionWeights(-3.0, (5.0, 4.0, 1.0, -2.0, 3.0, 2.0))
    assert six.names == (*FEATURES, HOW_FEATURE) and five.names == FEATURES
    evidence = np.array([[0.1, 0.2, 1.0, 0.1, 0.0, 0.0], [0.1, 0.2, 1.0, 0.1, 0.0, 0.5]])
    assert five.log_odds(evidence)[0] == five.log_odds(evidence)[1] == six.log_odds(evidence)[0]
    assert six.log_odds(evidence)[1] == pytest.approx(six.log_odds(evidence)[0] + 1.0)
    with pytest.raises(CopyseekError, match="evidence has 5 columns"):
        six.log_odds(evidence[:, :5])
    with pytest.raises(CopyseekError, match="or 6 with how"):
        FusionWeights(-3.0, (1.0,) * 7)
    # fused-how's shipped weights: six, for normalised scores; raw scores keep the fused pipeline's
    from copyseek.match import fusion

    assert fusion.weights_for("rootsift", True, how=True).names[-1] == HOW_FEATURE
    assert fusion.weights_for("rootsift", False, how=True) == FITTED_WEIGHTS["rootsift"][1]


def test_fused_how_adds_the_asmk_similarity_and_hows_candidates(tmp_path, tiny_how):
    refs = write_photos(tmp_path / "refs", 8, seed=31, size=(256, 192))
    (tmp_path / "queries").mkdir()
    Image.open(refs[3]).crop((20, 10, 236, 182)).save(tmp_path / "queries" / "crop.jpg", quality=90)
    how = {"model": str(tiny_how), "max_side": 128, "scales": "1,0.5", "features": 60}
    with Index.create(tmp_path / "idx", "fused-how", {"how": how}) as index:
        index.add(tmp_path / "refs", progress=False)
        with pytest.warns(UserWarning, match="no fusion weights with HOW evidence"):
            scorer = FusedScorer(index, None)
        assert scorer.features == (*FEATURES, HOW_FEATURE) and scorer.weights == FITTED_WEIGHTS["rootsift"][1]
        seen = {}

        def record(batch):
            seen["batch"] = batch
            return scorer(batch)

        result = match(index, tmp_path / "queries", MatchOptions(k=3), scorer=record, progress=False)
        batch = seen["batch"]
        rows, evidence = scorer.evidence(batch)[0]
        asmk = index.searchers()["how"].query_scores(batch.features["how"][0])
        np.testing.assert_allclose(evidence[:, 5], np.log1p(asmk[rows] / HOW_SCALE), rtol=1e-5)
        assert asmk[3] == asmk.max() > 0  # the copy's reference shares most of HOW's words
        found = scorer.crop_evidence(batch)[0]
        with_how, _ = scorer.pair_evidence(batch, 0, batch.candidates["global"][0].rows[:1], found, how_candidates=8)
        assert set(batch.candidates["how"][0].rows) <= set(with_how)
        assert result.predictions[0].reference_id == "img0003"


def test_the_fused_preset_keeps_the_grid_only_where_the_detector_is_unsure(fused_setup, monkeypatch):
    import dataclasses

    import copyseek.detect
    from copyseek.detect.regions import CLASSES, Regions

    class WholeFrame:
        """A detector reporting one copy box over the whole query, scoring `score`."""

        def __init__(self, score: float):
            self.score = score

        def detect(self, rgb):
            box = np.array([[0, 0, rgb.shape[1], rgb.shape[0]]], np.float32)
            return Regions(box, np.array([self.score], np.float32), np.array([CLASSES.index("copy")]))

    index, root = fused_setup
    assert PRESET_PARAMS["fused"].crop_policy == "sure-else-grid"
    every_query = dataclasses.replace(PRESET_PARAMS["fused"], skip_crops_above=1.0)
    described = {}
    for score in (0.9, 0.5):
        loads = []
        monkeypatch.setattr(copyseek.detect, "load_detector",
                            lambda path=None, flip=True, s=score: loads.append(flip) or WholeFrame(s))
        scorer = FusedScorer(index, None, every_query)
        match(index, root / "queries", MatchOptions(k=3), progress=False, scorer=scorer)
        described[score] = scorer.crops_described
        assert loads and not any(loads)  # without the mirror pass, as the thresholds were chosen
    grid = FusedScorer(index, None, dataclasses.replace(every_query, crop_policy="grid"))
    match(index, root / "queries", MatchOptions(k=3), progress=False, scorer=grid)
    # sure the copy fills the frame: only the located regions; unsure: the grid's 9 boxes per query too
    assert described[0.9] < described[0.5] == grid.crops_described >= 2 * 9


def test_the_fused_preset_crops_with_the_detector_its_thresholds_were_chosen_with():
    from pathlib import Path

    from copyseek.detect.runtime import CROP_DETECTOR, SHIPPED, SMALL, Detector
    from copyseek.match.fusion import PRESET_PARAMS

    assert PRESET_PARAMS["fused"].detector == str(CROP_DETECTOR) and CROP_DETECTOR not in (SHIPPED, SMALL)
    for path in (SHIPPED, SMALL, CROP_DETECTOR):  # all packaged and loadable
        assert Path(path).is_file() and Detector(path).input_size == 160
