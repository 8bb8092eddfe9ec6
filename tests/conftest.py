"""Shared fixtures: every test makes its own images (nothing from ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
