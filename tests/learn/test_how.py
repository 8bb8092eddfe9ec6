from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from onnx import numpy_helper

from copyseek.describe.models import load_model, model_path
from copyseek.errors import CopyseekError
from copyseek.how.asmk import Codebook
from copyseek.how.features import HowExtractor
from copyseek.learn.cli import usage_line
from copyseek.learn.config import TrainConfig
from copyseek.learn.how import HowNet, build_how, export_how_onnx, load_trunk_from_onnx, pca_whitening
from copyseek.learn.models import GeM, ResNet
from copyseek.learn.train import export_checkpoint, load_checkpoint_model, train
from tests.learn.test_data import shift
from tests.making import write_photos

pytest.importorskip("onnx")


def tiny() -> HowNet:
    return HowNet(ResNet((8, 16), (1, 1), stem=8), 16, dim=8, stride=8)


class TestHead:
    def test_local_descriptors_are_unit_and_the_global_one_is_their_weighted_sum(self):
        model = tiny().eval()
        images = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8)
        desc, attention = model.local(images)
        assert desc.shape == (2, 8, 6, 8) and attention.shape == (2, 6, 8) and bool((attention >= 0).all())
        assert torch.allclose(desc.norm(dim=1), torch.ones(2, 6, 8), atol=1e-5)
        pooled = torch.nn.functional.normalize((desc * attention[:, None]).sum((2, 3)), dim=1)
        assert torch.allclose(model(images), pooled, atol=1e-6)

    def test_training_mode_keeps_batchnorm_statistics_and_the_reduction_fixed(self):
        model = tiny().train()
        assert model.training and all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        assert not any(p.requires_grad for p in model.reduction.parameters())
        model(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)).sum().backward()
        assert model.reduction.weight.grad is None and model.backbone.stem[0][0].weight.grad is not None

    def test_pca_whitening_whitens(self):
        x = np.random.default_rng(0).normal(size=(2000, 6)) @ np.random.default_rng(1).normal(size=(6, 6))
        mean, projection = pca_whitening(x, 4)
        y = (x - mean) @ projection.T
        assert np.allclose(np.cov(y.T, bias=True), np.eye(4), atol=1e-3)
        with pytest.raises(CopyseekError, match="cannot reduce"):
            pca_whitening(x, 7)

    def test_set_whitening_makes_the_reduction_the_projection(self):
        model = tiny()
        mean, projection = np.arange(16, dtype=np.float32), np.eye(8, 16, dtype=np.float32) * 2
        model.set_whitening(mean, projection)
        x = torch.rand(1, 16, 2, 2)
        assert torch.allclose(model.reduction(x)[0, :, 0, 0], 2 * (x[0, :8, 0, 0] - torch.arange(8.0)))
        with pytest.raises(CopyseekError, match="does not fit"):
            model.set_whitening(mean[:8], projection)


def test_trunk_loaded_from_copyseek_small_reproduces_its_descriptor():
    net = build_how("resnet-small", 128).eval()
    path = model_path("copyseek-small")[1]
    load_trunk_from_onnx(net.backbone, path)
    student = load_model("copyseek-small")
    images = np.random.default_rng(0).integers(0, 256, (1, 160, 160, 3), dtype=np.uint8)
    expected = student.session.run(None, {student.input_name: images})[0]
    weights = {i.name: np.array(numpy_helper.to_array(i)) for i in onnx.load(str(path)).graph.initializer}
    with torch.no_grad():
        x = net.activations(torch.from_numpy(images).permute(0, 3, 1, 2))
        pooled = GeM(float(weights["model.pool.p"]))(x)
        out = torch.nn.functional.normalize(pooled @ torch.from_numpy(weights["model.projection.weight"]).T
                                            + torch.from_numpy(weights["model.projection.bias"]), dim=1)
    assert np.allclose(out.numpy(), expected, atol=1e-4)
    assert net.stride == 32 and build_how("resnet-small", 64, skip_stages=1).stride == 16


def test_export_gives_the_torch_local_maps(tmp_path):
    model = tiny().eval()
    path = export_how_onnx(model, tmp_path / "m.onnx", name="t")
    image = np.random.default_rng(0).integers(0, 256, (72, 100, 3), dtype=np.uint8)
    local, attention = HowExtractor(path).maps(image)
    with torch.no_grad():
        expected = model.local(torch.from_numpy(image).permute(2, 0, 1)[None])
    assert np.allclose(local, expected[0][0].numpy(), atol=1e-4) and np.allclose(attention, expected[1][0].numpy(), atol=1e-4)


def test_how_run_whitens_trains_and_exports_model_and_codebook(tmp_path):
    write_photos(tmp_path / "imgs", 5, size=(80, 64))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, head="how", arch="resnet-small", dim=16,
                         image_size=64, loss="contrastive", miner="hard", classes_per_batch=3, views_per_class=2,
                         chunk_size=6, device="cpu", checkpoint_minutes=0.0, how_side=64, how_scales="1",
                         how_features=8, codebook_words=4, skip_stages=2)
    path = train(config, tmp_path / "run", augment=shift, progress=False)
    assert Codebook.load(path.with_suffix(".codebook.npz")).centroids.shape == (4, 16)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    local, attention = session.run(None, {"image": np.zeros((1, 64, 48, 3), np.uint8)})
    assert local.shape == (1, 16, 8, 6) and attention.shape == (1, 8, 6)
    model, saved = load_checkpoint_model(tmp_path / "run" / "last.pt")
    assert isinstance(model, HowNet) and saved.head == "how"
    # Fine-tuned from a HOW checkpoint, the run keeps the whitening that checkpoint was trained with.
    train(replace(config, init=str(tmp_path / "run" / "last.pt"), steps=1), tmp_path / "tuned", augment=shift,
          progress=False)
    tuned, _ = load_checkpoint_model(tmp_path / "tuned" / "last.pt")
    assert torch.equal(tuned.reduction.weight, model.reduction.weight)
    image = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    again = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "again", progress=False)
    assert np.allclose(HowExtractor(again).maps(image)[0], HowExtractor(path).maps(image)[0], atol=1e-5)
    assert np.allclose(Codebook.load(again.with_suffix(".codebook.npz")).centroids,
                       Codebook.load(path.with_suffix(".codebook.npz")).centroids, atol=1e-4)
    # `copyseek train` tells how to index with it: as the local branch of --pipeline asmk.
    assert usage_line(path).endswith(f"--pipeline asmk --how-model {path})")
    # Exported on another machine, where the run's photos lie elsewhere: they are given with --images.
    (tmp_path / "imgs").rename(tmp_path / "moved")
    with pytest.raises(CopyseekError, match="--images"):
        export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "elsewhere", progress=False)
    moved = export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "elsewhere", images=str(tmp_path / "moved"),
                              progress=False)
    assert np.allclose(Codebook.load(moved.with_suffix(".codebook.npz")).centroids,
                       Codebook.load(path.with_suffix(".codebook.npz")).centroids, atol=1e-4)
    with pytest.raises(CopyseekError, match="head"):
        TrainConfig(images="x", steps=1, head="nope").validate()
