"""Branches by name, and pipelines as named compositions of branches (like Faiss factory strings).

An index stores each branch's options; `make_branch(name, options)` rebuilds the same branch later.
"""

from __future__ import annotations

from collections.abc import Callable

from copyseek.describe.base import Branch
from copyseek.errors import CopyseekError


def _global_branch(options: dict) -> Branch:
    from copyseek.describe.global_branch import GlobalBranch
    from copyseek.describe.models import load_model
    from copyseek.describe.preprocess import Preprocess

    views = Preprocess.parse_views(options["resize"]) if options.get("resize") else None
    model = load_model(options.get("model", "sscd"), threads=options.get("threads", 0))
    return GlobalBranch(
        model,
        factory=options.get("factory", "Flat"),
        batch_size=options.get("batch_size", 16),
        flip_average=bool(options.get("flip_average", False)),
        views=views,
    )


def _pdq_branch(options: dict) -> Branch:
    from copyseek.describe.pdq_branch import PDQBranch

    return PDQBranch()


def _local_branch(options: dict) -> Branch:
    from copyseek.local.branch import LocalBranch

    return LocalBranch.from_options({k: v for k, v in options.items() if k not in RUNTIME_OPTIONS})


def _how_branch(options: dict) -> Branch:
    from copyseek.how.branch import HowBranch

    return HowBranch.from_options({k: v for k, v in options.items() if k != "batch_size"})


BRANCHES: dict[str, Callable[[dict], Branch]] = {
    "global": _global_branch, "pdq": _pdq_branch, "local": _local_branch, "how": _how_branch,
}
"""Branch name -> constructor from its options (a JSON-able dict)."""


def _local_spec_options(spec: dict) -> dict:
    from copyseek.local.features import SiftParams

    return {name: spec[name] for name in SiftParams.__dataclass_fields__ if name in spec}


def _how_spec_options(spec: dict) -> dict:
    from copyseek.how.features import HowParams

    return {name: spec[name] for name in HowParams.__dataclass_fields__ if name in spec}


SPEC_OPTIONS: dict[str, Callable[[dict], dict]] = {"local": _local_spec_options, "how": _how_spec_options}
"""Branch name -> the options that rebuild what a stored spec records, so that an index keeps
opening with the parameters it was built with after a default changes (e.g. local keypoints)."""

PIPELINES: dict[str, tuple[str, ...]] = {
    "global": ("global",),
    "local": ("local",),
    "fused": ("global", "local"),
    "pdq": ("pdq",),
    "asmk": ("how",),
}
"""Pipeline name -> the branches it indexes and searches."""

PIPELINE_DEFAULTS: dict[str, dict[str, dict]] = {
    "fused": {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224+short:256"}}
}
"""Pipeline name -> branch name -> option defaults that differ from the branch's own (options given
when an index is made override them)."""

RUNTIME_OPTIONS = ("threads", "batch_size")
"""Options that change speed, not results: not stored in the index."""


def register_branch(name: str, constructor: Callable[[dict], Branch]) -> None:
    BRANCHES[name] = constructor


def register_pipeline(name: str, branches: tuple[str, ...]) -> None:
    PIPELINES[name] = branches


def pipeline_branches(pipeline: str) -> tuple[str, ...]:
    if pipeline not in PIPELINES:
        raise CopyseekError(f"unknown pipeline {pipeline!r}; choose from {', '.join(sorted(PIPELINES))}")
    return PIPELINES[pipeline]


def pipeline_options(pipeline: str, options: dict[str, dict] | None = None) -> dict[str, dict]:
    """Branch name -> options for each branch of `pipeline`: its defaults, updated with `options`."""
    given = options or {}
    defaults = PIPELINE_DEFAULTS.get(pipeline, {})
    return {name: {**defaults.get(name, {}), **given.get(name, {})} for name in pipeline_branches(pipeline)}


def options_from_spec(name: str, spec: dict) -> dict:
    """Options of branch `name` pinned by its stored spec (empty for branches whose spec names no
    option, such as a model's fingerprint)."""
    return SPEC_OPTIONS[name](spec) if name in SPEC_OPTIONS else {}


def make_branch(name: str, options: dict) -> Branch:
    if name not in BRANCHES:
        raise CopyseekError(f"unknown branch {name!r}; known: {', '.join(sorted(BRANCHES))}")
    return BRANCHES[name](options)
