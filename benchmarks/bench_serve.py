"""Load test of `copyseek serve` on loopback against the same work done in-process, in one run.

    python benchmarks/bench_serve.py --images /work/shared/images --out /work/scratch/serve/bench

Builds a global-pipeline index of `--references` photos, then for 1, 4 and 16 concurrent clients
sends `--requests` requests (matches of edited copies, and `--add-fraction` adds of new references)
to a real `copyseek serve` process over HTTP, and makes the same calls in-process (IndexService,
the engine the HTTP layer calls, from as many threads). Prints markdown tables: p50/p99 latency,
throughput, match throughput, errors; then a soak at 4 clients until the service has answered
`--soak` requests in all, with its RSS at the start and at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def edited(path: Path, rng: np.random.Generator) -> bytes:
    """An edited copy of a photo: crop, resize, recompress (an easy DISC21-like edit)."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    f = rng.uniform(0.75, 0.95)
    dx, dy = int(w * (1 - f) / 2), int(h * (1 - f) / 2)
    image = image.crop((dx, dy, w - dx, h - dy))
    image.thumbnail((480, 480))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=int(rng.integers(50, 85)))
    return out.getvalue()


def small_jpeg(path: Path) -> bytes:
    image = Image.open(path).convert("RGB")
    image.thumbnail((480, 480))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()


class Workload:
    """The requests of one run: ("match", bytes) or ("add", id, bytes), the same for both sides."""

    def __init__(self, queries: list[bytes], additions: list[bytes], add_fraction: float, seed: int):
        self.queries, self.additions = queries, additions
        self.add_fraction = add_fraction
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.added = 0

    def next(self, prefix: str):
        with self.lock:
            if self.rng.random() < self.add_fraction:
                self.added += 1
                return ("add", f"{prefix}{self.added:06d}", self.additions[self.added % len(self.additions)])
            return ("match", self.queries[int(self.rng.integers(len(self.queries)))])


def run_clients(clients: int, total: int, do, workload: Workload, prefix: str) -> dict:
    """`total` requests from `clients` threads; do(request) -> ok. Latencies in seconds."""
    latencies: dict[str, list[float]] = {"match": [], "add": []}
    errors = []
    counter = iter(range(total))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if next(counter, None) is None:
                    return
                request = workload.next(prefix)
            start = time.perf_counter()
            try:
                ok = do(request)
            except Exception as exc:  # counted, and the run goes on
                ok = False
                errors.append(repr(exc)[:200])
            took = time.perf_counter() - start
            with lock:
                latencies[request[0]].append(took)
                if not ok:
                    errors.append(request[0])

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    every = latencies["match"] + latencies["add"]
    return {
        "clients": clients,
        "requests": len(every),
        "p50_ms": 1000 * float(np.percentile(every, 50)),
        "p99_ms": 1000 * float(np.percentile(every, 99)),
        "match_p50_ms": 1000 * float(np.percentile(latencies["match"], 50)),
        "throughput": len(every) / wall,
        "match_throughput": len(latencies["match"]) / wall,
        "adds": len(latencies["add"]),
        "errors": len(errors),
        "error_examples": errors[:3],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder of photos")
    parser.add_argument("--out", required=True, help="scratch folder (index, uploads)")
    parser.add_argument("--model", default="copyseek-small", help="global model of the index (default copyseek-small)")
    parser.add_argument("--references", type=int, default=200)
    parser.add_argument("--requests", type=int, default=400, help="requests per client count and side")
    parser.add_argument("--add-fraction", type=float, default=0.02)
    parser.add_argument("--soak", type=int, default=10_000, help="requests answered by the service before the last RSS reading")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--threads", type=int, default=0, help="model threads (0 = all cores)")
    args = parser.parse_args()

    import httpx2
    import psutil

    from copyseek.io.images import find_images
    from copyseek.service.engine import IndexService, ServiceOptions, Upload
    from copyseek.service.keys import KeyStore
    from copyseek.store.index import Index

    out = Path(args.out)
    photos = [f.path for f in find_images(args.images)[0]]
    rng = np.random.default_rng(0)
    refs, others = photos[: args.references], photos[args.references :]
    index_path = out / "index"
    for old in (index_path, out / "index-http"):
        if old.exists():
            import shutil

            shutil.rmtree(old)
    (out / "refs").mkdir(parents=True, exist_ok=True)
    for p in refs:
        target = out / "refs" / f"{p.stem}.jpg"
        if not target.exists():
            target.write_bytes(small_jpeg(p))
    with Index.create(index_path, "global", {"global": {"model": args.model, "threads": args.threads}}) as index:
        index.add(out / "refs", progress=False)
    queries = [edited(p, rng) for p in refs[:100]] + [edited(p, rng) for p in others[:50]]
    additions = [small_jpeg(p) for p in others[50:150]]
    token = KeyStore(index_path).add("write", "bench")
    clients = [int(c) for c in args.clients.split(",")]
    print(f"index: {args.references} references, model {args.model}, {len(queries)} query images, "
          f"{args.add_fraction:.0%} adds; {args.requests} requests per row; {os.cpu_count()} cores\n")

    # Two copies of the index, one per side, so that each side's adds are its own; the rows of
    # both sides alternate, so that a change in the machine's load hits both alike.
    import shutil

    shutil.copytree(index_path, out / "index-http")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    server = subprocess.Popen(
        [sys.executable, "-m", "copyseek.cli", "serve", "--index", str(out / "index-http"), "--port", str(port), "--threads", str(args.threads)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    service = IndexService(index_path, ServiceOptions(), runtime={"threads": args.threads})
    service.wait_ready()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(600):
        try:
            if httpx2.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.2)
    local = threading.local()
    answered = [0]

    def in_process(request) -> bool:
        if request[0] == "match":
            return not service.match([Upload(request[1], "q.jpg")], 10).queries[0].error
        return bool(service.add([Upload(request[2], f"{request[1]}.jpg")], [request[1]])["added"])

    def over_http(request) -> bool:
        client = getattr(local, "client", None) or httpx2.Client(base_url=url, headers=headers, timeout=120)
        local.client = client
        if request[0] == "match":
            response = client.post("/v1/match?k=10", content=request[1], headers={"Content-Type": "image/jpeg"})
        else:
            response = client.post("/v1/references", files={"images": (f"{request[1]}.jpg", request[2])})
        answered[0] += 1
        return response.status_code == 200

    process = psutil.Process(server.pid)
    for c in clients:  # warm-up: models, thread pools and allocator arenas at every concurrency
        run_clients(c, 3 * c, in_process, Workload(queries, additions, 0.0, 1), "w")
        run_clients(c, 3 * c, over_http, Workload(queries, additions, 0.0, 1), "w")
    rss_start = process.memory_info().rss
    answered[0] = 0
    rows = []
    print("| side | clients | requests | adds | p50 ms | p99 ms | match p50 ms | req/s | matches/s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for c in clients:
        for side, do, prefix in (("in-process", in_process, "i"), ("HTTP", over_http, "h")):
            r = run_clients(c, args.requests, do, Workload(queries, additions, args.add_fraction, c), f"{prefix}{c}-")
            rows.append((side, r))
            print(f"| {side} | {r['clients']} | {r['requests']} | {r['adds']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{r['match_p50_ms']:.1f} | {r['throughput']:.1f} | {r['match_throughput']:.1f} | {r['errors']} |", flush=True)
    service.close()
    soak_left = max(0, args.soak - answered[0])
    soak = run_clients(4, soak_left, over_http, Workload(queries, additions, args.add_fraction, 99), "s-") if soak_left else None
    rss_end = process.memory_info().rss
    server.send_signal(signal.SIGTERM)
    server.wait(60)

    print()
    by = {(side, r["clients"]): r for side, r in rows}
    for c in clients:
        ratio = by[("HTTP", c)]["match_throughput"] / by[("in-process", c)]["match_throughput"]
        print(f"- match throughput, HTTP / in-process, {c} client(s): {ratio:.2f}x")
    if soak:
        print(f"- soak at 4 clients: {soak['requests']} requests, {soak['adds']} adds, p50 {soak['p50_ms']:.1f} ms, "
              f"p99 {soak['p99_ms']:.1f} ms, {soak['throughput']:.1f} req/s, errors {soak['errors']}")
    growth = (rss_end - rss_start) / rss_start
    print(f"- service RSS: {rss_start / 1e6:.0f} MB after warm-up, {rss_end / 1e6:.0f} MB after {answered[0]} more requests "
          f"({growth:+.1%})")
    errors = [e for _, r in rows for e in r["error_examples"]] + (soak["error_examples"] if soak else [])
    if errors:
        print(f"- error examples: {errors[:5]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
