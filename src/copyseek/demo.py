"""`copyseek demo`: the whole path on images it makes, with no arguments and nothing downloaded.

Makes procedural photos (plus matplotlib's sample photo), builds a small DISC21-style benchmark from
them (edited copies, distractor queries, a background set), indexes the references with SSCD,
matches the queries with score normalisation, evaluates and shows the top matches.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from copyseek.synthetic import synthetic_photo


def make_photos(folder: Path, count: int, seed: int) -> None:
    """`count` procedural photos (and matplotlib's sample photo when it is installed) as JPEGs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = int(rng.integers(360, 640)), int(rng.integers(300, 480))
        synthetic_photo(np.random.default_rng([seed, i]), width, height).save(folder / f"photo{i:03d}.jpg", quality=92)
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if sample.exists():
            shutil.copy(sample, folder / "grace_hopper.jpg")
    except ImportError:
        pass


def run_demo(out: str | None = None, seed: int = 0, progress: bool = True) -> dict:
    """Run the demo in `out` (default: a temporary folder, removed afterwards); returns the metrics."""
    from copyseek.bench.build import build_benchmark
    from copyseek.eval.metrics import evaluate
    from copyseek.io.csvfiles import read_ground_truth, write_predictions
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    started = time.perf_counter()
    temporary = tempfile.TemporaryDirectory(prefix="copyseek-demo-") if out is None else None
    root = Path(temporary.name if temporary else out)
    try:
        print(f"copyseek demo in {root}")
        make_photos(root / "photos", 80, seed)
        build_benchmark(
            root / "photos",
            root / "bench",
            seed=seed,
            n_references=40,
            n_copied=25,
            n_copies=30,
            n_distractor_queries=15,
            n_background=15,
            severity=0.8,
            overwrite=True,
            progress=progress,
        )
        bench = root / "bench"
        print("1. index the references (SSCD)")
        if (root / "index").exists():
            shutil.rmtree(root / "index")
        with Index.create(root / "index") as index:
            print("   " + index.add(bench / "references", progress=progress).summary())
            print("2. match the queries, scores normalised against the background set")
            result = match(index, bench / "queries", MatchOptions(k=5, background=bench / "background"), progress=progress)
            print("   " + result.summary())
        write_predictions(root / "predictions.csv", result.predictions)
        ground_truth = read_ground_truth(bench / "gt.csv")
        metrics = evaluate(result.predictions, ground_truth)
        print("3. evaluate (DISC21 metrics)")
        print("   " + metrics.summary().replace("\n", "\n   "))
        print("4. the five best-scored matches")
        best = sorted(result.predictions, key=lambda p: -p.score)[:5]
        for p in best:
            verdict = "copy" if (p.query_id, p.reference_id) in ground_truth.pairs else "not a copy"
            print(f"   {p.query_id} -> {p.reference_id}  score {p.score:+.3f}  ({verdict})")
        print(f"done in {time.perf_counter() - started:.0f} s; files in {root}" if not temporary else f"done in {time.perf_counter() - started:.0f} s")
        return {"micro_ap": metrics.micro_ap, "recall_at_p90": metrics.recall_at_p90}
    finally:
        if temporary:
            temporary.cleanup()
