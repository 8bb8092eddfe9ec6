import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec, train_codec


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.load()


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.abs(np.random.default_rng(seed).normal(size=(n, 128))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_shipped_codec_is_16_bytes_per_descriptor(codec):
    assert (codec.dim, codec.m, codec.nbits, codec.code_size, codec.nlist) == (64, 32, 4, 16, 4096)
    assert np.allclose(codec.projection @ codec.projection.T, np.eye(64), atol=1e-4)


def test_codes_and_lists(codec):
    x = codec.project(unit_rows(500))
    codes, lists = codec.encode(x), codec.assign(x)
    assert codes.shape == (500, 16) and codes.dtype == np.uint8
    assert lists.shape == (500,) and 0 <= lists.min() <= lists.max() < 4096
    nearest = np.argmin((codec.coarse**2).sum(axis=1) - 2 * x @ codec.coarse.T, axis=1)
    assert np.mean(lists == nearest) > 0.99


def test_quantization_error_is_small_against_descriptor_distances(codec):
    x = codec.project(unit_rows(2000))
    error = np.linalg.norm(codec.quantizer.decode(codec.encode(x)) - x, axis=1)
    spread = np.linalg.norm(x - x[::-1], axis=1)
    assert np.median(error) < 0.5 * np.median(spread)


def test_empty_input(codec):
    assert codec.encode(np.zeros((0, 64), np.float32)).shape == (0, 16)
    assert codec.assign(np.zeros((0, 64), np.float32)).shape == (0,)


@pytest.fixture
def one_faiss_thread():
    """Tiny k-means runs far faster on one OpenMP thread than on two busy ones (a shared CI box)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def test_training_and_fingerprint(tmp_path, one_faiss_thread):
    codec = train_codec(unit_rows(3000), dim=32, m=16, nbits=4, nlist=64)
    assert (codec.dim, codec.code_size) == (32, 8)
    codec.save(tmp_path / "c.npz")
    again = Codec.load(tmp_path / "c.npz")
    assert again.fingerprint() == codec.fingerprint() != Codec.load().fingerprint()


@pytest.mark.parametrize("kwargs", [{"dim": 60, "m": 32}, {"nbits": 6}, {"m": 3, "dim": 48, "nbits": 4}])
def test_training_rejects_bad_shapes(kwargs):
    with pytest.raises(CopyseekError):
        train_codec(unit_rows(500), **kwargs)


def test_missing_codec_file_is_a_clear_error(tmp_path):
    with pytest.raises(CopyseekError, match="codec"):
        Codec.load(tmp_path / "nope.npz")
