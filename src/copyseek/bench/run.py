"""`copyseek bench run`: several pipelines on one benchmark, side by side, in one run.

Each index (pipelines that share one, e.g. sscd and sscd+sn, share it) is built and queried in its
own child process, so peak memory is each pipeline's own. Prints one markdown table (muAP,
recall@P90, accuracy@1, indexing and query throughput, peak memory, bytes per reference), a
per-edit-kind breakdown (recall of copies at each pipeline's P90 threshold) and writes all
precision-recall curves into one PNG.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import resource
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from copyseek.registry import PIPELINE_DEFAULTS
from copyseek.errors import CopyseekError
from copyseek.eval.metrics import Metrics, evaluate
from copyseek.io.csvfiles import GroundTruth, Prediction, read_ground_truth, read_predictions, write_predictions


@dataclass(frozen=True)
class BenchPipeline:
    """A named way to run copyseek: which index pipeline, with which branch options, and whether
    scores are normalised against the benchmark's background set."""

    name: str
    pipeline: str
    options: dict = field(default_factory=dict)
    normalize: bool = False

    @property
    def index_key(self) -> str:
        return json.dumps([self.pipeline, self.options], sort_keys=True)


MULTI_VIEW = PIPELINE_DEFAULTS["fused"]["global"]["resize"]
"""The fused pipeline's resizings of the global model; sscd-mv+sn is SSCD with them alone, to show
their share of the fused pipeline's gain."""

PIPELINES: dict[str, BenchPipeline] = {
    "pdq": BenchPipeline("pdq", "pdq"),
    "sscd": BenchPipeline("sscd", "global", {"global": {"model": "sscd"}}),
    "sscd+sn": BenchPipeline("sscd+sn", "global", {"global": {"model": "sscd"}}, normalize=True),
    "sscd-mv+sn": BenchPipeline("sscd-mv+sn", "global", {"global": {"model": "sscd", "resize": MULTI_VIEW}}, normalize=True),
    "sscd-fast": BenchPipeline("sscd-fast", "global", {"global": {"model": "sscd-fast"}}),
    "sscd-fast+sn": BenchPipeline("sscd-fast+sn", "global", {"global": {"model": "sscd-fast"}}, normalize=True),
    "copyseek-small": BenchPipeline("copyseek-small", "global", {"global": {"model": "copyseek-small"}}),
    "local": BenchPipeline("local", "local"),
    "local-rootsift": BenchPipeline("local-rootsift", "local", {"local": {"descriptor": "rootsift"}}),
    "local-mkd": BenchPipeline("local-mkd", "local", {"local": {"descriptor": "mkd"}}),
    "local-kdp": BenchPipeline("local-kdp", "local", {"local": {"descriptor": "kdp"}}),
    "fused": BenchPipeline("fused", "fused"),
    "fused+sn": BenchPipeline("fused+sn", "fused", normalize=True),
    "fused-fast": BenchPipeline("fused-fast", "fused-fast"),
    "fused-fast+sn": BenchPipeline("fused-fast+sn", "fused-fast", normalize=True),
    "asmk": BenchPipeline("asmk", "asmk"),
}
"""Pipelines by name; other domains register theirs (local, fused...). Any global model also works
as `global:MODEL` or `global:MODEL+sn` (e.g. `global:onnx:run/model.onnx+sn`)."""

DEFAULT_PIPELINES = ("pdq", "sscd", "sscd+sn", "sscd-fast")


def register_bench_pipeline(pipeline: BenchPipeline) -> None:
    PIPELINES[pipeline.name] = pipeline


def parse_pipeline(name: str) -> BenchPipeline:
    if name in PIPELINES:
        return PIPELINES[name]
    if name.startswith("global:"):
        model = name.removeprefix("global:")
        normalize = model.endswith("+sn")
        model = model.removesuffix("+sn")
        return BenchPipeline(name, "global", {"global": {"model": model}}, normalize)
    raise CopyseekError(f"unknown bench pipeline {name!r}; known: {', '.join(PIPELINES)}, or global:MODEL[+sn]")


@dataclass
class PipelineResult:
    name: str
    metrics: Metrics
    index_rate: float
    query_rate: float
    peak_rss_mb: float
    bytes_per_reference: float
    predictions: list[Prediction]


def benchmark_paths(bench: Path) -> dict[str, Path]:
    paths = {
        "references": bench / "references",
        "queries": bench / "queries",
        "gt": bench / "gt.csv",
        "background": bench / "background",
        "edits": bench / "edits.csv",
    }
    for key in ("references", "queries", "gt"):
        if not paths[key].exists():
            raise CopyseekError(f"{bench} is not a benchmark: {paths[key].name} is missing (make one with copyseek bench build)")
    return paths


def _run_group(group: list[BenchPipeline], paths: dict[str, Path], background: Path | None, workdir: Path, queue) -> None:
    """Child process: build one index, match every pipeline of the group, report timings."""
    from copyseek.match.matcher import MatchOptions, make_scorer, match
    from copyseek.store.index import Index

    try:
        first = group[0]
        index_dir = workdir / f"index-{abs(hash(first.index_key)) % 10**8}"
        quiet = lambda f, r: None  # noqa: E731 - skips are counted, not printed, in a benchmark
        with Index.create(index_dir, first.pipeline, first.options) as index:
            start = time.perf_counter()
            added = index.add(paths["references"], progress=False, on_skip=quiet).added
            index_rate = added / (time.perf_counter() - start)
            info = index.info()
            bytes_per_reference = sum(info["search_bytes"].values()) / max(info["references"], 1)
            results = {}
            for pipe in group:
                options = MatchOptions(k=10, background=background if pipe.normalize else None)
                if pipe.normalize:  # describe (and cache) the background set outside the query timing
                    make_scorer(index, options, progress=False)
                start = time.perf_counter()
                result = match(index, paths["queries"], options, progress=False, on_skip=quiet)
                seconds = time.perf_counter() - start
                out = workdir / f"{pipe.name.replace(':', '_').replace('/', '_')}.csv"
                write_predictions(out, result.predictions)
                results[pipe.name] = {"predictions": str(out), "query_rate": result.queries / seconds}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put({"ok": True, "index_rate": index_rate, "bytes": bytes_per_reference, "peak": peak, "results": results})
    except Exception as exc:  # reported to the parent, which names the pipeline
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def run_benchmark(
    bench: str | Path,
    pipelines: list[str] | tuple[str, ...] = DEFAULT_PIPELINES,
    background: str | Path | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> list[PipelineResult]:
    """Run each pipeline on the benchmark at `bench`; background defaults to BENCH/background. The
    indexes and predictions go to a temporary folder inside `workdir` (made if missing; default: the
    system's temporary folder)."""
    bench = Path(bench)
    paths = benchmark_paths(bench)
    background = Path(background) if background else (paths["background"] if paths["background"].exists() else None)
    chosen = [parse_pipeline(name) for name in pipelines]
    if any(p.normalize for p in chosen) and background is None:
        raise CopyseekError("normalised pipelines (+sn) need a background folder: --background DIR")
    ground_truth = read_ground_truth(paths["gt"])
    groups: dict[str, list[BenchPipeline]] = defaultdict(list)
    for p in chosen:
        groups[p.index_key].append(p)
    results: list[PipelineResult] = []
    context = multiprocessing.get_context("spawn")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as scratch:
        for number, group in enumerate(groups.values(), start=1):
            if progress:
                print(f"[{number}/{len(groups)}] {', '.join(p.name for p in group)}", flush=True)
            queue = context.Queue()
            child = context.Process(target=_run_group, args=(group, paths, background, Path(scratch), queue))
            child.start()
            report = queue.get()
            child.join()
            if not report["ok"]:
                raise CopyseekError(f"pipeline {group[0].name} failed: {report['error']}")
            for p in group:
                predictions = read_predictions(report["results"][p.name]["predictions"])
                results.append(
                    PipelineResult(
                        p.name,
                        evaluate(predictions, ground_truth),
                        report["index_rate"],
                        report["results"][p.name]["query_rate"],
                        report["peak"],
                        report["bytes"],
                        predictions,
                    )
                )
    return results


def results_table(results: list[PipelineResult]) -> str:
    lines = [
        "| pipeline | muAP | recall@P90 | accuracy@1 | index img/s | query img/s | peak RSS (MB) | bytes/reference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.metrics
        lines.append(
            f"| {r.name} | {m.micro_ap:.4f} | {m.recall_at_p90:.4f} | {m.accuracy_at_1:.4f} | {r.index_rate:.1f} | "
            f"{r.query_rate:.1f} | {r.peak_rss_mb:.0f} | {r.bytes_per_reference:.0f} |"
        )
    return "\n".join(lines)


def read_edit_kinds(path: Path) -> dict[str, list[str]]:
    """query id -> edit names applied, from BENCH/edits.csv (copies only)."""
    kinds: dict[str, list[str]] = {}
    if not path.exists():
        return kinds
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("is_copy", "1") in ("0", "false", "False", ""):
                continue
            names = row.get("edits", "")
            kinds[row["query_id"]] = [n for n in names.replace("|", ";").split(";") if n]
    return kinds


def edit_recall_counts(
    results: list[PipelineResult], ground_truth: GroundTruth, edits_csv: Path
) -> dict[str, tuple[int, list[int]]]:
    """Per edit kind: (copies with that edit, copies found by each pipeline at its P90 threshold).
    Counts, so that several benchmarks can be summed; empty without edits.csv."""
    kinds = read_edit_kinds(edits_csv)
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for query, reference in ground_truth.pairs:
        for kind in set(kinds.get(query, [])):
            by_kind[kind].append((query, reference))
    found = []
    for r in results:
        threshold = r.metrics.threshold_at_p90
        found.append(
            set()
            if threshold is None
            else {(p.query_id, p.reference_id) for p in r.predictions if p.score >= threshold}
        )
    return {kind: (len(pairs), [sum(pair in f for pair in pairs) for f in found]) for kind, pairs in by_kind.items()}


def recall_table(names: list[str], counts: dict[str, tuple[int, list[int]]]) -> str:
    """Markdown table of edit_recall_counts: recall per edit kind (rows, most frequent first) and pipeline."""
    lines = ["| edit | copies | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for kind in sorted(counts, key=lambda k: -counts[k][0]):
        n, found = counts[kind]
        lines.append(f"| {kind} | {n} | " + " | ".join(f"{f / n:.2f}" for f in found) + " |")
    return "\n".join(lines)


def edit_breakdown(results: list[PipelineResult], ground_truth: GroundTruth, edits_csv: Path) -> str:
    """Recall of copies per edit kind at each pipeline's P90 threshold (a copy counts as found when
    its true pair is predicted with a score >= the threshold)."""
    counts = edit_recall_counts(results, ground_truth, edits_csv)
    if not counts:
        return "(no edits.csv: no per-edit breakdown)"
    return recall_table([r.name for r in results], counts)
