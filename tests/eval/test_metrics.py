import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.eval.metrics import evaluate
from copyseek.io.csvfiles import GroundTruth, Prediction


def gt(pairs, distractors=()):
    return GroundTruth(frozenset(pairs), frozenset([q for q, _ in pairs] + list(distractors)))


def P(q, r, s):
    return Prediction(q, r, s)


def test_perfect_ranking_gives_ap_one():
    truth = gt([("q1", "r1"), ("q2", "r2")], ["q3"])
    m = evaluate([P("q1", "r1", 0.9), P("q2", "r2", 0.8), P("q3", "r5", 0.1)], truth)
    assert m.micro_ap == pytest.approx(1.0)
    assert m.recall_at_p90 == pytest.approx(1.0)
    assert m.threshold_at_p90 == pytest.approx(0.8)
    assert m.accuracy_at_1 == pytest.approx(1.0)


def test_hand_computed_ap_with_distractor_above():
    # order: q3 (wrong, distractor query), q1 (right), q2 (wrong ref), q2 (right); 3 gt pairs, one never predicted
    truth = gt([("q1", "r1"), ("q2", "r2"), ("q4", "r4")], ["q3"])
    preds = [P("q3", "r9", 0.95), P("q1", "r1", 0.9), P("q2", "r7", 0.8), P("q2", "r2", 0.7)]
    m = evaluate(preds, truth)
    # precision at hits: 1/2 at recall 1/3, 2/4 at recall 2/3
    assert m.micro_ap == pytest.approx(0.5 / 3 + 0.5 / 3)
    assert m.recall_at_p90 == 0.0 and m.threshold_at_p90 is None
    # accuracy@1: q1 top is r1 (hit); q2 top is r7 (miss); q4 unpredicted
    assert m.accuracy_at_1 == pytest.approx(1 / 3)


def test_ties_are_counted_worst_case():
    truth = gt([("q1", "r1")], ["q2"])
    tied = [P("q1", "r1", 0.5), P("q2", "r3", 0.5)]
    assert evaluate(tied, truth).micro_ap == pytest.approx(0.5)
    # the order of the rows must not matter
    assert evaluate(tied[::-1], truth).micro_ap == pytest.approx(0.5)
    # a constant score for everything is no better than the worst order
    assert evaluate([P("q1", "r1", 1.0), P("q1", "r2", 1.0), P("q2", "r1", 1.0)], truth).micro_ap == pytest.approx(1 / 3)


def test_recall_at_p90_picks_the_highest_recall_above_precision_090():
    pairs = [(f"q{i}", f"r{i}") for i in range(10)]
    truth = gt(pairs, ["x"])
    preds = [P(f"q{i}", f"r{i}", 1.0 - i * 0.01) for i in range(9)] + [P("x", "r0", 0.905), P("q9", "r9", 0.5)]
    m = evaluate(preds, truth)
    # 9 hits in the first 10 predictions (precision 0.9) -> recall 0.9; the 10th hit comes at 10/11 = 0.909
    assert m.recall_at_p90 == pytest.approx(1.0)
    assert m.threshold_at_p90 == pytest.approx(0.5)


def test_duplicate_pair_is_an_error():
    truth = gt([("q1", "r1")])
    with pytest.raises(CopyseekError, match="more than once"):
        evaluate([P("q1", "r1", 0.9), P("q1", "r1", 0.8)], truth)


def test_unknown_query_is_an_error():
    with pytest.raises(CopyseekError, match="not in the ground truth"):
        evaluate([P("zz", "r1", 0.9)], gt([("q1", "r1")]))


def test_curve_is_monotone_in_recall():
    rng = np.random.default_rng(0)
    pairs = [(f"q{i}", f"r{i}") for i in range(50)]
    preds = [P(f"q{i}", f"r{j}", float(rng.random())) for i in range(50) for j in rng.choice(60, 3, replace=False)]
    m = evaluate(preds, gt(pairs))
    assert np.all(np.diff(m.curve.recall) >= 0)
    assert 0 <= m.micro_ap <= 1
