import numpy as np
import pytest

from copyseek.attack.metrics import rank1_by_margin, retrieval_agreement, ssim, top_k
from copyseek.errors import CopyseekError


def test_ssim_identical_noisy_and_resized(pictures):
    target, carrier = pictures
    assert ssim(carrier, carrier) == pytest.approx(1.0)
    noisy = np.clip(carrier + np.random.default_rng(0).normal(0, 25, carrier.shape), 0, 255).astype(np.uint8)
    assert ssim(carrier, target) < ssim(carrier, noisy) < 1.0
    assert ssim(carrier, carrier[::2, ::2]) > 0.5  # compared at the first image's size


def test_ssim_refuses_tiny_or_gray_images():
    with pytest.raises(CopyseekError, match="11x11"):
        ssim(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(CopyseekError, match="H, W, 3"):
        ssim(np.zeros((20, 20), np.uint8), np.zeros((20, 20, 3), np.uint8))


def test_retrieval_agreement_by_hand():
    database = np.eye(4, dtype=np.float32)
    targets = np.array([[1, 0.5, 0, 0], [0, 0, 1, 0.2]], np.float32)
    adversarial = np.array([[1, 0, 0.6, 0], [0, 1, 0, 0]], np.float32)
    assert top_k(targets, database, 2).tolist() == [[0, 1], [2, 3]]
    got = retrieval_agreement(adversarial, targets, database, k=2)
    # pair 0: same first result, one of two in common; pair 1: different first, nothing in common
    # (its adversarial top-2 is [1, 0]).
    assert got == {"rank1": 0.5, "top2": pytest.approx((0.5 + 0.0) / 2)}


def test_retrieval_agreement_refuses_unpaired():
    with pytest.raises(CopyseekError, match="pair up"):
        retrieval_agreement(np.zeros((2, 3)), np.zeros((1, 3)), np.eye(3))


def test_rank1_by_margin_splits_near_ties():
    database = np.eye(3, dtype=np.float32)
    # target 0 leads clearly (0.9 vs 0.1), target 1 is a near tie (0.50 vs 0.49)
    targets = np.array([[0.9, 0.1, 0], [0.50, 0.49, 0]], np.float32)
    adversarial = np.array([[1, 0, 0], [0, 1, 0]], np.float32)  # agrees on 0, not on 1
    got = rank1_by_margin(adversarial, targets, database, tie_margin=0.03)
    assert got == {"decided": 0.5, "rank1 decided": 1.0, "rank1 tied": 0.0}
    everything_decided = rank1_by_margin(adversarial, targets, database, tie_margin=0.0)
    assert everything_decided["decided"] == 1.0 and everything_decided["rank1 decided"] == 0.5
    assert np.isnan(everything_decided["rank1 tied"])


def test_rank1_by_margin_needs_two_references():
    with pytest.raises(CopyseekError, match="at least 2"):
        rank1_by_margin(np.ones((1, 3)), np.ones((1, 3)), np.ones((1, 3)))
