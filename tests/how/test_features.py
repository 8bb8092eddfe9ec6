import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.how.features import HowExtractor, HowParams, multiscale_top
from tests.how.conftest import photo


def constant_maps(dim=4, stride=8):
    """Maps whose attention is the column index, so the top positions are known."""
    def maps(image):
        h, w = image.shape[0] // stride, image.shape[1] // stride
        attention = np.tile(np.arange(w, dtype=np.float32), (h, 1))
        return np.ones((dim, h, w), np.float32), attention
    return maps


def test_multiscale_top_keeps_the_highest_attention_with_positions():
    image = np.zeros((64, 128, 3), np.uint8)
    desc, xy, attention = multiscale_top(constant_maps(), image, HowParams(max_side=128, scales=(1.0, 0.5), features=10), 8)
    assert desc.shape == (10, 4) and xy.shape == (10, 2)
    assert np.all(np.diff(attention) <= 0) and attention[0] == 15
    # The best cells are in the last column of the full-size map: centre x = 15.5 * 128 / 16.
    assert np.allclose(xy[:8, 0], 124.0) and np.all((xy[:, 1] > 0) & (xy[:, 1] < 64))


def test_params_refuse_bad_values():
    with pytest.raises(CopyseekError, match="max_side"):
        HowParams(max_side=8)
    with pytest.raises(CopyseekError, match="scales"):
        HowParams(scales=())
    with pytest.raises(CopyseekError, match="features"):
        HowParams(features=0)
    assert HowParams.parse_scales("1, 0.5") == (1.0, 0.5)
    with pytest.raises(CopyseekError, match="numbers"):
        HowParams.parse_scales("1,big")


def test_exported_model_gives_unit_descriptors(tiny_how):
    extractor = HowExtractor(tiny_how)
    desc, xy, attention = extractor(photo(1), HowParams(max_side=128, scales=(1.0, 0.5), features=40))
    assert (extractor.dim, extractor.stride) == (8, 8)
    assert desc.shape == (40, 8) and np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    assert np.all(attention >= 0) and np.all(np.diff(attention) <= 0)


def test_extractor_refuses_a_model_without_how_sidecar(tiny_onnx, tmp_path):
    with pytest.raises(CopyseekError, match="missing"):
        HowExtractor(tiny_onnx)
    tiny_onnx.with_suffix(".json").write_text('{"preprocess": {"mode": "square", "size": 64}}')
    with pytest.raises(CopyseekError, match="not a HOW model"):
        HowExtractor(tiny_onnx)
