"""The local branch: RootSIFT keypoints, PQ-coded in the index, searched by votes and verified.

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

from copyseek.describe.base import Branch, Chunk, Features
from copyseek.errors import CopyseekError
from copyseek.local.codec import Codec
from copyseek.local.features import MIRROR_PERMUTATION, SiftParams, sift_features
from copyseek.local.search import LocalSearcher, SearchParams, pack_features
from copyseek.local.verify import Verification, VerifyParams
from copyseek.validation import check_images, check_int


class LocalBranch(Branch):
    """Local features of references (`sift`) and of queries (same, but up to `query_max_side`
    pixels and `query_keypoints` keypoints, plus mirrored descriptors so flipped copies match).

    Only `sift` and the codec shape the index (they are the spec); query-side and search settings
    can change between runs on the same index. `threads` extract images in parallel (0: one per
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
    ):
        check_int("local query_max_side", query_max_side, minimum=16)
        check_int("local query_keypoints", query_keypoints, minimum=1)
        check_int("local threads", threads, minimum=0)
        self.sift = sift
        self.query_sift = replace(sift, max_side=query_max_side, max_keypoints=query_keypoints)
        self.search_params = search
        self.verify_params = verify
        self.codec = codec if codec is not None else Codec.load()
        self.threads = threads or os.cpu_count() or 1

    @classmethod
    def from_options(cls, options: dict) -> "LocalBranch":
        """Build from a flat JSON-able dict whose keys are fields of SiftParams, SearchParams or
        VerifyParams, or query_max_side, query_keypoints, threads. Unknown keys are an error."""
        options = dict(options)
        params = {
            kind: kind(**{name: options.pop(name) for name in kind.__dataclass_fields__ if name in options})
            for kind in (SiftParams, SearchParams, VerifyParams)
        }
        scalar_names = ("query_max_side", "query_keypoints", "threads")
        scalars = {name: options.pop(name) for name in scalar_names if name in options}
        if options:
            known = sorted(n for kind in params for n in kind.__dataclass_fields__) + sorted(scalar_names)
            raise CopyseekError(f"unknown local branch option(s) {', '.join(map(repr, sorted(options)))} (known: {', '.join(known)})")
        return cls(params[SiftParams], search=params[SearchParams], verify=params[VerifyParams], **scalars)

    @classmethod
    def options_from_spec(cls, spec: dict) -> dict:
        """The SIFT parameters the spec records (the keypoint budget and sizes an index was built with)."""
        return {name: spec[name] for name in SiftParams.__dataclass_fields__ if name in spec}

    @property
    def decode_side(self) -> int:
        return max(self.sift.max_side, self.query_sift.max_side)

    def spec(self) -> dict:
        codec = self.codec
        return {
            "features": "rootsift",
            **asdict(self.sift),
            "codec": f"pca{codec.dim},ivf{codec.nlist},pq{codec.m}x{codec.nbits}",
            "codec_fingerprint": codec.fingerprint(),
        }

    def extract(self, images: list[np.ndarray], *, query: bool = False) -> list[Features]:
        """Per image: xy (n, 2) float32 keypoints in pixels of the image, desc (n, dim) float32
        projected RootSIFT, size (2,) int32 (width, height); queries add desc_mirrored (n, dim)."""
        images = check_images(images)
        extract = partial(self._extract_one, query=query)
        if self.threads == 1 or len(images) < 2:
            return [extract(image) for image in images]
        with ThreadPoolExecutor(min(self.threads, len(images))) as pool:
            return list(pool.map(extract, images))

    def _extract_one(self, image: np.ndarray, query: bool) -> Features:
        xy, rootsift = sift_features(image, self.query_sift if query else self.sift)
        features = {
            "xy": xy,
            "desc": self.codec.project(rootsift),
            "size": np.array([image.shape[1], image.shape[0]], np.int32),
        }
        if query:
            features["desc_mirrored"] = self.codec.project(rootsift[:, MIRROR_PERMUTATION])
        return features

    def pack(self, features: list[Features]) -> Chunk:
        return pack_features(self.codec, features)

    def new_searcher(self) -> LocalSearcher:
        return LocalSearcher(self.codec, self.search_params, self.verify_params)

    def verify_pair(self, query: Features, reference: Features) -> Verification:
        """Verify one pair as a search would (e.g. to explain a match): the reference alone in a
        searcher. `query` from extract(query=True), `reference` from extract()."""
        searcher = self.new_searcher()
        searcher.add(self.pack([reference]))
        return searcher.verification(query, 0)
