"""The HOW branch: HOW local descriptors aggregated by ASMK into one binary code per visual word.

Per reference it stores, for each visual word its descriptors fall in, a word id (2 B) and a
dim-bit code (16 B at dim 128), plus 4 B of count: ~18 B x words used (at most `features`).
Queries: more descriptors may be kept, each assigned to several words, and the mirrored image
too (so that flipped copies match); a reference's score is the larger of the two.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from copyseek.describe.base import Branch, Chunk, Features, take_ragged
from copyseek.errors import CopyseekError
from copyseek.how.asmk import AsmkParams, AsmkSearcher, Codebook, pack_words
from copyseek.how.features import HowExtractor, HowParams
from copyseek.validation import check_images

PACKAGED = Path(__file__).resolve().parent.parent / "models"
SHIPPED_MODEL = "copyseek-how"
"""The HOW model shipped in the package (models/copyseek-how.onnx + .json + .codebook.npz)."""


def resolve_model(spec: str) -> Path:
    """'copyseek-how' (shipped) or a path to an exported HOW ONNX model."""
    path = PACKAGED / f"{SHIPPED_MODEL}.onnx" if spec == SHIPPED_MODEL else Path(os.path.expanduser(spec))
    if not path.is_file():
        raise CopyseekError(f"HOW model not found: {path}")
    return path


def default_codebook(model: Path) -> Path:
    """The codebook written beside a model by training: model.onnx -> model.codebook.npz."""
    return model.with_suffix(".codebook.npz")


@dataclass(frozen=True)
class QueryParams:
    """features: local descriptors kept per query (0: as references); flip: also search with the
    mirrored query."""

    features: int = 0
    flip: bool = True

    def __post_init__(self) -> None:
        if self.features < 0:
            raise CopyseekError(f"HOW query_features must be >= 0, got {self.features}")


class HowBranch(Branch):
    """HOW descriptors of references and queries, ASMK-aggregated, searched through an inverted file.

    The model, codebook and HowParams shape the index (they are the spec); QueryParams and
    AsmkParams may change between runs on the same index. `threads` describe images in parallel.
    """

    name = "how"
    runtime_options = ("threads",)

    def __init__(self, model: str = SHIPPED_MODEL, codebook: str | None = None, params: HowParams = HowParams(),
                 query: QueryParams = QueryParams(), asmk: AsmkParams = AsmkParams(), threads: int = 0):
        self.model_spec = model
        path = resolve_model(model)
        self.extractor = HowExtractor(path)
        codebook_path = Path(codebook) if codebook else default_codebook(path)
        if not codebook_path.is_file():
            raise CopyseekError(f"HOW codebook not found: {codebook_path} (training writes one beside the model)")
        self.codebook = Codebook.load(codebook_path)
        if self.codebook.dim != self.extractor.dim:
            raise CopyseekError(f"codebook {codebook_path} is {self.codebook.dim}-d; the model gives {self.extractor.dim}-d")
        self.params, self.query, self.asmk = params, query, asmk
        self.query_params = replace(params, features=query.features or params.features)
        self.threads = threads or os.cpu_count() or 1

    @classmethod
    def from_options(cls, options: dict) -> "HowBranch":
        """Build from a flat JSON-able dict: model, codebook, threads, and the fields of HowParams
        (scales as '1,0.5' or a list), AsmkParams and QueryParams (as query_features, query_flip).
        Unknown keys are an error."""
        options = dict(options)
        if "scales" in options:
            options["scales"] = HowParams.parse_scales(options["scales"])
        groups = {kind: {f.name: options.pop(f.name) for f in fields(kind) if f.name in options}
                  for kind in (HowParams, AsmkParams)}
        query = {name: options.pop(f"query_{name}") for name in ("features", "flip") if f"query_{name}" in options}
        scalars = {name: options.pop(name) for name in ("model", "codebook", "threads") if name in options}
        if options:
            raise CopyseekError(f"unknown how branch option(s) {', '.join(map(repr, sorted(options)))}")
        return cls(params=HowParams(**groups[HowParams]), asmk=AsmkParams(**groups[AsmkParams]),
                   query=QueryParams(**query), **scalars)

    @classmethod
    def options_from_spec(cls, spec: dict) -> dict:
        """The HowParams a spec records (image size, scales, descriptors per image)."""
        return {name: spec[name] for name in HowParams.__dataclass_fields__ if name in spec}

    @property
    def decode_side(self) -> int:
        return int(np.ceil(self.params.max_side * max(self.params.scales)))

    def spec(self) -> dict:
        from copyseek.describe.models import file_fingerprint

        return {
            "features": "how",
            "model": self.model_spec if self.model_spec == SHIPPED_MODEL else self.extractor.path.name,
            "fingerprint": file_fingerprint(self.extractor.path),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.params).items()},
            "codebook": f"asmk{self.codebook.size}x{self.codebook.dim}bit",
            "codebook_fingerprint": self.codebook.fingerprint(),
        }

    def describe(self, image: np.ndarray, *, query: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One image's top-n HOW descriptors: (desc (n, dim), xy (n, 2) pixels, attention (n,))."""
        return self.extractor(image, self.query_params if query else self.params)

    def aggregate(self, desc: np.ndarray, *, query: bool) -> tuple[np.ndarray, np.ndarray]:
        """(n, dim) descriptors -> ASMK (words (w,), bits (w, dim / 8)); queries use multiple assignment."""
        return self.codebook.aggregate(desc, self.codebook.assign(desc, self.asmk.query_assignments if query else 1))

    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        """Per image: words (w,) int64, bits (w, dim / 8) uint8, xy (n, 2) float32 positions of the
        descriptors in pixels, size (2,) int32 (width, height); queries with flip add words_mirrored
        and bits_mirrored."""
        images = check_images(images)
        if self.threads == 1 or len(images) < 2:
            return [self._extract_one(image, query) for image in images]
        with ThreadPoolExecutor(min(self.threads, len(images))) as pool:
            return list(pool.map(lambda image: self._extract_one(image, query), images))

    def _extract_one(self, image: np.ndarray, query: bool) -> Features:
        desc, xy, _ = self.describe(image, query=query)
        words, bits = self.aggregate(desc, query=query)
        features = {"words": words, "bits": bits, "xy": xy, "size": np.array([image.shape[1], image.shape[0]], np.int32)}
        if query and self.query.flip:
            mirrored, _, _ = self.describe(np.ascontiguousarray(image[:, ::-1]), query=True)
            features["words_mirrored"], features["bits_mirrored"] = self.aggregate(mirrored, query=True)
        return features

    def pack(self, features: list[Features]) -> Chunk:
        return pack_words(features, self.codebook.size, self.codebook.dim)

    def take(self, chunk: Chunk, keep: np.ndarray) -> Chunk:
        return take_ragged(chunk, keep, ("words", "bits"))

    def new_searcher(self) -> AsmkSearcher:
        return AsmkSearcher(self.codebook.size, self.codebook.dim, self.asmk)
