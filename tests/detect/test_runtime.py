"""The ONNX detector at match time: loading, the mirror pass, decoding into the image's pixels."""

import numpy as np
import pytest
import torch

from copyseek.detect.export import export_detector
from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.regions import fuse_views, mirrored
from copyseek.detect.runtime import Detector
from copyseek.errors import CopyseekError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return export_detector(DetectorNet(NetConfig.preset("tiny")), tmp_path_factory.mktemp("det") / "detector.onnx")


def test_the_mirror_pass_fuses_the_regions_of_the_image_and_of_its_mirror(model):
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, ::-1])
    raw = {"min_score": 0.0, "one_copy": False}
    plain, flipped = Detector(model, flip=False, **raw), Detector(model, flip=True, **raw)
    expected = fuse_views(plain.detect(image), mirrored(plain.detect(mirror), 64))
    found = flipped.detect(image)
    assert np.allclose(found.boxes, expected.boxes, atol=1e-4) and np.allclose(found.scores, expected.scores, atol=1e-6)
    assert np.array_equal(found.labels, expected.labels)
    assert len(flipped.network(np.zeros((3, 64, 64, 3), np.uint8))[0]) == 6  # the images, then their mirrors


def test_boxes_are_in_the_image_pixels_and_bad_inputs_are_refused(model, tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    regions = Detector(model, min_score=0.0).detect(image)
    assert len(regions.boxes) and np.all(regions.boxes[:, [0, 2]] <= 90) and np.all(regions.boxes[:, [1, 3]] <= 50)
    with pytest.raises(CopyseekError, match="uint8 RGB"):
        Detector(model).detect(image.astype(np.float32))
    with pytest.raises(CopyseekError, match="no detector"):
        Detector(tmp_path / "missing.onnx")


def test_export_leaves_the_net_in_the_mode_it_was_given(tmp_path):
    net = DetectorNet(NetConfig.preset("tiny"))
    for training in (False, True):
        net.train(training)
        export_detector(net, tmp_path / f"{training}.onnx")
        assert net.training == training and all(m.training == training for m in net.modules())


def test_a_free_size_export_runs_on_crops_of_any_size(tmp_path):
    from copyseek.io.onnx import cpu_session

    net = DetectorNet(NetConfig.preset("tiny")).eval()
    crop = np.random.default_rng(0).integers(0, 256, (1, 32, 48, 3), dtype=np.uint8)
    heat, _, _ = cpu_session(export_detector(net, tmp_path / "free.onnx", free_size=True), 1).run(None, {"image": crop})
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(crop).permute(0, 3, 1, 2).float() / 255.0)["heat"]).numpy()
    assert heat.shape == (1, 2, 8, 12) and np.allclose(heat, expected, atol=1e-4)
    with pytest.raises(Exception):  # the runtime's export keeps the input size fixed
        cpu_session(export_detector(net, tmp_path / "fixed.onnx"), 1).run(None, {"image": crop})
