"""copyseek: find modified copies of images in large collections.

The Python API mirrors the command line (`copyseek index`, `copyseek match`, `copyseek eval`):

>>> import copyseek
>>> from copyseek.match.matcher import MatchOptions, match
>>> with copyseek.Index.open_or_create("refs.idx") as index:     # or Index.create(path, pipeline, options)
...     report = index.add("references/", progress=False)          # incremental: known images are skipped
...     result = match(index, "queries/", MatchOptions(k=10, background="photos/"), progress=False)
>>> metrics = copyseek.evaluate(result.predictions, copyseek.read_ground_truth("gt.csv"))
>>> len(report.skipped), metrics.micro_ap > 0.5
(0, True)

`metrics` also has recall_at_p90 and accuracy_at_1; `result.predictions` are
(query_id, reference_id, score) rows, best first per query.
"""

from copyseek.errors import CopyseekError, ImageSkip

__version__ = "0.1.0"

__all__ = ["CopyseekError", "ImageSkip", "Index", "evaluate", "read_ground_truth", "read_predictions"]


def __getattr__(name: str):
    # Lazy so that `import copyseek` stays cheap (no onnxruntime / faiss import) for the CLI's --help.
    if name == "Index":
        from copyseek.store.index import Index

        return Index
    if name == "evaluate":
        from copyseek.eval.metrics import evaluate

        return evaluate
    if name in ("read_ground_truth", "read_predictions"):
        from copyseek.io import csvfiles

        return getattr(csvfiles, name)
    raise AttributeError(f"module 'copyseek' has no attribute {name!r}")
