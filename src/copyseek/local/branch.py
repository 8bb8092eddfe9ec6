"""The local branch: SIFT keypoints described by RootSIFT (or MKD, KDP: `copyseek.local.describers`),
PQ-coded in the index, searched by votes and verified.

Per reference it stores at most `max_keypoints` x (16 B PQ code + 2 B IVF list + 4 B position) plus
12 B of image size and count: at most 7.0 KB at the default 320 keypoints, against 33 KB for raw
uint8 SIFT.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from functools import partial

import numpy as np

from copyseek.describe.base import Branch, Chunk, Features, take_ragged
from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec, codec_path
from copyseek.local.describers import make_describer
from copyseek.local.features import SiftParams, downscaled_gray
from copyseek.local.search import LocalSearcher, SearchParams, pack_features
from copyseek.local.verify import Verification, VerifyParams
from copyseek.validation import check_images, check_int


class LocalBranch(Branch):
    """Local features of references (`sift`) and of queries (same, but up to `query_max_side`
    pixels and `query_keypoints` keypoints, plus mirrored descriptors so flipped copies match).

    `descriptor` names the patch describer ('rootsift', 'mkd', 'kdp' or a variant such as
    'mkd:pcawt'); each has its own codec. Only `sift`, the describer and the codec shape the index
    (they are the spec); query-side and search settings can change between runs on the same index. `threads` extract images in parallel (0: one per
    core); OpenCV releases the GIL, so threads scale.
    """

    name = "local"
    runtime_options = ("threads",)

    def __init__(
        self,
        sift: SiftParams = SiftParams(),
        query_max_side: int = 640,
        query_keypoints: int = 1024,
        search: SearchParams = SearchParams(),
        verify: VerifyParams = VerifyParams(),
        codec: Codec | None = None,
        threads: int = 0,
        descriptor: str = "rootsift",
    ):
        check_int("local query_max_side", query_max_side, minimum=16)
        check_int("local query_keypoints", query_keypoints, minimum=1)
        check_int("local threads", threads, minimum=0)
        self.describer = make_describer(descriptor)
        self.sift = sift
        self.query_sift = replace(sift, max_side=query_max_side, max_keypoints=query_keypoints)
        self.search_params = search
        self.verify_params = verify
        self.codec = codec if codec is not None else Codec.load(codec_path(self.describer.name))
        if self.codec.input_dim != self.describer.dim:
            raise CopyseekError(
                f"the codec takes {self.codec.input_dim}-d descriptors, {self.describer.name} gives {self.describer.dim}"
            )
        self.threads = threads or os.cpu_count() or 1

    @classmethod
    def from_options(cls, options: dict) -> "LocalBranch":
        """Build from a flat JSON-able dict whose keys are fields of SiftParams, SearchParams or
        VerifyParams, or query_max_side, query_keypoints, threads, descriptor. Unknown keys are an
        error."""
        options = dict(options)
        params = {
            kind: kind(**{name: options.pop(name) for name in kind.__dataclass_fields__ if name in options})
            for kind in (SiftParams, SearchParams, VerifyParams)
        }
        scalar_names = ("query_max_side", "query_keypoints", "threads")
        scalars = {name: options.pop(name) for name in scalar_names if name in options}
        descriptor = options.pop("descriptor", "rootsift")
        if not isinstance(descriptor, str):
            raise CopyseekError(f"local descriptor must be a name such as 'mkd', got {descriptor!r}")
        if options:
            known = sorted(n for kind in params for n in kind.__dataclass_fields__) + sorted(scalar_names) + ["descriptor"]
            raise CopyseekError(f"unknown local branch option(s) {', '.join(map(repr, sorted(options)))} (known: {', '.join(known)})")
        return cls(
            params[SiftParams], search=params[SearchParams], verify=params[VerifyParams], descriptor=descriptor, **scalars
        )

    @classmethod
    def options_from_spec(cls, spec: dict) -> dict:
        """The options that rebuild what a stored spec records: the SIFT parameters (the keypoint
        budget and sizes an index was built with) and the describer (its 'features'; indexes made
        before describers existed record 'rootsift' there)."""
        options = {name: spec[name] for name in SiftParams.__dataclass_fields__ if name in spec}
        if "features" in spec:
            options["descriptor"] = spec["features"]
        return options

    @property
    def decode_side(self) -> int:
        return max(self.sift.max_side, self.query_sift.max_side)

    def spec(self) -> dict:
        codec = self.codec
        spec = {
            "features": self.describer.name,
            **asdict(self.sift),
            "codec": f"pca{codec.dim},ivf{codec.nlist},pq{codec.m}x{codec.nbits}",
            "codec_fingerprint": codec.fingerprint(),
        }
        if self.describer.fingerprint():  # learned describers: their weights shape the index too
            spec["features_fingerprint"] = self.describer.fingerprint()
        return spec

    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        """Per image: xy (n, 2) float32 keypoints in pixels of the image, desc (n, dim) float32
        projected descriptors, size (2,) int32 (width, height); queries add desc_mirrored (n, dim)."""
        images = check_images(images)
        extract = partial(self._extract_one, query=query)
        if self.threads == 1 or len(images) < 2:
            return [extract(image) for image in images]
        with ThreadPoolExecutor(min(self.threads, len(images))) as pool:
            return list(pool.map(extract, images))

    def _extract_one(self, image: np.ndarray, query: bool) -> Features:
        params = self.query_sift if query else self.sift
        gray, scale = downscaled_gray(image, params.max_side)
        frames, desc, mirrored = self.describer.detect_and_describe(gray, params, mirrored=query)
        features = {
            # Frames are in pixels of the downscaled gray image (pixel centres at integers).
            "xy": ((frames.xy + 0.5) / scale - 0.5).astype(np.float32),
            "desc": self.codec.project(desc),
            "size": np.array([image.shape[1], image.shape[0]], np.int32),
        }
        if query:
            features["desc_mirrored"] = self.codec.project(mirrored)
        return features

    def pack(self, features: list[Features]) -> Chunk:
        return pack_features(self.codec, features)

    def take(self, chunk: Chunk, keep: np.ndarray) -> Chunk:
        return take_ragged(chunk, keep, ("codes", "lists", "xy"))

    def new_searcher(self) -> LocalSearcher:
        return LocalSearcher(self.codec, self.search_params, self.verify_params)

    def verify_pair(self, query: Features, reference: Features) -> Verification:
        """Verify one pair as a search would (e.g. to explain a match): the reference alone in a
        searcher. `query` from extract(query=True), `reference` from extract()."""
        searcher = self.new_searcher()
        searcher.add(self.pack([reference]))
        return searcher.verification(query, 0)
