"""HOW local descriptors with ASMK aggregation (Tolias, Jenicek, Chum, ECCV 2020), as a branch.

    from copyseek.how import HowBranch
    branch = HowBranch()                          # the shipped model and codebook, or
    branch = HowBranch.from_options({"model": "runs/how/model.onnx", "features": 500})
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract(reference_images)))
    candidates = searcher.search(branch.extract(query_images, query=True), k=10)

The network is trained by `copyseek train --config configs/how.toml` (`copyseek.learn.how`); see
docs/how.md.
"""

from copyseek.how.asmk import AsmkParams, AsmkSearcher, Codebook
from copyseek.how.branch import HowBranch, QueryParams
from copyseek.how.features import HowExtractor, HowParams

__all__ = ["AsmkParams", "AsmkSearcher", "Codebook", "HowBranch", "HowExtractor", "HowParams", "QueryParams"]
