"""The examples people copy run: every docstring example (`>>>`) of copyseek's modules, and the
README's Python and shell blocks, in a folder of tiny made-up images laid out as the examples
expect (references/, queries/, photos/, gt.csv, a DISC21-like disc21/ ...).

Shell blocks run line by line in a fresh copy of that folder: `copyseek ...` lines through the
CLI's `main` in this process (the same code as the installed command, without a Python start per
line), other lines with bash. SUBSTITUTIONS shrink what would take long on real data (a 30-minute
training run, a 4096-list Faiss index); each is listed with its reason. Blocks read like steps of
one session: each starts with refs.idx as the first block leaves it (the references indexed), except
a block that makes refs.idx for another pipeline. `make` lines are skipped (they run this suite), and
so are the blocks of SKIPPED_COMMANDS, which tests of their own run.
"""

from __future__ import annotations

import doctest
import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.making import crop_copy, write_photos

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "copyseek"
README = (ROOT / "README.md").read_text()

TINY_TRAINING = "--set steps=1 --set dim=8 --set image_size=32 --set classes_per_batch=2 --set views_per_class=2 --set chunk_size=4 --device cpu"
SUBSTITUTIONS = [
    ("--minutes 30", f"--minutes 0 {TINY_TRAINING}"),  # half an hour of training -> one tiny step
    ("--holdout 0.3", "--holdout 0.3 --references 2 --copied 1 --copies 1 --distractor-queries 1 --background 1 --donors 1 --max-side 256"),
    ("sscd sscd+sn sscd-fast fused+sn", "sscd+sn"),  # each pipeline is exercised by the other examples
    ('"IVF4096,PQ64"', '"IVF2,Flat"'),  # 4096 lists cannot be trained on a dozen references
]


SKIPPED_COMMANDS = {
    "serve": "a server that runs until stopped (tests/service starts and stops one)",
    "demo": "builds a benchmark and runs every step on it (tests/test_demo.py runs it)",
}


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def substituted(line: str) -> str:
    for old, new in SUBSTITUTIONS:
        line = line.replace(old, new)
    return line


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The folder the examples assume: references R000120..R000123 with two copied by queries,
    a distractor query, photos/ (background and training), gt.csv, query.jpg and disc21/."""
    root = tmp_path_factory.mktemp("examples")
    refs = [
        path.rename(path.with_name(f"R{120 + i:06d}.jpg"))
        for i, path in enumerate(write_photos(root / "references", 4, seed=7, prefix="r", size=(240, 180)))
    ]
    (root / "refs").mkdir()
    for ref in refs[2:]:  # R000122, R000123: enough for the fused index and explain example
        shutil.copy(ref, root / "refs")
    (root / "queries").mkdir()
    rows = ["query_id,reference_id"]
    for q, ref in enumerate(refs[:2]):
        crop_copy(ref, root / "queries" / f"Q{q:05d}.jpg")
        rows.append(f"Q{q:05d},{ref.stem}")
    write_photos(root / "queries", 1, seed=99, prefix="Q0000", size=(200, 150))[0].rename(root / "queries" / "Q00002.jpg")
    rows.append("Q00002,")
    (root / "gt.csv").write_text("\n".join(rows) + "\n")
    crop_copy(refs[3], root / "query.jpg")  # explained against R000123, the reference it copies
    write_photos(root / "photos", 8, seed=8, size=(128, 96))
    disc = root / "disc21"
    shutil.copytree(root / "references", disc / "references")
    shutil.copytree(root / "queries", disc / "dev_queries")
    shutil.copytree(root / "photos", disc / "training")
    (disc / "public_ground_truth.csv").write_text((root / "gt.csv").read_text())
    (root / "labels.csv").write_text("reference_id,label\nR000120,cat\nR000121,dog\n")
    from copyseek.cli import main

    with pytest.MonkeyPatch.context() as patch:  # refs.idx as the README's first block leaves it
        patch.chdir(root)
        assert main(["index", "references/", "--index", "refs.idx", "-q"]) == 0
    return root


def fresh_copy(workspace: Path, tmp_path: Path) -> Path:
    target = tmp_path / "work"
    shutil.copytree(workspace, target, symlinks=True)
    return target


# ----------------------------------------------------------------------------------- docstrings
def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(SOURCE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module", modules_with_examples())
def test_docstring_examples_run(module, workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(fresh_copy(workspace, tmp_path))
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(importlib.import_module(module)) if t.examples]
    assert tests, f"{module} mentions >>> but has no example doctest can find"
    failures = []
    for test in tests:
        result = runner.run(test, out=failures.append)
        assert result.failed == 0, "".join(failures)


def test_the_package_example_is_executed():
    assert "copyseek" in modules_with_examples()  # help(copyseek) shows it: it must keep working


# ----------------------------------------------------------------------------------- README
def test_readme_python_examples_run(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(fresh_copy(workspace, tmp_path))
    blocks = code_blocks(README, "python")
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})


def commands(block: str) -> set[str]:
    """The copyseek sub-commands a shell block runs."""
    return set(re.findall(r"(?:^|&& )copyseek (\w+)", block, re.M))


def readme_shell_blocks() -> list[str]:
    return [
        b
        for b in code_blocks(README, "bash")
        if not all(line.startswith("make ") for line in b.strip().splitlines()) and not commands(b) & set(SKIPPED_COMMANDS)
    ]


@pytest.mark.parametrize("block", readme_shell_blocks(), ids=lambda b: shlex.split(b, comments=True)[1])
def test_readme_shell_examples_run(block, workspace, tmp_path, monkeypatch, capsys):
    from copyseek.cli import main

    work = fresh_copy(workspace, tmp_path)
    monkeypatch.chdir(work)
    for made in re.findall(r"^copyseek index .*--index (\S+).*--pipeline", block, re.M):
        shutil.rmtree(work / made, ignore_errors=True)  # an index of another pipeline under that name
    for line in filter(None, (line.strip() for line in block.splitlines())):
        line = substituted(line)
        if line.startswith("copyseek "):
            argv = shlex.split(line, comments=True)[1:]
            code = main(argv)
            assert code == 0, f"{line!r} exited with {code}: {capsys.readouterr().err[-2000:]}"
        else:
            done = subprocess.run(["bash", "-c", line], cwd=work, capture_output=True, text=True)
            assert done.returncode == 0, f"{line!r}: {done.stderr}"


def test_readme_commands_are_all_run():
    """Every copyseek sub-command the README shows is in a block the tests run."""
    shown = set().union(*map(commands, code_blocks(README, "bash")))
    run = set().union(*map(commands, readme_shell_blocks()))
    assert shown - run <= set(SKIPPED_COMMANDS)
    assert {"index", "match", "eval", "info", "explain", "train", "bench"} <= run
