"""HOW fixtures: a tiny HOW network exported to ONNX with a codebook beside it, made once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from copyseek.synthetic import synthetic_photo


def photo(seed: int, width: int = 256, height: int = 192) -> np.ndarray:
    return np.array(synthetic_photo(np.random.default_rng(seed), width, height))


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
    smoothed = np.concatenate([multiscale_top(torch_maps(model, smoothed=True), photo(i), params, 8)[0] for i in range(6)])
    model.set_whitening(*pca_whitening(smoothed, 8))
    path = export_how_onnx(model, tmp_path_factory.mktemp("how") / "tiny.onnx", name="tiny")
    extractor = HowExtractor(path)
    descs = np.concatenate([extractor(photo(i), params)[0] for i in range(6)])
    Codebook.fit(descs, 16).save(path.with_suffix(".codebook.npz"))
    return path


@pytest.fixture
def branch_options(tiny_how) -> dict:
    return {"model": str(tiny_how), "max_side": 128, "scales": "1,0.5", "features": 60, "threads": 1}
