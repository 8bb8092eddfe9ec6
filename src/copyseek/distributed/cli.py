"""Command-line pieces of the distributed domain: `copyseek index --ray [ADDRESS]`."""

from __future__ import annotations

import argparse

from copyseek.distributed.cluster import INSTALL_HINT

LOCAL = "local"
"""`--ray` without an address: start Ray on this machine."""


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (extra `ray`)")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="describe the images on a Ray cluster (HEAD:6379, started with `ray start --head`), or on "
        f"a local Ray when no address is given; this process commits the results as without Ray ({INSTALL_HINT})",
    )
    group.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        metavar="N",
        help="describing actors, each holding the models (default: one per CPU of the cluster, each reserving a share that leaves 1 CPU to decoding)",
    )


def ray_describer(args: argparse.Namespace, index):
    """The `RayDescriber` that `--ray` asks for, or None (describe in this process)."""
    if args.ray is None:
        return None
    from copyseek.distributed.indexing import RayDescriber, ray_branch_options

    options, specs = ray_branch_options(index)
    return RayDescriber(
        options,
        specs,
        address=None if args.ray == LOCAL else args.ray,
        workers=args.ray_workers,
        threads=args.threads,
        batch_size=args.batch_size,
    )


def add_shard_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("shards")
    group.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="split the index's exact global search into N shards by row range, each searched by its own "
        "process (or Ray actor with --shard-backend ray); results are the unsharded ones",
    )
    group.add_argument("--shard-backend", choices=("process", "ray"), default="process", help="where shards run (default process)")
    group.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray cluster of the ray shard backend (default: a local Ray)")


def shards_for(args: argparse.Namespace):
    """The `Shards` searcher source that --shards asks for, or None."""
    if not args.shards:
        return None
    from copyseek.distributed.shards import Shards

    return Shards(args.shards, args.shard_backend, args.ray)
