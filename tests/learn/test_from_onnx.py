import numpy as np
import pytest
import torch

from copyseek.describe.models import PACKAGED_MODELS, load_model
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.learn.export import export_onnx
from copyseek.learn.from_onnx import descriptor_from_onnx
from tests.learn.tiny import tiny_model

pytest.importorskip("onnx")


def trained_looking(model):
    """Non-trivial BatchNorm statistics, so that folding them into the convolutions matters."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_rebuilt_model_gives_the_onnx_vectors(tmp_path):
    model = trained_looking(tiny_model("resnet", dim=8))
    path = export_onnx(model, tmp_path / "m.onnx", Preprocess("square", 40), name="tiny")
    rebuilt = descriptor_from_onnx(path, tiny_model("resnet", dim=8))
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 48, 3), dtype=np.uint8)
    onnx_vectors = load_model(f"onnx:{path}").embed(images)
    with torch.no_grad():
        torch_vectors = rebuilt(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    assert np.allclose(onnx_vectors, torch_vectors, atol=1e-5)
    assert rebuilt.pool.p.item() == pytest.approx(model.pool.p.item())


def test_shipped_copyseek_small_is_found_among_the_archs():
    rebuilt = descriptor_from_onnx(PACKAGED_MODELS / "copyseek-small.onnx")
    images = np.random.default_rng(1).integers(0, 256, (1, 160, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        got = rebuilt(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    assert np.allclose(got, load_model("copyseek-small").embed(images), atol=1e-5)


def test_a_model_of_another_shape_is_refused(tmp_path):
    path = export_onnx(tiny_model("resnet", dim=8).eval(), tmp_path / "m.onnx", Preprocess("square", 32), name="tiny")
    with pytest.raises(CopyseekError, match="fit no ResNet"):
        descriptor_from_onnx(path)  # the tiny widths are none of ARCHS


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CopyseekError, match="cannot read ONNX model"):
        descriptor_from_onnx(bad)
