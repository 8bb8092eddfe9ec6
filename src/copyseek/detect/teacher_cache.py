"""The teacher's outputs cached over a training pool: a distilled student then pays no teacher
forward pass per step (`--set teacher_cache=DIR`).

    cache = TeacherCache.open_or_build(DIR, teacher, pool)     # built once: every sample and its mirror
    t_out = cache.lookup(indices, mirrored)                     # per batch: as hgd.teacher_outputs

On disk, DIR holds float16 arrays read memory-mapped: stage0.npy .. stage4.npy, (N, 2, C_i, h_i, w_i),
and evidence.npy, (N, 2, 1, S/4, S/4), where index 1 of the second axis is the sample mirrored as
`Sample.flipped` makes it (the teacher is not mirror-symmetric, so the mirror is run, not flipped);
and meta.json with fingerprints of the pool and of the teacher's weights: a cache made for other
data or another teacher is refused, not silently used.
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

from copyseek.detect.data import Sample
from copyseek.detect.hgd import teacher_outputs
from copyseek.detect.model import DetectorNet
from copyseek.errors import CopyseekError

STAGES = 5
"""Maps in `out["stages"]`: four backbone stages and the neck."""


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
        self.stages = [np.load(path / f"stage{i}.npy", mmap_mode="r") for i in range(STAGES)]
        self.evidence = np.load(path / "evidence.npy", mmap_mode="r")

    def __len__(self) -> int:
        return int(self.meta["n"])

    def lookup(self, indices: np.ndarray, mirrored: np.ndarray) -> dict:
        """indices (B,) into the pool, mirrored (B,) bool -> {"stages": five (B, C_i, h_i, w_i),
        "evidence": (B, 1, S/4, S/4)} float32 tensors, as `teacher_outputs` on the batch's images."""
        rows, sides = np.asarray(indices, dtype=np.int64), np.asarray(mirrored, dtype=np.int64)

        def read(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(array[rows, sides]).float()  # torch converts float16 faster than numpy

        return {"stages": [read(a) for a in self.stages], "evidence": read(self.evidence)}

    @classmethod
    def build(cls, path: str | Path, teacher: DetectorNet, pool: Sequence[Sample], batch: int = 64,
              progress: bool = False) -> TeacherCache:
        """Run the (eval-mode) teacher over every pool sample and its mirror; write DIR atomically."""
        from copyseek.progress import progress_bar

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        teacher = teacher.eval()
        started = time.process_time()
        arrays: list[np.ndarray] = []
        with progress_bar(len(pool), "teacher cache", disable=not progress) as bar:
            for start in range(0, len(pool), batch):
                chunk = pool[start : start + batch]
                for side, samples in enumerate((chunk, [s.flipped() for s in chunk])):
                    out = teacher_outputs(teacher, _images(samples))
                    maps = [*out["stages"], out["evidence"]]
                    if not arrays:
                        names = [f"stage{i}.npy" for i in range(STAGES)] + ["evidence.npy"]
                        arrays = [np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.float16,
                                                            shape=(len(pool), 2, *m.shape[1:]))
                                  for name, m in zip(names, maps)]
                    for array, m in zip(arrays, maps):
                        array[start : start + len(chunk), side] = m.numpy().astype(np.float16)
                bar.update(len(chunk))
        for array in arrays:
            array.flush()
        del arrays
        meta = {"n": len(pool), "pool": pool_fingerprint(pool), "teacher": net_fingerprint(teacher),
                "build_cpu_s": round(time.process_time() - started, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return cls(path)

    @classmethod
    def open_or_build(cls, path: str | Path, teacher: DetectorNet, pool: Sequence[Sample],
                      progress: bool = False) -> TeacherCache:
        """The cache at `path` if it was made for this pool and teacher; built there if absent;
        a CopyseekError if it exists for other data or another teacher."""
        if not (Path(path) / "meta.json").is_file():
            return cls.build(path, teacher, pool, progress=progress)
        cache = cls(path)
        if cache.meta["pool"] != pool_fingerprint(pool) or cache.meta["teacher"] != net_fingerprint(teacher):
            raise CopyseekError(f"teacher cache {path} was made for another pool or teacher: remove it or "
                                f"choose another teacher_cache")
        return cache
