"""Indexing throughput and peak memory of `copyseek index` vs a plain loop over the same ONNX model,
and query latency. Each measurement runs in a fresh child process (clean peak RSS), alternating
plain/copyseek, all in one run of this script.

    .venv/bin/python benchmarks/bench_index.py [--images ../shared/images] [--model sscd] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
DEFAULT_IMAGES = HERE.parent.parent.parent / "shared" / "images"


def plain_loop(images: Path, model_spec: str, batch: int) -> dict:
    """What a user would write: decode, resize to 320x320, run the ONNX model in batches."""
    import onnxruntime as ort
    from PIL import Image

    from copyseek.describe.models import load_model, model_path

    _, path = model_path(model_spec)
    size = load_model(model_spec).preprocess.size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    start = time.perf_counter()
    vectors = []
    for i in range(0, len(files), batch):
        pixels = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)) for f in files[i : i + batch]]
        vectors.append(session.run(None, {name: np.stack(pixels)})[0])
    seconds = time.perf_counter() - start
    return {"images": len(files), "seconds": seconds, "dim": int(np.concatenate(vectors).shape[1])}


def copyseek_index(images: Path, model_spec: str, batch: int) -> dict:
    from copyseek.store.index import Index

    with tempfile.TemporaryDirectory() as folder:
        with Index.create(Path(folder) / "idx", options={"global": {"model": model_spec, "batch_size": batch}}) as index:
            start = time.perf_counter()
            report = index.add(images, batch_size=batch, progress=False, on_skip=lambda f, r: None)
            seconds = time.perf_counter() - start
    return {"images": report.added, "seconds": seconds}


def query_latency(images: Path, model_spec: str, n_queries: int = 40) -> dict:
    """Latency of one query at a time (decode + describe + search) against all images indexed."""
    from PIL import Image

    from copyseek.io.images import ImageFile
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with Index.create(root / "idx", options={"global": {"model": model_spec}}) as index:
            index.add(images, progress=False, on_skip=lambda f, r: None)
            files = sorted(p for p in images.rglob("*.jpg"))[:n_queries]
            queries = []
            for f in files:  # edited copies: crop + recompress
                image = Image.open(f).convert("RGB")
                w, h = image.size
                target = root / f"q_{f.stem}.jpg"
                image.crop((w // 10, h // 10, w - w // 10, h - h // 10)).save(target, quality=70)
                queries.append(ImageFile(target.stem, target))
            match(index, queries[:2], progress=False)  # warm-up (searcher build)
            latencies = []
            for q in queries:
                start = time.perf_counter()
                match(index, [q], MatchOptions(k=10, workers=0), progress=False)
                latencies.append(time.perf_counter() - start)
            start = time.perf_counter()
            match(index, queries, MatchOptions(k=10), progress=False)
            batch_seconds = time.perf_counter() - start
            references = len(index)
    ms = np.array(latencies) * 1000
    return {"references": references, "p50_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)), "batch_qps": len(queries) / batch_seconds}


def child(kind: str, args: argparse.Namespace) -> None:
    work = {"plain": plain_loop, "copyseek": copyseek_index}
    if kind == "latency":
        result = query_latency(Path(args.images), args.model)
    else:
        result = work[kind](Path(args.images), args.model, args.batch_size)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def spawn(kind: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, str(HERE), "--child", kind, "--images", str(args.images), "--model", args.model, "--batch-size", str(args.batch_size)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--model", default="sscd")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["plain", "copyseek", "latency"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    runs: dict[str, list[dict]] = {"plain": [], "copyseek": []}
    for _ in range(args.repeats):
        for kind in ("plain", "copyseek"):
            runs[kind].append(spawn(kind, args))
    print(f"## Indexing, model {args.model}, {runs['plain'][0]['images']} images from {args.images}, batch {args.batch_size}\n")
    print("| method | images/s (best of %d) | images/s (each run) | peak RSS (MB) |" % args.repeats)
    print("|---|---|---|---|")
    best = {}
    for kind, label in (("plain", "plain loop (PIL + onnxruntime)"), ("copyseek", "`copyseek index`")):
        rates = [r["images"] / r["seconds"] for r in runs[kind]]
        best[kind] = max(rates)
        print(f"| {label} | {best[kind]:.1f} | {', '.join(f'{r:.1f}' for r in rates)} | {max(r['peak_rss_mb'] for r in runs[kind]):.0f} |")
    print(f"\ncopyseek / plain throughput: **{best['copyseek'] / best['plain']:.2f}x**\n")
    latency = spawn("latency", args)
    print(f"## Query latency against {latency['references']} references (one query at a time, decode + describe + search)\n")
    print("| p50 (ms) | p95 (ms) | batched queries/s | peak RSS (MB) |")
    print("|---|---|---|---|")
    print(f"| {latency['p50_ms']:.1f} | {latency['p95_ms']:.1f} | {latency['batch_qps']:.1f} | {latency['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
