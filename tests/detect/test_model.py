import pytest
import torch

from copyseek.detect.model import STRIDE, DetectorNet, NetConfig, load_checkpoint, macs
from copyseek.errors import CopyseekError


def test_output_shapes_and_stages():
    config = NetConfig.preset("tiny")
    out = DetectorNet(config)(torch.rand(2, 3, 64, 64))
    g = 64 // STRIDE
    assert out["heat"].shape == (2, 2, g, g) and out["size"].shape == (2, 2, g, g) and out["offset"].shape == (2, 2, g, g)
    strides = [64 // s.shape[-1] for s in out["stages"]]
    assert strides == [4, 8, 16, 32, 4]


def test_split_heads_cost_three_shared_ones_and_give_the_same_outputs():
    split = DetectorNet(NetConfig.preset("tiny", split_heads=True))
    out = split(torch.rand(1, 3, 64, 64))
    assert out["heat"].shape == (1, 2, 16, 16) and out["size"].shape == (1, 2, 16, 16) and out["offset"].shape == (1, 2, 16, 16)
    assert torch.all(out["size"] > 0)  # sizes are exp(log size)
    g, neck = 64 // STRIDE, split.config.neck  # macs() sees the heads' 3x3 convolutions: the split adds two
    extra = macs(NetConfig.preset("tiny", split_heads=True)) - macs(NetConfig.preset("tiny"))
    assert extra == g * g * 2 * 9 * neck * neck  # the 1x1 outputs are as many split as shared


def test_teacher_costs_several_students():
    ratio = macs(NetConfig.preset("teacher")) / macs(NetConfig.preset("student"))
    assert 6.0 <= ratio <= 7.5  # MACs overstate the time ratio at batch 1 (3.4x): HGD wants >= 3x


def test_config_refuses_bad_values():
    with pytest.raises(CopyseekError, match="multiple of 32"):
        NetConfig(input_size=100)
    with pytest.raises(CopyseekError, match="unknown detector settings"):
        NetConfig.from_dict({"width": 3})
    with pytest.raises(CopyseekError, match="unknown detector preset"):
        NetConfig.preset("huge")
    assert NetConfig.from_dict(NetConfig.preset("teacher").to_dict()) == NetConfig.preset("teacher")


def test_a_checkpoint_of_another_layout_is_refused_with_a_clear_message(tmp_path):
    net = DetectorNet(NetConfig.preset("tiny", selective=True))
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("selective.")}
    state["selective.guide.0.weight"] = torch.zeros(16, 16, 3, 3)  # session 5's stride-16 guide head
    torch.save({"model": state, "net": net.config.to_dict()}, tmp_path / "checkpoint.pt")
    with pytest.raises(CopyseekError, match="another layout"):
        load_checkpoint(tmp_path / "checkpoint.pt")
