"""copyseek: find modified copies of images in large collections.

The Python API mirrors the command line::

    import copyseek
    index = copyseek.Index.create("my-index", pipeline="global")   # or Index.open("my-index")
    index.add("references/")                                        # incremental
    predictions = index.match("queries/", k=10, background="background/")
    metrics = copyseek.evaluate(predictions, copyseek.read_ground_truth("gt.csv"))
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
