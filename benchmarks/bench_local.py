"""Local branch measurements on real photos: extraction speed, bytes per reference, query latency as
the reference set grows, and an accuracy sanity check on edited copies.

    .venv/bin/python benchmarks/bench_local.py all --photos ../shared/images
    .venv/bin/python benchmarks/bench_local.py accuracy --refs 400 --per-edit 30 --set verify_top=40

Photos are read for measurement only. "plain" is the design to beat: uncompressed 128-d RootSIFT in
an exact flat index, with the same keypoints, votes and verification.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from copyseek.edits import EDITS, random_edits
from copyseek.eval.metrics import average_precision, precision_recall
from copyseek.local.branch import LocalBranch
from copyseek.local.codec import Codec
from copyseek.local.features import SIFT_DIM
from copyseek.local.search import LocalSearcher

PLAIN_MAX = 547
"""References up to which the plain baseline is measured."""
COPY_EDITS = ("paste_into", "collage", "crop", "hflip", "random")
"""Edits that make the copies: one DISC21 edit each, severity 1.5, and 'random' for a random chain."""


@dataclass(frozen=True)
class PlainCodec(Codec):
    """No compression: 128-d RootSIFT stored as float32 bytes (the accuracy and speed baseline)."""

    @property
    def code_size(self) -> int:
        return 4 * self.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, np.float32).view(np.uint8).reshape(len(x), self.code_size)

    def assign(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), np.int64)


class PlainSearcher(LocalSearcher):
    def _build_index(self):
        index = faiss.IndexFlatL2(self.codec.dim)
        index.add(self.codes.view(np.float32))
        return index


class PlainBranch(LocalBranch):
    def __init__(self, **kwargs):
        identity = np.eye(SIFT_DIM, dtype=np.float32)
        codec = PlainCodec(np.zeros(SIFT_DIM, np.float32), identity, np.zeros((1, 1, 1), np.float32), identity[:1])
        super().__init__(codec=codec, **kwargs)

    def new_searcher(self) -> LocalSearcher:
        return PlainSearcher(self.codec, self.search_params, self.verify_params)


def load_photos(folder: Path, limit: int) -> list[np.ndarray]:
    files = sorted(folder.glob("*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no .jpg photos in {folder}")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def make_query(photo: np.ndarray, edit: str, donors: list[Image.Image], rng: np.random.Generator) -> np.ndarray:
    image = Image.fromarray(photo)
    if edit == "random":
        edited, _ = random_edits(image, rng, severity=1.0, donors=donors)
    else:
        edited = EDITS[edit](image, rng, 1.5, donors)
    return np.asarray(edited)


def build_searcher(branch: LocalBranch, photos: list[np.ndarray], chunk: int = 256) -> tuple[LocalSearcher, float]:
    """A searcher over `photos` and the extraction throughput in images/s."""
    searcher = branch.new_searcher()
    start = time.perf_counter()
    for lo in range(0, len(photos), chunk):
        searcher.add(branch.pack(branch.extract(photos[lo : lo + chunk])))
    return searcher, len(photos) / (time.perf_counter() - start)


def timed_search(branch: LocalBranch, searcher: LocalSearcher, queries: list[np.ndarray], k: int = 10):
    """Candidates per query, and seconds per query for extraction and for search."""
    start = time.perf_counter()
    features = branch.extract(queries, query=True)
    middle = time.perf_counter()
    results = searcher.search(features, k)
    end = time.perf_counter()
    return results, (middle - start) / len(queries), (end - middle) / len(queries)


def bench_extract(branch: LocalBranch, photos: list[np.ndarray]) -> dict:
    """Throughput, and CPU time per image (what a busy shared box inflates least)."""
    cpu = time.process_time()
    searcher, rate = build_searcher(branch, photos)
    cpu_reference = (time.process_time() - cpu) / len(photos)
    queries = photos[:100]
    start, cpu = time.perf_counter(), time.process_time()
    branch.extract(queries, query=True)
    query_rate = len(queries) / (time.perf_counter() - start)
    cpu_query = (time.process_time() - cpu) / len(queries)
    return {
        "reference_images_per_s": round(rate, 1),
        "reference_cpu_ms_per_image": round(1000 * cpu_reference, 1),
        "query_images_per_s": round(query_rate, 1),
        "query_cpu_ms_per_image": round(1000 * cpu_query, 1),
        "bytes_per_reference": round(searcher.nbytes() / searcher.ntotal, 1),
        "keypoints_per_reference": round(len(searcher.codes) / searcher.ntotal, 1),
    }


def bench_accuracy(branch: LocalBranch, photos: list[np.ndarray], refs: int, per_edit: int, seed: int) -> dict:
    """Copies of references (COPY_EDITS) and as many edited non-references; donors are non-references."""
    rng = np.random.default_rng(seed)
    others = photos[refs:]
    donors = [Image.fromarray(p) for p in others[: len(others) // 2]]
    negatives_pool = others[len(others) // 2 :]
    queries, truth, kinds = [], [], []
    for edit in COPY_EDITS:
        for row in rng.choice(refs, per_edit, replace=False):
            queries.append(make_query(photos[row], edit, donors, rng))
            truth.append(int(row))
            kinds.append(edit)
    for i in range(min(len(negatives_pool), per_edit * len(COPY_EDITS))):
        queries.append(make_query(negatives_pool[i], str(rng.choice(COPY_EDITS)), donors, rng))
        truth.append(-1)
        kinds.append("non-copy")
    searcher, _ = build_searcher(branch, photos[:refs])
    results, _, _ = timed_search(branch, searcher, queries)
    return accuracy_report(results, np.array(truth), kinds)


def accuracy_report(results, truth: np.ndarray, kinds: list[str]) -> dict:
    correct, scores = [], []
    true_score = np.zeros(len(truth))
    top1 = np.zeros(len(truth), bool)
    for i, candidates in enumerate(results):
        hit = candidates.rows == truth[i]
        correct.extend(hit)
        scores.extend(candidates.scores)
        true_score[i] = candidates.scores[hit].max() if hit.any() else 0.0
        top1[i] = len(candidates.rows) > 0 and candidates.rows[0] == truth[i]
    positives = truth >= 0
    curve = precision_recall(np.array(correct, bool), np.array(scores), int(positives.sum()))
    best = np.array([c.scores[0] if len(c.scores) else 0.0 for c in results])
    edits = [e for e in dict.fromkeys(kinds) if e != "non-copy"]
    per_edit = {e: round(float(top1[[k == e for k in kinds]].mean()), 3) for e in edits}
    return {
        "micro_ap": round(average_precision(curve), 4),
        "top1": round(float(top1[positives].mean()), 3),
        "top1_per_edit": per_edit,
        "copy_inliers_percentiles_10_50_90": np.percentile(true_score[positives], [10, 50, 90]).tolist(),
        "non_copy_best_inliers_percentiles_50_90_99_max": np.percentile(best[~positives], [50, 90, 99, 100]).tolist(),
    }


def bench_scale(
    branch: LocalBranch, plain: LocalBranch, photos: list[np.ndarray], sizes: list[int], seed: int
) -> list[dict]:
    """Query latency against growing reference sets; past the photos, edited duplicates fill in.
    The plain design is measured up to PLAIN_MAX references (it is too slow past that)."""
    rng = np.random.default_rng(seed)
    pool = list(photos)
    while len(pool) < max(sizes):
        pool.append(make_query(photos[len(pool) % len(photos)], "crop", [], rng))
    queries = [make_query(photos[int(i)], "random", [], rng) for i in rng.choice(len(photos), 30, replace=False)]
    features = {"ours": branch.extract(pool[: max(sizes)])}
    features["plain"] = plain.extract(pool[: min(max(sizes), PLAIN_MAX)])
    rows = []
    for size in sizes:
        row = {"references": size}
        for name, which in (("ours", branch), ("plain", plain)):
            if size > len(features[name]):
                continue
            searcher = which.new_searcher()
            searcher.add(which.pack(features[name][:size]))
            start = time.perf_counter()
            searcher.search(which.extract(queries[:1], query=True), 10)  # builds the Faiss index
            row[f"{name}_index_build_s"] = round(time.perf_counter() - start, 2)
            _, extract_s, search_s = timed_search(which, searcher, queries)
            row[f"{name}_search_ms_per_query"] = round(1000 * search_s, 1)
            row[f"{name}_extract_ms_per_query"] = round(1000 * extract_s, 1)
            row[f"{name}_bytes_per_reference"] = round(searcher.nbytes() / size)
            row[f"{name}_index"] = type(searcher.index).__name__
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = json.loads(value) if value[:1].isdigit() or value[:1] in "-.[{" else value
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("extract", "accuracy", "scale", "all"))
    parser.add_argument("--photos", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "images")
    parser.add_argument("--refs", type=int, default=400, help="references in the accuracy check")
    parser.add_argument("--per-edit", type=int, default=30, help="copies per edit in the accuracy check")
    parser.add_argument("--sizes", default="100,300,547,2000,5000", help="reference-set sizes for the scale check")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="accuracy of the uncompressed baseline too")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="LocalBranch.from_options")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    options = parse_options(args.set)
    branch = LocalBranch.from_options(options)
    photos = load_photos(args.photos, 10_000)
    report: dict = {"options": options, "spec": branch.spec(), "threads": args.threads}
    if args.what in ("extract", "all"):
        report["extract"] = bench_extract(branch, photos)
        print(json.dumps(report["extract"]), flush=True)
    if args.what in ("accuracy", "all"):
        report["accuracy"] = bench_accuracy(branch, photos, args.refs, args.per_edit, args.seed)
        print(json.dumps(report["accuracy"]), flush=True)
        if args.plain:
            plain = PlainBranch(**_branch_kwargs(branch))
            report["accuracy_plain"] = bench_accuracy(plain, photos, args.refs, args.per_edit, args.seed)
            print("plain", json.dumps(report["accuracy_plain"]), flush=True)
    if args.what in ("scale", "all"):
        sizes = [int(s) for s in args.sizes.split(",")]
        plain = PlainBranch(**_branch_kwargs(branch))
        report["scale"] = bench_scale(branch, plain, photos, sizes, args.seed)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _branch_kwargs(branch: LocalBranch) -> dict:
    return {
        "sift": branch.sift,
        "query_max_side": branch.query_sift.max_side,
        "query_keypoints": branch.query_sift.max_keypoints,
        "search": branch.search_params,
        "verify": branch.verify_params,
    }


if __name__ == "__main__":
    main()
