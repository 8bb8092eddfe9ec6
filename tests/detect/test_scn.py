import numpy as np
import pytest
import torch

from copyseek.detect.model import DetectorNet, NetConfig, count_macs
from copyseek.detect.scn import CELL, EMPTY_HEAT, guide_loss, guide_targets, selected_rectangles
from copyseek.detect.targets import make_targets


def grid(*cells, shape=(10, 10)):
    selected = np.zeros(shape, bool)
    for y, x in cells:
        selected[y, x] = True
    return selected


def test_rectangles_bound_each_group_and_merge_only_when_that_saves_a_call():
    two_groups = grid((1, 1), (2, 2), (7, 7))  # diagonal neighbours are one group; far apart: two calls
    assert sorted(selected_rectangles(two_groups)) == [(1, 1, 3, 3), (7, 7, 8, 8)]
    assert sorted(selected_rectangles(two_groups, halo=1)) == [(0, 0, 4, 4), (6, 6, 9, 9)]
    assert selected_rectangles(grid((1, 1), (1, 3))) == [(1, 1, 2, 4)]  # one call for both: the gap is cheaper
    assert selected_rectangles(np.zeros((10, 10), bool)) == []
    corners = grid(*[(y, x) for y in range(4) for x in range(4)], *[(y, x) for y in range(6, 10) for x in range(6, 10)])
    assert len(selected_rectangles(corners)) == 2  # 0.32 of the image in two calls: cheaper than the whole
    most = grid(*[(y, x) for y in range(8) for x in range(8)], (9, 9))
    assert selected_rectangles(most) == [(0, 0, 10, 10)]  # one call on the whole image saves a call


def test_overlapping_rectangles_always_merge():
    apart = grid((2, 2), (2, 6))
    assert selected_rectangles(apart, halo=2) == [(0, 0, 5, 9)]


def selective_net(seed: int = 0) -> DetectorNet:
    torch.manual_seed(seed)
    return DetectorNet(NetConfig.preset("tiny", selective=True)).eval()


def test_selected_crops_compute_the_dense_net_on_the_crop_and_nothing_elsewhere():
    net = selective_net()
    images = torch.rand(2, 3, 64, 64)
    logits = torch.full((2, 1, 4, 4), -9.0)
    logits[0, 0, 1:3, 1:3] = 9.0  # a 32 x 32 px crop in the first image, nothing in the second
    with torch.no_grad():
        out = net.selective.run(net.dense, images, logits, net.heads.classes)
        crop = net.dense(images[:1, :, 16:48, 16:48])
    assert torch.allclose(out["heat"][0, :, 4:12, 4:12], crop["heat"][0], atol=1e-5)
    assert torch.allclose(out["size"][0, :, 4:12, 4:12], crop["size"][0], atol=1e-5)
    assert torch.all(out["heat"][0, :, :4] == EMPTY_HEAT) and torch.all(out["heat"][1] == EMPTY_HEAT)
    assert out["tiles"][0].sum() == 4 and not out["tiles"][1].any()


def test_a_guide_selecting_everything_gives_the_dense_net_and_costs_only_the_guide_more():
    net = selective_net()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        net.selective.guide.out.bias.fill_(20.0)
        selective = net(images)
        net.selective.dense = True
        dense = net(images)
        dense_macs = count_macs(net, images)
        net.selective.dense = False
        everything_macs = count_macs(net, images)
        net.selective.guide.out.bias.fill_(-20.0)
        nothing_macs = count_macs(net, images)
    assert torch.allclose(selective["heat"], dense["heat"], atol=1e-5) and selective["tiles"].all()
    guide_macs = count_macs(net.selective.guide, images)
    assert everything_macs == dense_macs + guide_macs and nothing_macs == guide_macs


def test_training_gates_the_image_so_the_detection_loss_reaches_the_guide():
    net = selective_net().train()
    out = net(torch.rand(2, 3, 64, 64))
    assert out["guide"].shape == (2, 1, 64 // CELL, 64 // CELL) and out["heat"].shape == (2, 2, 16, 16)
    out["heat"].sum().backward()
    assert net.selective.guide.out.weight.grad.abs().sum() > 0  # indirect supervision


def test_masks_from_the_copy_boxes_mark_the_cells_the_copy_covers():
    # a copy over input pixels 16..40 (cells 1 fully, 2 half) and an overlay that is no target
    t = make_targets(np.array([[16.0, 16.0, 40.0, 40.0], [48.0, 48.0, 64.0, 64.0]]), np.array([0, 1]), 16, 4)
    assert t["cover"][4:10, 4:10].all() and t["cover"].sum() == 36
    cover = torch.from_numpy(t["cover"])[None]
    mask = guide_targets(cover)[0, 0]
    assert mask.tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    logits = torch.where(guide_targets(cover) > 0, 5.0, -5.0)
    assert guide_loss(logits, cover) < guide_loss(-logits, cover)


@pytest.mark.parametrize("side", [48, 80])
def test_the_dense_net_runs_on_crops_of_whole_guide_cells(side):
    net = selective_net()
    with torch.no_grad():
        out = net.dense(torch.rand(1, 3, side, side))
    assert out["heat"].shape == (1, 2, side // 4, side // 4)
