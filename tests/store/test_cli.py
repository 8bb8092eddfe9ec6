"""The index's sub-commands (remove, compact, list, verify, repair, label) through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from copyseek.cli import main
from copyseek.graph.knn import GraphParams
from copyseek.store.graphs import graph_path
from copyseek.store.index import Index
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


def test_match_takes_files_and_folders_and_writes_csv_or_json_to_stdout(indexed, tmp_path, capsys):
    refs = tmp_path / "refs"
    code, out, err = run(capsys, "match", refs / "img0002.jpg", refs, "--index", indexed, "--output", "-", "--k", "2", "-q")
    assert code == 0, err
    assert "\r" not in out and out.splitlines()[0] == "query_id,reference_id,score"
    rows = [line.split(",") for line in out.splitlines()[1:]]
    assert rows[0][:2] == ["img0002", "img0002"] and rows[0][2] == "1"
    assert "matched 8 queries" in err  # img0002 named twice counts once; the summary goes to stderr when stdout carries predictions
    code, out, _ = run(capsys, "match", refs / "img0003.jpg", "--index", indexed, "--output", "-", "--format", "json", "-q")
    [line] = out.splitlines()
    found = json.loads(line)
    assert found["query"] == "img0003" and found["matches"][0] == {"reference": "img0003", "score": 1.0}
    code, _, err = run(capsys, "match", refs / "nope.jpg", "--index", indexed, "--output", "-")
    assert code == 2 and "not found" in err


def test_relative_ids_index_a_collection_whose_names_repeat(tmp_path, capsys):
    write_photos(tmp_path / "refs" / "a", 2, seed=1, size=(96, 72))
    write_photos(tmp_path / "refs" / "b", 2, seed=2, size=(96, 72))
    code, _, err = run(capsys, "index", tmp_path / "refs", "--index", tmp_path / "idx", "--pipeline", "pdq", "-q")
    assert code == 2 and "used by two files" in err
    code, _, err = run(capsys, "index", tmp_path / "refs", "--index", tmp_path / "idx", "--pipeline", "pdq", "--ids", "relative", "-q")
    assert code == 0, err
    code, out, _ = run(capsys, "match", tmp_path / "refs" / "b", "--index", tmp_path / "idx", "--output", "-", "--k", "1", "--ids", "relative", "-q")
    assert out.splitlines()[1:] == ["img0000.jpg,b/img0000.jpg,1", "img0001.jpg,b/img0001.jpg,1"]


def test_a_symlink_loop_is_skipped_and_the_rest_indexed(tmp_path, capsys):
    write_photos(tmp_path / "refs", 3, size=(96, 72))
    (tmp_path / "refs" / "loop.jpg").symlink_to(tmp_path / "refs" / "loop2.jpg")
    (tmp_path / "refs" / "loop2.jpg").symlink_to(tmp_path / "refs" / "loop.jpg")
    for _ in range(2):  # and again: the re-run neither crashes nor retries
        code, out, err = run(capsys, "index", tmp_path / "refs", "--index", tmp_path / "idx", "--pipeline", "pdq", "-q")
        assert code == 0 and "references: 3" in out, err
    assert "symlink loop" in (tmp_path / "idx" / "skipped.csv").read_text()


def test_explicit_defaults_are_accepted(tmp_path, capsys, tiny_onnx):
    write_photos(tmp_path / "refs", 2, size=(96, 72))
    common = ["index", tmp_path / "refs", "--index", tmp_path / "idx", "--model", f"onnx:{tiny_onnx}", "-q"]
    assert run(capsys, *common)[0] == 0
    code, out, _ = run(capsys, "info", tmp_path / "idx")
    resize = out.split("preprocess=")[1].split(",")[0].split()[0]
    for extra in (["--factory", "auto"], ["--resize", resize]):
        code, _, err = run(capsys, *common, *extra)
        assert code == 0, err


def test_readers_work_on_a_read_only_index_folder(indexed, tmp_path):
    """info, list, verify and match on an index its user cannot write; a writer says so in one line.
    Root ignores file modes, so as root the index is bind-mounted read-only in a private namespace."""
    import os
    import shlex
    import shutil
    import subprocess
    import sys

    from copyseek.store.faults import restore_permissions

    script = (
        "from copyseek.cli import main\n"
        f"for argv in (['info', {str(indexed)!r}], ['list', {str(indexed)!r}], ['verify', {str(indexed)!r}],"
        f" ['match', {str(tmp_path / 'refs')!r}, '--index', {str(indexed)!r}, '--output', '-', '-q'],"
        f" ['remove', {str(indexed)!r}, 'img0001']):\n"
        "    print('exit', main(argv), flush=True)\n"
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.skip("needs unshare to make a read-only mount as root")
        folder = shlex.quote(str(indexed))
        mount = f"mount --bind {folder} {folder} && mount -o remount,ro,bind {folder} && exec {shlex.join(command)}"
        command = ["unshare", "-m", "sh", "-c", mount]
    else:
        for path in [indexed, *indexed.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
    src = str(Path(__file__).resolve().parents[2] / "src")
    try:
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src})
    finally:
        restore_permissions(indexed)
    if os.geteuid() == 0 and "exit" not in done.stdout and "mount" in done.stderr:
        pytest.skip(f"cannot make a read-only mount here: {done.stderr.strip()}")
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit")]
    assert exits == ["exit 0"] * 4 + ["exit 2"], done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "read-only" in done.stderr.splitlines()[-1]


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
    with Index.open(tmp_path / "idx") as index:  # the graph the options name (default: union, gamma 1)
        assert graph_path(index, GraphParams(k=3, gamma=1.0, symmetrize="union")).exists()
        assert not graph_path(index, GraphParams(k=3, gamma=3.0, symmetrize="sum")).exists()
    base = ["label", str(tmp_path / "idx"), "--seeds", str(seeds), "--output", str(out), "--k", "3"]
    assert main(base + ["--symmetrize", "sum", "--gamma", "3"]) == 0
    with Index.open(tmp_path / "idx") as index:
        assert graph_path(index, GraphParams(k=3, gamma=3.0, symmetrize="sum")).exists()
    assert main(base + ["--symmetrize", "both"]) == 2
    assert "symmetrize" in capsys.readouterr().err
    capsys.readouterr()
    assert main(base + ["--abstain", "0", "--self-train", "0"]) == 0
    printed = capsys.readouterr()
    assert "self-training" not in printed.out
    assert "propagating" in printed.err  # a progress bar: 2 labels in one component
    assert main(base + ["--abstain", "0", "--self-train", "0", "-q"]) == 0
    assert "propagating" not in capsys.readouterr().err
    # 12 references, 2 seeds: 5 of the 10 others become pseudo-seeds
    assert main(base + ["--abstain", "0", "--self-select", "global", "--self-train", "0.5"]) == 0
    assert "self-training: 5 confident references were extra seeds" in capsys.readouterr().out
    assert main(base + ["--abstain", "0", "--self-train", "0.5"]) == 0  # by default half of each label's, rounded
    assert "self-training: " in capsys.readouterr().out
    with open(out) as handle:
        rows = {r["reference_id"]: r for r in csv.DictReader(handle)}
    assert rows[ids[5]]["label"] == "case-b" and rows[ids[5]]["seed"] == "1"
    assert all(r["label"] in {"case-a", "case-b"} for r in rows.values())
    confidences = {}
    for measure in ("margin", "entropy"):  # without self-training the measure changes the confidences, not the labels
        assert main(base + ["--abstain", "0", "--self-train", "0", "--confidence", measure]) == 0
        with open(out) as handle:
            confidences[measure] = {r["reference_id"]: (r["label"], r["confidence"]) for r in csv.DictReader(handle)}
    assert {i: c[0] for i, c in confidences["margin"].items()} == {i: c[0] for i, c in confidences["entropy"].items()}
    assert confidences["margin"] != confidences["entropy"]
    with pytest.raises(SystemExit):
        main(base + ["--confidence", "softmax"])
    capsys.readouterr()
    for option, value in (("--self-train", "1.5"), ("--self-weight", "0"), ("--self-rounds", "0")):
        assert main(base + ["--k", "4", option, value]) == 2  # refused before the k = 4 graph is built
        assert option[2:].replace("-", "_") in capsys.readouterr().err
    with Index.open(tmp_path / "idx") as index:
        assert not graph_path(index, GraphParams(k=4, gamma=1.0, symmetrize="union")).exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("reference_id,label\nNOPE,x\n")
    assert main(["label", str(tmp_path / "idx"), "--seeds", str(bad), "--output", str(out)]) == 2
    assert "not in the index" in capsys.readouterr().err
