"""The local branch: RootSIFT keypoints in a compact PQ store, Faiss votes, RANSAC verification.

    from copyseek.local import LocalBranch
    branch = LocalBranch()                       # or LocalBranch.from_options({"max_keypoints": 320})
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract(reference_images)))
    candidates = searcher.search(branch.extract(query_images, query=True), k=10)
    candidates[0].extra["inliers"], candidates[0].extra["region"]    # (m,), (m, 4) query pixels

`copyseek.local.regions.query_crops` makes crops for the global branch to search again;
`copyseek.local.explain.draw_pair` draws a match. See docs/local.md.
"""

from copyseek.local.branch import LocalBranch
from copyseek.local.features import SiftParams
from copyseek.local.search import LocalSearcher, SearchParams
from copyseek.local.verify import Verification, VerifyParams

__all__ = ["LocalBranch", "LocalSearcher", "SearchParams", "SiftParams", "Verification", "VerifyParams"]
