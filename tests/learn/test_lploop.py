"""The label propagation training loop (learn/lploop.py), through `copyseek train --pseudo-labels lp`."""

import csv

import numpy as np

from copyseek.cli import main
from copyseek.learn.config import TrainConfig
from copyseek.learn.data import discover_photos
from copyseek.learn.lploop import RoundSource
from copyseek.learn.mining import square_photo
from tests.learn.tiny import tiny_model
from tests.making import write_photos


def test_copyseek_train_pseudo_labels_lp_runs_rounds(tmp_path, capsys):
    photos = write_photos(tmp_path / "imgs", 6, size=(64, 48))
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{p.stem},{i % 2}\n" for i, p in enumerate(photos[:4])))
    run = tmp_path / "run"
    code = main(["train", "--images", str(tmp_path / "imgs"), "--out", str(run), "--pseudo-labels", "lp",
                 "--labels", str(tmp_path / "labels.csv"), "--rounds", "2", "--loss", "contrastive", "-q",
                 "--set", "steps=1", "--set", "arch=resnet-small", "--set", "dim=16", "--set", "image_size=32",
                 "--set", "classes_per_batch=2", "--set", "views_per_class=2", "--set", "device=cpu"])
    assert code == 0 and (run / "model.onnx").exists() and (run / "round-2" / "last.pt").exists()
    with open(run / "rounds.csv", newline="") as handle:
        rounds = list(csv.DictReader(handle))
    assert [r["round"] for r in rounds] == ["1", "2"] and all(int(r["pseudo_labelled"]) >= 4 for r in rounds)
    with open(run / "round-1" / "pseudo-labels.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 6
    assert main(["train", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "x"), "--pseudo-labels", "lp",
                 "--set", "steps=1", "-q"]) == 2


def test_a_rounds_batches_edit_the_configured_share_of_the_photos(tmp_path):
    photos = write_photos(tmp_path / "imgs", 6, size=(64, 48))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=1, image_size=32, classes_per_batch=2, views_per_class=2,
                         photo_edits=1.0)
    source = RoundSource(config, discover_photos(tmp_path / "imgs"), np.array([0, 1, 0, 1, -1, -1]), ["a", "b"],
                         tmp_path / "round", None, progress=False)
    (tmp_path / "round").mkdir()
    batches = source(tiny_model("resnet"))
    assert batches.edited == 1.0 and (tmp_path / "round" / "pseudo-labels.csv").exists()
    batch = batches.next_batch(np.random.default_rng(0))
    originals = {square_photo(p, 32).tobytes() for p in photos}
    assert batch.images.shape[1:] == (3, 32, 32)
    assert not any(image.permute(1, 2, 0).numpy().tobytes() in originals for image in batch.images)


def test_labelled_steps_train_on_the_labelled_photos_alone_before_round_1(tmp_path, monkeypatch):
    from pathlib import Path

    from copyseek.learn import lploop

    photos = write_photos(tmp_path / "imgs", 6, size=(64, 48))
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{p.stem},{'ab'[i % 2]}\n" for i, p in enumerate(photos[:4])))
    inits, real_trainer = [], lploop.Trainer

    def recording_trainer(config, out, **kwargs):
        inits.append((Path(out).name, config.init))
        return real_trainer(config, out, **kwargs)

    monkeypatch.setattr(lploop, "Trainer", recording_trainer)
    run = tmp_path / "run"
    assert main(["train", "--images", str(tmp_path / "imgs"), "--out", str(run), "--pseudo-labels", "lp",
                 "--labels", str(tmp_path / "labels.csv"), "--rounds", "1", "--loss", "contrastive", "-q",
                 "--set", "steps=1", "--set", "labelled_steps=1", "--set", "dim=16", "--set", "image_size=32",
                 "--set", "classes_per_batch=2", "--set", "views_per_class=2", "--set", "device=cpu"]) == 0
    assert inits == [("round-1", str(run / "round-0" / "last.pt"))]
    with open(run / "round-0" / "metrics.csv", newline="") as handle:
        assert [row["step"] for row in csv.DictReader(handle)][-1] == "1"
    folders = {f.name: sorted(p.name for p in f.iterdir()) for f in (run / "round-0" / "labelled").iterdir()}
    assert folders == {"a": sorted([photos[0].name, photos[2].name]), "b": sorted([photos[1].name, photos[3].name])}
    assert main(["train", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "x"), "--pseudo-labels", "lp",
                 "--labels", str(tmp_path / "labels.csv"), "--set", "steps=1", "--set", "labelled_steps=-1", "-q"]) == 2


def test_pseudo_inliers_train_only_the_propagated_labels_local_verification_confirms(tmp_path, monkeypatch):
    from copyseek.graph import folders

    photos = write_photos(tmp_path / "imgs", 6, size=(64, 48))
    config = TrainConfig(images=str(tmp_path / "imgs"), steps=1, image_size=32, classes_per_batch=2, views_per_class=2,
                         seed_views=0.5)
    source = RoundSource(config, discover_photos(tmp_path / "imgs"), np.array([0, 1, -1, -1, -1, -1]), ["a", "b"],
                         tmp_path / "round", None, progress=False, verify=lambda photo, labelled: photo == 3)
    (tmp_path / "round").mkdir()
    source(tiny_model("resnet"))
    assert (source.pseudo.labels >= 0).all()  # every photo keeps its propagated label
    np.testing.assert_array_equal(source.pseudo.confidence > 0, [1, 1, 0, 1, 0, 0])  # but only photo 3 trains

    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(f"{p.stem},{'ab'[i % 2]}\n" for i, p in enumerate(photos[:2])))
    made, asked = [], []

    class Verifier:  # stands in for the local branch
        def __init__(self, paths, min_inliers, min_cover):
            made.append((min_inliers, min_cover))

        def __call__(self, photo: int, labelled: int) -> bool:
            asked.append((photo, labelled))
            return False

    monkeypatch.setattr(folders, "LocalVerifier", Verifier)
    assert main(["train", "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "--pseudo-labels", "lp",
                 "--labels", str(tmp_path / "labels.csv"), "--rounds", "2", "--loss", "contrastive", "-q",
                 "--set", "steps=1", "--set", "pseudo_inliers=9", "--set", "seed_views=0.5", "--set", "dim=16",
                 "--set", "image_size=32", "--set", "classes_per_batch=2", "--set", "views_per_class=2",
                 "--set", "device=cpu"]) == 0
    # one verifier for both rounds, with any inlier span (as measured for this loop); no pair asked twice
    assert made == [(9, 0.0)] and len(asked) == len(set(asked)) >= 4
