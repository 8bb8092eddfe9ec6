"""Layouts: every edit reports where the copy goes; checked against a marker drawn in the image."""

import numpy as np
import pytest
from PIL import Image

from copyseek.edits import EDITS, Layout, random_edits, random_edits_with_layout
from copyseek.edits.layout import Moved, changed_box, shift

MOVING = ["crop", "rotate", "rotate90", "hflip", "vflip", "scale", "aspect", "pad", "pad_square", "skew",
          "perspective", "meme", "screenshot", "paste_into", "collage"]


def iou(a, b):
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    area = lambda box: np.prod(box[2:] - box[:2])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def marker_image(box=(60, 40, 140, 100), size=(200, 150)):
    """Dark grey image with a pure red rectangle at `box`."""
    image = np.full((size[1], size[0], 3), 40, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = (255, 0, 0)
    return Image.fromarray(image)


def red_box(image):
    pixels = np.asarray(image).astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    ys, xs = np.nonzero(red)  # percentiles: a few red pixels of a screenshot template do not count
    return np.array([np.percentile(xs, 0.5), np.percentile(ys, 0.5), np.percentile(xs, 99.5) + 1, np.percentile(ys, 99.5) + 1], float)


@pytest.mark.parametrize("name", MOVING)
def test_tracked_box_follows_the_marker(name):
    box = (60, 40, 140, 100)
    image = marker_image(box)
    donors = [Image.fromarray(np.full((120, 160, 3), 90, np.uint8))]
    start = Layout((200, 150), np.array(box, float))
    for seed in range(4):
        edited, layout = EDITS[name].apply(image, np.random.default_rng(seed), 1.0, donors, start)
        assert layout.size == edited.size
        assert iou(layout.copy, red_box(edited)) > 0.75, (name, seed, layout.copy, red_box(edited))


def test_whole_frame_of_a_paste_is_where_the_photo_went():
    image = marker_image((0, 0, 200, 150))
    donors = [Image.fromarray(np.full((300, 400, 3), 90, np.uint8))]
    edited, layout = EDITS["paste_into"].apply(image, np.random.default_rng(3), 1.6, donors)
    assert iou(layout.copy, red_box(edited)) > 0.9
    assert (layout.copy[2:] - layout.copy[:2]).prod() < 0.6 * edited.width * edited.height


@pytest.mark.parametrize("name", ["emoji", "text", "meme", "paste_over"])
def test_overlays_are_boxed(name):
    image = Image.fromarray(np.full((150, 200, 3), 128, np.uint8))
    donors = [Image.fromarray(np.zeros((120, 160, 3), np.uint8))]
    edited, layout = EDITS[name].apply(image, np.random.default_rng(1), 1.0, donors)
    assert len(layout.overlays) >= 1
    changed = changed_box(image.resize(edited.size), edited) if name != "meme" else (0, 0, edited.width, 1)
    x0, y0, x1, y1 = layout.overlays.min(0)[0], layout.overlays.min(0)[1], layout.overlays.max(0)[2], layout.overlays.max(0)[3]
    assert x0 <= changed[0] + 1 and y0 <= changed[1] + 1 and x1 >= changed[2] - 1


def test_photometric_edits_keep_the_layout():
    image = marker_image()
    start = Layout((200, 150), np.array([10.0, 20.0, 100.0, 120.0]))
    _, layout = EDITS["blur"].apply(image, np.random.default_rng(0), 1.0, (), start)
    assert np.allclose(layout.copy, start.copy) and len(layout.overlays) == 0


def test_with_layout_draws_the_same_image_as_random_edits():
    image = marker_image()
    donors = [Image.fromarray(np.full((120, 160, 3), 90, np.uint8))]
    for seed in range(6):
        plain, names = random_edits(image, np.random.default_rng(seed), severity=1.6, donors=donors)
        tracked, names2, layout = random_edits_with_layout(image, np.random.default_rng(seed), severity=1.6, donors=donors)
        assert names == names2 and np.array_equal(np.asarray(plain), np.asarray(tracked))
        assert layout.size == tracked.size
        assert 0 <= layout.copy[0] <= layout.copy[2] <= tracked.width


def test_layout_resize_and_round_trip():
    layout = Layout((200, 100), np.array([20.0, 10.0, 120.0, 90.0]), np.array([[0.0, 0.0, 10.0, 10.0]]))
    half = layout.resized((100, 50))
    assert np.allclose(half.copy, [10, 5, 60, 45]) and np.allclose(half.overlays, [[0, 0, 5, 5]])
    back = Layout.from_dict(half.to_dict())
    assert back.size == (100, 50) and np.allclose(back.copy, half.copy)


def test_boxes_leaving_the_frame_are_clipped_and_empty_overlays_dropped():
    layout = Layout((100, 100), np.array([50.0, 50.0, 100.0, 100.0]), np.array([[0.0, 0.0, 20.0, 20.0]]))
    moved = layout.after(Moved(Image.new("RGB", (60, 60)), shift(-40, -40)))
    assert np.allclose(moved.copy, [10, 10, 60, 60]) and len(moved.overlays) == 0


def test_composites_name_the_other_photos_that_could_be_the_copy():
    image, donors = marker_image(), [Image.fromarray(np.full((120, 160, 3), 90, np.uint8))] * 4
    pasted, layout = EDITS["paste_into"].apply(image, np.random.default_rng(0), 1.0, donors)
    assert np.allclose(layout.alternatives, [[0, 0, pasted.width, pasted.height]])  # the donor frame
    _, layout = EDITS["paste_over"].apply(image, np.random.default_rng(0), 1.0, donors)
    assert np.allclose(layout.alternatives, layout.overlays)  # the pasted photo covers the copy and looks like a pasted copy
    _, layout = EDITS["collage"].apply(image, np.random.default_rng(2), 1.5, donors)
    cells = np.vstack([layout.copy[None], layout.alternatives])
    assert len(layout.alternatives) >= 1 and np.allclose((cells[:, 2:] - cells[:, :2]).std(axis=0), 0)  # equal cells
    assert all(iou(layout.copy, other) == 0 for other in layout.alternatives)


def test_alternatives_follow_later_edits_and_round_trip():
    layout = Layout((100, 100), np.array([10.0, 10.0, 50.0, 50.0]), alternatives=np.array([[0.0, 0.0, 100.0, 100.0]]))
    moved = layout.after(Moved(Image.new("RGB", (60, 60)), shift(-40, -40)))  # a crop of the lower right
    assert np.allclose(moved.alternatives, [[0, 0, 60, 60]])
    assert np.allclose(Layout.from_dict(moved.to_dict()).alternatives, moved.alternatives)
    assert "alternatives" not in Layout.whole((10, 10)).to_dict()  # layouts without them are written as before
