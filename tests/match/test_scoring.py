"""The scorer contract (match/scoring.py), run on every registered pipeline's scorer: one scored
list per query, rows of the index, finite scores, no reference twice, and a reference found first
for its own image; with background normalisation too where the pipeline has a global branch.
A pipeline joins by being registered (`copyseek.registry.register_pipeline` / `register_scorer`)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from copyseek.describe.base import Candidates
from copyseek.match.matcher import MatchOptions, match
from copyseek.registry import PIPELINES, pipeline_branches, scorer_factory
from copyseek.store.index import Index
from tests.local.conftest import photo

CHEAP = {"global": lambda tiny: {"model": f"onnx:{tiny}"}}
"""Branch -> options that make it cheap in a test (the tiny ONNX model), else the pipeline's own."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    for folder, seeds in (("refs", range(500, 505)), ("background", range(600, 603))):
        (root / folder).mkdir()
        for seed in seeds:
            Image.fromarray(photo(seed, 288, 216)).save(root / folder / f"{folder[0]}{seed}.png")
    return root


@pytest.fixture(scope="module", params=sorted(PIPELINES))
def indexed(request, folders, tiny_onnx):
    pipeline = request.param
    options = {b: CHEAP[b](tiny_onnx) for b in pipeline_branches(pipeline) if b in CHEAP}
    index = Index.create(folders / f"{pipeline}.idx", pipeline, options)
    index.add(folders / "refs", progress=False)
    yield pipeline, index
    index.close()


@pytest.mark.parametrize("normalise", [False, True], ids=["raw", "normalised"])
def test_every_scorer_scores_each_query_with_rows_of_the_index(indexed, folders, normalise):
    pipeline, index = indexed
    if normalise and "global" not in index.branches:
        pytest.skip("background normalisation needs the global branch")
    factory = scorer_factory(pipeline)
    assert callable(factory)
    calls = []

    def checked(batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fusion weights fitted for another descriptor than the tiny one
            scorer = factory(index, normalizer_of(index, folders) if normalise else None)
        scored = scorer(batch)
        calls.append(len(batch.ids))
        assert len(scored) == len(batch.ids)
        for query_id, candidates in zip(batch.ids, scored):
            assert isinstance(candidates, Candidates) and len(candidates.rows) == len(candidates.scores)
            assert candidates.rows.dtype.kind == "i" and len(set(candidates.rows.tolist())) == len(candidates.rows)
            assert ((candidates.rows >= 0) & (candidates.rows < len(index))).all()
            assert np.isfinite(candidates.scores).all()
            # the reference a query is a copy of scores highest (a calibrated probability may tie at 1)
            own = candidates.scores[candidates.rows == index.ids.index(query_id)]
            assert len(own) == 1 and own[0] == candidates.scores.max()
        return scored

    result = match(index, folders / "refs", MatchOptions(k=3), progress=False, scorer=checked)
    assert sum(calls) == result.queries == len(index)


def normalizer_of(index, folders):
    from copyseek.match.normalize import BackgroundNormalizer, background_vectors

    vectors = background_vectors(index.branches["global"], folders / "background", index.path / "background", 0, False)
    return BackgroundNormalizer(vectors, 1.0, 2)
