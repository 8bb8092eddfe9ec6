import numpy as np

from copyseek.describe.registry import make_branch


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
