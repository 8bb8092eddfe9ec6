from __future__ import annotations

import csv

import pytest

from copyseek.cli import main
from copyseek.store.index import Index


@pytest.fixture
def tiny_options(tiny_onnx):
    return {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}


def test_label_command(tmp_path, photos, tiny_options, capsys):
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
        ids = list(index.ids)
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"reference_id,label\n{ids[0]},case-a\n{ids[5]},case-b\n")
    out = tmp_path / "labels.out.csv"
    assert main(["label", str(tmp_path / "idx"), "--seeds", str(seeds), "--output", str(out), "--k", "3", "--abstain", "0"]) == 0
    with open(out) as handle:
        rows = {r["reference_id"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(ids)
    assert rows[ids[0]]["label"] == "case-a" and rows[ids[0]]["seed"] == "1"
    assert {r["label"] for r in rows.values()} <= {"case-a", "case-b", ""}
    bad = tmp_path / "bad.csv"
    bad.write_text("reference_id,label\nNOPE,x\n")
    assert main(["label", str(tmp_path / "idx"), "--seeds", str(bad), "--output", str(out)]) == 2
    assert "not in the index" in capsys.readouterr().err
