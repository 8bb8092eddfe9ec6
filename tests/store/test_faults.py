"""Fault injection: each file of an index x each damage x each command -> a clear one-line message
or a recovery, never a traceback; after `repair`, predictions equal those before the damage."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from copyseek.cli import main
from copyseek.store.faults import DAMAGES, kill_while_writing, run_case
from copyseek.store.faults import run_cli as run_in_process
from tests.making import crop_copy, write_photos


def make_world(root: Path, tiny_onnx: Path, *index_args: str) -> dict:
    refs = write_photos(root / "refs", 9, seed=11, prefix="R", size=(96, 72))
    (root / "queries").mkdir()
    for ref in refs[:5]:
        crop_copy(ref, root / "queries" / f"Q{ref.stem}.jpg")
    write_photos(root / "background", 4, seed=12, prefix="B", size=(96, 72))
    index = root / "pristine"
    code, _, err = run_cli(
        ["index", str(root / "refs"), "--index", str(index), "--model", f"onnx:{tiny_onnx}", "--resize", "square:64",
         "--commit-every", "3", "--batch-size", "3", "-q", *index_args]
    )  # fmt: skip
    assert code == 0, err
    world = {"root": root, "index": index}
    code, _, err = run_cli(match_argv(world, str(index), root / "before.csv"))
    assert code == 0, err
    world["before"] = read_rows(root / "before.csv")
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_onnx) -> dict:
    return make_world(tmp_path_factory.mktemp("faults"), tiny_onnx)


@pytest.fixture(scope="module")
def ivf_world(tmp_path_factory, tiny_onnx) -> dict:
    """An index whose global searcher is trained (IVF), so it is saved in INDEX/searchers."""
    return make_world(tmp_path_factory.mktemp("faults-ivf"), tiny_onnx, "--factory", "IVF2,SQ8")


def match_argv(world: dict, index: str, output: Path) -> list[str]:
    root = world["root"]
    return ["match", str(root / "queries"), "--index", index, "--output", str(output), "--background",
            str(root / "background"), "--workers", "0", "-q"]  # fmt: skip


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    return run_in_process(main, argv)


def read_rows(path: Path) -> set[tuple[str, str, str]]:
    with open(path, newline="") as handle:
        return {tuple(row) for row in list(csv.reader(handle))[1:]}


def commands(world: dict) -> list[tuple[str, list[str]]]:
    root = world["root"]
    return [
        ("info", ["info", "{index}"]),
        ("list", ["list", "{index}"]),
        ("verify", ["verify", "{index}"]),
        ("match", match_argv(world, "{index}", root / "during.csv")),
        ("explain", ["explain", str(root / "queries" / "QR0001.jpg"), "R0001", "--index", "{index}", "--output", str(root / "pair.png")]),
        ("index", ["index", str(root / "refs"), "--index", "{index}", "-q"]),
        ("remove", ["remove", "{index}", "ghost"]),
        ("repair", ["repair", "{index}", "-q"]),
        ("verify after repair", ["verify", "{index}"]),
        ("match after repair", match_argv(world, "{index}", root / "after.csv")),
    ]


EXPECTED = {  # (file, damage) -> outcome of each command, in the order of `commands`
    ("chunk", "delete"): "refused ok reported refused ok refused refused ok ok ok",
    ("chunk", "truncate"): "refused ok reported refused ok refused refused ok ok ok",
    ("chunk", "flip bytes"): "refused ok reported refused ok refused reported ok ok ok",
    ("background cache", "delete"): "ok ok ok ok ok ok reported ok ok ok",
    ("background cache", "truncate"): "ok ok reported ok ok ok reported ok ok ok",
    ("background cache", "flip bytes"): "ok ok reported ok ok ok reported ok ok ok",
    ("saved searcher", "delete"): "ok ok ok ok ok ok reported ok ok ok",
    # `info` loads the searchers first: it warns, rebuilds the damaged file, and so verify finds it sound
    ("saved searcher", "truncate"): "ok ok ok ok ok ok reported ok ok ok",
    ("saved searcher", "flip bytes"): "ok ok ok ok ok ok reported ok ok ok",
    ("manifest", "delete"): "refused refused refused refused refused refused refused refused refused refused",
    ("manifest", "truncate"): "refused refused refused refused refused refused refused refused refused refused",
    ("manifest", "flip bytes"): "refused refused refused refused refused refused refused refused refused refused",
    ("lock", "delete"): "ok ok ok ok ok ok reported ok ok ok",
    ("lock", "truncate"): "ok ok ok ok ok ok reported ok ok ok",
    ("lock", "flip bytes"): "ok ok ok ok ok ok reported ok ok ok",
}


@pytest.mark.parametrize("file_kind", ["chunk", "background cache", "saved searcher", "manifest", "lock"])
def test_every_damage_gives_a_clear_message_or_a_recovery(world, ivf_world, file_kind, tmp_path):
    world = ivf_world if file_kind == "saved searcher" else world
    for damage in DAMAGES:
        outcomes = run_case(main, world["index"], tmp_path / "idx", file_kind, damage, commands(world))
        seen = " ".join(o.kind for o in outcomes)
        details = "\n".join(f"{o.command}: {o.code} {o.stderr}" for o in outcomes)
        assert "TRACEBACK" not in seen, details
        if damage == "make read-only":  # readers never need to write; as root nothing changes at all
            assert all(o.kind in ("ok", "reported", "refused") for o in outcomes), details
            continue
        assert seen == EXPECTED[(file_kind, damage)], details
        for o in outcomes:
            if o.kind == "refused":
                assert len(o.stderr.splitlines()) == 1, details
                fix = ("copyseek repair", "restore", "rebuild")
                assert any(f in o.stderr for f in fix), details
        if file_kind != "manifest":  # after repair, the predictions are those from before the damage
            assert read_rows(world["root"] / "after.csv") == world["before"], details


# ----------------------------------------------------------------- kill -9 while writing
def assert_clean(index: Path) -> None:
    code, out, err = run_cli(["verify", str(index)])
    assert code == 0, out + err


def test_kill_9_during_remove_compact_and_repair_leaves_a_clean_index_that_a_rerun_completes(tmp_path):
    write_photos(tmp_path / "refs", 36, seed=21, size=(64, 48))
    index = tmp_path / "idx"
    code, _, err = run_cli(["index", str(tmp_path / "refs"), "--index", str(index), "--pipeline", "pdq",
                            "--commit-every", "1", "--batch-size", "1", "-q"])  # fmt: skip
    assert code == 0, err
    rng = np.random.default_rng(1)
    doomed = [f"img{i:04d}" for i in range(0, 36, 2)]
    runs = {
        "remove": ["remove", str(index), *doomed],
        "compact": ["compact", str(index), "-q"],
        "repair": ["repair", str(index), "-q"],
    }
    kills = {}
    for name, argv in runs.items():
        if name == "repair":  # something to repair: three chunks damaged
            for chunk in sorted((index / "chunks").glob("*.npz"))[:3]:
                DAMAGES["flip bytes"](chunk)
        kills[name] = 0
        for _ in range(2):
            kills[name] += kill_while_writing(argv, index, rng)
            if name != "repair":
                assert_clean(index)
        code, out, err = run_cli(argv)  # the re-run completes
        assert code == 0, out + err
        assert_clean(index)
    assert all(count >= 1 for count in kills.values()), kills
    code, out, _ = run_cli(["list", str(index), "--status", "indexed"])
    assert sorted(line.split("\t")[0] for line in out.splitlines()) == [f"img{i:04d}" for i in range(1, 36, 2)]
    from copyseek.store.index import Index

    with Index.open(index) as opened:  # compacted: no chunk holds a removed reference
        assert opened.info()["reclaimable"] == 0 and len(opened.ids) == 18
