"""A tiny run end to end: train, checkpoint, resume, export, onnxruntime parity, CLI."""

import json

import numpy as np
import pytest
import torch

from copyseek.cli import main
from copyseek.detect.evaluate import TorchDetector
from copyseek.detect.model import DetectorNet, NetConfig
from copyseek.detect.runtime import Detector
from copyseek.detect.train import DetectorTrainConfig, load_checkpoint, train
from copyseek.errors import CopyseekError


def tiny(photo_list, **changes):
    settings = dict(images=str(photo_list), preset="tiny", pool=8, photo_side=96, batch=4, steps=3, log_every=1)
    return DetectorTrainConfig(**{**settings, **changes})


def test_train_resume_export_and_runtime(photo_list, tmp_path):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    model = train(tiny(photo_list), run, progress=False)
    assert model.exists() and (run / "detector.json").exists()
    _, state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 3
    with pytest.raises(CopyseekError, match="already holds a run"):
        train(tiny(photo_list), run, progress=False)
    train(tiny(photo_list, steps=5), run, resume=True, progress=False)
    _, state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] == 5
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step") and len(rows) == 1 + 5

    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    onnx = Detector(run / "detector.onnx", min_score=0.0, flip=False).detect(image)
    torch_regions = TorchDetector(run / "checkpoint.pt", min_score=0.0).detect_batch([image])[0]
    assert np.allclose(onnx.scores, torch_regions.scores, atol=1e-4)
    assert np.allclose(onnx.boxes, torch_regions.boxes, atol=1e-2)
    assert np.all(onnx.boxes[:, 2] <= 70) and np.all(onnx.boxes[:, 3] <= 50)


def test_config_refuses_unknown_and_inconsistent_settings():
    with pytest.raises(CopyseekError, match="unknown detector training settings"):
        DetectorTrainConfig.from_dict({"steps": 1, "epochs": 3})
    with pytest.raises(CopyseekError, match="budget"):
        DetectorTrainConfig()
    with pytest.raises(CopyseekError, match="needs --teacher"):
        DetectorTrainConfig(steps=1, distill="hgd")
    with pytest.raises(CopyseekError, match="distill_head must be >= 0 and needs --distill"):
        DetectorTrainConfig(steps=1, distill_head=1.0)


def test_cli_train_and_detect(photo_list, tmp_path, capsys):
    run = tmp_path / "cli"
    args = ["train-detector", "--images", str(photo_list), "--out", str(run), "--preset", "tiny", "--steps", "2",
            "--set", "pool=4", "--set", "batch=2", "--set", "photo_side=96", "-q"]
    assert main(args) == 0
    assert json.loads((run / "config.json").read_text())["pool"] == 4
    image = str(photo_list.parent / "p0.jpg")
    assert main(["detect", image, "--model", str(run / "detector.onnx"), "--min-score", "0", "--draw", str(tmp_path / "drawn")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["image"] == image and all(r["label"] in ("copy", "overlay") for r in line["regions"])
    assert (tmp_path / "drawn" / "p0.png").is_file()
    assert main(["detect", image, "--small", "--no-flip"]) == 0  # the small shipped detector, one pass
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["image"] == image
    assert main(["detect", image, "--small", "--model", str(run / "detector.onnx")]) != 0
    assert "not both" in capsys.readouterr().err


def test_validation_writes_a_learning_curve_and_cpu_clock(photo_list, tmp_path):
    """With `val`, the run scores the benchmark's queries (layouts.json is the truth) into val.csv;
    the "cpu" clock budgets process time."""
    from PIL import Image

    bench = tmp_path / "bench"
    (bench / "queries").mkdir(parents=True)
    layouts = {}
    for i in range(3):
        Image.open(photo_list.parent / f"p{i}.jpg").save(bench / "queries" / f"Q{i:05d}.jpg")
        layouts[f"Q{i:05d}"] = {"size": [128, 96], "copy": [0, 0, 128, 96], "overlays": [[10, 10, 40, 30]]}
    (bench / "layouts.json").write_text(json.dumps(layouts))
    run = tmp_path / "val"
    train(tiny(photo_list, steps=0, minutes=0.002, clock="cpu", val=str(bench), val_minutes=0.001), run, progress=False)
    rows = (run / "val.csv").read_text().strip().splitlines()
    assert rows[0] == "step,elapsed_s,copy_AP50,copy_AP,overlay_AP50,overlay_AP"
    last = rows[-1].split(",")
    assert len(rows) >= 2 and int(last[0]) >= 1 and all(0.0 <= float(v) <= 1.0 for v in last[2:])
    with pytest.raises(CopyseekError, match="clock"):
        tiny(photo_list, clock="sundial")
    with pytest.raises(CopyseekError, match="alternatives"):
        tiny(photo_list, alternatives=1.0)


def test_guide_alone_learns_on_a_frozen_initialised_net(photo_list, tmp_path):
    torch.set_num_threads(1)
    train(tiny(photo_list), tmp_path / "dense", progress=False)
    dense, _ = load_checkpoint(tmp_path / "dense" / "checkpoint.pt")
    config = tiny(photo_list, net={"selective": True}, init=str(tmp_path / "dense" / "checkpoint.pt"), trainable="guide")
    train(config, tmp_path / "scn", progress=False)
    scn, _ = load_checkpoint(tmp_path / "scn" / "checkpoint.pt")
    frozen, fresh = dense.state_dict(), scn.state_dict()
    assert all(torch.equal(frozen[k], fresh[k]) for k in frozen)  # weights and batch-norm statistics
    assert set(fresh) - set(frozen) == {k for k in fresh if k.startswith("selective.guide")}
    torch.manual_seed(0)  # train() seeds with config.seed (0) before making the net: the guide's initial weights
    untrained = DetectorNet(NetConfig.preset("tiny", selective=True)).state_dict()
    assert not torch.equal(fresh["selective.guide.out.weight"], untrained["selective.guide.out.weight"])
    with pytest.raises(CopyseekError, match="trainable=guide needs"):
        tiny(photo_list, trainable="guide")


def test_distilling_from_a_teacher_cache_matches_running_the_teacher(photo_list, tmp_path):
    """The first step's distillation loss (stages and head) is the same whether the teacher runs or its cache is read
    (float16 aside); the cache is built once over the pool, both sides of the mirror."""
    torch.set_num_threads(1)
    train(tiny(photo_list, steps=2), tmp_path / "teacher", progress=False)
    teacher = str(tmp_path / "teacher" / "checkpoint.pt")
    cache = tmp_path / "cache"
    for name, extra in (("live", {}), ("cached", {"teacher_cache": str(cache)})):
        train(tiny(photo_list, teacher=teacher, distill="hgd", distill_head=1.0, **extra), tmp_path / name, progress=False)
    first = {name: (tmp_path / name / "metrics.csv").read_text().splitlines()[1].split(",") for name in ("live", "cached")}
    live, cached = float(first["live"][7]), float(first["cached"][7])
    assert live > 0 and abs(live - cached) < 1e-3 * live  # float16 storage: a relative error
    assert json.loads((cache / "meta.json").read_text())["n"] == 8
    with pytest.raises(CopyseekError, match="teacher_cache needs"):
        tiny(photo_list, teacher_cache=str(cache))
    with pytest.raises(CopyseekError, match="dtype must be one of"):
        tiny(photo_list, teacher=teacher, distill="hgd", teacher_cache=str(cache), teacher_cache_dtype="int4")
