import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.describers import DEFAULT_VARIANTS, FAMILIES, make_describer, resolve_name
from copyseek.local.features import SiftParams, detect_frames, downscaled_gray
from copyseek.local.patches import mirror_frames
from tests.local.conftest import photo

SHIPPED = ["rootsift", "mkd:raw", "mkd:pcawt", "mkd:lw", "kdp:polar", "kdp:cart", "kdp:fc"]
PARAMS = SiftParams(max_keypoints=48)


@pytest.fixture(scope="module")
def gray():
    return downscaled_gray(photo(11), 448)[0]


def test_names_resolve_to_the_shipped_variants():
    assert resolve_name("mkd") == f"mkd:{DEFAULT_VARIANTS['mkd']}" and resolve_name("kdp:cart") == "kdp:cart"
    assert resolve_name("rootsift") == "rootsift" and set(FAMILIES) >= {"rootsift", "mkd", "kdp"}
    with pytest.raises(CopyseekError, match="unknown local descriptor"):
        resolve_name("surf")
    with pytest.raises(CopyseekError, match="variant"):
        make_describer("mkd:zca")


@pytest.mark.parametrize("name", SHIPPED)
def test_contract_shapes_norms_and_mirrors(name, gray):
    """Every shipped describer: (n, dim) unit descriptors, and its mirrored descriptors equal the
    descriptors of the mirrored image at the mirrored frames."""
    describer = make_describer(name)
    assert describer.name == name
    frames, desc, mirrored = describer.detect_and_describe(gray, PARAMS, mirrored=True)
    assert desc.shape == mirrored.shape == (len(frames), describer.dim) and desc.dtype == np.float32
    assert np.allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-4)
    flipped = np.ascontiguousarray(gray[:, ::-1])
    direct, none = describer.describe(flipped, mirror_frames(frames, gray.shape[1]))
    assert none is None
    # Matching rows: the mirrored descriptor is far closer to its own keypoint than to the others.
    similarity = mirrored @ direct.T
    assert (similarity.argmax(axis=1) == np.arange(len(frames))).mean() > 0.9
    empty = describer.describe(gray, frames.select(np.zeros(0, int)), mirrored=True)
    assert empty[0].shape == empty[1].shape == (0, describer.dim)


def test_rootsift_of_given_frames_equals_the_detectors_own(gray):
    rootsift = make_describer("rootsift")
    frames, desc, _ = rootsift.detect_and_describe(gray, PARAMS)
    assert np.array_equal(rootsift.describe(gray, frames)[0], desc)
    assert np.array_equal(detect_frames(gray, PARAMS).xy, frames.xy)


def test_learned_describers_have_a_fingerprint():
    assert make_describer("rootsift").fingerprint() == ""
    assert len(make_describer("mkd:lw").fingerprint()) == 16 and len(make_describer("kdp").fingerprint()) == 16


def test_kdp_from_a_training_runs_file_describes_with_its_own_weights(tmp_path, gray):
    import torch

    from copyseek.local.describers import kdp_from_file
    from copyseek.local.kdp import KDPNet, save_weights

    torch.manual_seed(3)
    save_weights(KDPNet("cart").eval(), tmp_path / "kdp_cart.npz", support=9.0)
    loaded = kdp_from_file(tmp_path / "kdp_cart.npz", "kdp:cart")
    shipped = make_describer("kdp:cart")
    assert loaded.name == "kdp:cart" and loaded.support == 9.0 and loaded.fingerprint() != shipped.fingerprint()
    frames = detect_frames(gray, PARAMS)
    mine, theirs = loaded.describe(gray, frames)[0], shipped.describe(gray, frames)[0]
    assert mine.shape == theirs.shape and not np.allclose(mine, theirs, atol=1e-2)
    with pytest.raises(CopyseekError, match="cannot read KDP weights"):
        kdp_from_file(tmp_path / "missing.npz", "kdp:cart")


def test_mkd_mirrors_by_signs_exactly_as_describing_reversed_patches(gray):
    mkd = make_describer("mkd:lw")
    signs = mkd.raw_mirror_signs
    assert signs is not None and set(np.unique(signs)) == {-1.0, 1.0}
    frames = detect_frames(gray, PARAMS)
    desc, by_signs = mkd.describe(gray, frames, mirrored=True)
    mkd.__dict__["raw_mirror_signs"] = None  # the fallback: describe the row-reversed patches
    again, by_patches = mkd.describe(gray, frames, mirrored=True)
    assert np.array_equal(desc, again) and np.allclose(by_signs, by_patches, atol=1e-4)
