import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.local.whitening import Whitening, WhiteningParams


def _data(n: int = 2000, d: int = 16, seed: int = 0):
    """Classes in d dims with a large nuisance direction inside each matching pair."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n, d)) * np.linspace(3, 0.3, d)
    nuisance = np.zeros(d)
    nuisance[0] = 1.0  # pairs differ mostly along the strongest axis
    a = centres + rng.normal(scale=0.05, size=(n, d)) + rng.normal(scale=3.0, size=(n, 1)) * nuisance
    b = centres + rng.normal(scale=0.05, size=(n, d)) + rng.normal(scale=3.0, size=(n, 1)) * nuisance
    return a, b


def _accuracy(a, b):
    return float(((a @ b.T).argmax(axis=1) == np.arange(len(a))).mean())


def test_pca_whitening_with_power_one_gives_identity_covariance():
    x = np.random.default_rng(0).normal(size=(5000, 8)) * np.arange(1, 9)
    w = Whitening(WhiteningParams("pcawt", dims=4, power=1.0)).fit(x)
    y = (x - w.mean_) @ w.projection_
    assert np.allclose(np.cov(y, rowvar=False), np.eye(4), atol=0.05)
    out = w.transform(x)
    assert out.shape == (5000, 4) and np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_learned_whitening_removes_the_pairs_nuisance():
    a, b = _data()
    x = np.concatenate([a, b])
    pairs = np.stack([np.arange(len(a)), np.arange(len(a)) + len(a)], axis=1)
    lw = Whitening(WhiteningParams("lw", dims=12)).fit(x, pairs)
    pcawt = Whitening(WhiteningParams("pcawt", dims=12)).fit(x)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    raw = _accuracy(unit(a - x.mean(0)), unit(b - x.mean(0)))
    learned = _accuracy(lw.transform(a), lw.transform(b))
    assert learned > 0.99 and learned > raw + 0.1 and learned > _accuracy(pcawt.transform(a), pcawt.transform(b))


def test_round_trip_through_arrays():
    a, b = _data(300)
    w = Whitening(WhiteningParams("pcawt", dims=5, power=0.5)).fit(np.concatenate([a, b]))
    again = Whitening.from_arrays(w.to_arrays("pcawt"), "pcawt")
    assert again.params == w.params and np.allclose(again.transform(a), w.transform(a), atol=1e-5)


def test_bad_parameters_and_input_are_refused():
    with pytest.raises(CopyseekError, match="unknown whitening"):
        WhiteningParams("zca")
    with pytest.raises(CopyseekError, match="power"):
        WhiteningParams(power=2.0)
    with pytest.raises(CopyseekError, match="pairs"):
        Whitening(WhiteningParams("lw")).fit(np.zeros((10, 3)))
    with pytest.raises(CopyseekError, match="not fitted"):
        Whitening().transform(np.zeros((2, 3)))
    with pytest.raises(CopyseekError, match="finite"):
        Whitening().fit(np.full((5, 3), np.nan))
    w = Whitening().fit(np.random.default_rng(0).normal(size=(50, 6)))
    with pytest.raises(CopyseekError, match=r"\(n, 6\)"):
        w.transform(np.zeros((2, 5)))
