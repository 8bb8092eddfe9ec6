import json

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local import LocalBranch, SiftParams
from copyseek.local.codec import Codec
from tests.local.conftest import photo


def test_spec_is_json_and_names_what_shapes_the_index():
    branch = LocalBranch()
    spec = json.loads(json.dumps(branch.spec()))
    assert spec["codec_fingerprint"] == Codec.load().fingerprint() and spec["max_keypoints"] == SiftParams().max_keypoints
    assert LocalBranch(query_keypoints=300, threads=1).spec() == spec
    assert LocalBranch(SiftParams(max_keypoints=300)).spec() != spec


def test_options_build_every_parameter_group():
    branch = LocalBranch.from_options(
        {"max_side": 384, "knn": 8, "nprobe": 4, "model": "homography", "query_keypoints": 500, "threads": 1}
    )
    assert branch.sift.max_side == 384 and branch.query_sift.max_keypoints == 500
    assert (branch.search_params.knn, branch.search_params.nprobe) == (8, 4)
    assert branch.verify_params.model == "homography" and branch.threads == 1
    assert branch.decode_side == 640
    with pytest.raises(CopyseekError, match="unknown local branch option"):
        LocalBranch.from_options({"max_sides": 10})
    with pytest.raises(CopyseekError, match="model"):
        LocalBranch.from_options({"model": "affine3d"})


def test_query_features_add_mirrored_descriptors():
    branch = LocalBranch(threads=1)
    (reference,) = branch.extract([photo(1)])
    (query,) = branch.extract([photo(1)], query=True)
    assert set(reference) == {"xy", "desc", "size"} and reference["size"].tolist() == [512, 384]
    assert query["desc_mirrored"].shape == query["desc"].shape and len(query["xy"]) > len(reference["xy"])


def test_parallel_extraction_equals_serial():
    images = [photo(i, 300, 200) for i in range(4)]
    serial = LocalBranch(threads=1).extract(images)
    parallel = LocalBranch(threads=2).extract(images)
    for a, b in zip(serial, parallel):
        assert np.array_equal(a["xy"], b["xy"]) and np.array_equal(a["desc"], b["desc"])


def test_homography_model_verifies_a_copy():
    branch = LocalBranch.from_options({"model": "homography", "threads": 1})
    image = photo(2)
    (query,) = branch.extract([image[40:300, 60:460]], query=True)
    verification = branch.verify_pair(query, branch.extract([image])[0])
    assert verification.inliers >= 20
    assert np.allclose(verification.region, [0, 0, 400, 260], atol=8)


def test_a_featureless_image_verifies_nothing_instead_of_failing():
    """A flat image has no keypoint: as the reference, its searcher holds no descriptor (Faiss refuses
    k = 0); as the query, it has nothing to match. Both are 0 inliers (dedup and the LP loop verify
    pairs of whatever a folder holds)."""
    branch = LocalBranch(threads=1)
    flat = np.full((200, 240, 3), 128, np.uint8)
    image = photo(2)
    (flat_query,) = branch.extract([flat], query=True)
    (query,) = branch.extract([image], query=True)
    assert branch.verify_pair(query, branch.extract([flat])[0]).inliers == 0
    assert branch.verify_pair(flat_query, branch.extract([image])[0]).inliers == 0
    assert branch.verify_pair(query, branch.extract([image])[0]).inliers >= 20


def test_descriptor_option_is_in_the_spec_and_old_specs_mean_rootsift():
    rootsift = LocalBranch().spec()
    spec = LocalBranch(descriptor="mkd").spec()
    assert rootsift["features"] == "rootsift" and "features_fingerprint" not in rootsift
    assert spec["features"].startswith("mkd:") and len(spec["features_fingerprint"]) == 16
    assert spec["codec_fingerprint"] != rootsift["codec_fingerprint"]  # a codec per describer
    assert LocalBranch.from_options(LocalBranch.options_from_spec(spec)).spec() == spec
    old = {k: v for k, v in rootsift.items()}
    assert LocalBranch.options_from_spec(old)["descriptor"] == "rootsift"
    with pytest.raises(CopyseekError, match="unknown local descriptor"):
        LocalBranch.from_options({"descriptor": "orb"})
    with pytest.raises(CopyseekError, match="codec takes"):
        LocalBranch(descriptor="mkd:raw", codec=Codec.load())


@pytest.mark.parametrize("descriptor", ["mkd", "kdp"])
def test_patch_describers_match_flipped_and_cropped_copies(descriptor):
    branch = LocalBranch(SiftParams(max_keypoints=128), query_keypoints=256, threads=1, descriptor=descriptor)
    references = [photo(20 + i) for i in range(3)]
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract(references)))
    query = np.ascontiguousarray(references[1][30:350, 40:480][:, ::-1])
    (found,) = searcher.search(branch.extract([query], query=True), k=3)
    assert found.rows[0] == 1 and found.extra["mirrored"][0] and found.scores[0] >= 15
