
from PIL import Image

import numpy as np
import pytest

from copyseek.describe.global_branch import GlobalBranch, VectorSearcher
from copyseek.describe.models import ConcatModel, load_model, parse_ensemble
from copyseek.describe.preprocess import Preprocess, write_sidecar
from copyseek.errors import CopyseekError
from copyseek.synthetic import synthetic_photo


def images(n, w=200, h=150):
    return [np.asarray(synthetic_photo(np.random.default_rng(i), w, h)) for i in range(n)]


def test_onnx_model_gives_unit_vectors_and_reads_its_sidecar(tiny_onnx):
    write_sidecar(tiny_onnx, Preprocess("short", 48), name="tiny")
    try:
        model = load_model(f"onnx:{tiny_onnx}")
        assert model.preprocess == Preprocess("short", 48)
        vectors = model.embed(np.stack(images(3)))
        assert vectors.shape == (3, model.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert load_model(f"onnx:{tiny_onnx}", Preprocess("square", 32)).preprocess.size == 32
    finally:
        tiny_onnx.with_suffix(".json").unlink()


def test_torchscript_model_imagenet_convention(tmp_path):
    torch = pytest.importorskip("torch")

    class Mean(torch.nn.Module):
        def forward(self, x):  # float NCHW, ImageNet-normalised, like Meta's SSCD TorchScript files
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    path = tmp_path / "mean.pt"
    torch.jit.script(Mean()).save(str(path))
    model = load_model(f"torchscript:{path}")
    batch = np.stack(images(2))
    vectors = model.embed(batch)
    expected = (batch / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    raw = np.concatenate([expected.mean(axis=(1, 2)), expected.std(axis=(1, 2), ddof=1)], axis=1)
    assert np.allclose(vectors, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-4)


@pytest.mark.parametrize(
    "spec,message",
    [("nonsense", "unknown model"), ("onnx:/does/not/exist.onnx", "not found"), ("pickle:x", "unknown model")],
)
def test_bad_model_specs_are_clear_errors(spec, message):
    with pytest.raises(CopyseekError, match=message):
        load_model(spec)


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not onnx")
    with pytest.raises(CopyseekError, match="cannot load ONNX"):
        load_model(f"onnx:{path}")


def test_sscd_finds_an_edited_copy():
    model = load_model("sscd")
    assert model.dim == 512
    branch = GlobalBranch(model)
    refs = images(6)
    query = refs[2][10:140, 20:180][:, ::-1]  # crop + flip
    searcher = branch.new_searcher()
    searcher.add(branch.pack(branch.extract(refs)))
    found = searcher.search(branch.extract([query]), 2)[0]
    assert found.rows[0] == 2 and found.scores[0] > 0.5


def test_preprocess_modes():
    image = np.zeros((100, 300, 3), np.uint8)
    assert Preprocess("square", 64).apply(image).shape == (64, 64, 3)
    assert Preprocess("short", 50).apply(image).shape == (50, 150, 3)
    assert Preprocess.parse("short:288") == Preprocess("short", 288)
    with pytest.raises(CopyseekError):
        Preprocess.parse("wide:3")


def test_factory_index_trains_when_first_searched():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    searcher = VectorSearcher(16, "IVF4,Flat")
    searcher.add({"vectors": vectors[:200]})
    searcher.add({"vectors": vectors[200:]})
    sims, rows = searcher.search_vectors(vectors[[5, 300]], 1)
    searcher.index.nprobe = 4
    assert list(rows[:, 0]) == [5, 300]
    with pytest.raises(CopyseekError, match="invalid Faiss factory"):
        VectorSearcher(16, "NotAnIndex")


def test_shipped_copyseek_small_loads_with_its_sidecar():
    model = load_model("copyseek-small")
    assert model.dim == 512 and model.preprocess == Preprocess("square", 160)
    vectors = model.embed(np.stack([np.asarray(Image.fromarray(i).resize((160, 160))) for i in images(2)]))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_an_ensemble_weights_its_members_similarities(tiny_onnx):
    batch = np.stack([np.asarray(Image.fromarray(i).resize((64, 64))) for i in images(2)])
    tiny, small = load_model(f"onnx:{tiny_onnx}"), load_model("copyseek-small")
    ensemble = load_model(f"onnx:{tiny_onnx},copyseek-small@0.5")
    assert isinstance(ensemble, ConcatModel) and ensemble.dim == tiny.dim + small.dim
    assert ensemble.name == "onnx:tiny.onnx,copyseek-small@0.5"
    a, b = ensemble.embed(batch)
    (ta, tb), (sa, sb) = tiny.embed(batch), small.embed(batch)
    assert abs(ta @ tb - sa @ sb) > 0.05  # the members disagree, so the weighting shows
    assert a @ b == pytest.approx((ta @ tb + 0.25 * (sa @ sb)) / 1.25, abs=1e-5)
    assert ensemble.fingerprint != load_model(f"onnx:{tiny_onnx},copyseek-small@0.5,copyseek-small").fingerprint


@pytest.mark.parametrize("spec", ["sscd,copyseek-small@x", "sscd,copyseek-small@0", "sscd,,copyseek-small"])
def test_bad_ensembles_are_clear_errors(spec):
    with pytest.raises(CopyseekError, match="MODEL@WEIGHT"):
        parse_ensemble(spec)
    assert parse_ensemble("sscd, copyseek-small@0.4") == [("sscd", 1.0), ("copyseek-small", 0.4)]
