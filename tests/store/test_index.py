import json
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


def test_an_index_whose_model_file_changed_says_what_to_do(tmp_path, photos, tiny_options):
    with Index.create(tmp_path / "idx", options=tiny_options) as index:
        index.add(photos[0].parent, progress=False)
    # as after an upgrade that ships another model under the same name: the stored fingerprint differs
    with sqlite3.connect(tmp_path / "idx" / "manifest.sqlite") as db:
        specs = json.loads(db.execute("SELECT value FROM meta WHERE key = 'specs'").fetchone()[0])
        specs["global"]["fingerprint"] = "an-older-model"
        db.execute("UPDATE meta SET value = ? WHERE key = 'specs'", (json.dumps(specs),))
    with pytest.raises(CopyseekError, match="fingerprint=an-older-model.*Index the references again"):
        Index.open(tmp_path / "idx")


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
    # a reader waits out a commit in progress (up to 2 s) instead of reading nothing on a busy machine
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=2.0) as db:
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
    kills, unkilled = 0, []
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
        else:  # it ended before the kill: say how, should too many do so
            unkilled.append((attempt, process.returncode, process.stderr.read().decode()[-500:]))
        process.wait()
        with Index.open(index_dir) as index:  # opens, and is consistent
            assert len(set(index.ids)) == len(index.ids) == index.searchers()["global"].ntotal
    assert kills >= 3, unkilled
    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    with Index.open(index_dir) as index:
        assert sorted(index.ids) == sorted(f"img{i:04d}" for i in range(240))
        assert index.searchers()["global"].ntotal == 240
    leftovers = [p.name for p in (index_dir / "chunks").iterdir() if p.name.startswith(".")]
    assert leftovers == []


# ----------------------------------------------------------------- removal, compaction, readers, writers
def pdq_index(path: Path, folder: Path, commit_every: int = 4) -> Index:
    index = Index.create(path, "pdq")
    index.add(folder, progress=False, commit_every=commit_every)
    return index


@pytest.fixture
def small(tmp_path) -> Path:
    write_photos(tmp_path / "small", 10, seed=4, size=(96, 72))
    return tmp_path / "small"


def top_ids(index: Index, folder: Path, k: int = 12) -> dict[str, list[tuple[str, float]]]:
    from copyseek.match.matcher import MatchOptions, match

    result = match(index, folder, MatchOptions(k=k, workers=0), progress=False)
    found: dict[str, list[tuple[str, float]]] = {}
    for p in result.predictions:
        found.setdefault(p.query_id, []).append((p.reference_id, round(p.score, 6)))
    return found


def test_removed_references_are_never_returned_and_stay_removed(tmp_path, small):
    with pdq_index(tmp_path / "idx", small) as index:
        before = top_ids(index, small)
        report = index.remove(["img0003", "img0007", "nope", "img0003"])
        assert (report.removed, report.unknown) == (["img0003", "img0007"], ["nope"])
        assert index.remove(["img0003"]).not_searchable == ["img0003"]
        after = top_ids(index, small)  # the same object applies its own removals at once
        assert len(index) == 8
    for found in (after, top_ids(Index.open(tmp_path / "idx"), small)):
        assert all(r not in ("img0003", "img0007") for hits in found.values() for r, _ in hits)
        assert found["img0005"][0] == before["img0005"][0]
        assert len(found["img0005"]) == 8
    with Index.open(tmp_path / "idx") as index:  # re-indexing the same files does not bring them back
        again = index.add(small, progress=False)
        assert (again.added, again.previously_removed, len(index)) == (0, 2, 8)
        statuses = {e.id: e.status for e in index.list()}
        assert statuses["img0003"] == "removed" and statuses["img0004"] == "indexed"


def test_compaction_reclaims_space_and_keeps_every_prediction(tmp_path, small):
    with pdq_index(tmp_path / "idx", small) as index:
        index.remove([f"img{i:04d}" for i in (0, 1, 2, 3, 6)])  # a whole chunk, and parts of others
        before = top_ids(index, small)
        disk = index.info()["disk_bytes"]
        report = index.compact(progress=False)
        assert report.reclaimed == 5 and index.info()["reclaimable"] == 0
        assert report.bytes_after < disk
        assert top_ids(index, small) == before
        assert len(index.ids) == 5 and None not in index.ids
    chunk_files = sorted(p.name for p in (tmp_path / "idx" / "chunks").iterdir())
    assert len(chunk_files) == len(Index.open(tmp_path / "idx").manifest.chunks())


def test_compacted_local_features_search_like_an_index_that_never_had_the_removed(tmp_path, small):
    import shutil

    options = {"local": {"max_keypoints": 32}}
    with Index.create(tmp_path / "idx", "local", options) as index:
        index.add(small, progress=False, commit_every=10)
        index.remove(["img0002", "img0005"])
        removed = top_ids(index, small, k=3)
        index.compact(progress=False)
        compacted = top_ids(index, small, k=3)
    kept = tmp_path / "kept"
    shutil.copytree(small, kept, ignore=lambda d, names: [n for n in names if n.startswith(("img0002", "img0005"))])
    with Index.create(tmp_path / "fresh", "local", options) as fresh:
        fresh.add(kept, progress=False)
        assert compacted == top_ids(fresh, small, k=3)
    assert all(r not in ("img0002", "img0005") for hits in removed.values() for r, _ in hits)


def test_a_reader_keeps_its_snapshot_while_a_writer_extends_and_refresh_catches_up(tmp_path, small):
    more = write_photos(tmp_path / "more", 3, seed=8, prefix="new", size=(96, 72))
    with pdq_index(tmp_path / "idx", small) as writer, Index.open(tmp_path / "idx") as reader:
        assert len(reader.ids) == 10
        writer.add(more[0].parent, progress=False)
        writer.remove(["img0001"])
        assert len(reader.ids) == 10 and "img0001" in reader.ids  # its snapshot
        assert reader.refresh() and not reader.refresh()
        assert set(reader.ids) - {None} == {f"img{i:04d}" for i in range(10) if i != 1} | {p.stem for p in more}
        assert reader.searchers()["pdq"].ntotal == 13


def test_writers_wait_for_each_other_with_wait(tmp_path, small):
    import threading

    from copyseek.store.files import WriteLock

    pdq_index(tmp_path / "idx", small).close()
    held, release = threading.Event(), threading.Event()

    def hold():
        with WriteLock(tmp_path / "idx" / "lock"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(CopyseekError, match="--wait SECONDS"):
            index.remove(["img0000"])
    threading.Timer(0.3, release.set).start()
    with Index.open(tmp_path / "idx", wait=10) as index:
        assert index.remove(["img0000"]).removed == ["img0000"]
    thread.join()


def test_a_photo_folder_is_refused_as_an_index(tmp_path, small):
    with pytest.raises(CopyseekError, match="not an empty folder nor a copyseek index"):
        Index.open_or_create(small, "pdq")
    assert not (small / "manifest.sqlite").exists() and not (small / "chunks").exists()


def test_an_index_from_before_checksums_and_removal_opens_and_is_upgraded_by_a_writer(tmp_path, small):
    with pdq_index(tmp_path / "idx", small) as index:
        before = top_ids(index, small)
    with sqlite3.connect(tmp_path / "idx" / "manifest.sqlite") as db:  # back to the first format
        db.executescript(
            "CREATE TABLE c1 (chunk INTEGER PRIMARY KEY, first_row INTEGER NOT NULL, count INTEGER NOT NULL);"
            "INSERT INTO c1 SELECT chunk, first_row, count FROM chunks; DROP TABLE chunks; ALTER TABLE c1 RENAME TO chunks;"
            "CREATE TABLE i1 (id TEXT PRIMARY KEY, path TEXT NOT NULL, sha1 TEXT NOT NULL, bytes INTEGER NOT NULL,"
            " width INTEGER, height INTEGER, status TEXT NOT NULL CHECK (status IN ('indexed', 'skipped')), reason TEXT,"
            " row INTEGER UNIQUE, chunk INTEGER REFERENCES chunks(chunk), added REAL NOT NULL);"
            "INSERT INTO i1 SELECT * FROM images; DROP TABLE images; ALTER TABLE i1 RENAME TO images;"
        )
    with Index.open(tmp_path / "idx") as index:
        assert top_ids(index, small) == before and not index.manifest.upgraded
        assert index.remove(["img0002"]).removed == ["img0002"]
        assert index.manifest.upgraded and index.list(["removed"])[0].id == "img0002"


def test_the_branches_of_a_pipeline_extract_side_by_side():
    import threading

    from types import SimpleNamespace

    from copyseek.store.index import extract_all

    meeting = threading.Barrier(2, timeout=5)  # broken (an error) unless both branches run at once

    class Meets:  # the one method of a Branch that extraction calls
        def __init__(self, name):
            self.name = name

        def extract(self, images, *, query=False):
            meeting.wait()
            return [{"who": self.name, "query": query} for _ in images]

    images = [SimpleNamespace(pixels=np.zeros((8, 8, 3), np.uint8))] * 3  # decoded images, as extract_all sees them
    features = extract_all({"a": Meets("a"), "b": Meets("b")}, images, query=True)
    assert features == [{name: {"who": name, "query": True} for name in "ab"}] * 3
