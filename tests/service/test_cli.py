"""`copyseek serve` as a real uvicorn process on a loopback port, and `copyseek serve keys`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from copyseek.cli import main
from copyseek.service.keys import KeyStore

httpx = pytest.importorskip("httpx")
SRC = Path(__file__).resolve().parents[2] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`copyseek serve` in a child process; returns it and its base URL once /readyz says ready."""
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
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
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


def test_a_real_server_matches_adds_and_stops_cleanly(served, keys):
    process, url = start_server(served / "index")
    try:
        read, write = ({"Authorization": f"Bearer {keys[s]}"} for s in ("read", "write"))
        assert httpx.post(f"{url}/v1/match", files={"image": ("q.jpg", (served / "query.jpg").read_bytes())}).status_code == 401
        answer = httpx.post(f"{url}/v1/match?k=2", files={"image": ("q.jpg", (served / "query.jpg").read_bytes())}, headers=read).json()
        assert answer["matches"][0]["id"] == "img0003"
        photo = (served / "extra" / "new0000.jpg").read_bytes()
        added = httpx.post(f"{url}/v1/references", files={"images": ("new0000.jpg", photo)}, headers=write, timeout=60)
        assert added.json()["added"] == ["new0000"]
        again = httpx.post(f"{url}/v1/match?k=1", content=photo, headers=read).json()
        assert again["matches"][0]["id"] == "new0000"
        assert 'copyseek_requests_total{method="POST",route="/v1/references",status="200"} 1.0' in httpx.get(f"{url}/metrics", headers=read).text
    finally:
        output = stop_server(process)
    assert "Traceback" not in output and "copyseek serve:" in output


def test_it_refuses_to_listen_beyond_loopback_without_keys(served, capsys):
    assert main(["serve", "--index", str(served / "index"), "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to listen on 0.0.0.0 (beyond loopback)" in capsys.readouterr().err


def test_a_missing_index_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", "--index", str(tmp_path / "nothing")]) == 2
    assert "no copyseek index" in capsys.readouterr().err


def test_keys_are_added_listed_and_removed_from_the_command_line(served, capsys):
    index = str(served / "index")
    assert main(["serve", "keys", "add", "--index", index, "--scope", "write", "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("cs_write_") and KeyStore(index).find(token).name == "ci"
    assert main(["serve", "keys", "list", "--index", index]) == 0
    assert capsys.readouterr().out == "ci\twrite\n"
    assert main(["serve", "keys", "remove", "--index", index, "ci"]) == 0
    assert KeyStore(index).find(token) is None
    assert main(["serve", "keys", "add", "--index", str(served / "refs"), "--scope", "read"]) == 2
