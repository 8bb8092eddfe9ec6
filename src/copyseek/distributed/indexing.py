"""Describing references in a Ray Data pipeline; the driver commits them as a single process would.

    files --(driver)--> one row per model batch of files
          --decode (Ray tasks)--> decoded pixels, or why a file cannot be used
          --describe (pool of Ray actors holding the models)--> features per image
          --(driver, in order)--> Index.add's commits (chunk file, fsync, one SQLite transaction)

Only the driver writes the index, through the same loop as `copyseek index` without Ray: the
describer hands `Index.add` the images in the files' order, grouped into the model batches a single
process would make, so the chunks, rows and features are the ones a single process writes. A
killed driver leaves the committed chunks; running again describes only the rest (`Index.add`
skips what is committed). Image files and model files must be readable at the same paths on
every node (a shared filesystem).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from copyseek.describe.base import Branch
from copyseek.distributed.cluster import Pool, cluster_cpus, connect, plan_pool
from copyseek.errors import CopyseekError
from copyseek.io.images import DecodedImage, ImageFile, iter_decoded, one_line
from copyseek.registry import make_branch
from copyseek.store.index import Described, describe_decoded
from copyseek.validation import check_int

DECODE_THREADS = 2
"""Threads each decoding task decodes with (Pillow releases the GIL)."""


@dataclass
class RayDescriber:
    """A `Describer` for `Index.add` that runs on a Ray cluster.

    branch_options: branch name -> the options that rebuild the index's branches in each actor
    (`ray_branch_options(index)`); every actor checks that its branches have the index's specs.
    address: the cluster ("HEAD:6379"); None starts a local Ray on this machine. workers, threads:
    see `cluster.plan_pool`. batch_size: images per model call, as without Ray.
    After a run, `described` holds the ids of the images it described (for reports and tests)
    and `pool` the actor pool it used.
    """

    branch_options: dict[str, dict]
    specs: dict[str, dict]
    address: str | None = None
    workers: int | None = None
    threads: int = 0
    batch_size: int = 16
    described: list[str] = field(default_factory=list, init=False)
    pool: Pool | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, minimum=1)
        if set(self.branch_options) != set(self.specs):
            raise CopyseekError(f"branch options for {sorted(self.branch_options)} but specs for {sorted(self.specs)}")

    def __call__(self, branches: dict[str, Branch], files: list[ImageFile]) -> Iterator[list[Described]]:
        if not files:
            return
        ray = connect(self.address)
        self.pool = plan_pool(cluster_cpus(ray), self.workers, self.threads)
        decode_side = max(b.decode_side for b in branches.values())
        dataset = model_batches_dataset(ray, files, self.batch_size)
        decode_cpus = self.pool.decode_cpus
        dataset = dataset.map_batches(
            decode_rows,
            fn_kwargs={"min_side": decode_side},
            batch_size=1,
            # arguments from a function: Ray Data then never fuses decoding into the actors, where
            # it would run between model calls instead of beside them (as a single process does);
            # deprecated from Ray 2.64, hence the extra's upper bound
            ray_remote_args_fn=lambda: {"num_cpus": decode_cpus},
        )
        options = {name: {**o, "threads": self.pool.threads, "batch_size": self.batch_size} for name, o in self.branch_options.items()}
        dataset = dataset.map_batches(
            DescribeActor,
            fn_constructor_kwargs={"options": options, "specs": self.specs},
            batch_size=1,
            num_cpus=self.pool.cpus_per_worker,
            compute=ray.data.ActorPoolStrategy(size=self.pool.workers),
        )
        yield from regroup(self._results(ray, dataset), self.batch_size)

    def _results(self, ray, dataset) -> Iterator[Described]:
        try:
            for row in dataset.iter_rows():
                for item in pickle.loads(row["described"]):
                    if item.width is not None:
                        self.described.append(item.file.id)
                    yield item
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, CopyseekError):
                raise CopyseekError(str(cause)) from None
            raise CopyseekError(f"the Ray pipeline failed (committed chunks are kept; run again to finish): {one_line(exc)}") from None


def ray_branch_options(index) -> tuple[dict[str, dict], dict[str, dict]]:
    """(options, specs) that rebuild `index`'s branches elsewhere: the stored options over those its
    specs pin, as `Index.open` builds them."""
    from copyseek.registry import options_from_spec

    stored: dict[str, dict] = index.manifest.get_meta("options")
    specs: dict[str, dict] = index.manifest.get_meta("specs")
    return {name: {**options_from_spec(name, specs[name]), **stored[name]} for name in stored}, specs


def model_batches_dataset(ray, files: list[ImageFile], batch_size: int):
    """A Ray dataset with one row (and one block, so that tasks spread) per model batch of files."""
    rows = [
        {"files": pickle.dumps([(f.id, str(f.path)) for f in files[start : start + batch_size]])}
        for start in range(0, len(files), batch_size)
    ]
    return ray.data.from_items(rows, override_num_blocks=len(rows))


def decode_rows(batch: dict, min_side: int) -> dict:
    """Ray task: decode each row's files (on `DECODE_THREADS` threads, keeping `min_side` pixels as
    `Index.add` does); a row becomes the list of its DecodedImage, or (file, reason) for a file that
    cannot be used."""
    from pathlib import Path

    out = []
    for payload in batch["files"]:
        files = [ImageFile(i, Path(p)) for i, p in pickle.loads(payload)]
        decoded = [
            item if isinstance(item, DecodedImage) else (item[0], item[1].reason)
            for item in iter_decoded(files, min_side=min_side, workers=DECODE_THREADS)
        ]
        out.append(pickle.dumps(decoded, protocol=pickle.HIGHEST_PROTOCOL))
    return {"decoded": out}


class DescribeActor:
    """Ray actor: builds the index's branches once (models loaded), then describes decoded rows."""

    def __init__(self, options: dict[str, dict], specs: dict[str, dict]):
        self.branches = {name: make_branch(name, o) for name, o in options.items()}
        for name, branch in self.branches.items():
            if branch.spec() != specs[name]:
                raise CopyseekError(
                    f"on a Ray worker the {name} branch loads as {branch.spec()}, but the index was built with "
                    f"{specs[name]} (is the model file the same on every node?)"
                )

    def __call__(self, batch: dict) -> dict:
        out = []
        for payload in batch["decoded"]:
            items = pickle.loads(payload)
            images = [i for i in items if isinstance(i, DecodedImage)]
            skipped = [Described(f, None, reason) for f, reason in (i for i in items if not isinstance(i, DecodedImage))]
            out.append(pickle.dumps(skipped + describe_decoded(self.branches, images), protocol=pickle.HIGHEST_PROTOCOL))
        return {"described": out}


def regroup(items: Iterable[Described], batch_size: int) -> Iterator[list[Described]]:
    """Group images as `LocalDescriber` does, `batch_size` decoded images per group with the
    undecodable ones met on the way, so `Index.add` commits the same chunks.

    >>> from pathlib import Path
    >>> f = lambda i, decoded=True: Described(ImageFile(str(i), Path(f"{i}.jpg")), None, "x", width=1 if decoded else None)
    >>> [[d.file.id for d in g] for g in regroup([f(0), f(1, False), f(2), f(3), f(4, False)], 2)]
    [['0', '1', '2'], ['3', '4']]
    """
    group: list[Described] = []
    decoded = 0
    for item in items:
        group.append(item)
        if item.width is not None:
            decoded += 1
            if decoded == batch_size:
                yield group
                group, decoded = [], 0
    if group:
        yield group
