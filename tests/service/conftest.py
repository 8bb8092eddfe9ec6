"""A small served index (global pipeline, the tiny ONNX model) and clients for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from copyseek.service.app import create_app  # noqa: E402
from copyseek.service.engine import IndexService, ServiceOptions  # noqa: E402
from copyseek.service.keys import KeyStore  # noqa: E402
from copyseek.store.index import Index  # noqa: E402
from tests.making import crop_copy, write_photos  # noqa: E402


@pytest.fixture(scope="session")
def served_template(tmp_path_factory, tiny_onnx) -> Path:
    """root/index (8 references img0000..img0007), root/refs, root/extra (4 photos not indexed),
    root/query.jpg (a recompressed, resized copy of img0003)."""
    root = tmp_path_factory.mktemp("served")
    refs = write_photos(root / "refs", 8)
    write_photos(root / "extra", 4, seed=7, prefix="new")
    with Index.create(root / "index", "global", {"global": {"model": f"onnx:{tiny_onnx}"}}) as index:
        index.add(root / "refs", progress=False)
    crop_copy(refs[3], root / "query.jpg", fraction=0.96, quality=70)
    return root


@pytest.fixture
def served(tmp_path, served_template) -> Path:
    """A fresh copy of the template (tests may write to it)."""
    root = tmp_path / "served"
    shutil.copytree(served_template, root)
    return root


def make_client(index: Path, *, public_read: bool = False, **options):
    from fastapi.testclient import TestClient

    service = IndexService(index, ServiceOptions(**options))
    service.wait_ready(60)
    return TestClient(create_app(service, KeyStore(index), public_read=public_read))


@pytest.fixture
def keys(served) -> dict[str, str]:
    store = KeyStore(served / "index")
    return {"read": store.add("read"), "write": store.add("write")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
