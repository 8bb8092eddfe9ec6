"""Where a fused pipeline's seconds go: CPU time per stage of indexing a reference and matching a
query, one thread everywhere (so the stages add up and another job's load does not change them),
next to SSCD alone (the `global` pipeline's default).

    .venv/bin/python benchmarks/profile_fused.py bench/std --references 60 --queries 60 \
        --pipelines fused fused-fast

The references are the benchmark's first --references, the queries its first --queries (copies and
distractors, as they come); scores are normalised with its background set. Prints one markdown
table: CPU ms per reference (indexing) and per query (matching) for each stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from copyseek.bench.run import benchmark_paths
from copyseek.io.images import find_images, read_image
from copyseek.match.crops import CROP_POLICIES, CropRequest
from copyseek.match.matcher import MatchOptions, make_scorer
from copyseek.match.scoring import QueryBatch
from copyseek.registry import pipeline_branches
from copyseek.store.index import Index

class Clock:
    """CPU milliseconds per stage, summed over calls."""

    def __init__(self):
        self.ms: dict[str, float] = defaultdict(float)

    def time(self, stage: str, work, *args, **kwargs):
        start = time.process_time()
        result = work(*args, **kwargs)
        self.ms[stage] += 1000 * (time.process_time() - start)
        return result


def describe_by_stage(clock: Clock, branches: dict, file: Path, side: int, query: bool) -> tuple[np.ndarray, dict]:
    """One image (decoded) and its features per branch, each stage timed on `clock` (decode, model
    passes, SIFT)."""
    image = clock.time("decode", read_image, file, side).pixels
    features = {}
    if "global" in branches:
        features["global"] = {"vector": embed_by_stage(clock, branches["global"], image)}
    if "local" in branches:
        label = "local: SIFT (query)" if query else "local: SIFT + RootSIFT + projection"
        features["local"] = clock.time(label, branches["local"].extract, [image], query=query)[0]
    return image, features


def profile(pipeline: str, references: list, queries: list, background: Path, scratch: Path) -> tuple[dict, dict]:
    """(indexing ms per reference by stage, matching ms per query by stage) of one pipeline."""
    options = {name: {"threads": 1} for name in pipeline_branches(pipeline)}
    with Index.create(scratch / f"index-{pipeline}", pipeline, options) as index:
        branches = index.branches
        side = max(b.decode_side for b in branches.values())
        build, run = Clock(), Clock()
        features = []
        for file in references:
            features.append(describe_by_stage(build, branches, file, side, query=False)[1])
        if "local" in branches:
            build.time("local: PQ codes (per chunk)", branches["local"].pack, [f["local"] for f in features])
        index.add(references, progress=False)  # the index itself, untimed, to search
        match_options = MatchOptions(k=10, background=background)
        scorer = make_scorer(index, match_options, progress=False)
        searchers = index.searchers()
        for file in queries:
            image, query = describe_by_stage(run, branches, file, side, query=True)
            found = {
                name: run.time(f"{name}: search" + (" + verification" if name == "local" else ""), searchers[name].search, [query[name]], 30)
                for name in branches
            }
            batch = QueryBatch([file.id], [image], {name: [query[name]] for name in branches}, found)
            if pipeline == "global":
                run.time("scoring", scorer, batch)
                continue
            run.time("scoring (evidence of the candidates, crops)", scorer, batch)
        cropped, crops = getattr(scorer, "queries_cropped", 0), getattr(scorer, "crops_described", 0)
        # the crops' share of the scorer: describe the same number of crops again, alone
        if crops:
            params = scorer.params
            policy = CROP_POLICIES[params.crop_policy]
            sample = [read_image(f, side).pixels for f in queries[:4]]
            pieces = [c for image in sample for c in policy(CropRequest(image, np.zeros((0, 4)), None, 0.3))[: params.max_crops]]
            start = time.process_time()
            scorer.search_crops(pieces)
            per_crop = 1000 * (time.process_time() - start) / len(pieces)
            run.ms["  of which crops (describe + search)"] = per_crop * crops
        n_refs, n_queries = len(references), len(queries)
        notes = {"cropped": cropped / n_queries, "crops per cropped query": crops / max(cropped, 1)}
    return {k: v / n_refs for k, v in build.ms.items()}, {**{k: v / n_queries for k, v in run.ms.items()}, **notes}


def embed_by_stage(clock: Clock, branch, image: np.ndarray) -> np.ndarray:
    """The global branch's vector of one image, timing each view's resize and each model's pass."""
    summed = 0
    members = getattr(branch.model, "members", [(branch.model, 1.0)])
    for view in branch.views:
        resized = clock.time(f"global: resize {view}", view.apply, image)
        parts = [weight * clock.time(f"global: {model.name} at {view}", model.embed, resized[None])[0] for model, weight in members]
        summed = summed + np.concatenate(parts)
    return (summed / np.linalg.norm(summed))[None].astype(np.float32)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", type=Path)
    parser.add_argument("--references", type=int, default=60)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--pipelines", nargs="+", default=["fused", "fused-fast"])
    args = parser.parse_args()
    paths = benchmark_paths(args.bench)
    references = find_images(paths["references"])[0][: args.references]
    queries = find_images(paths["queries"])[0][: args.queries]
    pipelines = ["global", *args.pipelines]
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for pipeline in pipelines:
            results[pipeline] = profile(pipeline, references, queries, paths["background"], Path(scratch))
    for what, column in (("indexing, CPU ms per reference", 0), ("matching, CPU ms per query", 1)):
        stages = list(dict.fromkeys(stage for p in pipelines for stage in results[p][column] if stage not in ("cropped", "crops per cropped query")))
        print(f"\n{what} (one thread; global = SSCD alone at square:320)\n")
        print("| stage | " + " | ".join(pipelines) + " |")
        print("|---|" + "---:|" * len(pipelines))
        for stage in stages:
            print(f"| {stage} | " + " | ".join(f"{results[p][column].get(stage, 0):.1f}" for p in pipelines) + " |")
        totals = [sum(v for k, v in results[p][column].items() if not k.startswith("  ") and k not in ("cropped", "crops per cropped query")) for p in pipelines]
        print("| **total** | " + " | ".join(f"**{t:.1f}**" for t in totals) + " |")
        print("| x SSCD alone (throughput) | " + " | ".join(f"{totals[0] / t:.2f}" for t in totals) + " |")
    for p in args.pipelines:
        notes = results[p][1]
        print(f"\n{p}: {notes['cropped']:.0%} of queries cropped, {notes['crops per cropped query']:.1f} crops each")


if __name__ == "__main__":
    main()
