import numpy as np
import pytest

from copyseek.errors import CopyseekError, ImageSkip
from copyseek.io.images import ImageFile, decode_image, find_images, iter_decoded

from .bad_images import BAD, GOOD, exif_rotated_jpeg, sixteen_bit_png, write_all


@pytest.mark.parametrize("name", sorted(GOOD))
def test_awkward_but_valid_files_decode_to_rgb(name):
    pixels = decode_image(GOOD[name]())
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_skipped_with_a_reason(name):
    with pytest.raises(ImageSkip) as info:
        decode_image(BAD[name]())
    assert info.value.reason and "\n" not in info.value.reason


def test_reasons_say_what_is_wrong():
    reasons = {}
    for name, make in BAD.items():
        with pytest.raises(ImageSkip) as info:
            decode_image(make())
        reasons[name] = info.value.reason
    assert "empty" in reasons["empty.jpg"]
    assert "too large" in reasons["bomb.png"]
    assert "not an image" in reasons["text.jpg"]
    assert "truncated" in reasons["truncated.jpg"]


def test_exif_orientation_is_applied():
    assert decode_image(exif_rotated_jpeg()).shape[:2] == (200, 120)


def test_sixteen_bit_keeps_its_contrast():
    pixels = decode_image(sixteen_bit_png())
    assert pixels.max() > 200 and pixels.min() < 60  # not clipped to white


def test_transparent_pixels_become_white():
    from .bad_images import palette_alpha_png

    pixels = decode_image(palette_alpha_png())
    assert (pixels[:, :40] == 255).all()


def test_jpeg_draft_and_cap_keep_the_requested_side():
    from .bad_images import encoded, photo

    big = encoded(photo(0, 2000, 1500), "JPEG")
    pixels = decode_image(big, min_side=300)
    assert 300 <= min(pixels.shape[:2]) <= 600


def test_find_images_is_recursive_sorted_and_ignores_other_files(tmp_path):
    write_all(tmp_path / "a" / "b", {"x.jpg": GOOD["gray.jpg"]})
    write_all(tmp_path, {"y.png": GOOD["rgba.png"], "notes.txt": lambda: b"hi", ".hidden.jpg": GOOD["gray.jpg"]})
    files, ignored = find_images(tmp_path)
    assert [f.id for f in files] == ["x", "y"]
    assert [p.name for p in ignored] == ["notes.txt"]


def test_duplicate_ids_are_a_clear_error(tmp_path):
    write_all(tmp_path / "one", {"same.jpg": GOOD["gray.jpg"]})
    write_all(tmp_path / "two", {"same.png": GOOD["rgba.png"]})
    with pytest.raises(CopyseekError, match="same"):
        find_images(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CopyseekError, match="not found"):
        find_images(tmp_path / "nope")


def test_iter_decoded_keeps_order_and_reports_skips(tmp_path):
    paths = write_all(tmp_path, {**GOOD, **BAD})
    files = [ImageFile(p.stem, p) for p in paths]
    results = list(iter_decoded(files, workers=2, prefetch=3))
    assert len(results) == len(files)
    for file, result in zip(files, results):
        got = result.file if not isinstance(result, tuple) else result[0]
        assert got == file
        assert isinstance(result, tuple) == (file.path.name in BAD)


ROUTES = {"La": ["LA", "La"], "RGBa": ["RGBa"], "LA": ["LA"], "PA": ["P", "PA"], "1": ["1"], "I": ["I"], "F": ["F"]}
ROUTES.update({mode: [mode] for mode in ("CMYK", "YCbCr", "HSV", "LAB")})


@pytest.mark.parametrize("mode", sorted(ROUTES))
def test_every_pillow_mode_becomes_rgb(mode):
    from PIL import Image

    from copyseek.io.images import to_rgb

    image = Image.new("RGBA", (5, 4), (10, 200, 30, 128))
    for step in ROUTES[mode]:
        image = image.convert(step)
    assert image.mode == mode
    pixels = to_rgb(image)
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8


def test_relative_ids_keep_repeated_file_names_apart(tmp_path):
    write_all(tmp_path / "one", {"same.jpg": GOOD["gray.jpg"]})
    write_all(tmp_path / "two", {"same.jpg": GOOD["gray.jpg"]})
    files, _ = find_images(tmp_path, ids="relative")
    assert [f.id for f in files] == ["one/same.jpg", "two/same.jpg"]
    with pytest.raises(CopyseekError, match="unknown id scheme"):
        find_images(tmp_path, ids="names")


def test_inputs_may_be_files_and_folders(tmp_path):
    from copyseek.io.images import find_inputs

    write_all(tmp_path / "dir", {"a.jpg": GOOD["gray.jpg"], "b.png": GOOD["rgba.png"]})
    write_all(tmp_path, {"c.jpg": GOOD["gray.jpg"]})
    files, _ = find_inputs([tmp_path / "c.jpg", tmp_path / "dir"])
    assert [f.id for f in files] == ["c", "a", "b"]
    assert [f.id for f in find_inputs([tmp_path / "c.jpg"], ids="relative")[0]] == ["c.jpg"]
    with pytest.raises(CopyseekError, match="not found"):
        find_inputs([tmp_path / "nope.jpg"])
    assert len(find_inputs([tmp_path / "dir" / "a.jpg", tmp_path / "dir"])[0]) == 2  # named twice, counted once
    write_all(tmp_path / "other", {"c.png": GOOD["rgba.png"]})
    with pytest.raises(CopyseekError, match="used by two files"):
        find_inputs([tmp_path / "c.jpg", tmp_path / "other"])


def test_a_symlink_loop_is_skipped_with_its_reason(tmp_path):
    from copyseek.io.images import resolved

    (tmp_path / "a.jpg").symlink_to(tmp_path / "b.jpg")
    (tmp_path / "b.jpg").symlink_to(tmp_path / "a.jpg")
    files, _ = find_images(tmp_path)
    [(_, skip), _] = list(iter_decoded(files, workers=0))
    assert skip.reason == "symlink loop (the link points back to itself)"
    assert resolved(tmp_path / "a.jpg") == str(tmp_path / "a.jpg")
