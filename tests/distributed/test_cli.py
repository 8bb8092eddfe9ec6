import argparse

import pytest

from copyseek.cli import main
from copyseek.distributed.cli import add_ray_options, add_shard_options, shards_for
from copyseek.errors import CopyseekError
from tests.making import crop_copy, write_photos


def test_match_with_shards_writes_the_unsharded_predictions(tmp_path, tiny_onnx):
    refs = write_photos(tmp_path / "refs", 14, seed=12, size=(96, 72))
    (tmp_path / "queries").mkdir()
    for path in refs[::3]:
        crop_copy(path, tmp_path / "queries" / f"q{path.stem}.jpg")
    index = str(tmp_path / "idx")
    common = ["--index", index, "--batch-size", "3", "-q"]
    assert main(["index", str(tmp_path / "refs"), "--model", f"onnx:{tiny_onnx}", "--resize", "square:64", "--commit-every", "4", *common]) == 0
    assert main(["match", str(tmp_path / "queries"), "--output", str(tmp_path / "whole.csv"), *common]) == 0
    assert main(["match", str(tmp_path / "queries"), "--output", str(tmp_path / "split.csv"), "--shards", "3", *common]) == 0
    assert (tmp_path / "split.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert len((tmp_path / "whole.csv").read_text().splitlines()) == 1 + 5 * 10


def test_ray_and_shard_options_parse_and_refuse_bad_values():
    parser = argparse.ArgumentParser()
    add_ray_options(parser)
    assert parser.parse_args(["--ray"]).ray == "local"
    assert parser.parse_args(["--ray", "head:6379", "--ray-workers", "3"]).ray_workers == 3
    assert parser.parse_args([]).ray is None
    parser = argparse.ArgumentParser()
    add_shard_options(parser)
    assert shards_for(parser.parse_args([])) is None
    assert shards_for(parser.parse_args(["--shards", "2"])).count == 2
    with pytest.raises(CopyseekError, match="shards must be an integer >= 1"):
        shards_for(parser.parse_args(["--shards", "-1"]))
