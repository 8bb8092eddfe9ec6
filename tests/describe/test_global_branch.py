import numpy as np
import pytest
from PIL import Image

from copyseek.describe.preprocess import Preprocess
from copyseek.registry import make_branch
from copyseek.errors import CopyseekError


def test_flip_average_describes_an_image_and_its_mirror_alike(tiny_onnx):
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, ::-1])
    plain = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    flipped = make_branch("global", {"model": f"onnx:{tiny_onnx}", "flip_average": True})
    a, b = plain.embed([image, mirror])
    assert not np.allclose(a, b, atol=1e-3)  # the tiny model sees left and right apart
    a, b = flipped.embed([image, mirror])
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(flipped.embed([image]), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(flipped.embed([image], flip_average=False), plain.embed([image]), atol=1e-6)


def test_flip_average_is_part_of_the_spec_only_when_on(tiny_onnx):
    plain = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    flipped = make_branch("global", {"model": f"onnx:{tiny_onnx}", "flip_average": True})
    assert "flip_average" not in plain.spec()  # indexes made before the option keep their spec
    assert flipped.spec() == {**plain.spec(), "flip_average": True}


def test_several_views_average_the_models_vectors_at_each_resizing(tiny_onnx):
    image = np.random.default_rng(1).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    branch = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": "square:32+short:48"})
    assert branch.views == (Preprocess("square", 32), Preprocess("short", 48))
    assert branch.decode_side == 48
    square = branch.model.embed(np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))[None])
    short = branch.model.embed(np.asarray(Image.fromarray(image).resize((80, 48), Image.BILINEAR))[None])
    assert not np.allclose(square, short, atol=1e-3)  # the two views differ, so the test can fail
    expected = (square + short) / np.linalg.norm(square + short)
    np.testing.assert_allclose(branch.embed([image]), expected, atol=1e-5)
    np.testing.assert_allclose(branch.embed([image], views=(Preprocess("square", 32),)), square, atol=1e-5)


def test_views_are_named_in_the_spec_and_one_view_keeps_the_old_spec(tiny_onnx):
    default = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    same = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": str(default.model.preprocess)})
    two = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": "square:32+short:48"})
    assert default.spec() == same.spec() == default.model.spec() | {"factory": "Flat"}
    assert two.spec()["preprocess"] == "square:32+short:48"


def test_bad_view_lists_are_clear_errors():
    assert Preprocess.parse_views("short:288") == (Preprocess("short", 288),)
    with pytest.raises(CopyseekError, match="same resizing twice"):
        Preprocess.parse_views("square:256+square:256")
    with pytest.raises(CopyseekError, match="square:224\\+short:256"):
        Preprocess.parse_views("square:256+wide")
