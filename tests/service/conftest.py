"""A small served index (global pipeline, the tiny ONNX model) and clients for it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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


SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`copyseek serve` in a child process; returns it and its base URL once /readyz says ready."""
    import httpx2

    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "copyseek.cli", "serve", "--index", str(index), "--host", "127.0.0.1", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the service exited: {process.stdout.read()}")
        try:
            if httpx2.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx2.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the service did not become ready in 90 s")


def stop_server(process: subprocess.Popen) -> str:
    """SIGTERM, as a process manager stops it; returns its output. uvicorn shuts down gracefully
    (lifespan: the index is closed), then re-raises the signal, so the exit status is -SIGTERM."""
    process.send_signal(signal.SIGTERM)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode in (0, -signal.SIGTERM), output
    return output
