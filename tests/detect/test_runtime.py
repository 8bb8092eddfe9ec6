"""The ONNX detector at match time: loading, the mirror pass, decoding into the image's pixels."""

import numpy as np
import pytest
import torch

from copyseek.detect.export import export_detector
from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.runtime import Detector, mirrored_back
from copyseek.errors import CopyseekError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return export_detector(DetectorNet(NetConfig.preset("tiny")), tmp_path_factory.mktemp("det") / "detector.onnx")


def test_the_mirror_pass_averages_the_maps_of_the_image_and_of_its_mirror_moved_back_into_place(model):
    image = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, :, ::-1])
    plain, flipped = Detector(model, flip=False), Detector(model, flip=True, mirror_shift=1)
    heat, size, offset = flipped.maps(image)
    alone, alone_size, alone_offset = plain.maps(image)
    of_mirror, of_mirror_size, _ = plain.maps(mirror)
    assert np.allclose(heat, (alone + mirrored_back(of_mirror, 1)) / 2, atol=1e-5)
    assert np.allclose(size, (alone_size + mirrored_back(of_mirror_size, 1)) / 2, atol=1e-4)
    assert np.allclose(Detector(model).maps(image)[0], (alone + of_mirror[..., ::-1]) / 2, atol=1e-5)  # default: unmoved
    assert np.allclose(offset, alone_offset)
    maps = np.arange(2 * 5, dtype=np.float32).reshape(1, 1, 2, 5)
    assert mirrored_back(maps, 0).tolist() == [[[[4, 3, 2, 1, 0], [9, 8, 7, 6, 5]]]]
    assert mirrored_back(maps, 1).tolist() == [[[[4, 4, 3, 2, 1], [9, 9, 8, 7, 6]]]]  # one cell right


def test_boxes_are_in_the_image_pixels_and_bad_inputs_are_refused(model, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    regions = Detector(model, min_score=0.0).detect(image)
    assert len(regions.boxes) and np.all(regions.boxes[:, [0, 2]] <= 90) and np.all(regions.boxes[:, [1, 3]] <= 50)
    with pytest.raises(CopyseekError, match="uint8 RGB"):
        Detector(model).detect(image.astype(np.float32))
    with pytest.raises(CopyseekError, match="mirror_shift"):
        Detector(model, mirror_shift=-1)
    with pytest.raises(CopyseekError, match="no detector"):
        Detector(tmp_path / "missing.onnx")
