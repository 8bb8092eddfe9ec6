"""Loading ONNX model files into CPU onnxruntime sessions, with one clear error for a bad file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from copyseek.errors import CopyseekError

if TYPE_CHECKING:
    import onnxruntime


def cpu_session(path: Path | str, threads: int = 0, what: str = "ONNX model") -> onnxruntime.InferenceSession:
    """An onnxruntime session on the CPU for `path`, `threads` intra-op threads (0: onnxruntime's
    choice); a file onnxruntime cannot load raises `CopyseekError` naming `what` and the path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one image batch at a time: parallel operators only slow it down
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        raise CopyseekError(f"cannot load {what} {path}: {str(exc).splitlines()[0]}") from None
