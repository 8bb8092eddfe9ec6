import numpy as np
import pytest
import torch

from copyseek.detect.targets import detection_loss, focal_map, gaussian_radius, make_targets


def test_targets_put_a_peak_size_and_offset_at_the_centre():
    boxes = np.array([[8.0, 8.0, 40.0, 24.0], [0.0, 0.0, 8.0, 8.0]])
    t = make_targets(boxes, np.array([0, 1]), grid=16, stride=4)
    # centre (24, 16) px = (6, 4) cells
    assert t["heat"][0, 4, 6] == 1.0 and t["heat"][0].max() == 1.0 and t["mask"][4, 6] == 1.0
    assert np.allclose(t["size"][:, 4, 6], [8, 4]) and np.allclose(t["offset"][:, 4, 6], [0, 0])
    assert t["heat"][1, 1, 1] == 1.0 and t["heat"][1, 10, 10] == 0.0
    assert t["mask"].sum() == 2


def test_radius_grows_with_the_box():
    assert gaussian_radius(4, 4) < gaussian_radius(20, 20)


def test_loss_is_lower_for_the_right_answer():
    t = make_targets(np.array([[8.0, 8.0, 40.0, 24.0]]), np.array([0]), 16, 4)
    targets = {k: torch.from_numpy(v)[None] for k, v in t.items()}
    right = {"heat": torch.logit(torch.from_numpy(t["heat"]).clamp(1e-3, 1 - 1e-3))[None],
             "log_size": torch.log(targets["size"].clamp(min=1e-3)), "offset": targets["offset"].clone()}
    wrong = {"heat": torch.zeros(1, 2, 16, 16), "log_size": torch.zeros(1, 2, 16, 16), "offset": torch.zeros(1, 2, 16, 16)}
    assert detection_loss(right, targets)["total"] < 0.1 * detection_loss(wrong, targets)["total"]
    # the focal term is reduced near the peak: a confident miss next to the centre costs less than far away
    near = focal_map(torch.full((1, 2, 16, 16), 3.0), targets["heat"])[0, 0]
    assert near[4, 7] < near[12, 12]


def test_size_loss_is_relative():
    """A box twice too large costs the same for an 8-cell box as for a 40-cell one (log space)."""
    losses = []
    for side in (8.0, 40.0):
        t = make_targets(np.array([[0.0, 0.0, 4 * side, 4 * side]]), np.array([0]), 48, 4)
        targets = {k: torch.from_numpy(v)[None] for k, v in t.items()}
        guess = {"heat": torch.zeros(1, 2, 48, 48), "offset": targets["offset"].clone(),
                 "log_size": torch.log(2 * targets["size"].clamp(min=1e-3))}
        losses.append(detection_loss(guess, targets)["size"].item())
    assert losses[0] == pytest.approx(losses[1]) and losses[0] == pytest.approx(2 * np.log(2), rel=1e-4)


def test_alternatives_are_soft_copy_centres_below_the_true_copy():
    copy, frame = np.array([[8.0, 8.0, 24.0, 24.0]]), np.array([[0.0, 0.0, 64.0, 64.0]])
    plain = make_targets(copy, np.array([0]), 16, 4, frame, 0.0)
    assert plain["centres"][0].sum() == 1.0 and plain["mask"].sum() == 1  # weight 0: the frame stays a negative
    t = make_targets(copy, np.array([0]), 16, 4, frame, 0.5)
    assert t["centres"][0, 4, 4] == 1.0 and t["centres"][0, 8, 8] == 0.5 and t["heat"][0, 8, 8] == 0.5
    assert np.allclose(t["size"][:, 8, 8], [16, 16]) and np.allclose(t["size"][:, 4, 4], [4, 4])
    assert t["cover"].sum() == 16  # SCN's guide covers the copy, not its alternatives
    # the same centre cell: the true copy keeps its weight and size
    same = make_targets(frame, np.array([0]), 16, 4, np.array([[16.0, 16.0, 48.0, 48.0]]), 0.5)
    assert same["centres"][0, 8, 8] == 1.0 and np.allclose(same["size"][:, 8, 8], [16, 16])


def test_the_quality_focal_loss_is_least_where_the_probability_is_the_weight():
    centres = torch.zeros(1, 1, 1, 3)
    centres[0, 0, 0] = torch.tensor([1.0, 0.5, 0.25])
    probabilities = torch.linspace(0.02, 0.98, 49)
    losses = torch.stack([focal_map(torch.full((1, 1, 1, 3), float(torch.logit(p))), centres, centres)[0, 0, 0]
                          for p in probabilities])
    best = probabilities[losses.argmin(dim=0)]
    assert best[0] > 0.95 and abs(best[1] - 0.5) < 0.03 and abs(best[2] - 0.25) < 0.03
    # at weight 1 it is CenterNet's positive term
    assert torch.allclose(focal_map(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)),
                          focal_map(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)))
