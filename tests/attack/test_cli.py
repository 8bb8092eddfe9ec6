import numpy as np
import pytest
from PIL import Image

from copyseek.cli import main
from copyseek.describe.preprocess import Preprocess
from copyseek.learn.export import export_torchscript


@pytest.fixture
def files(tmp_path, pictures, tiny_model):
    target, carrier = pictures
    Image.fromarray(target).save(tmp_path / "target.png")
    Image.fromarray(carrier).save(tmp_path / "carrier.jpg")
    model = export_torchscript(tiny_model.descriptor, tmp_path / "tiny.pt", Preprocess("square", 48), name="tiny")
    return tmp_path, model


def test_attack_writes_a_png_of_the_carrier_size_and_reports_the_cosines(files, capsys):
    folder, model = files
    code = main(["attack", "--target", str(folder / "target.png"), "--carrier", str(folder / "carrier.jpg"),
                 "--model", f"torchscript:{model}", "--loss", "global", "--steps", "6", "--lr", "0.01", "--goal", "0",
                 "--output", str(folder / "out" / "adv.png"), "-q"])
    assert code == 0
    adversarial = np.asarray(Image.open(folder / "out" / "adv.png"))
    assert adversarial.shape == (48, 56, 3)
    line = capsys.readouterr().out
    before, after = (float(x.split()[0]) for x in line.split("cosine to the target ")[1].split(" -> "))
    assert after > before


@pytest.mark.parametrize("args, message", [
    (["--model", "sscd", "--output", "x.png"], "transfer only"),
    (["--loss", "pooling", "--output", "x.png"], "activations"),
    ([], "needs --output"),
    (["--report"], "needs --bench"),
])
def test_errors_are_one_line_with_exit_code_2(files, capsys, args, message):
    folder, model = files
    base = ["attack", "--target", str(folder / "target.png"), "--carrier", str(folder / "carrier.jpg"),
            "--model", f"torchscript:{model}"]
    assert main(base + args) == 2
    assert message in capsys.readouterr().err


def test_tuning_options_reach_the_attack_parameters():
    import argparse

    from copyseek.attack.cli import add_parser, attack_params

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["attack", "--schedule", "cosine", "--goal", "0.97", "--lowres", "160", "--steps", "300",
                              "--budget", "0.07"])
    params = attack_params(args, 160)
    assert (params.schedule, params.goal, params.budget, params.lowres, params.steps, params.sizes) == ("cosine", 0.97, 0.07, 160, 300, (160,))
    default = attack_params(parser.parse_args(["attack"]), 160)
    # the measured recipe (BENCHMARKS.md, issue 19: `budget90`), on the model's own grid
    assert (default.goal, default.budget, default.steps, default.lowres) == (0.995, 0.095, 800, 160)
    assert attack_params(parser.parse_args(["attack", "--sizes", "128", "192"]), 160).lowres == 0
