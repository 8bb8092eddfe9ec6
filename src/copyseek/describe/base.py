"""The interface every branch implements (global vectors, local features, hashes...).

A branch turns decoded images into features, packs many images' features into one chunk of arrays
(the unit the index writes atomically), and builds a searcher over all chunks. Adding a branch means
writing one `Branch` subclass and registering it in `copyseek.registry`; the index, the matcher
and the CLI need no change, and the contract tests (tests/describe/test_base.py) run on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from copyseek.errors import CopyseekError

Features = dict[str, np.ndarray]
"""One image's features; the keys are the branch's own (e.g. {"vector": (512,) float32})."""

Chunk = dict[str, np.ndarray]
"""Many images' features packed into arrays, saved as one file; row i of the chunk is its i-th image."""


@dataclass
class Candidates:
    """One query's candidate references from one branch, best first.

    rows:   (m,) int64 reference rows (the index's row numbers, in the order images were added).
    scores: (m,) float32 branch scores, higher = more similar.
    extra:  optional per-candidate arrays (e.g. "inliers" (m,), "region" (m, 4) in query pixels).
    """

    rows: np.ndarray
    scores: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> "Candidates":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32))


class Searcher(ABC):
    """Search structure over the packed features of all references of one branch."""

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of references searchable."""

    @abstractmethod
    def add(self, chunk: Chunk) -> None:
        """Append one chunk's references (rows continue from ntotal)."""

    @abstractmethod
    def search(self, queries: list[Features], k: int) -> list[Candidates]:
        """Top-k candidate references for each query."""

    @abstractmethod
    def nbytes(self) -> int:
        """Bytes the stored features take (for bytes-per-reference reports)."""

    def search_parameters(self) -> dict[str, int]:
        """Search-time parameter name -> the value searches use now (Faiss's ParameterSpace idea:
        e.g. nprobe, efSearch). They trade speed for recall, are set per run and are not part of any
        spec. This default has none."""
        return {}

    def set_search_parameters(self, **values: int | None) -> None:
        """Set search-time parameters; None restores a parameter's default. Names this searcher
        does not have raise."""
        if values:
            raise CopyseekError(f"{type(self).__name__} has no search-time parameters, got {', '.join(sorted(values))}")

    def save(self, path: Path) -> bool:
        """Write the built structure to the file `path` when rebuilding it from the chunks costs
        more than reading it back (a trained Faiss index), and return True; this default keeps
        nothing (rebuilding is as cheap as reading) and returns False. The index store decides
        where and when (copyseek.store.saved_searchers)."""
        return False

    def load(self, path: Path) -> bool:
        """Make this new, empty searcher the structure `save` wrote to `path`; False if this kind
        of searcher keeps none (this default) or the file is not one it wrote (then it stays empty)."""
        return False


class Branch(ABC):
    """One way of describing and searching images."""

    name: ClassVar[str]

    runtime_options: ClassVar[tuple[str, ...]] = ()
    """Speed options (of `copyseek.registry.RUNTIME_OPTIONS`) this branch takes; not stored in an index."""

    @classmethod
    def from_options(cls, options: dict) -> "Branch":
        """The branch built from a JSON-able options dict (what an index stores). Unknown keys and
        bad values raise a CopyseekError naming them. This default takes no options."""
        if options:
            raise CopyseekError(f"the {cls.name} branch takes no options, got {', '.join(map(repr, sorted(options)))}")
        return cls()

    @classmethod
    def options_from_spec(cls, spec: dict) -> dict:
        """The options a stored spec pins (so that an index keeps opening with the parameters it was
        built with after a default changes); empty when the spec names no option."""
        return {}

    @property
    @abstractmethod
    def decode_side(self) -> int:
        """Smallest side, in pixels, the decoded RGB image should keep for this branch (lets the
        decoder use JPEG draft mode and cap huge images)."""

    @abstractmethod
    def spec(self) -> dict:
        """JSON-able description (model, sizes, parameters). An index stores it and refuses to be
        extended or queried by a branch with a different spec."""

    @abstractmethod
    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        """Features of a batch of (H, W, 3) uint8 RGB images (sizes may differ).

        query=True marks query images: a branch may add what only queries need (e.g. features of
        the mirrored image so that flipped copies match)."""

    @abstractmethod
    def pack(self, features: list[Features]) -> Chunk:
        """Pack many images' features into one chunk."""

    def take(self, chunk: Chunk, keep: np.ndarray) -> Chunk:
        """The chunk reduced to the images at positions `keep` ((m,) int64, increasing), as if only
        they had been packed; the index compacts removed references away with it. This default
        suits chunks whose arrays all have one row per image; a branch with per-image ragged
        arrays overrides it (see `take_ragged`)."""
        return {key: value[keep] for key, value in chunk.items()}

    @abstractmethod
    def new_searcher(self) -> Searcher:
        """An empty searcher; the index adds its chunks in row order."""


def take_ragged(chunk: Chunk, keep: np.ndarray, ragged: tuple[str, ...]) -> Chunk:
    """`Branch.take` for chunks whose `ragged` arrays hold counts[i] rows for image i (images
    concatenated in order, `chunk["counts"]` (n,)) and whose other arrays hold one row per image."""
    offsets = np.concatenate([[0], np.cumsum(chunk["counts"], dtype=np.int64)])
    parts = [np.arange(offsets[i], offsets[i + 1]) for i in keep]
    rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return {key: value[rows] if key in ragged else value[keep] for key, value in chunk.items()}
