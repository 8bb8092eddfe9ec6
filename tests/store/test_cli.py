"""The index's sub-commands (remove, compact, list, verify, repair) through the command line."""

import json
from pathlib import Path

import pytest

from copyseek.cli import main
from tests.making import write_photos


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def indexed(tmp_path, capsys) -> Path:
    write_photos(tmp_path / "refs", 8, seed=5, size=(96, 72))
    code, _, _ = run(capsys, "index", tmp_path / "refs", "--index", tmp_path / "idx", "--pipeline", "pdq", "--commit-every", "3", "-q")
    assert code == 0
    return tmp_path / "idx"


def test_remove_list_compact(indexed, tmp_path, capsys):
    (tmp_path / "ids.txt").write_text("img0004\n# a comment\n\nimg0005\n")
    code, out, err = run(capsys, "remove", indexed, "img0001", "--from-file", tmp_path / "ids.txt", "--wait", "2")
    assert code == 0 and out.strip() == "removed 3" and err == ""
    code, out, err = run(capsys, "remove", indexed, "img0001", "ghost")
    assert code == 1 and "not in the index: ghost" in err and "not searchable already 1" in out
    code, out, _ = run(capsys, "list", indexed, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 8
    assert sorted(r["id"] for r in rows if r["status"] == "removed") == ["img0001", "img0004", "img0005"]
    assert rows[0]["path"].endswith("img0000.jpg")
    code, out, _ = run(capsys, "list", indexed, "--status", "removed")
    assert [line.split("\t")[:2] for line in out.splitlines()] == [[f"img000{i}", "removed"] for i in (1, 4, 5)]
    code, out, _ = run(capsys, "compact", indexed, "-q")
    assert code == 0 and out.startswith("reclaimed 3 removed references")
    code, out, _ = run(capsys, "info", indexed)
    assert "references: 5" in out


def test_remove_without_ids_is_a_clear_error(indexed, capsys):
    code, _, err = run(capsys, "remove", indexed)
    assert code == 2 and err.strip() == "copyseek remove: error: no ids given: name them, or give --from-file IDS.txt"
