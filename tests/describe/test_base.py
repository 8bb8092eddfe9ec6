"""The Branch and Searcher contract (describe/base.py), run on every registered branch.

A branch joins these tests by being registered (`copyseek.registry.register_branch`); one whose
default options are too slow for a test names cheap ones in CHEAP_OPTIONS, and VARIANTS adds
searcher variants of a branch (e.g. the global branch's Faiss factories).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from copyseek.describe.base import Branch, Candidates, Searcher
from copyseek.errors import CopyseekError
from copyseek.registry import BRANCHES, make_branch, options_from_spec
from tests.local.conftest import photo

CHEAP_OPTIONS = {
    "global": lambda models: {"model": f"onnx:{models['tiny']}"},
    # One word per query descriptor: the tiny random HOW net is too weak for multiple assignment.
    "how": lambda models: {"model": str(models["how"]), "max_side": 128, "scales": "1,0.5", "features": 60,
                           "query_assignments": 1},
}
"""Branch name -> options that make it cheap (given the test's models), else its defaults."""

VARIANTS = {"global": [{"factory": "auto"}, {"factory": "Flat"}, {"factory": "IVF4,Flat"}, {"factory": "HNSW8"}, {"factory": "IVF2,SQ8"}]}
"""Branch name -> option sets, one contract run each (each a different searcher)."""

CASES = [(name, extra) for name in sorted(BRANCHES) for extra in VARIANTS.get(name, [{}])]
SIZES = [(320, 240), (256, 300), (300, 200), (280, 280), (240, 320)]


def case_id(case) -> str:
    name, extra = case
    return "-".join([name, *map(str, extra.values())])


@pytest.fixture(scope="module")
def models(tiny_onnx, tiny_how):
    return {"tiny": tiny_onnx, "how": tiny_how}


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [photo(300 + i, w, h) for i, (w, h) in enumerate(SIZES)]


@pytest.fixture(scope="module", params=CASES, ids=[case_id(c) for c in CASES])
def case(request, models, images):
    """(name, options, branch, reference features, query features) of one registered branch."""
    name, extra = request.param
    options = {**CHEAP_OPTIONS.get(name, lambda m: {})(models), **extra}
    branch = make_branch(name, options)
    return name, options, branch, branch.extract(images), branch.extract(images, query=True)


@pytest.fixture(scope="module")
def chunks_by_branch(models, images) -> dict[str, dict]:
    """Every registered branch's chunk of two images, to hand to the other branches."""
    chunks = {}
    for name in sorted(BRANCHES):
        branch = make_branch(name, CHEAP_OPTIONS.get(name, lambda m: {})(models))
        chunks[name] = branch.pack(branch.extract(images[:2]))
    return chunks


def searcher_over(branch: Branch, features: list, splits: list[int] | None = None) -> Searcher:
    searcher = branch.new_searcher()
    bounds = [0, *(splits or []), len(features)]
    for start, end in zip(bounds, bounds[1:]):
        searcher.add(branch.pack(features[start:end]))
    return searcher


def test_describes_each_image_of_a_batch_of_any_sizes(case, images):
    name, _, branch, references, queries = case
    assert branch.name == name and isinstance(branch.decode_side, int) and branch.decode_side > 0
    assert len(references) == len(queries) == len(images)
    for features in references + queries:
        assert features and all(isinstance(v, np.ndarray) for v in features.values())
    assert branch.extract([]) == []


def test_refuses_images_that_are_not_rgb_arrays(case, images):
    branch = case[2]
    for bad in ([images[0].astype(np.float32)], [images[0][:, :, 0]], [images[0].tolist()], np.stack([images[0]] * 2)):
        with pytest.raises(CopyseekError, match="uint8"):
            branch.extract(bad)


def test_spec_is_json_and_options_rebuild_it(case):
    name, options, branch, _, _ = case
    spec = branch.spec()
    assert json.loads(json.dumps(spec)) == spec
    stored = json.loads(json.dumps(options))
    assert make_branch(name, {**options_from_spec(name, spec), **stored}).spec() == spec


def test_unknown_options_are_refused(case):
    name, options = case[0], case[1]
    with pytest.raises(CopyseekError, match="unknown.*'no_such_option'|no options"):
        make_branch(name, {**options, "no_such_option": 1})


def test_pack_makes_one_row_per_image_and_packs_nothing_too(case):
    branch, references = case[2], case[3]
    chunk = branch.pack(references)
    assert chunk and all(isinstance(v, np.ndarray) for v in chunk.values())
    empty = branch.pack([])
    assert set(empty) == set(chunk)
    searcher = branch.new_searcher()
    searcher.add(empty)
    assert searcher.ntotal == 0


def test_take_keeps_the_chosen_images_as_if_only_they_were_packed(case):
    """What compaction relies on to drop removed references from a chunk."""
    branch, references = case[2], case[3]
    keep = np.array([0, 2, 3], np.int64)
    taken = branch.take(branch.pack(references), keep)
    expected = branch.pack([references[i] for i in keep])
    assert set(taken) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(taken[key], value, err_msg=key)


def test_each_reference_is_found_first_for_its_own_image(case):
    branch, references, queries = case[2], case[3], case[4]
    searcher = searcher_over(branch, references)
    assert searcher.ntotal == len(references) and searcher.nbytes() > 0
    found = searcher.search(queries, 3)
    assert len(found) == len(queries)
    for i, candidates in enumerate(found):
        assert isinstance(candidates, Candidates) and 1 <= len(candidates.rows) <= 3
        assert candidates.rows.dtype == np.int64 and candidates.scores.dtype == np.float32
        assert candidates.rows[0] == i
        assert ((candidates.rows >= 0) & (candidates.rows < len(references))).all()
        assert np.all(np.diff(candidates.scores) <= 0), "candidates come best first"


def test_an_empty_searcher_finds_nothing(case):
    branch, queries = case[2], case[4]
    searcher = branch.new_searcher()
    assert searcher.ntotal == 0
    assert searcher.search([], 5) == []
    for candidates in searcher.search(queries[:2], 5):
        assert len(candidates.rows) == len(candidates.scores) == 0


def test_any_split_into_chunks_gives_the_same_result(case):
    branch, references, queries = case[2], case[3], case[4]
    whole = searcher_over(branch, references).search(queries, 4)
    for splits in ([1], [1, 3], [2, 2, 4]):
        split = searcher_over(branch, references, splits).search(queries, 4)
        for a, b in zip(whole, split):
            np.testing.assert_array_equal(a.rows, b.rows)
            np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_a_chunk_of_another_branch_is_refused(case, chunks_by_branch):
    name, branch = case[0], case[2]
    for other, chunk in chunks_by_branch.items():
        if other != name:
            with pytest.raises(CopyseekError):
                branch.new_searcher().add(chunk)
    with pytest.raises(CopyseekError):
        branch.new_searcher().add({})


def test_query_features_of_another_branch_are_refused(case, models, images):
    name, branch, references = case[0], case[2], case[3]
    searcher = searcher_over(branch, references)
    for other in sorted(BRANCHES):
        if other != name:
            foreign = make_branch(other, CHEAP_OPTIONS.get(other, lambda m: {})(models))
            with pytest.raises(CopyseekError):
                searcher.search(foreign.extract(images[:1], query=True), 3)
    with pytest.raises(CopyseekError):
        searcher.search(case[4][:1], 0)


def test_search_time_parameters_are_named_validated_and_reset(case):
    branch, references, queries = case[2], case[3], case[4]
    searcher = searcher_over(branch, references)
    defaults = searcher.search_parameters()
    # counts (>= 1) or switches (bool)
    assert all(isinstance(v, bool) or (isinstance(v, int) and v >= 1) for v in defaults.values())
    with pytest.raises(CopyseekError, match="no_such_parameter"):
        searcher.set_search_parameters(no_such_parameter=4)
    for parameter in defaults:
        if isinstance(defaults[parameter], bool):
            searcher.set_search_parameters(**{parameter: not defaults[parameter]})
            assert searcher.search_parameters()[parameter] is (not defaults[parameter])
            assert all(len(c.rows) >= 1 for c in searcher.search(queries, 2))
            searcher.set_search_parameters(**{parameter: None})
            continue
        with pytest.raises(CopyseekError, match=parameter):
            searcher.set_search_parameters(**{parameter: 0})
        searcher.set_search_parameters(**{parameter: 1})
        assert searcher.search_parameters()[parameter] == 1
        assert all(len(c.rows) >= 1 for c in searcher.search(queries, 2))
        searcher.set_search_parameters(**{parameter: None})
    assert searcher.search_parameters() == defaults
    assert branch.spec() == case[2].spec()  # search-time parameters are not part of the spec


def test_an_index_reopens_a_branch_with_its_spec_and_results(case, tmp_path, monkeypatch, images):
    from PIL import Image

    from copyseek import registry
    from copyseek.match.matcher import MatchOptions, match
    from copyseek.store.index import Index

    name, options, branch = case[0], case[1], case[2]
    monkeypatch.setitem(registry.PIPELINES, f"only-{name}", (name,))
    folder = tmp_path / "refs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"r{i}.png")
    with Index.create(tmp_path / "idx", f"only-{name}", {name: options}) as index:
        index.add(folder, commit_every=3, progress=False)
        first = match(index, folder, MatchOptions(k=2), progress=False).predictions
    with Index.open(tmp_path / "idx") as index:
        assert index.branches[name].spec() == branch.spec()
        assert match(index, folder, MatchOptions(k=2), progress=False).predictions == first
    best = {}
    for prediction in first:  # best first per query
        best.setdefault(prediction.query_id, prediction.reference_id)
    assert best == {f"r{i}": f"r{i}" for i in range(len(images))}
