"""`copyseek serve` as a real uvicorn process on a loopback port, and `copyseek serve keys`."""

import pytest

from copyseek.cli import main
from copyseek.service.keys import KeyStore
from tests.service.conftest import start_server, stop_server

httpx2 = pytest.importorskip("httpx2")

def test_a_real_server_matches_adds_and_stops_cleanly(served, keys):
    process, url = start_server(served / "index")
    try:
        read, write = ({"Authorization": f"Bearer {keys[s]}"} for s in ("read", "write"))
        assert httpx2.post(f"{url}/v1/match", files={"image": ("q.jpg", (served / "query.jpg").read_bytes())}).status_code == 401
        answer = httpx2.post(f"{url}/v1/match?k=2", files={"image": ("q.jpg", (served / "query.jpg").read_bytes())}, headers=read).json()
        assert answer["matches"][0]["id"] == "img0003"
        photo = (served / "extra" / "new0000.jpg").read_bytes()
        added = httpx2.post(f"{url}/v1/references", files={"images": ("new0000.jpg", photo)}, headers=write, timeout=60)
        assert added.json()["added"] == ["new0000"]
        again = httpx2.post(f"{url}/v1/match?k=1", content=photo, headers=read).json()
        assert again["matches"][0]["id"] == "new0000"
        assert 'copyseek_requests_total{method="POST",route="/v1/references",status="200"} 1.0' in httpx2.get(f"{url}/metrics", headers=read).text
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


def test_serve_hands_collapse_versions_to_the_service(served, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **settings: seen.setdefault("service", app.state.service))
    for flags, expected in (([], False), (["--collapse-versions"], True)):
        seen.clear()
        assert main(["serve", "--index", str(served / "index"), *flags]) == 0
        assert seen["service"].options.collapse_versions is expected
        seen["service"].close()
