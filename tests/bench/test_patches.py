import numpy as np
import pytest

from copyseek.bench.patches import kind_table, pair_scores, parse_condition, results_table, run_patch_benchmark
from copyseek.errors import CopyseekError
from copyseek.local.describers import RootSift
from copyseek.local.features import SiftParams
from copyseek.local.patch_pairs import make_pairs
from tests.local.conftest import photo


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_pair_scores_by_hand():
    desc = np.eye(4)
    assert pair_scores(desc, desc) == (1.0, 1.0)
    # Rows 0, 1 find their match; rows 2, 3 swap. Confidence order: 0 (1.0), 2 (0.9), 1 (0.8), 3 (0.7).
    edited = _unit(np.array([[1, 0, 0, 0], [0, 0.8, 0, 0.6], [0, 0, 0.1, 0.995], [0, 0.1, 0.7, 0.2]]))
    sims = desc @ edited.T
    ap, accuracy = pair_scores(desc, edited)
    order = np.argsort(-sims.max(axis=1))
    hits = (sims.argmax(axis=1) == np.arange(4))[order]
    expected = sum(hits[:k + 1].mean() for k in range(4) if hits[k]) / 4
    assert np.isclose(ap, expected) and accuracy == 0.25 + 0.25 * (sims[1].argmax() == 1)


def test_pair_scores_refuse_mismatched_shapes():
    with pytest.raises(CopyseekError, match="equal"):
        pair_scores(np.eye(3), np.eye(4))


def test_rootsift_matches_true_correspondences_and_noise_hurts():
    pairs = list(make_pairs([photo(7)], ("rotation", "photometric"), sift=SiftParams(max_keypoints=96)))
    conditions = dict(parse_condition(c) for c in ("clean", "orientation"))
    results = run_patch_benchmark(pairs, {"rootsift": RootSift()}, conditions, progress=False)
    (result,) = results
    assert result.mean_ap("clean") > 0.7
    assert result.mean_ap("orientation") < result.mean_ap("clean") - 0.1
    table = results_table(results, tuple(conditions))
    assert table.splitlines()[0].startswith("| describer | mAP clean") and "| rootsift |" in table
    assert "| rootsift |" in kind_table(results, [p.kind for p in pairs])
    with pytest.raises(CopyseekError, match="pairs"):
        run_patch_benchmark([], {"rootsift": RootSift()})


def test_shared_raw_mkd_equals_each_describers_own():
    from copyseek.bench.patches import describe_all
    from copyseek.local.describers import make_describer

    pair = next(make_pairs([photo(8)], ("blur",), sift=SiftParams(max_keypoints=32)))
    describers = {name: make_describer(name) for name in ("mkd:raw", "mkd:lw", "rootsift")}
    shared = describe_all(describers, pair.edited, pair.edited_frames)
    for name, describer in describers.items():
        assert np.allclose(shared[name], describer.describe(pair.edited, pair.edited_frames)[0], atol=1e-5)


def test_conditions_parse_by_name_and_level():
    from copyseek.bench.patches import CONDITIONS
    from copyseek.local.patch_pairs import HPATCHES_LEVELS, Misregistration

    assert parse_condition("clean") == ("clean", Misregistration())
    assert parse_condition("tough") == ("tough", HPATCHES_LEVELS["tough"])
    assert parse_condition("orientation") == ("orientation", CONDITIONS["orientation"])
    assert parse_condition("position:0.8") == ("position:0.8", Misregistration(position=0.8))
    assert parse_condition("orientation:45") == ("orientation:45", Misregistration(orientation=45.0))
    for bad in ("scale:2", "position:x", "orientation:-5", "position:0", "tough:2"):
        with pytest.raises(CopyseekError, match="condition"):
            parse_condition(bad)


def test_hpatches_levels_degrade_in_order_and_their_mean_leads_the_table():
    pairs = list(make_pairs([photo(7)], ("homography", "blur"), sift=SiftParams(max_keypoints=96)))
    results = run_patch_benchmark(pairs, {"rootsift": RootSift()}, progress=False)  # clean, easy, hard, tough
    (result,) = results
    ap = [result.mean_ap(c) for c in ("clean", "easy", "hard", "tough")]
    assert all(a > b + 0.05 for a, b in zip(ap, ap[1:])), ap
    head, _, row = results_table(results).splitlines()
    assert head.startswith("| describer | mAP HPatches mean (easy, hard, tough) | mAP clean | mAP easy |")
    assert row.startswith(f"| rootsift | {np.mean(ap[1:]):.3f} | {ap[0]:.3f} |")


def test_more_orientation_noise_hurts_rootsift_more():
    pairs = list(make_pairs([photo(7)], ("rotation",), sift=SiftParams(max_keypoints=96)))
    conditions = dict(parse_condition(c) for c in ("orientation:5", "orientation:40"))
    (result,) = run_patch_benchmark(pairs, {"rootsift": RootSift()}, conditions, progress=False)
    assert set(result.ap) == set(conditions)
    assert result.mean_ap("orientation:40") < result.mean_ap("orientation:5") - 0.1
    assert "| describer | mAP orientation:5 | mAP orientation:40 |" in results_table([result], tuple(conditions))


def test_cli_reads_a_runs_kdp_weights_and_chosen_conditions(tmp_path, capsys):
    import cv2
    import torch

    from copyseek.cli import main
    from copyseek.local.kdp import KDPNet, save_weights

    photos, run = tmp_path / "photos", tmp_path / "run"
    photos.mkdir()
    run.mkdir()
    cv2.imwrite(str(photos / "a.png"), photo(5, 256, 192)[:, :, ::-1])
    argv = ["bench", "patches", "--images", str(photos), "--photos", "1", "--holdout", "0", "-q"]
    argv += ["--describers", "kdp:cart", "--kdp-weights", str(run)]
    assert main(argv) == 2 and "cannot read KDP weights" in capsys.readouterr().err  # the run's folder, not the package's
    torch.manual_seed(0)
    save_weights(KDPNet("cart").eval(), run / "kdp_cart.npz", support=8.0)
    assert main(argv + ["--conditions", "position:-1"]) == 2 and "condition" in capsys.readouterr().err
    assert main(argv + ["--conditions", "clean", "orientation:30"]) == 0
    out = capsys.readouterr().out
    assert "| describer | mAP clean | mAP orientation:30 | NN acc clean | NN acc orientation:30 |" in out
    assert "| kdp:cart |" in out and "mAP per edit kind (clean frames)" in out
