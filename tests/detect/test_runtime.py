"""The ONNX detector at match time: loading, the mirror pass, decoding into the image's pixels."""

import numpy as np
import pytest
import torch

from copyseek.detect.export import export_detector
from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.runtime import Detector
from copyseek.errors import CopyseekError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return export_detector(DetectorNet(NetConfig.preset("tiny")), tmp_path_factory.mktemp("det") / "detector.onnx")


def test_the_mirror_pass_makes_the_maps_mirror_equivariant(model):
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, :, ::-1])
    plain, flipped = Detector(model, flip=False), Detector(model, flip=True)
    heat, size, _ = flipped.maps(image)
    heat_m, size_m, _ = flipped.maps(mirror)
    assert np.allclose(heat, heat_m[:, :, :, ::-1], atol=1e-5) and np.allclose(size, size_m[:, :, :, ::-1], atol=1e-4)
    alone, alone_m = plain.maps(image)[0], plain.maps(mirror)[0]
    assert not np.allclose(alone, alone_m[:, :, :, ::-1], atol=1e-3)  # an untrained net is not symmetric by itself
    assert np.allclose(heat, (alone + alone_m[:, :, :, ::-1]) / 2, atol=1e-5)


def test_boxes_are_in_the_image_pixels_and_bad_inputs_are_refused(model, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    regions = Detector(model, min_score=0.0).detect(image)
    assert len(regions.boxes) and np.all(regions.boxes[:, [0, 2]] <= 90) and np.all(regions.boxes[:, [1, 3]] <= 50)
    with pytest.raises(CopyseekError, match="uint8 RGB"):
        Detector(model).detect(image.astype(np.float32))
    with pytest.raises(CopyseekError, match="no detector"):
        Detector(tmp_path / "missing.onnx")
