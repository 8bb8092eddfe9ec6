"""`copyseek bench build`: layout, ground truth, disjoint pools, determinism, holdout, errors."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copyseek.bench.build import CopyTask, build_benchmark, render
from copyseek.bench.cli import add_parser
from copyseek.bench.plan import is_held_out
from copyseek.errors import CopyseekError
from tests.making import write_photos

SMALL = dict(n_references=8, n_copied=5, n_copies=8, n_distractor_queries=5, n_background=4, progress=False)
"""17 photos in pools, the rest donors."""


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory) -> Path:
    """28 photos of several sizes and formats, one of them unreadable."""
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder / "a", 12, size=(96, 72))
    write_photos(folder / "b", 12, seed=1, prefix="wide", size=(160, 60))
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (50, 40, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(folder / "grey.jpg")
    Image.fromarray((rng.integers(0, 65536, (30, 40))).astype(np.uint16)).save(folder / "deep.png")
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def bench(photo_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    build_benchmark(photo_dir, out, seed=0, workers=1, **SMALL)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def folder_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(bench):
    assert sorted(p.name for p in bench.iterdir()) == [
        "background", "benchmark.json", "edits.csv", "gt.csv", "holdout.txt", "layouts.json", "queries",
        "references",
    ]  # fmt: skip
    assert len(list((bench / "references").glob("R*.jpg"))) == 8
    assert len(list((bench / "queries").glob("Q*.jpg"))) == 8 + 5
    assert len(list((bench / "background").glob("B*.jpg"))) == 4
    for image in bench.rglob("*.jpg"):
        with Image.open(image) as opened:
            assert opened.format == "JPEG" and opened.mode in ("RGB", "L")
    assert (bench / "holdout.txt").read_text() == ""
    assert json.loads((bench / "benchmark.json").read_text())["complete"] is True


def test_ground_truth_is_correct(bench):
    gt = read_csv(bench / "gt.csv")
    assert list(gt[0]) == ["query_id", "reference_id"]
    references = {p.stem for p in (bench / "references").iterdir()}
    queries = {p.stem for p in (bench / "queries").iterdir()}
    assert {row["query_id"] for row in gt} == queries
    copies = [row for row in gt if row["reference_id"]]
    assert len(copies) == 8 and all(row["reference_id"] in references for row in copies)
    assert len({row["reference_id"] for row in copies}) == 5, "every copied reference has a copy"

    record = json.loads((bench / "benchmark.json").read_text())
    sources = {row["query_id"]: row["source"] for row in read_csv(bench / "edits.csv")}
    for row in gt:
        if row["reference_id"]:  # a copy is made from its reference's photo
            assert sources[row["query_id"]] == record["references"][row["reference_id"]]
        else:  # a distractor is made from a photo that is no reference
            assert sources[row["query_id"]] not in record["references"].values()


def test_pools_are_disjoint(bench):
    record = json.loads((bench / "benchmark.json").read_text())
    edits = read_csv(bench / "edits.csv")
    pools = {
        "references": set(record["references"].values()),
        "distractor sources": {row["source"] for row in edits if row["is_copy"] == "0"},
        "background": set(record["background"].values()),
        "donors": set(record["donors"]),
    }
    assert sum(len(p) for p in pools.values()) == len(set().union(*pools.values()))
    assert len(pools["donors"]) == 27 - 17, "all photos left over are donors"
    assert "broken.jpg" in record["skipped"] and "broken.jpg" not in record["photos"]


def test_edits_are_recorded_and_varied(bench):
    edits = read_csv(bench / "edits.csv")
    assert list(edits[0]) == ["query_id", "is_copy", "edits", "source"]
    names = [row["edits"].split("|") for row in edits]
    assert all(n and all(re.fullmatch(r"[a-z_0-9]+", e) for e in n) for n in names)
    assert len({e for n in names for e in n}) >= 8


def test_ids_do_not_leak_which_queries_are_copies(bench):
    gt = read_csv(bench / "gt.csv")
    assert all(re.fullmatch(r"Q\d{5}", row["query_id"]) for row in gt)
    is_copy = [bool(row["reference_id"]) for row in sorted(gt, key=lambda r: r["query_id"])]
    assert is_copy != sorted(is_copy) and is_copy != sorted(is_copy, reverse=True), "copies are shuffled in"
    referenced = sorted({row["reference_id"] for row in gt if row["reference_id"]})
    assert referenced != [f"R{i:05d}" for i in range(len(referenced))], "copied references are shuffled in"


def test_untouched_photos_are_kept_as_they_are(bench, photo_dir):
    record = json.loads((bench / "benchmark.json").read_text())
    for ref_id, name in record["references"].items():
        source, written = photo_dir / name, bench / "references" / f"{ref_id}.jpg"
        if source.suffix == ".jpg":
            assert written.read_bytes() == source.read_bytes()
        else:  # re-encoded as JPEG, same size
            with Image.open(source) as original, Image.open(written) as copy:
                assert original.size == copy.size


def test_same_seed_same_bytes_whatever_the_workers(bench, photo_dir, tmp_path):
    again = tmp_path / "again"
    build_benchmark(photo_dir, again, seed=0, workers=2, **SMALL)
    assert folder_bytes(again) == folder_bytes(bench)


def test_another_seed_another_benchmark(bench, photo_dir, tmp_path):
    other = tmp_path / "other"
    build_benchmark(photo_dir, other, seed=1, workers=1, **SMALL)
    assert (other / "gt.csv").read_bytes() != (bench / "gt.csv").read_bytes()
    assert folder_bytes(other / "queries") != folder_bytes(bench / "queries")


def test_holdout_is_chosen_by_file_name_and_kept_out(photo_dir, tmp_path):
    builds = []
    for seed in (0, 1):
        out = tmp_path / f"seed{seed}"
        build_benchmark(photo_dir, out, seed=seed, holdout=0.3, workers=1, **{**SMALL, "n_background": 1})
        builds.append(out)
    held = (builds[0] / "holdout.txt").read_text().splitlines()
    assert held == (builds[1] / "holdout.txt").read_text().splitlines(), (
        "the seed does not change the holdout"
    )
    assert held and all(Path(p).is_absolute() and Path(p).is_file() for p in held)
    names = {Path(p).relative_to(photo_dir).as_posix() for p in held}
    assert names == {
        p.relative_to(photo_dir).as_posix()
        for p in photo_dir.rglob("*.*")
        if p.suffix != ".txt" and is_held_out(p.relative_to(photo_dir).as_posix(), 0.3)
    }
    record = json.loads((builds[0] / "benchmark.json").read_text())
    assert not names & set(record["photos"])
    assert not names & {row["source"] for row in read_csv(builds[0] / "edits.csv")}


def test_a_list_of_paths_works(photo_dir, tmp_path):
    paths = sorted((photo_dir / "a").glob("*.jpg")) + sorted((photo_dir / "b").glob("*.jpg"))
    summary = build_benchmark(paths, tmp_path / "b", workers=1, **SMALL)
    assert summary["references"] == 8 and summary["queries"] == 13 and summary["donors"] == 24 - 17
    record = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert all(name.startswith(("a/", "b/")) for name in record["photos"])


def test_settings_are_checked(photo_dir, tmp_path):
    cases = [
        (dict(n_references=40), "not enough photos"),
        (dict(n_copied=9), "n_copied"),
        (dict(n_copies=3), "n_copies"),
        (dict(severity=2.5), "severity"),
        (dict(holdout=1.0), "holdout"),
        (dict(n_background=-1), "n_background"),
    ]
    for change, message in cases:
        with pytest.raises(CopyseekError, match=message):
            build_benchmark(photo_dir, tmp_path / "x", **{**SMALL, **change})
    assert not (tmp_path / "x").exists(), "nothing is written when the settings are wrong"


def test_output_folder_is_protected(photo_dir, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(CopyseekError, match="not empty"):
        build_benchmark(photo_dir, busy, workers=1, **SMALL)
    out = tmp_path / "b"
    build_benchmark(photo_dir, out, workers=1, **SMALL)
    with pytest.raises(CopyseekError, match="overwrite"):
        build_benchmark(photo_dir, out, workers=1, **SMALL)
    (out / "queries" / "stale.jpg").write_bytes(b"")
    build_benchmark(photo_dir, out, workers=1, overwrite=True, **{**SMALL, "n_distractor_queries": 2})
    assert len(list((out / "queries").iterdir())) == 8 + 2


def test_photos_inside_the_output_folder_are_not_used(tmp_path):
    write_photos(tmp_path, 25, size=(64, 48))
    build_benchmark(tmp_path, tmp_path / "bench", workers=1, **SMALL)
    build_benchmark(tmp_path, tmp_path / "bench", workers=1, overwrite=True, **SMALL)
    record = json.loads((tmp_path / "bench" / "benchmark.json").read_text())
    assert len(record["photos"]) == 25


def test_command_line(photo_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="copyseek")
    add_parser(parser.add_subparsers(dest="command", required=True))
    listing = tmp_path / "photos.txt"
    paths = sorted((photo_dir / "a").glob("*.jpg"))
    listing.write_text(f"# photos\n{paths[0]}\n\n" + "\n".join(str(p) for p in paths[1:]) + "\n")
    out = tmp_path / "b"
    argv = [
        "bench",
        "build",
        "--images",
        str(listing),
        "--out",
        str(out),
        "--references",
        "4",
        "--copied",
        "2",
        "--copies",
        "3",
        "--distractor-queries",
        "2",
        "--background",
        "2",
        "--severity",
        "1.5",
        "--quiet",
    ]
    args = parser.parse_args(argv)
    assert args.run(args) == 0
    assert "4 references, 5 queries (3 copies, 2 distractors)" in capsys.readouterr().out
    config = json.loads((out / "benchmark.json").read_text())["config"]
    assert config["severity"] == 1.5 and config["n_copies"] == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["bench"])


def test_max_side_limits_every_image(photo_dir, tmp_path):
    build_benchmark(photo_dir, tmp_path / "b", max_side=48, workers=1, **SMALL)
    for image in (tmp_path / "b").rglob("*.jpg"):
        with Image.open(image) as opened:
            assert max(opened.size) <= 48


def test_layouts_describe_each_written_query(bench):
    layouts = json.loads((bench / "layouts.json").read_text())
    assert sorted(layouts) == sorted(p.stem for p in (bench / "queries").glob("Q*.jpg"))
    for query_id, layout in layouts.items():
        with Image.open(bench / "queries" / f"{query_id}.jpg") as query:
            assert tuple(layout["size"]) == query.size
        x0, y0, x1, y1 = layout["copy"]
        assert 0 <= x0 <= x1 <= layout["size"][0] and 0 <= y0 <= y1 <= layout["size"][1]


def test_photos_rotated_by_exif_are_written_upright(tmp_path):
    source = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (60, 40), (10, 200, 30)).save(source, exif=exif)
    render(CopyTask(source, tmp_path / "R.jpg", max_side=1024, quality=90))
    with Image.open(tmp_path / "R.jpg") as written:
        assert written.size == (40, 60) and written.getexif().get(0x0112, 1) == 1


def test_reference_families(photo_dir, bench, tmp_path):
    out = tmp_path / "fam"
    summary = build_benchmark(photo_dir, out, seed=0, workers=1, variants_per_reference=2, **SMALL)
    assert summary["references"] == 3 * SMALL["n_references"]
    with open(out / "families.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    families: dict[str, list[str]] = {}
    for row in rows:
        families.setdefault(row["family"], []).append(row["reference_id"])
    assert len(rows) == len(list((out / "references").glob("*.jpg")))
    assert len(families) == SMALL["n_references"] and all(len(m) == 3 for m in families.values())
    assert all(row["edits"] for row in rows if row["reference_id"] != row["family"])
    # the rest of the benchmark is the one built without variants
    assert (out / "gt.csv").read_text() == (bench / "gt.csv").read_text()
    for original in families:
        assert (out / "references" / f"{original}.jpg").read_bytes() == (bench / "references" / f"{original}.jpg").read_bytes()


def test_copyseek_bench_build_passes_the_variant_severity(photo_dir, tmp_path):
    from copyseek.cli import main

    out = tmp_path / "fam"
    assert main(["bench", "build", "--images", str(photo_dir), "--out", str(out), "--variants-per-reference", "1",
                 "--variant-severity", "1.6", "--references", "8", "--copied", "5", "--copies", "8",
                 "--distractor-queries", "5", "--background", "4", "--workers", "1", "-q"]) == 0
    assert json.loads((out / "benchmark.json").read_text())["config"]["variant_severity"] == 1.6
