import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local import LocalBranch, SearchParams
from copyseek.local.features import SiftParams
from tests.local.conftest import N_REFERENCES, crop, iou, jpeg, paste, photo

PASTE_BOX = (300, 180, 540, 360)  # where reference 7 lands in a 640x480 distractor photo


@pytest.fixture(scope="module")
def queries(references):
    """name -> (query image, true reference row or -1)."""
    return {
        "heavy crop": (jpeg(crop(references[3], (150, 100, 400, 300), scale=1.3)), 3),
        "paste": (jpeg(paste(references[7], photo(5000, 640, 480), PASTE_BOX)), 7),
        "flip": (jpeg(np.ascontiguousarray(references[11][:, ::-1])), 11),
        "flipped crop": (jpeg(crop(references[12][:, ::-1], (60, 40, 460, 340), scale=0.8)), 12),
        "non-copy": (jpeg(photo(5001)), -1),
    }


@pytest.fixture(scope="module")
def results(branch, searcher, queries):
    found = searcher.search(branch.extract([image for image, _ in queries.values()], query=True), k=5)
    return dict(zip(queries, found))


@pytest.mark.parametrize("name", ["heavy crop", "paste", "flip", "flipped crop"])
def test_copy_is_found_first_with_many_inliers(queries, results, name):
    candidates = results[name]
    assert candidates.rows[0] == queries[name][1]
    assert candidates.extra["inliers"][0] >= 20
    assert candidates.scores[0] == candidates.extra["inliers"][0]
    assert np.all(np.diff(candidates.scores) <= 0)
    assert candidates.extra["mirrored"][0] == name.startswith("flip")


def test_non_copy_scores_like_noise(results):
    candidates = results["non-copy"]
    assert len(candidates.rows) == 0 or candidates.scores[0] < 8


def test_verification_locates_the_pasted_region(results):
    assert iou(results["paste"].extra["region"][0], PASTE_BOX) > 0.8


def test_region_of_a_flipped_copy_covers_the_query(queries, results):
    height, width = queries["flip"][0].shape[:2]
    assert iou(results["flip"].extra["region"][0], (0, 0, width, height)) > 0.9


def test_ivf_index_finds_the_same_copies(branch, reference_features, queries, results):
    ivf = LocalBranch(search=SearchParams(flat_max=1000, nprobe=8), threads=2).new_searcher()
    ivf.add(branch.pack(reference_features))
    found = ivf.search(branch.extract([image for image, _ in queries.values()], query=True), k=5)
    assert type(ivf.index).__name__ == "IndexIVFPQFastScan"
    for name, candidates in zip(queries, found):
        if queries[name][1] >= 0:
            assert candidates.rows[0] == results[name].rows[0]


def test_adding_in_chunks_of_any_size_matches_one_chunk(branch, reference_features, searcher, queries):
    features = branch.extract([queries["paste"][0]], query=True)
    chunked = branch.new_searcher()
    for lo, hi in [(0, 1), (1, 1), (1, 25)]:
        chunked.add(branch.pack(reference_features[lo:hi]))
    assert chunked.ntotal == 25 and chunked.search(features, 5)[0].rows[0] == 7
    # adding after a search extends the index in place; rows continue
    chunked.add(branch.pack(reference_features[25:]))
    assert chunked.ntotal == N_REFERENCES
    flip = branch.extract([queries["flip"][0]], query=True)
    assert chunked.search(flip, 5)[0].rows[0] == searcher.search(flip, 5)[0].rows[0] == 11
    assert chunked.nbytes() == searcher.nbytes()


def test_bytes_per_reference_under_8_kb(searcher):
    # nbytes() first: added chunks are joined into the arrays (codes, ...) lazily, at the first search or
    # nbytes(), so on a worker where no search ran before this test `codes` is still empty
    per_reference = searcher.nbytes() / searcher.ntotal
    keypoints = len(searcher.codes) / searcher.ntotal
    assert 100 < keypoints <= SiftParams().max_keypoints
    assert per_reference == pytest.approx(22 * keypoints + 12)  # code 16 B, list 2 B, x y 4 B; size, count
    assert per_reference <= 8192


def test_empty_searcher_and_empty_query(branch):
    empty = branch.new_searcher()
    assert empty.ntotal == 0 and empty.search(branch.extract([photo(1)], query=True), 5)[0].rows.size == 0
    blank = branch.extract([np.full((100, 100, 3), 90, np.uint8)], query=True)
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract([photo(2)])))
    assert searcher.search(blank, 5)[0].rows.size == 0


def test_foreign_chunk_is_refused(branch):
    with pytest.raises(CopyseekError, match="local chunk"):
        branch.new_searcher().add({"vectors": np.zeros((2, 8), np.float32)})
    chunk = branch.pack(branch.extract([photo(3)]))
    chunk["codes"] = np.zeros((len(chunk["codes"]), 32), np.uint8)
    with pytest.raises(CopyseekError, match="codec"):
        branch.new_searcher().add(chunk)


def test_verify_pair_explains_a_match(branch, references, queries):
    query = branch.extract([queries["paste"][0]], query=True)[0]
    verification = branch.verify_pair(query, branch.extract([references[7]])[0])
    assert verification.inliers >= 20 and verification.pairs.shape == (verification.inliers, 4)
    assert iou(verification.region, PASTE_BOX) > 0.8
    with pytest.raises(CopyseekError, match="row"):
        branch.new_searcher().verification(query, 0)


@pytest.mark.parametrize("kwargs", [{"knn": 1}, {"vote_ratio": 0}, {"nprobe": 0}, {"split_nprobe": 0}, {"pair_matching": "yes"}])
def test_rejects_bad_search_parameters(kwargs):
    with pytest.raises(CopyseekError):
        SearchParams(**kwargs)


@pytest.mark.parametrize("flat_max, split", [(1_000_000, 1), (1000, 1), (1000, 4)])
def test_index_built_in_blocks_equals_one_block(branch, reference_features, queries, monkeypatch, flat_max, split):
    from copyseek.local import search

    features = branch.extract([image for image, _ in queries.values()], query=True)
    found = []
    # 777: several blocks, the last one partial; pieces of 1,000 descriptors: IVF lists converted and merged a range at a time
    for block, piece in ((search.BUILD_BLOCK, search.PIECE), (777, 1000)):
        monkeypatch.setattr(search, "BUILD_BLOCK", block)
        monkeypatch.setattr(search, "PIECE", piece)
        searcher = LocalBranch(search=SearchParams(flat_max=flat_max, nprobe=8, split=split)).new_searcher()
        searcher.add(branch.pack(reference_features))
        found.append(searcher.search(features, k=5))
        assert searcher.index.ntotal == len(searcher.codes) > 2 * 777
    for a, b in zip(*found):
        np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_pair_matching_verifies_a_pair_as_if_the_reference_were_alone(branch, reference_features, queries):
    """Within the pair, a copy's inliers do not depend on the other references (collection-wide
    neighbours do: other references take them), and equal verify_pair's (the reference alone)."""
    paired = LocalBranch(search=SearchParams(pair_matching=True), threads=2).new_searcher()
    paired.add(branch.pack(reference_features))
    for name in ("heavy crop", "paste", "flipped crop"):
        image, row = queries[name]
        query = branch.extract([image], query=True)[0]
        within = paired.verification(query, row)
        alone = branch.verify_pair(query, reference_features[row])
        assert alone.inliers >= 20 and abs(within.inliers - alone.inliers) <= 0.03 * alone.inliers  # decoded vs ADC distances
        assert within.mirrored == alone.mirrored
        assert paired.search([query], k=1)[0].rows[0] == row


def test_pair_matching_keeps_non_copies_far_below_copies(branch, reference_features, queries):
    """Chance fits rise within the pair (every reference descriptor is a candidate match; 12 on
    these synthetic photos, 6 on real ones), still far below a copy's."""
    paired = LocalBranch(search=SearchParams(pair_matching=True), threads=2).new_searcher()
    paired.add(branch.pack(reference_features))
    names = ("heavy crop", "paste", "flip", "flipped crop", "non-copy")
    found = dict(zip(names, paired.search(branch.extract([queries[n][0] for n in names], query=True), k=5)))
    weakest_copy = min(found[n].scores[0] for n in names[:-1])
    assert found["non-copy"].scores[0] < weakest_copy / 2


def test_pair_matching_is_a_search_time_parameter(branch, reference_features):
    """Set per run (match --pair-matching), None restores the index's setting, anything else raises."""
    searcher = LocalBranch(search=SearchParams(pair_matching=True), threads=2).new_searcher()
    assert searcher.search_parameters() == {"pair_matching": 1}
    searcher.set_search_parameters(pair_matching=False)
    assert searcher.params.pair_matching is False and searcher.search_parameters() == {"pair_matching": 0}
    searcher.set_search_parameters(pair_matching=None)
    assert searcher.params.pair_matching is True
    with pytest.raises(CopyseekError, match="true or false"):
        searcher.set_search_parameters(pair_matching=2)
    with pytest.raises(CopyseekError, match="no search-time parameter 'nprobe'"):
        searcher.set_search_parameters(nprobe=4)
