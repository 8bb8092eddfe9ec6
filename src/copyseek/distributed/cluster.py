"""Joining a Ray cluster (or starting a local one) and sizing the pool of describing actors.

The pool is kept below the cluster's CPUs: Ray Data needs CPUs for its own tasks (here, decoding),
and an actor pool that reserves every CPU stalls the pipeline (ray-project/ray#44687).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import ModuleType

from copyseek.errors import CopyseekError
from copyseek.validation import check_int

INSTALL_HINT = "install the ray extra: pip install 'copyseek[ray]'"


def import_ray() -> ModuleType:
    """The `ray` module, or a CopyseekError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CopyseekError(f"Ray is not installed ({INSTALL_HINT})") from None
    return ray


def connect(address: str | None = None) -> ModuleType:
    """Join the Ray cluster at `address` ("HEAD:6379", "auto", "ray://HEAD:10001"), or start a local
    one on this machine's cores when None. A process already connected stays connected (the
    tests share one local cluster)."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise CopyseekError(f"cannot join {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    quiet_ray_data()
    return ray


def quiet_ray_data() -> None:
    """Ray Data keeps rows in order (the index's rows follow the files' order) and prints nothing:
    copyseek shows its own progress bar."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Pool:
    """How the describing actors are laid out on the cluster.

    workers: actors, each holding the models. cpus_per_worker: CPUs each reserves (fractional when
    more actors than spare CPUs are asked for). decode_cpus: CPUs a decoding task reserves.
    threads: model threads inside each actor (a node's cores shared by its actors)."""

    workers: int
    cpus_per_worker: float
    decode_cpus: float
    threads: int


def plan_pool(node_cpus: list[float], workers: int | None = None, threads: int = 0) -> Pool:
    """The actor pool for nodes with `node_cpus` CPUs each: `workers` actors (default: one per CPU,
    each with one model thread), reserving together at most the cluster's CPUs minus the share kept
    for decoding (1 CPU, half of them on a one-CPU cluster), so that Ray never has every CPU held by
    actors (ray-project/ray#44687). threads: model threads per actor; 0 = a node's cores divided by
    the actors it holds. On an idle 2-core machine two one-thread actors indexed at 1.10x the
    single process, one two-thread actor at 0.84x (BENCHMARKS.md, issue 13, Ray).

    >>> plan_pool([2.0])
    Pool(workers=2, cpus_per_worker=0.5, decode_cpus=1.0, threads=1)
    >>> plan_pool([2.0], workers=1)
    Pool(workers=1, cpus_per_worker=1.0, decode_cpus=1.0, threads=2)
    >>> plan_pool([8.0, 8.0, 8.0]).workers
    24
    """
    cpus = [float(c) for c in node_cpus if c > 0]
    if not cpus:
        raise CopyseekError("the Ray cluster has no CPUs to describe images on")
    total = sum(cpus)
    decode_cpus = min(1.0, total / 2)
    if workers is None:
        workers = max(1, int(total))
    check_int("ray workers", workers, minimum=1)
    check_int("ray threads", threads, minimum=0)
    cpus_per_worker = min(1.0, (total - decode_cpus) / workers)
    per_node = math.ceil(workers / len(cpus))
    return Pool(workers, cpus_per_worker, decode_cpus, threads or max(1, int(max(cpus) // per_node)))


def cluster_cpus(ray: ModuleType) -> list[float]:
    """CPUs of each live node of the connected cluster."""
    return [float(node["Resources"].get("CPU", 0.0)) for node in ray.nodes() if node.get("Alive")]
