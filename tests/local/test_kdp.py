import numpy as np
import pytest
import torch

from copyseek.errors import CopyseekError
from copyseek.local.kdp import HEADS, KDPNet, load_weights, save_weights


@pytest.mark.parametrize("head", HEADS)
def test_shapes_unit_norm_and_intensity_invariance(head):
    torch.manual_seed(0)
    net = KDPNet(head, dims=16).eval()
    patches = torch.rand(5, 1, 32, 32)
    with torch.inference_mode():
        out = net(patches)
        brighter = net(patches * 0.5 + 0.2)
    assert out.shape == (5, 16) and torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(out, brighter, atol=1e-3)  # per-patch standardisation


def test_heads_differ_in_what_they_encode():
    torch.manual_seed(0)
    widths = {head: KDPNet(head).encode for head in HEADS}
    dims = {head: KDPNet(head).whiten.in_features for head in HEADS}
    assert dims == {"cart": 32 * 9, "polar": 32 * 25, "fc": 32 * 64} and len(widths) == 3


def test_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    net = KDPNet("polar")
    net.train()
    net(torch.rand(64, 1, 32, 32))  # moves the BN statistics away from their defaults
    net.eval()
    save_weights(net, tmp_path / "w.npz", support=7.0)
    again = load_weights(tmp_path / "w.npz")
    patches = torch.rand(3, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(net(patches), again(patches), atol=2e-3)  # float16 storage
    with np.load(tmp_path / "w.npz") as data:
        assert float(data["support"]) == 7.0


def test_bad_head_and_input_are_refused(tmp_path):
    with pytest.raises(CopyseekError, match="unknown KDP head"):
        KDPNet("mlp")
    with pytest.raises(CopyseekError, match="32, 32"):
        KDPNet("cart")(torch.rand(2, 1, 16, 16))
    with pytest.raises(CopyseekError, match="cannot read"):
        load_weights(tmp_path / "missing.npz")
