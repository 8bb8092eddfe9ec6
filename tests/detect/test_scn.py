import numpy as np
import pytest
import torch

from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.scn import EMPTY_HEAT, TILE, guide_loss, guide_targets, tiled_heads
from copyseek.detect.targets import make_targets


@pytest.mark.parametrize("split", [False, True])
def test_tiles_compute_what_the_dense_heads_compute_and_nothing_elsewhere(split):
    torch.manual_seed(0)
    net = DetectorNet(NetConfig.preset("tiny", selective=True, split_heads=split)).eval()
    with torch.no_grad():
        neck = net.neck(net.backbone(torch.rand(2, 3, 64, 64)))
        dense = net.heads(neck)
        selected = torch.zeros(2, 4, 4, dtype=torch.bool)
        selected[0, 1, 2] = selected[1, 0, 0] = selected[1, 3, 3] = True
        tiled = tiled_heads(net.heads, neck, selected)
    for b, ty, tx in selected.nonzero().tolist():
        window = (b, slice(None), slice(ty * TILE, ty * TILE + TILE), slice(tx * TILE, tx * TILE + TILE))
        assert torch.allclose(tiled[window], dense[window], atol=1e-5)
    assert tiled[0, 0, 0, 0] == EMPTY_HEAT and tiled[0, 2, 0, 0] == 0.0


def test_selective_net_trains_softly_and_selects_hard_at_inference():
    torch.manual_seed(0)
    net = DetectorNet(NetConfig.preset("tiny", selective=True))
    out = net(torch.rand(2, 3, 64, 64))
    assert out["guide"].shape == (2, 1, 4, 4) and out["heat"].shape == (2, 2, 16, 16)
    out["heat"].sum().backward()
    assert net.selective.guide[0].weight.grad is not None  # indirect supervision reaches the guide
    net.eval()
    with torch.no_grad():
        net.selective.guide[-1].bias.fill_(-20.0)  # select nothing
        out = net(torch.rand(1, 3, 64, 64))
    assert not out["tiles"].any() and torch.all(out["heat"] == EMPTY_HEAT)


def test_masks_from_boxes_mark_the_tiles_near_centres():
    t = make_targets(np.array([[0.0, 0.0, 16.0, 16.0]]), np.array([0]), 16, 4)  # centre cell (2, 2)
    heat = torch.from_numpy(t["heat"])[None]
    mask = guide_targets(heat)
    assert mask[0, 0, 0, 0] == 1 and mask[0, 0, 3, 3] == 0
    logits = torch.where(mask > 0, 5.0, -5.0)
    assert guide_loss(logits, heat) < guide_loss(-logits, heat)
