"""The command line end to end, on images the test makes."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from copyseek.cli import main
from tests.making import crop_copy, write_photos


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """refs/ (20), queries/ (10 edited copies + 5 distractors), background/ (10), gt.csv."""
    root = tmp_path_factory.mktemp("collection")
    refs = write_photos(root / "refs", 20, seed=1, prefix="R")
    others = write_photos(root / "others", 15, seed=2, prefix="X")
    write_photos(root / "background", 10, seed=3, prefix="B")
    (root / "queries").mkdir()
    rows = []
    for i, ref in enumerate(refs[:10]):
        crop_copy(ref, root / "queries" / f"Q{i:03d}.jpg")
        rows.append((f"Q{i:03d}", ref.stem))
    for j, other in enumerate(others[:5]):
        crop_copy(other, root / "queries" / f"Q{100 + j:03d}.jpg")
        rows.append((f"Q{100 + j:03d}", ""))
    with open(root / "gt.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_id", "reference_id"])
        writer.writerows(rows)
    return root


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_index_match_eval_info_end_to_end(collection, tmp_path, capsys):
    index = tmp_path / "idx"
    code, out, _ = run(capsys, "index", collection / "refs", "--index", index, "-q")
    assert code == 0 and "references: 20" in out
    predictions = tmp_path / "p.csv"
    code, out, _ = run(capsys, "match", collection / "queries", "--index", index, "--output", predictions, "--k", "3", "-q")
    assert code == 0
    rows = list(csv.reader(open(predictions)))
    assert rows[0] == ["query_id", "reference_id", "score"]
    per_query = {}
    for q, r, s in rows[1:]:
        per_query.setdefault(q, []).append((float(s), r))
    assert len(per_query) == 15 and all(len(v) <= 3 for v in per_query.values())
    assert max(per_query["Q003"])[1] == "R0003"
    code, out, _ = run(capsys, "eval", predictions, "--ground-truth", collection / "gt.csv", "--plot", tmp_path / "pr.png")
    assert code == 0 and "muAP" in out
    muap = float(out.split("muAP")[1].split()[0])
    assert muap > 0.8
    assert (tmp_path / "pr.png").stat().st_size > 1000
    code, out, _ = run(capsys, "info", index)
    assert code == 0 and "references: 20" in out and "bytes per reference (global): 2048" in out


def test_background_normalisation_is_cached_and_shifts_scores(collection, tmp_path, capsys):
    index = tmp_path / "idx"
    run(capsys, "index", collection / "refs", "--index", index, "-q")
    plain, normalised = tmp_path / "plain.csv", tmp_path / "norm.csv"
    run(capsys, "match", collection / "queries", "--index", index, "--output", plain, "-q")
    code, _, _ = run(capsys, "match", collection / "queries", "--index", index, "--output", normalised, "--background", collection / "background", "-q")
    assert code == 0
    assert len(list((index / "background").glob("*.npz"))) == 1
    read = lambda p: {(q, r): float(s) for q, r, s in list(csv.reader(open(p)))[1:]}
    a, b = read(plain), read(normalised)
    common = set(a) & set(b)
    assert common and all(b[key] < a[key] for key in common)
    # over the references too, the offsets can only grow: each query's top-n pools more images
    pooled = tmp_path / "pooled.csv"
    code, _, _ = run(capsys, "match", collection / "queries", "--index", index, "--output", pooled,
                     "--background", collection / "background", "--normalize-with", "collection", "-q")
    c = read(pooled)
    assert code == 0 and set(c) == set(b)
    assert all(c[key] <= b[key] + 1e-6 for key in c) and any(c[key] < b[key] - 1e-3 for key in c)


@pytest.mark.parametrize(
    "args,message",
    [
        (["index", "{tmp}/missing", "--index", "{tmp}/idx"], "folder not found"),
        (["match", "{tmp}", "--index", "{tmp}/no-index", "--output", "{tmp}/p.csv"], "no copyseek index"),
        (["info", "{tmp}/no-index"], "no copyseek index"),
        (["eval", "{tmp}/bad.csv", "--ground-truth", "{tmp}/bad.csv"], "header"),
        (["eval", "{tmp}/missing.csv", "--ground-truth", "{tmp}/bad.csv"], "not found"),
        (["index", "{tmp}", "--index", "{tmp}/idx", "--model", "onnx:{tmp}/none.onnx"], "model file not found"),
        (["index", "{tmp}/empty", "--index", "{tmp}/idx"], "no images in"),
        (["index", "{tmp}", "--index", "{tmp}/photos", "--pipeline", "pdq"], "not an empty folder nor a copyseek index"),
        (["eval", "{tmp}/bad.csv", "--ground-truth", "{tmp}/bad.csv", "--plot", "{tmp}/no/pr.png"], "output folder does not exist"),
    ],
)
def test_user_errors_are_one_clear_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "bad.csv").write_text("this,is,not\nright\n")
    (tmp_path / "empty").mkdir()
    write_photos(tmp_path / "photos", 1, size=(64, 48))
    code, _, err = run(capsys, *[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "idx").exists()


def test_malformed_prediction_rows_name_their_line(tmp_path, capsys):
    (tmp_path / "p.csv").write_text("query_id,reference_id,score\nq1,r1,0.5\nq2,r2,high\n")
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nq1,r1\nq2,\n")
    code, _, err = run(capsys, "eval", tmp_path / "p.csv", "--ground-truth", tmp_path / "gt.csv")
    assert code == 2 and "line 3" in err


def test_installed_command_and_help():
    result = subprocess.run([sys.executable, "-m", "copyseek.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("index", "match", "eval", "info", "demo"):
        assert command in result.stdout
    result = subprocess.run([sys.executable, "-m", "copyseek.cli", "match", "--help"], capture_output=True, text=True)
    assert "--background" in result.stdout and "--k" in result.stdout


def test_warnings_are_one_line_named_after_the_command(tmp_path, capsys):
    write_photos(tmp_path / "refs", 3, seed=5, prefix="R")
    index = tmp_path / "idx"
    run(capsys, "index", tmp_path / "refs", "--index", index, "--pipeline", "fused", "--model", "sscd", "-q")
    code, _, err = run(capsys, "match", tmp_path / "refs", "--index", index, "--output", tmp_path / "p.csv", "-q")
    assert code == 0
    assert "copyseek match: warning: the fusion weights were fitted" in err
    assert "UserWarning" not in err and "return FusedScorer" not in err


def test_asmk_pipeline_with_a_trained_how_model(collection, tmp_path, capsys, tiny_how):
    index = tmp_path / "how.idx"
    code, out, _ = run(capsys, "index", collection / "refs", "--index", index, "--pipeline", "asmk",
                       "--how-model", tiny_how, "-q")
    assert code == 0 and "references: 20" in out
    code, _, err = run(capsys, "match", collection / "queries", "--index", index, "--output", tmp_path / "p.csv", "-q")
    assert code == 0 and not err and (tmp_path / "p.csv").read_text().startswith("query_id,reference_id,score")
    code, _, err = run(capsys, "index", collection / "refs", "--index", tmp_path / "g.idx", "--pipeline", "global",
                       "--how-model", tiny_how)
    assert code == 2 and "how" in err
