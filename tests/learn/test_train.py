import argparse
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from copyseek.errors import CopyseekError
from copyseek.learn import cli
from copyseek.learn.config import TrainConfig
from copyseek.learn.train import Trainer, learning_rate, load_checkpoint_model, train
from tests.learn.test_data import shift
from tests.making import write_photos

pytest.importorskip("onnx")

TINY = dict(arch="resnet-small", dim=16, image_size=32, classes_per_batch=3, views_per_class=3, chunk_size=4,
            device="cpu", checkpoint_minutes=0.0)


def rows(run):
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_training_writes_metrics_curves_model_and_resumes(tmp_path):
    write_photos(tmp_path / "imgs", 5, size=(80, 64))
    run = tmp_path / "run"
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=3, **TINY)
    model_path = train(config, run, augment=shift, progress=False)
    assert [r["step"] for r in rows(run)] == ["1", "2", "3"]
    assert all(float(r["loss"]) > 0 and r["batch_size"] == "9" for r in rows(run))
    assert (run / "curves.png").stat().st_size > 1000 and (run / "last.pt").exists()
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    vectors = session.run(None, {"image": np.zeros((2, 50, 40, 3), np.uint8)})[0]
    assert vectors.shape == (2, 16)
    with pytest.raises(CopyseekError, match="--resume"):
        train(config, run, augment=shift, progress=False)
    config.steps = 5
    train(config, run, resume=True, augment=shift, progress=False)
    assert [r["step"] for r in rows(run)] == ["1", "2", "3", "4", "5"]
    model, saved = load_checkpoint_model(run / "last.pt")
    assert saved.steps == 5 and model.dim == 16
    # On the command line, --resume starts from the run's saved settings.
    resumed = cli.settings(parse(["--out", str(run), "--resume", "--set", "steps=7"]))
    assert (resumed.steps, resumed.dim, resumed.images) == (7, 16, str(tmp_path / "imgs"))


def test_fresh_views_from_worker_processes_depend_neither_on_their_number_nor_on_resuming(tmp_path):
    write_photos(tmp_path / "imgs", 5, size=(80, 64))
    losses = {}
    for workers in (1, 2):
        config = TrainConfig(images=str(tmp_path / "imgs"), steps=4, workers=workers, **TINY)
        train(config, tmp_path / f"run{workers}", augment=shift, progress=False)
        losses[workers] = [r["loss"] for r in rows(tmp_path / f"run{workers}")]
    assert losses[1] == losses[2] and len(set(losses[1])) == 4
    # A resumed run goes on from the batch after its last step (its batch k is default_rng([seed, k])'s).
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, workers=1, **TINY)
    train(config, tmp_path / "resumed", augment=shift, progress=False)
    trainer = Trainer(replace(config, steps=4), tmp_path / "resumed", resume=True, augment=shift, progress=False)
    trainer.run()
    assert trainer.source.next_index == 4 and not trainer.source._shutdown.alive
    assert [r["step"] for r in rows(tmp_path / "resumed")] == ["1", "2", "3", "4"]


def test_distillation_from_an_onnx_teacher_through_a_view_bank(tmp_path, tiny_onnx):
    write_photos(tmp_path / "imgs", 4, size=(80, 64))
    run = tmp_path / "run"
    # The tiny teacher gives 15-d vectors: a 16-d student can only match them relationally.
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, loss="distill+recall@k+simix",
                         teacher=f"onnx:{tiny_onnx}", bank_views=4, distill_direct=0.0, snapshot_minutes=1e-9,
                         **TINY)
    train(config, run, augment=shift, progress=False)
    assert np.load(run / "bank" / "teacher.npy").shape == (16, 15)
    assert all(r["teacher_cosine"] == "" for r in rows(run))  # no cosine between 16-d and 15-d vectors
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step-000001.pt", "step-000002.pt"]


def test_init_starts_a_fresh_run_from_the_weights_of_a_checkpoint(tmp_path):
    import torch

    from copyseek.learn.train import Trainer

    write_photos(tmp_path / "imgs", 4, size=(80, 64))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, **TINY)
    train(config, tmp_path / "a", augment=shift, progress=False)
    trained = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    tuned = TrainConfig(images=str(tmp_path / "imgs"), steps=1, seed=3, init=str(tmp_path / "a" / "last.pt"), **TINY)
    trainer = Trainer(tuned, tmp_path / "b", augment=shift, progress=False)
    assert trainer.state.step == 0  # fresh schedule and optimiser, trained weights
    assert all(torch.equal(value, trained[key]) for key, value in trainer.model.state_dict().items())
    assert not all(torch.equal(value, trained[key]) for key, value in
                   Trainer(TrainConfig(images=str(tmp_path / "imgs"), steps=1, seed=3, **TINY), tmp_path / "c",
                           augment=shift, progress=False).model.state_dict().items())
    trainer.run()
    assert [r["step"] for r in rows(tmp_path / "b")] == ["1"]
    wider = TrainConfig(images=str(tmp_path / "imgs"), steps=1, init=str(tmp_path / "a" / "last.pt"),
                        **{**TINY, "dim": 24})
    with pytest.raises(CopyseekError, match="init: the weights"):
        Trainer(wider, tmp_path / "d", augment=shift, progress=False)


def test_same_seed_same_run(tmp_path):
    write_photos(tmp_path / "imgs", 4, size=(80, 64))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=2, seed=5, **TINY)
    train(config, tmp_path / "a", augment=shift, progress=False)
    train(config, tmp_path / "b", augment=shift, progress=False)
    assert [r["loss"] for r in rows(tmp_path / "a")] == [r["loss"] for r in rows(tmp_path / "b")]


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(lr=1.0, warmup=0.1)
    assert learning_rate(config, 0.05) == pytest.approx(0.5)
    assert learning_rate(config, 0.1) == pytest.approx(1.0)
    assert learning_rate(config, 1.0) == pytest.approx(0.0)


def parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_settings_come_from_defaults_config_set_and_options_in_that_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\narch = "vit-tiny"\nlr = 0.01\nminutes = 5\nks = [1, 4]\n')
    args = parse(["--out", str(tmp_path / "r"), "--images", "x", "--config", str(toml), "--set", "lr=0.02",
                  "--set", "loss=contrastive", "--loss", "distill", "--minutes", "2"])
    config = cli.settings(args)
    assert (config.arch, config.lr, config.ks, config.loss, config.minutes, config.images) == \
        ("vit-tiny", 0.02, [1, 4], "distill", 2.0, "x")
    assert args.run is cli.run_train


@pytest.mark.parametrize("argv, message", [
    (["--set", "colour=red"], "unknown setting"),
    (["--set", "lr=fast"], "lr must be float"),
    (["--set", "ks=[1, 'a']"], "ks must be list"),
    (["--set", "nonsense"], "key=value"),
])
def test_bad_settings_are_reported(tmp_path, argv, message):
    with pytest.raises(CopyseekError, match=message):
        cli.settings(parse(["--out", str(tmp_path), *argv]))


@pytest.mark.parametrize("changes, message", [
    (dict(loss="recall@k+triplet"), "unknown term 'triplet'"),
    (dict(loss="recall@k+recall@k"), "each term once"),
    (dict(loss="recall@k+contrastive"), "one ranking loss"),
    (dict(loss="simix"), "needs one of"),
    (dict(loss="distill+simix"), "a mixer mixes"),
    (dict(miner="hardest"), "miner must be one of all, hard"),
    (dict(steps=0, minutes=0), "budget"),
    (dict(arch="resnet9000"), "unknown arch"),
    (dict(workers=-1), "workers must be >= 0"),
    (dict(bank_views=-2), "bank_views must be >= 0"),
    (dict(loss="distill", workers=2), "distil from a view bank"),
])
def test_config_is_validated(changes, message):
    config = TrainConfig(images="x", steps=1)
    for key, value in changes.items():
        setattr(config, key, value)
    with pytest.raises(CopyseekError, match=message):
        config.validate()


def test_copyseek_train_command_end_to_end(tmp_path, capsys):
    from copyseek.cli import main

    write_photos(tmp_path / "imgs", 3, size=(80, 64))
    settings = ["steps=1", "dim=8", "image_size=32", "classes_per_batch=2", "views_per_class=2", "device='cpu'"]
    argv = ["train", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "-q", "--seed", "1"]
    assert main(argv + [a for s in settings for a in ("--set", s)]) == 0
    assert (tmp_path / "run" / "model.onnx").exists() and (tmp_path / "run" / "model.json").exists()
    assert f"--model onnx:{tmp_path / 'run' / 'model.onnx'}" in capsys.readouterr().out
    assert main(["train", "--out", str(tmp_path / "exported"), "--export", str(tmp_path / "run" / "last.pt"), "-q"]) == 0
    assert f"--model onnx:{tmp_path / 'exported' / 'model.onnx'}" in capsys.readouterr().out
    ours, theirs = (ort.InferenceSession(str(tmp_path / d / "model.onnx"), providers=["CPUExecutionProvider"])
                    for d in ("exported", "run"))
    feed = {ours.get_inputs()[0].name: np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)}
    assert np.allclose(ours.run(None, feed)[0], theirs.run(None, feed)[0], atol=1e-5)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_config_files_are_valid(path):
    args = parse(["--out", "unused", "--images", "photos/", "--config", str(path)])
    cli.settings(args).validate()
