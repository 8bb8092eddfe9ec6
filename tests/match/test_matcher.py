"""match(): its options are checked where they enter, search-time parameters reach the searchers
for one run only, and versions of one photo can be reported once."""

import numpy as np
import pytest
from PIL import Image

from copyseek.errors import CopyseekError
from copyseek.match.matcher import MatchOptions, match
from copyseek.store.index import Index
from tests.making import write_photos


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"k": 2.5}, "k must be an integer"),
        ({"candidates": -5}, "candidates must be an integer >= 1, got -5"),
        ({"workers": -1}, "workers must be an integer >= 0, got -1"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_background": 0}, "n_background"),
        ({"beta": float("nan")}, "beta must be a finite number"),
        ({"beta": -1.0}, "beta must be a number >= 0"),
        ({"nprobe": 0}, "nprobe must be an integer >= 1, got 0"),
        ({"ef_search": "64"}, "ef_search must be an integer"),
        ({"search_threads": 0}, "search_threads must be an integer >= 1, got 0"),
        ({"background": 3}, "background must be a folder path"),
        ({"normalize_with": "references"}, "normalize_with must be one of background, collection"),
        ({"skip_nearest": -1}, "skip_nearest must be an integer >= 0"),
        ({"pair_matching": "yes"}, "pair_matching must be true or false"),
        ({"collapse_versions": 1}, "collapse_versions must be true or false"),
    ],
)
def test_bad_options_are_refused_naming_the_value(kwargs, named):
    with pytest.raises(CopyseekError, match=named):
        MatchOptions(**kwargs)


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory, tiny_onnx):
    root = tmp_path_factory.mktemp("ivf")
    write_photos(root / "refs", 8, seed=5, size=(160, 120))
    index = Index.create(root / "idx", "global", {"global": {"model": f"onnx:{tiny_onnx}", "factory": "IVF4,Flat"}})
    index.add(root / "refs", progress=False)
    yield index, root
    index.close()


def test_search_time_parameters_apply_to_one_run_and_are_not_stored(ivf_index):
    index, root = ivf_index
    spec = index.branches["global"].spec()
    searcher = index.searchers()["global"]
    default = searcher.search_parameters()
    assert default == {"nprobe": 4}  # every list of a 4-list index, not Faiss's 1

    seen = {}

    def spy(batch):  # the scorer runs while the run's parameters are set
        seen.update(searcher.search_parameters())
        return batch.candidates["global"]

    match(index, root / "refs", MatchOptions(k=1, nprobe=1), progress=False, scorer=spy)
    assert seen == {"nprobe": 1}
    result = match(index, root / "refs", MatchOptions(k=1), progress=False)
    assert searcher.search_parameters() == default
    assert all(p.query_id == p.reference_id for p in result.predictions)
    assert index.branches["global"].spec() == spec and "nprobe" not in str(index.manifest.get_meta("specs"))


def test_a_parameter_no_searcher_has_is_refused(ivf_index):
    index, root = ivf_index
    with pytest.raises(CopyseekError, match="efSearch=32 applies to none"):
        match(index, root / "refs", MatchOptions(ef_search=32), progress=False)
    with pytest.raises(CopyseekError, match="pair_matching=True applies to none"):  # no local branch
        match(index, root / "refs", MatchOptions(pair_matching=True), progress=False)


def test_the_command_line_sets_nprobe(ivf_index, tmp_path, capsys):
    from copyseek.cli import main

    index, root = ivf_index
    out = tmp_path / "p.csv"
    assert main(["match", str(root / "refs"), "--index", str(index.path), "--output", str(out), "--nprobe", "2", "-q"]) == 0
    assert main(["match", str(root / "refs"), "--index", str(index.path), "--output", str(out), "--ef-search", "8", "-q"]) == 2
    assert "efSearch=8 applies to none" in capsys.readouterr().err
    # IVF4,Flat scans no fast-scan lists: one query's scan cannot be split over threads
    assert main(["match", str(root / "refs"), "--index", str(index.path), "--output", str(out), "--search-threads", "2", "-q"]) == 2
    assert "threads=2 applies to none" in capsys.readouterr().err


def quadrants(path, pattern) -> None:
    """A PNG whose four quadrants (top-left, top-right, bottom-left, bottom-right) are black (0) or
    white (1): the test model's vector is their means (less 0.5), so the patterns set the cosines."""
    tl, tr, bl, br = (np.full((40, 40, 3), 255 * v, np.uint8) for v in pattern)
    rows = [np.concatenate([tl, tr], axis=1), np.concatenate([bl, br], axis=1)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def test_collapse_versions_reports_one_reference_per_group_of_versions_before_keeping_k(tmp_path, tiny_onnx):
    from copyseek.cli import main

    refs, queries = tmp_path / "refs", tmp_path / "queries"
    refs.mkdir(), queries.mkdir()
    quadrants(refs / "a.png", (1, 0, 0, 1))
    quadrants(refs / "a_version.png", (1, 0, 0, 1))  # the same photo held twice
    quadrants(refs / "b.png", (1, 1, 0, 0))  # cosine 0 with a
    quadrants(queries / "a.png", (1, 0, 0, 1))
    with Index.create(tmp_path / "idx", "global", {"global": {"model": f"onnx:{tiny_onnx}"}}) as index:
        index.add(refs, progress=False)
        plain = match(index, queries, MatchOptions(k=2), progress=False).predictions
        collapsed = match(index, queries, MatchOptions(k=2, collapse_versions=True), progress=False).predictions
    assert sorted(p.reference_id for p in plain) == ["a", "a_version"]
    assert collapsed[0].reference_id in {"a", "a_version"} and [p.reference_id for p in collapsed][1:] == ["b"]
    out = tmp_path / "p.csv"
    assert main(["match", str(queries), "--index", str(tmp_path / "idx"), "--output", str(out), "--k", "2",
                 "--collapse-versions", "-q"]) == 0
    assert [line.split(",")[1] for line in out.read_text().splitlines()[1:]][1:] == ["b"]


def test_collapse_versions_needs_the_global_branch(tmp_path):
    write_photos(tmp_path / "refs", 2, seed=3, size=(96, 96))
    with Index.create(tmp_path / "idx", "pdq") as index:
        index.add(tmp_path / "refs", progress=False)
        with pytest.raises(CopyseekError, match="no global branch"):
            match(index, tmp_path / "refs", MatchOptions(collapse_versions=True), progress=False)
