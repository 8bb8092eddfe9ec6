"""Each edit on its own: odd inputs, determinism, strength, what the hard edits do."""

from __future__ import annotations

import pickle
import random
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from copyseek.edits import EDITS, KINDS, to_rgb
from copyseek.edits.overlays import font_paths, printable_indices
from copyseek.errors import CopyseekError
from copyseek.synthetic import synthetic_photo


def photo(seed: int = 0, size: tuple[int, int] = (160, 120)) -> Image.Image:
    return synthetic_photo(np.random.default_rng(seed), *size)


def odd_images() -> dict[str, Image.Image]:
    """Inputs every edit must take: tiny, extreme aspect, every common mode."""
    base = photo(1, (48, 32))
    sixteen_bit = Image.fromarray(np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    assert sixteen_bit.mode == "I;16"
    return {
        "1x1": Image.new("RGB", (1, 1), (200, 30, 30)),
        "3x3": photo(2, (3, 3)),
        "1x500": photo(3, (1, 500)),
        "500x1": photo(4, (500, 1)),
        "grey": base.convert("L"),
        "grey+alpha": base.convert("LA"),
        "palette": base.convert("P"),
        "rgba": base.convert("RGBA"),
        "cmyk": base.convert("CMYK"),
        "bilevel": base.convert("1"),
        "16-bit": sixteen_bit,
    }


DONORS = [photo(10, (90, 70)), Image.new("RGB", (1, 1)), photo(11, (2, 300)).convert("RGBA")]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def mean_change(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute grey-level difference; images of different sizes count as fully changed."""
    return float(np.abs(pixels(a) - pixels(b)).mean()) if a.size == b.size else 255.0


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (AugLy must use its bundled assets)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an edit tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_the_registry_has_the_disc21_edits():
    expected = {
        "crop", "rotate", "hflip", "pad", "perspective", "blur", "jpeg", "noise", "pixelization",
        "opacity", "emoji", "text", "meme", "screenshot", "paste_into", "paste_over", "collage", "blend",
    }  # fmt: skip
    assert expected <= set(EDITS)
    assert {edit.kind for edit in EDITS.values()} == set(KINDS)
    assert all(edit.name == name and edit.weight > 0 for name, edit in EDITS.items())
    assert {name for name, edit in EDITS.items() if edit.needs_donors} == {
        "paste_into",
        "paste_over",
        "collage",
        "blend",
    }


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_edit_takes_odd_inputs(name, no_network):
    edit = EDITS[name]
    for label, image in odd_images().items():
        for severity in (0.0, 1.0, 2.0):
            out = edit(image, np.random.default_rng(7), severity, DONORS)
            assert out.mode == "RGB", (label, severity)
            assert out.width >= 1 and out.height >= 1, (label, severity)


@pytest.mark.parametrize("name", sorted(EDITS))
def test_every_edit_is_deterministic_and_does_something(name):
    image = photo(5)
    first = EDITS[name](image, np.random.default_rng(3), 1.0, DONORS[:1])
    again = EDITS[name](image, np.random.default_rng(3), 1.0, DONORS[:1])
    assert first.size == again.size and np.array_equal(pixels(first), pixels(again))
    assert mean_change(first, image) > 0.25, f"{name} left the image (almost) unchanged"


def test_edits_do_not_touch_global_random_state():
    np.random.seed(123)
    random.seed(123)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    for edit in EDITS.values():
        edit(photo(6), np.random.default_rng(0), 2.0, DONORS[:1])
    assert random.getstate() == python_state
    after = np.random.get_state()
    assert (
        after[0] == numpy_state[0]
        and np.array_equal(after[1], numpy_state[1])
        and after[2:] == numpy_state[2:]
    )


@pytest.mark.parametrize(
    "name", ["brightness", "contrast", "blur", "noise", "jpeg", "pixelization", "opacity"]
)
def test_severity_sets_the_strength(name):
    image = photo(8)
    changes = {
        severity: np.mean(
            [mean_change(EDITS[name](image, np.random.default_rng(s), severity), image) for s in range(4)]
        )
        for severity in (0.0, 0.5, 2.0)
    }
    assert changes[0.0] < 2.0, "severity 0 should leave the image almost as it is"
    assert changes[0.5] < changes[2.0]


def test_severity_out_of_range_is_an_error():
    with pytest.raises(CopyseekError, match="severity"):
        EDITS["blur"](photo(), np.random.default_rng(0), 2.5)


def test_composites_need_donors():
    with pytest.raises(CopyseekError, match="donor"):
        EDITS["paste_into"](photo(), np.random.default_rng(0))


def test_bad_inputs_are_errors():
    with pytest.raises(CopyseekError, match="PIL image"):
        EDITS["hflip"](np.zeros((4, 4, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(CopyseekError, match="empty"):
        to_rgb(Image.new("RGB", (0, 4)))


def test_paste_into_puts_a_smaller_copy_into_the_donor():
    copy = Image.new("RGB", (200, 100), (255, 255, 255))
    donor = Image.new("RGB", (300, 300), (0, 0, 0))
    for seed in range(10):
        out = EDITS["paste_into"](copy, np.random.default_rng(seed), 1.0, [donor])
        assert max(out.size) == 200, "the donor is resized to the copy's long side"
        bright = (pixels(out).mean(axis=2) > 128).mean()  # opaque pastes are white, translucent grey
        assert 0.05 < bright < 0.6


def test_paste_over_covers_part_of_the_image():
    image = Image.new("RGB", (200, 160), (255, 255, 255))
    donor = Image.new("RGB", (80, 80), (0, 0, 0))
    for seed in range(10):
        out = EDITS["paste_over"](image, np.random.default_rng(seed), 1.0, [donor])
        assert out.size == image.size
        covered = (pixels(out).mean(axis=2) < 128).mean()
        assert 0.05 < covered < 0.65


def test_collage_keeps_the_copy_in_one_cell():
    image = Image.new("RGB", (120, 90), (255, 255, 255))
    donor = Image.new("RGB", (50, 50), (0, 0, 0))
    for seed in range(10):
        out = EDITS["collage"](image, np.random.default_rng(seed), 1.0, [donor])
        white = (pixels(out).min(axis=2) > 250).mean()
        assert 0.1 < white <= 0.6  # one of 2 to 4 cells, maybe with white gutters


def test_blend_keeps_the_image_dominant():
    image = Image.new("RGB", (64, 48), (200, 200, 200))
    donor = Image.new("RGB", (64, 48), (0, 0, 0))
    for seed in range(10):
        out = EDITS["blend"](image, np.random.default_rng(seed), 2.0, [donor])
        assert 100 <= pixels(out).mean() < 200


def test_overlays_choose_augly_assets_with_the_generator():
    image = photo(9)
    for name, choices in (("emoji", 3), ("text", 3), ("meme", 3), ("screenshot", 2)):  # 2 templates
        outputs = [EDITS[name](image, np.random.default_rng(seed), 1.0) for seed in range(4)]
        assert len({pixels(o).tobytes() for o in outputs}) >= choices, f"{name} ignores the generator"


def test_text_draws_only_characters_every_font_can_lay_out():
    draw = ImageDraw.Draw(Image.new("RGBA", (64, 16)))
    for path in font_paths():
        with open(Path(path).with_suffix(".pkl"), "rb") as handle:
            codes = pickle.load(handle)
        font = ImageFont.truetype(path, 8)
        draw.text((0, 0), "".join(chr(codes[i]) for i in printable_indices(path)), font=font)
