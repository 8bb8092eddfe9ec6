"""The descriptor codec: RootSIFT (128-d) -> PCA + rotation (dim) -> IVF list + product-quantization code.

The codec is trained once per describer, offline, on its descriptors of procedural images
(`copyseek.synthetic`, fixed seeds) and shipped beside this file (`codec.npz` for RootSIFT,
`codec-<describer>.npz` for the others, e.g. `codec-mkd-lw.npz`); on real photos it
finds true correspondences as well as a codec trained on photos does (docs/local.md). A fixed codec
lets references be added in chunks of any size (even one image) from the first chunk on, with no
training step and no codec state in an index; an index records the codec's fingerprint in its spec.
Regenerate it with `python -m copyseek.local.codec [DESCRIBER [IMAGES [NLIST]]]` (a new fingerprint: indexes built with the old
codec then refuse the new one).

Each descriptor is stored as its coarse (IVF) list and a plain Faiss `ProductQuantizer` code (no
residual). Knowing the lists up front, a searcher builds its IVF index from stored bytes alone, in
time linear in the number of descriptors, with no k-means and no assignment at load time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError

CODEC_PATH = Path(__file__).with_name("codec.npz")
SYNTHETIC_IMAGES = 1500


def codec_path(describer: str) -> Path:
    """The shipped codec of a describer (resolved name: 'rootsift', 'mkd:lw', ...)."""
    if describer == "rootsift":
        return CODEC_PATH
    return CODEC_PATH.with_name(f"codec-{describer.replace(':', '-')}.npz")
ARRAYS = ("mean", "projection", "centroids", "coarse")


@dataclass(frozen=True)
class Codec:
    """mean:       (d,) float32 descriptor mean (d = 128 for RootSIFT).
    projection: (dim, d) float32 with orthonormal rows (PCA then a random rotation).
    centroids:  (m, 2**nbits, dim // m) float32 PQ sub-quantizer centroids.
    coarse:     (nlist, dim) float32 IVF list centroids.
    """

    mean: np.ndarray
    projection: np.ndarray
    centroids: np.ndarray
    coarse: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def input_dim(self) -> int:
        """Dimension of the descriptors the codec takes."""
        return int(self.projection.shape[1])

    @property
    def m(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def nbits(self) -> int:
        return int(self.centroids.shape[1]).bit_length() - 1

    @property
    def nlist(self) -> int:
        return int(self.coarse.shape[0])

    @property
    def code_size(self) -> int:
        """Bytes per PQ code."""
        return (self.m * self.nbits + 7) // 8

    def fingerprint(self) -> str:
        """Short hash of the codec's arrays, for an index's spec."""
        digest = hashlib.sha1()
        for name in ARRAYS:
            digest.update(np.ascontiguousarray(getattr(self, name), np.float32).tobytes())
        return digest.hexdigest()[:16]

    def project(self, desc: np.ndarray) -> np.ndarray:
        """(n, d) descriptors -> (n, dim) float32 in the codec's space."""
        return ((desc - self.mean) @ self.projection.T).astype(np.float32)

    @cached_property
    def quantizer(self):
        """faiss.ProductQuantizer holding `centroids`."""
        import faiss

        pq = faiss.ProductQuantizer(self.dim, self.m, self.nbits)
        faiss.copy_array_to_vector(np.ascontiguousarray(self.centroids, np.float32).ravel(), pq.centroids)
        return pq

    @cached_property
    def coarse_index(self):
        """faiss.IndexFlatL2 over `coarse`: the IVF quantizer."""
        import faiss

        index = faiss.IndexFlatL2(self.dim)
        index.add(np.ascontiguousarray(self.coarse, np.float32))
        return index

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) projected descriptors -> (n, code_size) uint8 PQ codes."""
        if len(x) == 0:
            return np.zeros((0, self.code_size), np.uint8)
        return self.quantizer.compute_codes(np.ascontiguousarray(x, np.float32))

    def assign(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) projected descriptors -> (n,) int64 nearest coarse list."""
        if len(x) == 0:
            return np.zeros(0, np.int64)
        return self.coarse_index.search(np.ascontiguousarray(x, np.float32), 1)[1][:, 0]

    def save(self, path: Path, dtype=np.float32) -> None:
        """dtype float16 halves the file; the codec is then the float32 values loaded back."""
        np.savez(path, **{name: getattr(self, name).astype(dtype) for name in ARRAYS})

    @classmethod
    def load(cls, path: Path = CODEC_PATH) -> "Codec":
        try:
            with np.load(path) as data:
                return cls(*(data[name].astype(np.float32) for name in ARRAYS))
        except (OSError, KeyError, ValueError) as exc:
            raise CopyseekError(f"cannot read the local-feature codec {path}: {exc}") from exc


def train_codec(
    desc: np.ndarray, dim: int = 64, m: int = 32, nbits: int = 4, nlist: int = 4096, seed: int = 0
) -> Codec:
    """Train PCA to `dim`, a random rotation, a PQ of m sub-quantizers of nbits and nlist IVF lists
    on (n, d) descriptors (n of at least 39 x nlist for well-trained lists).

    The rotation spreads the PCA variance evenly over the PQ's sub-spaces (PCA alone puts most of it
    in the first ones, which wastes the others' bits).
    """
    import faiss

    if dim % m or nbits not in (4, 8) or (m * nbits) % 8:
        raise CopyseekError(f"codec needs dim ({dim}) a multiple of m ({m}), nbits 4 or 8, whole bytes per code")
    if not 1 <= nlist <= min(len(desc), 1 << 16):
        raise CopyseekError(f"codec nlist must be between 1 and min(65536, {len(desc)} descriptors), got {nlist}")
    x = desc.astype(np.float64)
    mean = x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    pca = eigenvectors[:, np.argsort(eigenvalues)[::-1][:dim]].T  # (dim, d)
    rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
    projection = (rotation @ pca).astype(np.float32)
    projected = ((x - mean) @ projection.T).astype(np.float32)
    pq = faiss.ProductQuantizer(dim, m, nbits)
    pq.cp.seed = seed
    pq.train(projected)
    centroids = faiss.vector_to_array(pq.centroids).reshape(m, 2**nbits, dim // m)
    kmeans = faiss.Kmeans(dim, nlist, niter=20, seed=seed, max_points_per_centroid=256)
    kmeans.train(projected)
    return Codec(mean.astype(np.float32), projection, centroids, kmeans.centroids)


def synthetic_sample(images: int = SYNTHETIC_IMAGES, seed: int = 1, describer: str = "rootsift") -> np.ndarray:
    """(n, d) descriptors of `images` procedural images of random sizes, at the default SiftParams."""
    from copyseek.local.describers import make_describer
    from copyseek.local.features import SiftParams, downscaled_gray
    from copyseek.progress import progress_bar
    from copyseek.synthetic import synthetic_photo

    rng = np.random.default_rng(seed)
    params = SiftParams()
    describe = make_describer(describer)
    descs = []
    with progress_bar(images, f"{describer} of synthetic images") as bar:
        for _ in range(images):
            image = synthetic_photo(rng, int(rng.integers(256, 640)), int(rng.integers(256, 512)))
            gray, _ = downscaled_gray(np.asarray(image), params.max_side)
            descs.append(describe.detect_and_describe(gray, params)[1])
            bar.update(1)
    return np.concatenate(descs)


if __name__ == "__main__":
    import sys

    from copyseek.local.describers import resolve_name

    name = resolve_name(sys.argv[1] if len(sys.argv) > 1 else "rootsift")
    images = int(sys.argv[2]) if len(sys.argv) > 2 else SYNTHETIC_IMAGES
    nlist = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    path = codec_path(name)
    sample = synthetic_sample(images, describer=name)
    train_codec(sample, nlist=nlist).save(path, np.float16 if name != "rootsift" else np.float32)
    codec = Codec.load(path)
    print(f"wrote {path} (pca{codec.dim},ivf{codec.nlist},pq{codec.m}x{codec.nbits}, fingerprint {codec.fingerprint()})")
