"""Training pairs from reports weighted by triage relevance (learn/reports.py)."""

import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.learn.config import TrainConfig
from copyseek.learn.pseudo import PseudoLabelBatches
from copyseek.learn.reports import read_queue, report_classes
from copyseek.learn.train import Trainer
from tests.making import write_photos


@pytest.fixture
def reported(tmp_path):
    write_photos(tmp_path / "refs", 3, prefix="R", size=(64, 48))
    write_photos(tmp_path / "queries", 4, prefix="Q", seed=1, size=(64, 48))
    queue = tmp_path / "queue.csv"
    queue.write_text("query_id,reference_id,relevance\nQ0000,R0000,0.0\nQ0001,R0000,0.9\nQ0002,R0001,1.0\nQ0003,R0001,0.5\n")
    return tmp_path


def test_each_reported_reference_is_a_class_of_its_queries_weighted_by_relevance(reported):
    paths, classes = report_classes(reported / "refs", reported / "queue.csv", reported / "queries")
    assert [p.stem for p in paths] == ["R0000", "R0001", "R0002", "Q0000", "Q0001", "Q0002", "Q0003"]
    assert classes.labels.tolist() == [0, 1, -1, 0, 0, 1, 1]
    assert classes.weights.tolist() == [1.0, 1.0, 0.0, 0.0, 0.9, 1.0, 0.5]
    drawn = np.concatenate([PseudoLabelBatches(classes, 2, 2).sample(np.random.default_rng(s))[0] for s in range(50)])
    assert 3 not in drawn and 4 in drawn  # a report at relevance 0 never makes a pair


def test_training_on_reported_pairs(reported):
    config = TrainConfig(images=str(reported / "refs"), pairs=str(reported / "queue.csv"),
                         pair_queries=str(reported / "queries"), steps=1, dim=16, image_size=32,
                         classes_per_batch=2, views_per_class=2, device="cpu", loss="contrastive")
    trainer = Trainer(config, reported / "run", progress=False)
    batch = trainer.source.next_batch(np.random.default_rng(0))
    assert sorted(batch.labels.tolist()) == [0, 0, 1, 1]
    assert float(trainer.step()["loss"]) >= 0


def test_bad_queues_are_refused(reported):
    (reported / "bad.csv").write_text("Q0000,R0000,1.5\n")
    with pytest.raises(CopyseekError, match="relevance must be in"):
        read_queue(reported / "bad.csv")
    (reported / "bad.csv").write_text("Q0000,R0009,0.5\n")
    with pytest.raises(CopyseekError, match="not training photos"):
        report_classes(reported / "refs", reported / "bad.csv", reported / "queries")
    with pytest.raises(CopyseekError, match="go together"):
        TrainConfig(images="x", steps=1, pairs="q.csv").validate()
