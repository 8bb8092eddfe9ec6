"""Embeddings of the teacher a student is distilled from: any model `copyseek.describe.models.load_model`
loads (sscd, onnx:PATH, torchscript:PATH...), run by onnxruntime or torch."""

from __future__ import annotations

import numpy as np
from PIL import Image

from copyseek.describe.models import GlobalModel


def teacher_embeddings(teacher: GlobalModel, views: list[Image.Image], batch_size: int = 32) -> np.ndarray:
    """The teacher's (N, D) float32 unit embeddings of N RGB views, each resized its own way."""
    return embed_resized(teacher, [teacher.preprocess.apply(np.asarray(v.convert("RGB"))) for v in views], batch_size)


def embed_resized(teacher: GlobalModel, inputs: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """(N, D) embeddings of N (h, w, 3) uint8 arrays already resized by teacher.preprocess."""
    out = np.zeros((len(inputs), teacher.dim), np.float32)
    # Same-size inputs go through together ("short" resizing keeps aspect ratios, so sizes vary).
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, array in enumerate(inputs):
        by_shape.setdefault(array.shape, []).append(i)
    for rows in by_shape.values():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            out[chunk] = teacher.embed(np.stack([inputs[i] for i in chunk]))
    return out
