import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.io.onnx import cpu_session


def test_a_model_file_loads_into_a_session_that_runs(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "double.onnx"
    torch.onnx.export(torch.nn.Linear(2, 2, bias=False), torch.ones(1, 2), path, input_names=["x"], dynamo=False)
    session = cpu_session(path, threads=1)
    (out,) = session.run(None, {"x": np.ones((1, 2), np.float32)})
    assert out.shape == (1, 2)


def test_a_file_that_is_no_model_is_one_clear_error_naming_it(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(CopyseekError, match=r"cannot load detector .*broken\.onnx"):
        cpu_session(path, what="detector")
