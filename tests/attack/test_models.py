import dataclasses

import pytest
import torch

from copyseek.attack.models import DescriptorModel, ScriptedModel, load_attack_model
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.learn.config import TrainConfig
from copyseek.learn.export import export_torchscript
from copyseek.learn.models import build_model


@pytest.mark.parametrize("spec", ["sscd", "sscd-fast"])
def test_sscd_is_attacked_by_transfer_only(spec):
    with pytest.raises(CopyseekError, match="transfer only"):
        load_attack_model(spec)


def test_ensembles_are_refused():
    with pytest.raises(CopyseekError, match="one model at a time"):
        load_attack_model("sscd,copyseek-small@0.4")


def test_copyseek_small_torch_form_has_activations_and_gradients():
    model = load_attack_model("copyseek-small")
    assert isinstance(model, DescriptorModel) and model.input_size == 160
    pixels = (torch.rand(1, 3, 64, 64) * 255).requires_grad_(True)
    features = model.features(pixels, activations=True)
    assert features.descriptor.shape == (1, 512) and features.activations.shape[:2] == (1, 256)
    features.descriptor.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in model.parameters())  # frozen: only pixels move


def test_torchscript_export_is_attackable_and_agrees_with_its_source(tmp_path, tiny_model):
    path = export_torchscript(tiny_model.descriptor, tmp_path / "m.pt", Preprocess("square", 48), name="tiny")
    scripted = load_attack_model(f"torchscript:{path}")
    assert isinstance(scripted, ScriptedModel) and scripted.input_size == 48
    pixels = (torch.rand(2, 3, 48, 48) * 255).requires_grad_(True)
    got = scripted(pixels)
    assert torch.allclose(got, tiny_model(pixels), atol=1e-5)
    got.sum().backward()
    assert pixels.grad.abs().sum() > 0
    with pytest.raises(CopyseekError, match="no activations"):
        scripted.features(pixels, activations=True)


def test_learn_checkpoint_by_run_folder(tmp_path):
    config = TrainConfig(arch="resnet-small", dim=8, image_size=64)
    model = build_model(config.arch, config.dim, config.image_size)
    torch.save({"model": model.state_dict(), "config": dataclasses.asdict(config)}, tmp_path / "last.pt")
    loaded = load_attack_model(f"learn:{tmp_path}")
    assert loaded.input_size == 64
    pixels = torch.rand(1, 3, 64, 64) * 255
    assert torch.allclose(loaded(pixels), model.eval()(pixels), atol=1e-6)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(CopyseekError, match="not found"):
        load_attack_model(f"learn:{tmp_path / 'nope'}")
    with pytest.raises(CopyseekError, match="not found"):
        load_attack_model(f"torchscript:{tmp_path / 'nope.pt'}")
