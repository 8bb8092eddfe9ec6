"""Shared fixtures: every test makes its own images (nothing from ../shared)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from copyseek.synthetic import synthetic_photo

from tests.making import write_photos


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    return write_photos(tmp_path / "refs", 12)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny ONNX descriptor model in our input convention (uint8 NHWC -> unit vectors)."""
    torch = pytest.importorskip("torch")

    class Tiny(torch.nn.Module):
        def forward(self, image):
            x = image.permute(0, 3, 1, 2).float() / 255.0
            h, w = x.shape[2] // 2, x.shape[3] // 2
            quads = [x[:, :, :h, :w], x[:, :, :h, w:], x[:, :, h:, :w], x[:, :, h:, w:]]
            v = torch.cat([q.mean(dim=(2, 3)) for q in quads] + [x.std(dim=(2, 3))], dim=1) - 0.5
            return torch.nn.functional.normalize(v, dim=1)

    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    torch.onnx.export(
        Tiny(),
        (torch.zeros(1, 64, 64, 3, dtype=torch.uint8),),
        str(path),
        input_names=["image"],
        output_names=["embedding"],
        dynamic_axes={"image": {0: "batch", 1: "height", 2: "width"}, "embedding": {0: "batch"}},
        dynamo=False,
    )
    return path


def _how_photo(seed: int) -> np.ndarray:
    return np.array(synthetic_photo(np.random.default_rng(seed), 256, 192))


@pytest.fixture(scope="session")
def tiny_how(tmp_path_factory) -> Path:
    """models/tiny.onnx (+ .json, + .codebook.npz of 16 words): an 8-d HOW net on a 2-stage trunk
    (stride 8), its whitening learned on synthetic photos."""
    pytest.importorskip("torch")
    import torch

    from copyseek.how.asmk import Codebook
    from copyseek.how.features import HowExtractor, HowParams, multiscale_top
    from copyseek.learn.how import HowNet, export_how_onnx, pca_whitening, torch_maps
    from copyseek.learn.models import ResNet

    torch.manual_seed(0)
    model = HowNet(ResNet((8, 16), (1, 1), stem=8), 16, dim=8, stride=8).eval()
    params = HowParams(max_side=128, scales=(1.0, 0.5), features=60)
    smoothed = np.concatenate([multiscale_top(torch_maps(model, smoothed=True), _how_photo(i), params, 8)[0] for i in range(6)])
    model.set_whitening(*pca_whitening(smoothed, 8))
    path = export_how_onnx(model, tmp_path_factory.mktemp("how") / "tiny.onnx", name="tiny")
    extractor = HowExtractor(path)
    descs = np.concatenate([extractor(_how_photo(i), params)[0] for i in range(6)])
    Codebook.fit(descs, 16).save(path.with_suffix(".codebook.npz"))
    return path
