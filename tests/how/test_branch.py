import json

import numpy as np
import pytest

from copyseek.registry import make_branch, pipeline_branches
from copyseek.errors import CopyseekError
from copyseek.how import HowBranch
from copyseek.store.index import Index
from tests.how.conftest import photo
from tests.making import write_photos


def test_options_build_every_parameter_group(branch_options):
    branch = HowBranch.from_options({**branch_options, "alpha": 2.0, "query_features": 80, "query_flip": False})
    assert branch.params.scales == (1.0, 0.5) and branch.query_params.features == 80
    assert branch.asmk.alpha == 2.0 and not branch.query.flip and branch.decode_side == 128
    with pytest.raises(CopyseekError, match="unknown how branch option"):
        HowBranch.from_options({**branch_options, "featurez": 3})


def test_spec_names_what_shapes_the_index(branch_options):
    spec = json.loads(json.dumps(HowBranch.from_options(branch_options).spec()))
    assert spec["features"] == 60 and spec["codebook"] == "asmk16x8bit"
    assert HowBranch.from_options({**branch_options, "alpha": 1.0, "query_features": 90}).spec() == spec
    assert HowBranch.from_options({**branch_options, "features": 30}).spec() != spec


def test_missing_model_or_codebook_is_one_clear_error(tiny_how, tmp_path):
    with pytest.raises(CopyseekError, match="HOW model not found"):
        HowBranch(str(tmp_path / "none.onnx"))
    with pytest.raises(CopyseekError, match="codebook not found"):
        HowBranch(str(tiny_how), codebook=str(tmp_path / "none.npz"))


def test_copies_rank_their_reference_first(branch_options):
    branch = HowBranch.from_options(branch_options)
    references = [photo(100 + i) for i in range(8)]
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract(references)))
    queries = [references[3][20:170, 30:230], references[5][:, ::-1]]
    found = searcher.search(branch.extract(queries, query=True), k=3)
    assert [c.rows[0] for c in found] == [3, 5]


def test_parallel_extraction_equals_serial(branch_options):
    images = [photo(i) for i in range(3)]
    serial = HowBranch.from_options(branch_options).extract(images, query=True)
    parallel = HowBranch.from_options({**branch_options, "threads": 2}).extract(images, query=True)
    for a, b in zip(serial, parallel):
        assert all(np.array_equal(a[key], b[key]) for key in a)


def test_asmk_pipeline_indexes_incrementally_and_reopens(tmp_path, branch_options):
    assert pipeline_branches("asmk") == ("how",)
    assert isinstance(make_branch("how", {**branch_options, "batch_size": 4}), HowBranch)
    first = write_photos(tmp_path / "a", 4, seed=1, size=(256, 192))
    second = write_photos(tmp_path / "b", 3, seed=2, prefix="new", size=(256, 192))
    with Index.create(tmp_path / "idx", "asmk", {"how": branch_options}) as index:
        index.add(first[0].parent, progress=False, commit_every=2)
        index.add(second[0].parent, progress=False)
        bytes_now = index.searchers()["how"].nbytes()
    with Index.open(tmp_path / "idx") as index:
        searcher = index.searchers()["how"]
        assert len(index) == 7 and searcher.ntotal == 7 and searcher.nbytes() == bytes_now
        from copyseek.io.images import load_rgb

        (found,) = searcher.search(index.branches["how"].extract([load_rgb(second[1])], query=True), k=1)
        assert index.ids[found.rows[0]] == second[1].stem


def test_the_shipped_model_and_codebook_are_the_default():
    branch = HowBranch(threads=1)
    spec = branch.spec()
    assert spec["model"] == "copyseek-how" and spec["codebook"] == "asmk1024x128bit"
    (features,) = branch.extract([photo(7)], query=True)
    assert features["bits"].shape[1] == 16 and len(features["words_mirrored"]) > 0
