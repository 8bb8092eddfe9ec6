import pytest
import torch

from copyseek.detect.model import STRIDE, DetectorNet, NetConfig, macs
from copyseek.errors import CopyseekError


def test_output_shapes_and_stages():
    config = NetConfig.preset("tiny")
    out = DetectorNet(config)(torch.rand(2, 3, 64, 64))
    g = 64 // STRIDE
    assert out["heat"].shape == (2, 2, g, g) and out["size"].shape == (2, 2, g, g) and out["offset"].shape == (2, 2, g, g)
    strides = [64 // s.shape[-1] for s in out["stages"]]
    assert strides == [4, 8, 16, 32, 4]


def test_teacher_costs_about_three_and_a_half_students():
    ratio = macs(NetConfig.preset("teacher")) / macs(NetConfig.preset("student"))
    assert 3.0 <= ratio <= 4.5


def test_config_refuses_bad_values():
    with pytest.raises(CopyseekError, match="multiple of 32"):
        NetConfig(input_size=100)
    with pytest.raises(CopyseekError, match="unknown detector settings"):
        NetConfig.from_dict({"width": 3})
    with pytest.raises(CopyseekError, match="unknown detector preset"):
        NetConfig.preset("huge")
    assert NetConfig.from_dict(NetConfig.preset("teacher").to_dict()) == NetConfig.preset("teacher")
