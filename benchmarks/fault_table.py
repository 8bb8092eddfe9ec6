"""Every fault an index can meet and what copyseek does about it, as markdown tables.

Builds a small index (made-up photos, the shipped copyseek-small model) in a temporary folder, then
for each file of the index (a chunk, the manifest, a background cache, the lock) and each damage
(delete, truncate, flip bytes, make read-only) runs every command on a fresh copy, and records the
outcome; then kills writers (index, remove, compact, repair) with SIGKILL at random moments and
checks that `verify` is clean and a re-run completes. Prints the tables, or writes them between the
markers of docs/integrity.md with --write.

    python benchmarks/fault_table.py --write
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from copyseek.cli import main
from copyseek.store.faults import DAMAGES, index_files, kill_while_writing, run_case, run_cli
from copyseek.synthetic import synthetic_photo

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "integrity.md"
BEGIN, END = "<!-- fault table: begin -->", "<!-- fault table: end -->"


def photos(folder: Path, count: int, seed: int, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"{prefix}{i:04d}.jpg")
        synthetic_photo(np.random.default_rng(seed * 1000 + i), 128, 96).save(paths[-1], quality=90)
    return paths


def cli(argv: list[str]) -> tuple[int | None, str, str]:
    return run_cli(main, [str(a) for a in argv])


def build(root: Path) -> dict[str, Path]:
    refs = photos(root / "refs", 9, 1, "R")
    queries = root / "queries"
    queries.mkdir()
    for ref in refs[:4]:
        from PIL import Image

        Image.open(ref).crop((10, 8, 110, 80)).save(queries / f"Q{ref.stem}.jpg", quality=70)
    photos(root / "background", 4, 2, "B")
    index = root / "pristine"
    code, _, err = cli(["index", root / "refs", "--index", index, "--model", "copyseek-small", "--commit-every", "3", "--batch-size", "3", "-q"])
    assert code == 0, err
    return {"root": root, "index": index, "refs": root / "refs", "queries": queries, "background": root / "background"}


def match_argv(paths: dict[str, Path], index: str, output: Path) -> list[str]:
    return ["match", str(paths["queries"]), "--index", index, "--output", str(output),
            "--background", str(paths["background"]), "--workers", "0", "-q"]  # fmt: skip


def rows_of(path: Path) -> set[tuple[str, ...]]:
    with open(path, newline="") as handle:
        return {tuple(r) for r in list(csv.reader(handle))[1:]}


COMMANDS = ["info", "list", "verify", "match", "explain", "index", "remove", "repair", "verify after repair"]


def commands(paths: dict[str, Path]) -> list[tuple[str, list[str]]]:
    root = paths["root"]
    query = next(paths["queries"].iterdir())
    return [
        ("info", ["info", "{index}"]),
        ("list", ["list", "{index}"]),
        ("verify", ["verify", "{index}"]),
        ("match", match_argv(paths, "{index}", root / "during.csv")),
        ("explain", ["explain", str(query), query.stem[1:], "--index", "{index}", "--output", str(root / "pair.png")]),
        ("index", ["index", str(paths["refs"]), "--index", "{index}", "-q"]),
        ("remove", ["remove", "{index}", "no-such-id"]),
        ("repair", ["repair", "{index}", "-q"]),
        ("verify after repair", ["verify", "{index}"]),
        ("match after repair", match_argv(paths, "{index}", root / "after.csv")),
    ]


def short(text: str, index: Path) -> str:
    line = text.splitlines()[-1] if text else ""
    line = line.replace(str(index), "INDEX")
    line = re.sub(r"/\S+/(refs|queries|background)/", r"\1/", line)
    return line.replace("|", "\\|")


def fault_table(paths: dict[str, Path]) -> str:
    code, _, err = cli(match_argv(paths, str(paths["index"]), paths["root"] / "before.csv"))
    assert code == 0, err
    before = rows_of(paths["root"] / "before.csv")
    header = "| file | damage | " + " | ".join(COMMANDS) + " | predictions after repair | message |"
    lines = [header, "|" + "---|" * (len(COMMANDS) + 4)]
    work = paths["root"] / "work"
    for kind in index_files(paths["index"]):
        for damage in DAMAGES:
            outcomes = run_case(main, paths["index"], work, kind, damage, commands(paths))
            by_name = {o.command: o for o in outcomes}
            after = by_name["match after repair"]
            same = "same as before" if after.code == 0 and rows_of(paths["root"] / "after.csv") == before else "—"
            message = next((o.stderr for o in outcomes if o.kind == "refused"), "")
            if not message:
                message = next((o.stderr for o in outcomes if "warning" in o.stderr), "")
            cells = [by_name[c].kind for c in COMMANDS]
            lines.append(f"| {kind} | {damage} | " + " | ".join(cells) + f" | {same} | {short(message, work)} |")
            (paths["root"] / "after.csv").unlink(missing_ok=True)
    return "\n".join(lines)


def kill_table(root: Path, kills: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    refs = photos(root / "kill-refs", 60, 3, "K")
    index = root / "kill-index"
    runs = {
        "index": ["index", str(root / "kill-refs"), "--index", str(index), "--pipeline", "pdq", "--commit-every", "2", "--batch-size", "2", "-q"],
        "remove": ["remove", str(index), *[p.stem for p in refs[::2]]],
        "compact": ["compact", str(index), "-q"],
        "repair": ["repair", str(index), "-q"],
    }
    lines = ["| command | kill -9 landed while writing | verify clean after each | re-run completes | verify clean after |", "|---|---|---|---|---|"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name, argv in runs.items():
        if name == "repair":
            for chunk in sorted((index / "chunks").glob("*.npz"))[:3]:
                DAMAGES["flip bytes"](chunk)
        landed, clean = 0, True
        for _ in range(kills):
            landed += kill_while_writing(argv, index, rng, max_delay_s=0.05, env=env)
            if name != "repair" and index.exists():
                clean &= cli(["verify", index])[0] == 0
        code, _, _ = cli(argv)
        after = cli(["verify", index])[0] == 0
        lines.append(f"| {name} | {landed} of {kills} | {'yes' if clean else 'NO'} | {'yes' if code == 0 else 'NO'} | {'yes' if after else 'NO'} |")
    return "\n".join(lines)


def main_script() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write the tables into {DOC.relative_to(ROOT)}")
    parser.add_argument("--kills", type=int, default=4, help="kill -9 attempts per writing command (default 4)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp))
        text = (
            f"{BEGIN}\n\n### Damaged files ({'root' if os.geteuid() == 0 else 'non-root'} user)\n\n{fault_table(paths)}\n\n"
            f"### kill -9 while writing\n\n{kill_table(Path(tmp), args.kills)}\n\n{END}"
        )
    print(text)
    if args.write:
        doc = DOC.read_text()
        DOC.write_text(doc[: doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) :])


if __name__ == "__main__":
    main_script()
