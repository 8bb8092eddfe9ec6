import pytest

from copyseek.learn.config import TrainConfig
from copyseek.learn.measure import benchmark_metrics, snapshot_curve, throughput
from copyseek.learn.train import train
from tests.learn.test_data import shift
from tests.making import crop_copy, write_photos

pytest.importorskip("onnx")


@pytest.fixture
def bench(tmp_path):
    """A tiny benchmark: 6 references, 3 of them copied by the queries, plus 1 distractor query."""
    root = tmp_path / "bench"
    refs = write_photos(root / "references", 6, prefix="R", size=(96, 72))
    (root / "queries").mkdir()
    lines = ["query_id,reference_id"]
    for i, ref in enumerate(refs[:3]):
        crop_copy(ref, root / "queries" / f"Q{i}.jpg")
        lines.append(f"Q{i},{ref.stem}")
    crop_copy(write_photos(tmp_path / "other", 1, seed=9, size=(96, 72))[0], root / "queries" / "Q9.jpg")
    lines.append("Q9,")
    (root / "gt.csv").write_text("\n".join(lines) + "\n")
    return root


def test_benchmark_metrics_and_throughput_of_a_model(bench, tiny_onnx):
    metrics = benchmark_metrics(f"onnx:{tiny_onnx}", bench)
    assert metrics.n_positives == 3 and 0 < metrics.micro_ap <= 1
    assert throughput(f"onnx:{tiny_onnx}", sorted((bench / "references").iterdir()), batch_size=4, passes=1) > 0


def test_curve_of_a_run_has_one_point_per_snapshot_and_the_end(bench, tmp_path):
    config = TrainConfig(images=str(bench / "references"), steps=2, arch="resnet-small", dim=8, image_size=32,
                         classes_per_batch=3, views_per_class=2, device="cpu", snapshot_minutes=1e-9)
    train(config, tmp_path / "run", augment=shift, progress=False)
    points = snapshot_curve(tmp_path / "run", bench)
    assert [step for _, step, _, _ in points] == [1, 2, 2]
    assert all(0 <= micro_ap <= 1 for _, _, micro_ap, _ in points)
