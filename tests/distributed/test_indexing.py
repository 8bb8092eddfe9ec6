import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from copyseek.distributed.indexing import RayDescriber, ray_branch_options
from copyseek.match.matcher import MatchOptions, match
from copyseek.store.index import Index
from tests.making import crop_copy, write_photos

pytestmark = pytest.mark.xdist_group("ray")


def ray_describer(index: Index, **kwargs) -> RayDescriber:
    options, specs = ray_branch_options(index)
    return RayDescriber(options, specs, **kwargs)


def test_a_ray_index_is_the_single_process_one(tmp_path, tiny_onnx, ray_address):
    folder = tmp_path / "refs"
    photos = write_photos(folder, 30, seed=5, size=(96, 72))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    queries = tmp_path / "queries"
    queries.mkdir()
    for path in photos[::6]:
        crop_copy(path, queries / f"q_{path.stem}.jpg")
    options = {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}
    indexes = {}
    for mode in ("single", "ray"):
        index = Index.create(tmp_path / mode, "global", options)
        describer = ray_describer(index, address=ray_address, workers=1, batch_size=4) if mode == "ray" else None
        report = index.add(folder, commit_every=8, batch_size=4, progress=False, on_skip=lambda f, r: None, describer=describer)
        assert (report.added, [f.id for f, _ in report.skipped]) == (30, ["broken"])
        indexes[mode] = index
    single, ray = indexes["single"], indexes["ray"]
    assert [(c.first_row, c.count) for c in ray.manifest.chunks()] == [(c.first_row, c.count) for c in single.manifest.chunks()]
    assert ray.ids == single.ids
    rows = np.arange(30)
    assert np.array_equal(ray.searchers()["global"].reconstruct(rows), single.searchers()["global"].reconstruct(rows))
    found = {mode: match(index, queries, MatchOptions(k=5, workers=0), progress=False).predictions for mode, index in indexes.items()}
    assert found["ray"] == found["single"] and len(found["ray"]) == 25
    assert sorted(describer.described) == sorted(p.stem for p in photos)


def count_chunks(manifest: Path) -> int:
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_ray_driver_is_resumed_describing_only_what_was_not_committed(tmp_path, ray_address):
    folder = tmp_path / "refs"
    write_photos(folder, 48, seed=6, size=(96, 72))
    index_dir = tmp_path / "idx"
    command = [
        sys.executable, "-m", "copyseek.cli", "index", str(folder), "--index", str(index_dir), "--pipeline", "pdq",
        "--commit-every", "4", "--batch-size", "2", "--ray", ray_address, "--ray-workers", "1", "-q",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(os.path.abspath, sys.path[:1] + ["src"]))}
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    while driver.poll() is None and count_chunks(index_dir / "manifest.sqlite") < 2:
        time.sleep(0.01)
    assert driver.poll() is None, driver.stderr.read().decode()
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    with Index.open(index_dir) as index:
        committed = {e.id for e in index.list(["indexed"])}
        assert 8 <= len(committed) < 48 and len(committed) % 4 == 0
        describer = ray_describer(index, address=ray_address, workers=1, batch_size=2)
        report = index.add(folder, commit_every=4, progress=False, describer=describer)
        assert (report.added, report.already_indexed) == (48 - len(committed), len(committed))
        everything = {f"img{i:04d}" for i in range(48)}
        assert set(describer.described) == everything - committed
        assert len(describer.described) == len(everything - committed)
        assert sorted(index.ids) == sorted(everything)
        hashes = index.searchers()["pdq"]
        assert hashes.ntotal == 48
