import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.store.index import Index
from tests.io.bad_images import BAD, GOOD, write_all
from tests.making import write_photos


@pytest.fixture
def tiny_options(tiny_onnx):
    return {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}


def test_indexing_twice_adds_nothing(tmp_path, photos, tiny_options):
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        first = index.add(photos[0].parent, progress=False)
        second = index.add(photos[0].parent, progress=False)
    assert (first.added, second.added, second.already_indexed) == (12, 0, 12)
    with Index.open(tmp_path / "idx") as index:
        assert len(index) == 12 and index.searchers()["global"].ntotal == 12


def test_adding_a_new_folder_adds_only_its_images(tmp_path, photos, tiny_options):
    more = write_photos(tmp_path / "more", 5, seed=7, prefix="new")
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
        report = index.add(more[0].parent, progress=False)
        assert report.added == 5 and len(index) == 17
        assert index.ids[-5:] == [p.stem for p in more]


def test_same_id_for_another_image_is_an_error_and_adds_nothing(tmp_path, photos, tiny_options):
    clash = write_photos(tmp_path / "clash", 3, seed=99)  # img0000.. again, other pixels
    write_photos(tmp_path / "clash", 1, seed=5, prefix="fresh")
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
        with pytest.raises(CopyseekError, match="already in the index"):
            index.add(clash[0].parent, progress=False)
        assert len(index) == 12


def test_index_refuses_another_model(tmp_path, photos, tiny_options):
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
    with pytest.raises(CopyseekError, match="built with"):
        Index.open_or_create(tmp_path / "idx", options={"global": {"model": "sscd"}})


def test_an_index_keeps_its_local_parameters_when_a_default_changes(tmp_path, photos):
    with Index.create(tmp_path / "idx", "local", {"local": {"max_keypoints": 64}}) as index:
        index.add(photos[0].parent, progress=False)
    # an index made before a default changed stored no option: only its spec says 64 keypoints
    with sqlite3.connect(tmp_path / "idx" / "manifest.sqlite") as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'options'", ('{"local": {}}',))
    with Index.open(tmp_path / "idx") as index:
        assert index.branches["local"].sift.max_keypoints == 64
        assert index.searchers()["local"].ntotal == 12


def test_bad_files_are_skipped_reported_and_nothing_is_lost(tmp_path, photos, tiny_options):
    folder = photos[0].parent
    write_all(folder, {**GOOD, **BAD})
    skipped = []
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        report = index.add(folder, progress=False, on_skip=lambda f, r: skipped.append(f.path.name))
        assert sorted(skipped) == sorted(BAD)
        assert report.added == 12 + len(GOOD)
        assert len(index) == 12 + len(GOOD)
    report_lines = (tmp_path / "idx" / "skipped.csv").read_text().splitlines()
    assert len(report_lines) == 1 + len(BAD)
    # a re-run neither retries unchanged bad files nor loses good ones
    with Index.open(tmp_path / "idx") as index:
        again = index.add(folder, progress=False, on_skip=lambda f, r: pytest.fail("retried " + f.path.name))
        assert (again.added, again.previously_skipped, len(index)) == (0, len(BAD), 12 + len(GOOD))


def test_search_finds_the_copy(tmp_path, photos, tiny_options):
    from copyseek.io.images import load_rgb

    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
        branch = index.branches["global"]
        found = index.searchers()["global"].search(branch.extract([load_rgb(photos[3])]), 3)[0]
        assert index.ids[found.rows[0]] == photos[3].stem
        assert found.scores[0] == pytest.approx(1.0, abs=1e-4)


def count_committed(manifest: Path) -> int:
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM images WHERE status='indexed'").fetchone()[0]
    except sqlite3.Error:
        return -1


def test_kill_9_at_any_moment_leaves_a_consistent_index_that_a_rerun_completes(tmp_path, tiny_onnx):
    folder = tmp_path / "refs"
    write_photos(folder, 240, seed=3, size=(96, 72))
    index_dir = tmp_path / "idx"
    command = [
        sys.executable, "-m", "copyseek.cli", "index", str(folder), "--index", str(index_dir),
        "--model", f"onnx:{tiny_onnx}", "--resize", "square:64", "--commit-every", "4", "--batch-size", "4",
        "--workers", "1", "-q",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(5):
        before = max(count_committed(index_dir / "manifest.sqlite"), 0)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # kill at a random moment once this run has committed something (mid-write more often than not)
        while process.poll() is None and count_committed(index_dir / "manifest.sqlite") <= before:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, 0.05))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
        with Index.open(index_dir) as index:  # opens, and is consistent
            assert len(set(index.ids)) == len(index.ids) == index.searchers()["global"].ntotal
    assert kills >= 3
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    with Index.open(index_dir) as index:
        assert sorted(index.ids) == sorted(f"img{i:04d}" for i in range(240))
        assert index.searchers()["global"].ntotal == 240
    leftovers = [p.name for p in (index_dir / "chunks").iterdir() if p.name.startswith(".")]
    assert leftovers == []
