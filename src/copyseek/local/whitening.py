"""Learned whitening of local descriptors, as in MKD ("Understanding and improving kernel local
descriptors", Mukundan, Tolias, Chum, IJCV 2019): unsupervised PCA-whitening with attenuation
('pcawt') or supervised learned whitening from matching pairs ('lw').

- pcawt: centre, rotate onto the top `dims` principal axes, scale each by eigenvalue**(-power / 2)
  (power 1 is plain PCA-whitening; below 1 attenuates the small, noisy components less harshly).
- lw:    centre, whiten the covariance of matching-pair differences (intra-class: what an edit
  changes), then rotate onto the top `dims` principal axes of the descriptors in that space
  (inter-class), as Mikolajczyk & Matas' learned whitening. The pair covariance is shrunk towards a
  multiple of the identity (`shrinkage`) so that its small eigenvalues do not explode: our reading,
  the papers' own regularisation could not be read.

Both end with L2 normalisation. `fit` and `transform` follow scikit-learn's habits (learned state
ends in `_`); `to_arrays` / `from_arrays` store a fitted whitening in a small .npz.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from copyseek.errors import CopyseekError

KINDS = ("pcawt", "lw")


@dataclass(frozen=True)
class WhiteningParams:
    """kind: 'pcawt' or 'lw'; dims: output dimension; power: pcawt's eigenvalue attenuation t
    (scale eigenvalue**(-t/2)); shrinkage: lw's weight of the identity in the pair covariance."""

    kind: str = "pcawt"
    dims: int = 128
    power: float = 0.7
    shrinkage: float = 0.1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CopyseekError(f"unknown whitening {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.dims < 1:
            raise CopyseekError(f"whitening dims must be positive, got {self.dims}")
        if not 0.0 <= self.power <= 1.0:
            raise CopyseekError(f"whitening power must be in [0, 1], got {self.power}")
        if not 0.0 <= self.shrinkage < 1.0:
            raise CopyseekError(f"whitening shrinkage must be in [0, 1), got {self.shrinkage}")


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2 or not np.isfinite(x).all():
        raise CopyseekError(f"whitening needs a finite (n >= 2, d) array of {name}, got shape {x.shape}")
    return x


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _top_eigen(cov: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(dims,) largest eigenvalues (clipped above 0) and their (d, dims) eigenvectors."""
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:dims]
    return np.maximum(values[order], 1e-12), vectors[:, order]


class Whitening:
    """Fit on (n, d) descriptors (and, for 'lw', (m, 2) index pairs of matching rows), then
    transform (n, d) -> (n, min(dims, d)) float32 with unit L2 norm."""

    def __init__(self, params: WhiteningParams = WhiteningParams()):
        self.params = params

    def fit(self, x: np.ndarray, pairs: np.ndarray | None = None) -> "Whitening":
        x = _check(x, "descriptors")
        dims = min(self.params.dims, x.shape[1])
        self.mean_ = x.mean(axis=0)
        centred = x - self.mean_
        if self.params.kind == "pcawt":
            values, vectors = _top_eigen(centred.T @ centred / len(x), dims)
            self.projection_ = vectors * values ** (-self.params.power / 2.0)
            return self
        if pairs is None or len(pairs) < 2:
            raise CopyseekError("'lw' whitening learns from matching pairs: give at least 2 (i, j) index pairs")
        pairs = np.asarray(pairs, np.int64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.min() < 0 or pairs.max() >= len(x):
            raise CopyseekError(f"whitening pairs must be (m, 2) row indices into the {len(x)} descriptors")
        diff = x[pairs[:, 0]] - x[pairs[:, 1]]
        within = diff.T @ diff / len(diff)
        ridge = np.trace(within) / len(within)
        within = (1.0 - self.params.shrinkage) * within + self.params.shrinkage * ridge * np.eye(len(within))
        values, vectors = _top_eigen(within, len(within))
        whiten = vectors * values**-0.5  # within-pair covariance -> identity
        spread = centred @ whiten
        _, rotation = _top_eigen(spread.T @ spread / len(x), dims)
        self.projection_ = whiten @ rotation
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        if not hasattr(self, "projection_"):
            raise CopyseekError("whitening is not fitted: call fit() first or load a stored one")
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.mean_):
            raise CopyseekError(f"whitening expects (n, {len(self.mean_)}) descriptors, got shape {x.shape}")
        return _l2((x - self.mean_) @ self.projection_).astype(np.float32)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The fitted state as arrays named prefix_mean, prefix_projection, prefix_params."""
        params = np.array([str(v) for v in asdict(self.params).values()])
        return {
            f"{prefix}_mean": self.mean_.astype(np.float32),
            f"{prefix}_projection": self.projection_.astype(np.float32),
            f"{prefix}_params": params,
        }

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "Whitening":
        try:
            kind, dims, power, shrinkage = (str(v) for v in arrays[f"{prefix}_params"])
            whitening = cls(WhiteningParams(kind, int(dims), float(power), float(shrinkage)))
            whitening.mean_ = np.asarray(arrays[f"{prefix}_mean"], np.float64)
            whitening.projection_ = np.asarray(arrays[f"{prefix}_projection"], np.float64)
        except (KeyError, ValueError) as exc:
            raise CopyseekError(f"stored whitening {prefix!r} is missing or malformed: {exc}") from exc
        return whitening
