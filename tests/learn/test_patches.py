import cv2
import numpy as np
import pytest
import torch

from copyseek.errors import CopyseekError
from copyseek.learn.patches import fit_whitening, hardest_triplet_loss, mine, photo_list, train_kdp
from copyseek.local.whitening import Whitening
from tests.local.conftest import photo


@pytest.fixture(autouse=True)
def _one_thread():
    # Several torch threads spin against each other on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_hardest_triplet_loss_equals_a_plain_loop():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    p = torch.nn.functional.normalize(a + 0.3 * torch.randn(6, 8), dim=1)
    expected = 0.0
    for i in range(6):
        positive = (a[i] - p[i]).norm()
        negative = min(min((a[i] - p[j]).norm(), (a[j] - p[i]).norm()) for j in range(6) if j != i)
        expected += max(0.0, 1.0 + positive - negative)
    assert torch.isclose(hardest_triplet_loss(a, p), torch.tensor(float(expected) / 6), atol=1e-5)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(4):
        path = folder / f"p{i}.png"
        cv2.imwrite(str(path), photo(40 + i, 320, 240)[:, :, ::-1])
        paths.append(path)
    (folder / "list.txt").write_text("".join(f"{p}\n" for p in paths))
    return paths


def test_mined_patches_and_a_short_training(photos):
    assert photo_list(str(photos[0].parent / "list.txt")) == photos
    both = mine(photos, [6, 9], max_frames=12, progress=False)
    mined = both[6]
    assert np.array_equal(mined.pair, both[9].pair) and not np.array_equal(mined.anchors, both[9].anchors)
    assert mined.anchors.shape == mined.positives.shape and mined.anchors.shape[1:] == (32, 32)
    assert mined.anchors.dtype == np.uint8 and mined.validation.any() and not mined.validation.all()
    # True pairs look alike, random pairs do not.
    a, p = mined.anchors.astype(float), mined.positives.astype(float)
    assert np.abs(a - p).mean() < np.abs(a - p[np.random.default_rng(0).permutation(len(p))]).mean()
    net, log = train_kdp(mined, "cart", steps=5, batch=16, progress=False)
    assert not net.training and len(log) == 5 and "validation mAP" in log[-1]


def test_kdp_command_trains_with_the_given_seed_on_the_same_cache(photos, tmp_path):
    from copyseek.learn.patches import main

    images = str(photos[0].parent / "list.txt")
    argv = ["kdp", "--images", images, "--heads", "cart", "--steps", "2", "--batch", "8", "--max-frames", "8"]
    argv += ["--support", "6", "--cache", str(tmp_path / "mined.npz")]
    weights = {}
    for seed in (0, 1, 0):
        out = tmp_path / f"run{len(weights)}"
        out.mkdir()
        main(argv + ["--out", str(out), "--seed", str(seed)])
        with np.load(out / "kdp_cart.npz") as data:
            weights[len(weights)] = {k: data[k] for k in data.files}
    keys = [k for k in weights[0] if weights[0][k].dtype.kind == "f" and weights[0][k].size > 1]
    assert keys and all(np.array_equal(weights[0][k], weights[2][k]) for k in keys)
    assert not all(np.array_equal(weights[0][k], weights[1][k]) for k in keys)


def test_whitening_fit_writes_both_whitenings(photos, tmp_path):
    table = fit_whitening(photos, [6, 8], tmp_path / "w.npz", progress=False)
    assert table.count("\n") == 3  # header, rule, two supports
    with np.load(tmp_path / "w.npz") as data:
        assert float(data["support"]) in (6.0, 8.0)
        for kind in ("pcawt", "lw"):
            assert Whitening.from_arrays(data, kind).transform(np.ones((1, 238))).shape == (1, 128)


def test_mining_nothing_is_refused():
    with pytest.raises(CopyseekError, match="no photos"):
        mine([], [6])
