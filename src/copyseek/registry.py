"""The swappable pieces of an index by name: branches, pipelines (named compositions of branches,
like Faiss factory strings) and each pipeline's scorer.

This module sits above every branch and below the store (`docs/ARCHITECTURE.md`): it names the
pieces it registers lazily, as `"module:attribute"` strings that are imported on first use, so that
`import copyseek.registry` loads no model, no Faiss and nothing from the upper layers (the scorers
live in `copyseek.match`). A new piece joins by one `register_*` call, or one line in the tables
below for the pieces shipped with copyseek; the index, the matcher, the CLI, the benchmark runner
and the contract tests (`tests/describe/test_base.py`, `tests/match/test_scoring.py`) then know it.

>>> from copyseek.registry import make_branch, pipeline_branches
>>> pipeline_branches("fused")
('global', 'local')
>>> make_branch("pdq", {}).spec()
{'hash': 'pdq', 'bits': 256}
>>> make_branch("global", {"facotry": "Flat"})
Traceback (most recent call last):
...
copyseek.errors.CopyseekError: unknown global branch option 'facotry' (known: batch_size, factory, flip_average, model, resize, threads)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from copyseek.describe.base import Branch
from copyseek.errors import CopyseekError

if TYPE_CHECKING:  # the scorer types live in the match layer, above this one
    from copyseek.match.scoring import ScorerFactory

BRANCHES: dict[str, Any] = {
    "global": "copyseek.describe.global_branch:GlobalBranch",
    "pdq": "copyseek.describe.pdq_branch:PDQBranch",
    "local": "copyseek.local.branch:LocalBranch",
    "how": "copyseek.how.branch:HowBranch",
}
"""Branch name -> a `Branch` subclass (built with its `from_options`), or a function from an options
dict to a branch; either may be given as a lazy "module:attribute" string."""

PIPELINES: dict[str, tuple[str, ...]] = {
    "global": ("global",),
    "local": ("local",),
    "fused": ("global", "local"),
    "fused-fast": ("global", "local"),
    "pdq": ("pdq",),
    "asmk": ("how",),
    "fused-how": ("global", "local", "how"),
}
"""Pipeline name -> the branches it indexes and searches."""

PIPELINE_DEFAULTS: dict[str, dict[str, dict]] = {
    "fused": {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224+short:256"}},
    # the fused pipeline at about twice the speed: one resizing, fewer and smaller crops
    # (match/fusion.py PRESET_PARAMS), fused's weights; accuracy in BENCHMARKS.md (issue 13)
    "fused-fast": {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224"}},
    # the fused pipeline with HOW's ASMK similarity as a sixth evidence (match/fusion.py, docs/how.md)
    "fused-how": {"global": {"model": "sscd,copyseek-small@0.4", "resize": "square:224+short:256"}},
}
"""Pipeline name -> branch name -> option defaults that differ from the branch's own (options given
when an index is made override them)."""

SCORERS: dict[str, Any] = {
    "global": "copyseek.match.scoring:global_scorer",
    "fused": "copyseek.match.fusion:FusedScorer",
    "fused-fast": "copyseek.match.fusion:FusedScorer",
    "fused-how": "copyseek.match.fusion:FusedScorer",
}
"""Pipeline name -> its scorer factory `(index, normaliser or None) -> scorer` (see
`copyseek.match.scoring`), or a lazy "module:attribute" string naming one. A one-branch pipeline
without an entry scores with its branch's own scores."""

OWN_SCORE = "copyseek.match.scoring:branch_scorer"

RUNTIME_OPTIONS = ("threads", "batch_size")
"""Options that change speed, not results: handed to every branch that takes them (a branch lists
the ones it takes in `Branch.runtime_options`), never stored in the index."""


def resolve(entry: Any) -> Any:
    """A registered entry itself, or the attribute a "module:attribute" string names."""
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise CopyseekError(f"registered piece {entry!r} cannot be loaded: {exc}") from None


def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name or any(c in name for c in " ,+:@/"):
        raise CopyseekError(f"a {kind} name must be a non-empty string without spaces or ,+:@/, got {name!r}")
    return name


def _register(table: dict, kind: str, name: str, entry: Any) -> None:
    _check_name(kind, name)
    if name in table and table[name] != entry:
        raise CopyseekError(f"a different {kind} is already registered as {name!r}")
    table[name] = entry


def register_branch(name: str, constructor: Any) -> None:
    """Register a branch: a `Branch` subclass, a function from an options dict to a branch, or a
    "module:attribute" string naming either (loaded on first use)."""
    if not (isinstance(constructor, str) or callable(constructor)):
        raise CopyseekError(f"branch {name!r}: expected a Branch subclass, a function or 'module:attribute', got {constructor!r}")
    _register(BRANCHES, "branch", name, constructor)


def register_pipeline(
    name: str,
    branches: tuple[str, ...] | list[str],
    *,
    defaults: dict[str, dict] | None = None,
    scorer: Any = None,
) -> None:
    """Register a pipeline made of registered `branches`, with option `defaults` per branch (that
    differ from the branches' own) and, optionally, its scorer (see `register_scorer`)."""
    branches = tuple(branches)
    if not branches or len(set(branches)) != len(branches):
        raise CopyseekError(f"pipeline {name!r} needs one or more distinct branches, got {branches!r}")
    unknown = [b for b in branches if b not in BRANCHES]
    if unknown:
        raise CopyseekError(f"pipeline {name!r} names unregistered branch(es) {', '.join(unknown)}; known: {', '.join(sorted(BRANCHES))}")
    if defaults and set(defaults) - set(branches):
        raise CopyseekError(f"pipeline {name!r} has defaults for branches it lacks: {', '.join(sorted(set(defaults) - set(branches)))}")
    _register(PIPELINES, "pipeline", name, branches)
    if defaults:
        PIPELINE_DEFAULTS[name] = defaults
    if scorer is not None:
        register_scorer(name, scorer)


def register_scorer(pipeline: str, factory: "ScorerFactory | str") -> None:
    """Register the scoring rule of `pipeline`: `factory(index, normaliser or None)` returns the
    scorer (`copyseek.match.scoring.Scorer`); or a "module:attribute" string naming the factory."""
    if not (isinstance(factory, str) or callable(factory)):
        raise CopyseekError(f"scorer of {pipeline!r}: expected a function or 'module:attribute', got {factory!r}")
    _register(SCORERS, "scorer", pipeline, factory)


def pipeline_branches(pipeline: str) -> tuple[str, ...]:
    if pipeline not in PIPELINES:
        raise CopyseekError(f"unknown pipeline {pipeline!r}; choose from {', '.join(sorted(PIPELINES))}")
    return PIPELINES[pipeline]


def pipeline_options(pipeline: str, options: dict[str, dict] | None = None) -> dict[str, dict]:
    """Branch name -> options for each branch of `pipeline`: its defaults, updated with `options`."""
    given = options or {}
    branches = pipeline_branches(pipeline)
    if not isinstance(given, dict) or set(given) - set(branches):
        raise CopyseekError(f"options for pipeline {pipeline!r} must be keyed by its branches ({', '.join(branches)}), got {given!r}")
    defaults = PIPELINE_DEFAULTS.get(pipeline, {})
    return {name: {**defaults.get(name, {}), **given.get(name, {})} for name in branches}


def branch_entry(name: str) -> Any:
    """The registered constructor of branch `name` (loaded if it was named lazily)."""
    if name not in BRANCHES:
        raise CopyseekError(f"unknown branch {name!r}; known: {', '.join(sorted(BRANCHES))}")
    return resolve(BRANCHES[name])


def make_branch(name: str, options: dict) -> Branch:
    """Branch `name` built from its options (a JSON-able dict, as an index stores it). Unknown
    options raise; speed options (RUNTIME_OPTIONS) the branch does not take are dropped."""
    entry = branch_entry(name)
    if isinstance(entry, type) and issubclass(entry, Branch):
        options = {k: v for k, v in options.items() if k not in RUNTIME_OPTIONS or k in entry.runtime_options}
        branch = entry.from_options(options)
    else:
        branch = entry(options)
    if not isinstance(branch, Branch):
        raise CopyseekError(f"branch {name!r} was built as {type(branch).__name__}, not a Branch")
    return branch


def options_from_spec(name: str, spec: dict) -> dict:
    """Options of branch `name` pinned by its stored spec, so that an index keeps opening with the
    parameters it was built with after a default changes (e.g. local keypoints); empty for branches
    whose spec names no option (such as a model's fingerprint)."""
    entry = branch_entry(name)
    if isinstance(entry, type) and issubclass(entry, Branch):
        return entry.options_from_spec(spec)
    return {}


def scorer_factory(pipeline: str) -> "ScorerFactory":
    """The scorer factory of `pipeline`: its registered one, or the branch's own scores for a
    one-branch pipeline."""
    if pipeline in SCORERS:
        return resolve(SCORERS[pipeline])
    if len(pipeline_branches(pipeline)) == 1:
        return resolve(OWN_SCORE)
    raise CopyseekError(f"no scorer is registered for pipeline {pipeline!r} (register_scorer)")
