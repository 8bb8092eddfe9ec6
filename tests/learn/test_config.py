from pathlib import Path

import pytest

from copyseek.errors import CopyseekError
from copyseek.learn.config import TrainConfig, parse_assignment, read_toml, updated


def test_read_toml_takes_a_train_table_or_top_level_keys(tmp_path):
    (tmp_path / "table.toml").write_text("[train]\nlr = 0.5\n")
    (tmp_path / "flat.toml").write_text("lr = 0.5\n")
    assert read_toml(tmp_path / "table.toml") == read_toml(tmp_path / "flat.toml") == {"lr": 0.5}


def test_read_toml_names_the_file_it_cannot_read(tmp_path):
    (tmp_path / "broken.toml").write_text("lr = = 1\n")
    with pytest.raises(CopyseekError, match="broken.toml"):
        read_toml(tmp_path / "broken.toml")
    with pytest.raises(CopyseekError, match="missing.toml"):
        read_toml(tmp_path / "missing.toml")


def test_updated_applies_values_and_makes_ints_floats_where_floats_are_expected():
    config = updated(TrainConfig(), {"lr": 1, "steps": 5, "ks": [1, 4]}, "test")
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.steps == 5 and config.ks == [1, 4]
    assert TrainConfig().steps == 0  # the defaults are not changed in place


# (unknown keys and text for numbers through the command line: test_train.py)
@pytest.mark.parametrize("values, message", [
    ({"learning_rate": 0.1}, r"origin: unknown setting\(s\) \['learning_rate'\]"),
    ({"steps": 1.5}, "origin: steps must be int"),
    ({"steps": True}, "origin: steps must be int"),
])
def test_updated_rejects_unknown_keys_and_wrong_types_naming_the_origin(values, message):
    with pytest.raises(CopyseekError, match=message):
        updated(TrainConfig(), values, "origin")


@pytest.mark.parametrize("text, expected", [
    ("steps=3", ("steps", 3)),
    ("lr=2e-4", ("lr", 2e-4)),
    ("ks=[1, 4]", ("ks", [1, 4])),
    ("arch=resnet-small", ("arch", "resnet-small")),
    ("loss=recall@k+simix", ("loss", "recall@k+simix")),
    ('name="a b"', ("name", "a b")),
])
def test_parse_assignment_reads_toml_values_and_keeps_bare_words_as_text(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["steps", "=3", " =3"])
def test_parse_assignment_needs_a_key_and_an_equals_sign(text):
    with pytest.raises(CopyseekError, match="--set expects key=value"):
        parse_assignment(text)


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_names_only_known_settings_of_the_right_types(path):
    settings = read_toml(path)
    assert settings, f"{path.name} sets nothing"
    config = updated(TrainConfig(), settings, path.name)
    assert all(getattr(config, key) == value for key, value in settings.items())
