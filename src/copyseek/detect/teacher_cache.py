"""The teacher's outputs cached over a training pool: a distilled student then pays no teacher
forward pass per step (`--set teacher_cache=DIR`).

    cache = TeacherCache.open_or_build(DIR, teacher, pool)     # built once: every sample and its mirror
    t_out = cache.lookup(indices, mirrored)                     # per batch: as hgd.teacher_outputs

On disk, DIR holds arrays read memory-mapped: stage0.npy .. stage4.npy, (N, 2, C_i, h_i, w_i),
evidence.npy, (N, 2, 1, S/4, S/4), and heads.npy, (N, 2, C + 4, S/4, S/4) (`hgd.head_maps`), where
index 1 of the second axis is the sample mirrored as `Sample.flipped` makes it (the teacher is not
mirror-symmetric, so the mirror is run, not flipped); and meta.json with the storage type and
fingerprints of the pool and of the teacher's weights: a cache made for other data, another
teacher or in another type is refused, not silently used, and one made before the head maps were
kept asks to be rebuilt.

Storage (`dtype`): "float16", or "int8" at half the size, each map stored as round(x / scale) with
one float32 scale per sample, side and channel (its largest |x| / 127, in NAME.scale.npy, (N, 2,
C_i)): about 1% mean relative error. Why int8: a step reads a whole batch's maps at random, and a
cache larger than the free page cache is read from disk at every step (session 15: 20.6 GB in
float16 for the teacher preset and 20,000 queries, ~0.06-0.1 CPU s of page faults per step, a
third of the student's own step); at 10.3 GB it stays in memory after the first pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from copyseek.detect.data import Sample
from copyseek.detect.hgd import teacher_outputs
from copyseek.detect.model import DetectorNet
from copyseek.errors import CopyseekError

STAGES = 5
"""Maps in `out["stages"]`: four backbone stages and the neck."""

DTYPES = ("float16", "int8")
"""How the maps are stored (see the module docstring)."""

MAP_NAMES = [f"stage{i}" for i in range(STAGES)] + ["evidence", "heads"]


def quantized(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, h, w) float -> int8 values (B, C, h, w) and float32 scales (B, C), x ~ values * scale."""
    scale = np.abs(x).max(axis=(2, 3)).astype(np.float32) / 127.0
    safe = np.where(scale > 0, scale, 1.0)[:, :, None, None]
    return np.clip(np.rint(x / safe), -127, 127).astype(np.int8), scale


def pool_fingerprint(pool: Sequence[Sample]) -> str:
    """sha1 of the pool's images, in order."""
    digest = hashlib.sha1(str(len(pool)).encode())
    for sample in pool:
        digest.update(np.ascontiguousarray(sample.image).data)
    return digest.hexdigest()


def net_fingerprint(net: DetectorNet) -> str:
    """sha1 of a network's weights and buffers."""
    digest = hashlib.sha1()
    for name, value in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _images(samples: Sequence[Sample]) -> torch.Tensor:
    """Samples -> (B, 3, S, S) float in [0, 1], as train.collate makes them."""
    return torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0


class TeacherCache:
    """Memory-mapped teacher outputs over a pool (see the module docstring)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise CopyseekError(f"no teacher cache at {path}")
        self.path = path
        self.meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        self.dtype = self.meta.get("dtype", "float16")  # caches made before int8 storage have no dtype
        missing = [name for name in MAP_NAMES if not (path / f"{name}.npy").is_file()]
        if missing:
            raise CopyseekError(f"teacher cache {path} lacks {', '.join(missing)} (made by an older copyseek?): "
                                f"remove it to have it rebuilt")
        maps = [np.load(path / f"{name}.npy", mmap_mode="r") for name in MAP_NAMES]
        self.stages, self.evidence, self.heads = maps[:STAGES], maps[STAGES], maps[STAGES + 1]
        self.scales = [np.load(path / f"{name}.scale.npy", mmap_mode="r") for name in MAP_NAMES] if self.dtype == "int8" else None

    def __len__(self) -> int:
        return int(self.meta["n"])

    def lookup(self, indices: np.ndarray, mirrored: np.ndarray, locations: dict[int, Tensor | None] | None = None) -> dict:
        """indices (B,) into the pool, mirrored (B,) bool -> {"stages": five (B, C_i, h_i, w_i),
        "evidence": (B, 1, S/4, S/4), "heads": (B, C + 4, S/4, S/4)} float32 tensors, as
        `teacher_outputs` on the batch's images.
        `locations` ({stage: (B, L) flat locations or None}, `Distiller.draw_locations`): those
        stages are read at their L locations only, as (B, C_i, L, 1) maps: a step then reads and
        converts a few percent of the cache's bytes instead of whole maps."""
        rows, sides = np.asarray(indices, dtype=np.int64), np.asarray(mirrored, dtype=np.int64)
        locations = locations or {}

        def read(i: int, array: np.ndarray) -> torch.Tensor:
            at = locations.get(i)
            if at is None:
                values = torch.from_numpy(array[rows, sides]).float()  # torch converts faster than numpy
            else:  # (B, C, L) gathered from the flattened maps, then a map of L x 1 locations
                flat = array.reshape(*array.shape[:3], -1)
                picked = flat[rows[:, None, None], sides[:, None, None], np.arange(flat.shape[2])[None, :, None],
                              at.numpy()[:, None, :]]
                values = torch.from_numpy(picked).float().unsqueeze(-1)
            if self.scales is None:
                return values
            return values.mul_(torch.from_numpy(self.scales[i][rows, sides])[:, :, None, None])

        maps = [read(i, a) for i, a in enumerate([*self.stages, self.evidence, self.heads])]
        return {"stages": maps[:STAGES], "evidence": maps[STAGES], "heads": maps[STAGES + 1]}

    @classmethod
    def build(cls, path: str | Path, teacher: DetectorNet, pool: Sequence[Sample], batch: int = 64,
              progress: bool = False, dtype: str = "float16") -> TeacherCache:
        """Run the (eval-mode) teacher over every pool sample and its mirror; write DIR atomically,
        the maps stored as `dtype` (one of DTYPES)."""
        from copyseek.progress import progress_bar

        check_dtype(dtype)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        teacher = teacher.eval()
        started = time.process_time()
        arrays: list[np.ndarray] = []
        scales: list[np.ndarray] = []

        def open_arrays(maps: list[Tensor]) -> None:
            def array(name: str, dtype: str, shape: tuple) -> np.ndarray:
                return np.lib.format.open_memmap(tmp / name, mode="w+", dtype=dtype, shape=(len(pool), 2, *shape))

            arrays.extend(array(f"{name}.npy", dtype, m.shape[1:]) for name, m in zip(MAP_NAMES, maps))
            if dtype == "int8":
                scales.extend(array(f"{name}.scale.npy", "float32", m.shape[1:2]) for name, m in zip(MAP_NAMES, maps))

        with progress_bar(len(pool), "teacher cache", disable=not progress) as bar:
            for start in range(0, len(pool), batch):
                chunk = pool[start : start + batch]
                rows = slice(start, start + len(chunk))
                for side, samples in enumerate((chunk, [s.flipped() for s in chunk])):
                    out = teacher_outputs(teacher, _images(samples))
                    maps = [*out["stages"], out["evidence"], out["heads"]]
                    if not arrays:
                        open_arrays(maps)
                    for i, m in enumerate(maps):
                        if dtype == "int8":
                            arrays[i][rows, side], scales[i][rows, side] = quantized(m.numpy())
                        else:
                            arrays[i][rows, side] = m.numpy().astype(np.float16)
                bar.update(len(chunk))
        for array in [*arrays, *scales]:
            array.flush()
        del arrays, scales
        meta = {"n": len(pool), "dtype": dtype, "pool": pool_fingerprint(pool), "teacher": net_fingerprint(teacher),
                "build_cpu_s": round(time.process_time() - started, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return cls(path)

    @classmethod
    def open_or_build(cls, path: str | Path, teacher: DetectorNet, pool: Sequence[Sample],
                      progress: bool = False, dtype: str = "float16") -> TeacherCache:
        """The cache at `path` if it was made for this pool and teacher in `dtype`; built there if
        absent; a CopyseekError if it exists for other data, another teacher or in another type."""
        check_dtype(dtype)
        if not (Path(path) / "meta.json").is_file():
            return cls.build(path, teacher, pool, progress=progress, dtype=dtype)
        cache = cls(path)
        if cache.meta["pool"] != pool_fingerprint(pool) or cache.meta["teacher"] != net_fingerprint(teacher):
            raise CopyseekError(f"teacher cache {path} was made for another pool or teacher: remove it or "
                                f"choose another teacher_cache")
        if cache.dtype != dtype:
            raise CopyseekError(f"teacher cache {path} stores {cache.dtype}, not {dtype}: remove it or choose "
                                f"another teacher_cache")
        return cache


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise CopyseekError(f"teacher cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
