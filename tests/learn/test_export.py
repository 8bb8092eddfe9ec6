import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from copyseek.describe.models import load_model
from copyseek.describe.preprocess import Preprocess
from copyseek.learn.export import export_onnx, export_torchscript
from tests.learn.tiny import tiny_model

pytest.importorskip("onnx")


def torch_vectors(model, images_nhwc):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_exported_onnx_gives_the_torch_vectors_at_any_size(tmp_path, arch):
    model = tiny_model(arch, dim=16, image_size=32).eval()
    path = export_onnx(model, tmp_path / "m.onnx", Preprocess("square", 32), name="tiny")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name) == ("image", "tensor(uint8)", "embedding")
    rng = np.random.default_rng(0)
    for shape in [(3, 32, 32, 3), (1, 48, 40, 3)]:  # another batch size and image size than exported
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        got = session.run(None, {"image": images})[0]
        assert got.shape == (shape[0], 16)
        assert np.allclose(got, torch_vectors(model, images), atol=1e-5)
        assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    sidecar = json.loads((tmp_path / "m.json").read_text())
    assert sidecar == {"preprocess": {"mode": "square", "size": 32}, "name": "tiny", "dim": 16}


def test_exported_models_load_in_copyseek_with_their_preprocessing(tmp_path):
    model = tiny_model("resnet", dim=8).eval()
    onnx_path = export_onnx(model, tmp_path / "m.onnx", Preprocess("short", 40), name="tiny")
    ts_path = export_torchscript(model, tmp_path / "m.pt", Preprocess("short", 40), name="tiny")
    images = np.random.default_rng(1).integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)
    expected = torch_vectors(model, images)
    for spec in (f"onnx:{onnx_path}", f"torchscript:{ts_path}"):
        loaded = load_model(spec)
        assert loaded.preprocess == Preprocess("short", 40)
        assert np.allclose(loaded.embed(images), expected, atol=1e-5)
