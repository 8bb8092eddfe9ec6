from __future__ import annotations

import json

import numpy as np
import pytest

from copyseek.store import saved_searchers
from copyseek.store.index import Index
from tests.making import write_photos


def options(tiny_onnx, factory: str) -> dict:
    return {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64", "factory": factory}}


def found(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Every reference's own vector searched against the index: (n, 3) similarities and rows."""
    searcher = index.searchers()["global"]
    return searcher.search_vectors(searcher.reconstruct(np.arange(searcher.ntotal)), 3)


def saved_files(path) -> list[str]:
    folder = path / saved_searchers.FOLDER
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def refuse_chunks(monkeypatch) -> None:
    def refuse(self, raw, record):
        raise AssertionError(f"chunk {record.chunk} was read to build {sorted(raw)}")

    monkeypatch.setattr(Index, "_add_chunk", refuse)


def test_a_reopened_index_searches_its_saved_searcher_without_reading_the_chunks(tmp_path, photos, tiny_onnx, monkeypatch):
    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "IVF2,SQ8")) as index:
        index.add(photos[0].parent, progress=False)
        before = found(index)
    assert [name.rsplit(".", 1)[1] for name in saved_files(tmp_path / "idx")] == ["bin", "json"]
    refuse_chunks(monkeypatch)
    with Index.open(tmp_path / "idx") as index:
        after = found(index)
        assert index.searchers()["global"].search_parameters() == {"nprobe": 2}
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)


def test_added_and_removed_references_are_searched_right_after_a_reopen(tmp_path, photos, tiny_onnx):
    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "IVF2,SQ8")) as index:
        index.add(photos[0].parent, progress=False)
        found(index)
    first = saved_files(tmp_path / "idx")
    with Index.open(tmp_path / "idx") as index:
        index.add(write_photos(tmp_path / "more", 3, seed=7, prefix="new")[0].parent, progress=False)
        index.remove([index.ids[0]])
    with Index.open(tmp_path / "idx") as index:
        sims, rows = found(index)
        live = [i for i in index.ids if i is not None]
        assert len(index.ids) == 15 and len(live) == 14
        assert 0 not in rows  # the removed reference's row is masked, though its features are still stored
    second = saved_files(tmp_path / "idx")
    assert len(second) == 2 and not set(first) & set(second)  # a new snapshot's file replaced the old one


def test_a_damaged_saved_searcher_is_rebuilt_from_the_chunks(tmp_path, photos, tiny_onnx):
    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "IVF2,SQ8")) as index:
        index.add(photos[0].parent, progress=False)
        before = found(index)
    binary = next((tmp_path / "idx" / saved_searchers.FOLDER).glob("*.bin"))
    data = bytearray(binary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    binary.write_bytes(bytes(data))
    with Index.open(tmp_path / "idx") as index, pytest.warns(UserWarning, match="saved searcher .* is damaged"):
        after = found(index)
    np.testing.assert_array_equal(after[1], before[1])
    assert saved_searchers._sha256(binary) == json.loads(binary.with_suffix(".json").read_text())["sha256"]


def test_exact_searchers_are_not_saved(tmp_path, photos, tiny_onnx):
    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "Flat")) as index:
        index.add(photos[0].parent, progress=False)
        found(index)
    assert saved_files(tmp_path / "idx") == []


def test_the_fingerprint_names_the_spec_and_every_chunk():
    from copyseek.store.manifest import ChunkRecord

    chunks = [ChunkRecord(0, 0, 4, "a" * 64, 10), ChunkRecord(1, 4, 2, "b" * 64, 10)]
    base = saved_searchers.fingerprint({"factory": "auto"}, chunks)
    assert base == saved_searchers.fingerprint({"factory": "auto"}, list(chunks))
    assert base != saved_searchers.fingerprint({"factory": "Flat"}, chunks)
    assert base != saved_searchers.fingerprint({"factory": "auto"}, chunks[:1])
    assert base != saved_searchers.fingerprint({"factory": "auto"}, [chunks[0], ChunkRecord(1, 4, 2, "c" * 64, 10)])


def test_a_read_only_index_saves_nothing(tmp_path, photos, tiny_onnx, monkeypatch):
    monkeypatch.setattr(saved_searchers.os, "access", lambda path, mode: False)
    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "IVF2,SQ8")) as index:
        index.add(photos[0].parent, progress=False)
        assert len(found(index)[1]) == 12
    assert saved_files(tmp_path / "idx") == []


def test_verify_reports_a_damaged_saved_searcher_and_repair_removes_it(tmp_path, photos, tiny_onnx):
    from copyseek.store.integrity import repair, verify

    with Index.create(tmp_path / "idx", options=options(tiny_onnx, "IVF2,SQ8")) as index:
        index.add(photos[0].parent, progress=False)
        found(index)
    binary = next((tmp_path / "idx" / saved_searchers.FOLDER).glob("*.bin"))
    with Index.open(tmp_path / "idx") as index:
        assert verify(index).damaged == []
    binary.write_bytes(binary.read_bytes()[:100])
    with Index.open(tmp_path / "idx") as index:
        damaged = verify(index).damaged
        assert [d.path for d in damaged] == [binary] and "checksum mismatch" in damaged[0].problem
        assert repair(index, progress=False).caches_removed == 1
    assert saved_files(tmp_path / "idx") == []
