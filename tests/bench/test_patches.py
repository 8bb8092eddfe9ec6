import numpy as np
import pytest

from copyseek.bench.patches import kind_table, pair_scores, results_table, run_patch_benchmark
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
    results = run_patch_benchmark(pairs, {"rootsift": RootSift()}, progress=False)
    (result,) = results
    assert result.mean_ap("clean") > 0.7
    assert result.mean_ap("orientation") < result.mean_ap("clean") - 0.1
    table = results_table(results)
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
