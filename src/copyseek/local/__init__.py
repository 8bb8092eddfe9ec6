"""The local branch: RootSIFT keypoints in a compact PQ store, Faiss votes, RANSAC verification.

>>> import numpy as np
>>> from copyseek.local import LocalBranch
>>> from copyseek.synthetic import synthetic_photo
>>> reference_images = [np.asarray(synthetic_photo(np.random.default_rng(i))) for i in range(3)]
>>> branch = LocalBranch()                  # or LocalBranch.from_options({"max_keypoints": 320})
>>> searcher = branch.new_searcher()
>>> searcher.add(branch.pack(branch.extract(reference_images)))
>>> query_images = [reference_images[1][40:300, 60:400]]          # a crop of reference 1
>>> candidates = searcher.search(branch.extract(query_images, query=True), k=10)
>>> int(candidates[0].rows[0]), bool(candidates[0].extra["inliers"][0] >= 20)
(1, True)
>>> candidates[0].extra["region"].shape[1]  # (m, 4) x0, y0, x1, y1 in query pixels
4

`copyseek.local.regions.query_crops` makes crops for the global branch to search again;
`copyseek.local.explain.draw_pair` draws a match. See docs/local.md.
"""

from copyseek.local.branch import LocalBranch
from copyseek.local.features import SiftParams
from copyseek.local.search import LocalSearcher, SearchParams
from copyseek.local.verify import Verification, VerifyParams

__all__ = ["LocalBranch", "LocalSearcher", "SearchParams", "SiftParams", "Verification", "VerifyParams"]
