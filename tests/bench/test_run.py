from pathlib import Path

import pytest

from copyseek.bench.build import build_benchmark
from copyseek.bench.run import edit_breakdown, parse_pipeline, results_table, run_benchmark
from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import read_ground_truth
from tests.making import write_photos


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    write_photos(root / "photos", 60, seed=11)
    build_benchmark(
        root / "photos", root / "bench", seed=0, n_references=20, n_copied=12, n_copies=14,
        n_distractor_queries=8, n_background=8, severity=0.6, progress=False,
    )  # fmt: skip
    return root / "bench"


def test_runs_pipelines_side_by_side(small_bench, tiny_onnx, tmp_path):
    names = ["pdq", f"global:onnx:{tiny_onnx}", f"global:onnx:{tiny_onnx}+sn"]
    workdir = tmp_path / "not" / "made" / "yet"
    results = run_benchmark(small_bench, names, workdir=workdir, progress=False)
    assert workdir.is_dir() and not any(workdir.iterdir())  # made, and the scratch inside removed
    assert [r.name for r in results] == names
    for r in results:
        assert 0 <= r.metrics.micro_ap <= 1 and r.index_rate > 0 and r.query_rate > 0 and r.peak_rss_mb > 10
        assert len({p.query_id for p in r.predictions}) == 22
    assert results[0].bytes_per_reference == 32  # one PDQ hash
    table = results_table(results)
    assert table.count("\n") == 1 + len(names) and "muAP" in table
    breakdown = edit_breakdown(results, read_ground_truth(small_bench / "gt.csv"), small_bench / "edits.csv")
    assert breakdown.count("\n") >= 3  # header, rule, at least two edit kinds


def test_unknown_pipeline_and_missing_benchmark_are_clear_errors(tmp_path):
    with pytest.raises(CopyseekError, match="unknown bench pipeline"):
        parse_pipeline("magic")
    with pytest.raises(CopyseekError, match="not a benchmark"):
        run_benchmark(tmp_path, ["pdq"], progress=False)
