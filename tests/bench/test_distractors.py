"""Distractor references: recipes, kinds, determinism, incremental files, photo lists, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copyseek.bench.distractors import (
    DistractorRecipe, benchmark_photos, distractor_index, false_match_kinds, make_distractors, one_per_source,
    read_photo_list, scene_mates,
)
from copyseek.errors import CopyseekError
from copyseek.io.csvfiles import GroundTruth, Prediction
from tests.making import write_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    return write_photos(tmp_path_factory.mktemp("photos"), 3, seed=5, size=(200, 150))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), np.float32)


@pytest.mark.parametrize("bad", [dict(edits="medium"), dict(max_side=8)])
def test_recipe_refuses_bad_values(bad):
    with pytest.raises(CopyseekError, match=str(next(iter(bad.values())))):
        DistractorRecipe(**bad)


def test_kinds_alternate_and_none_uses_each_photo_once():
    light, none = DistractorRecipe("light"), DistractorRecipe("none")
    assert [light.kind(i, 3) for i in range(8)] == ["photo", "procedural"] * 4
    assert [none.kind(i, 3) for i in range(8)] == ["photo", "procedural"] * 3 + ["procedural"] * 2
    assert light.kind(0, 0) == "procedural"
    assert [light.photo_of(i, 3) for i in range(0, 10, 2)] == [0, 1, 2, 0, 1]  # photos come back in turn
    assert none.photo_of(6, 3) is None and light.photo_of(1, 3) is None


def test_none_is_the_photo_as_it_is(photos):
    recipe = DistractorRecipe("none", max_side=100)
    source = Image.open(photos[1]).convert("RGB")
    source.thumbnail((100, 100))
    assert np.array_equal(pixels(recipe.make(photos, 2)), pixels(source))


def test_light_is_a_mild_varied_copy_and_heavy_is_not_the_photo(photos):
    recipe = DistractorRecipe("light", max_side=160)
    source = Image.open(photos[0]).convert("RGB")
    variants = [recipe.make(photos, i) for i in (0, 6, 12)]  # three light copies of photo 0
    assert len({v.size for v in variants}) > 1 or not np.array_equal(pixels(variants[0]), pixels(variants[1]))
    for variant in variants:
        assert 0.3 * 160 <= max(variant.size) <= 160
        # no overlay or filter: the colours stay near the photo's (a crop and a mild jitter)
        assert np.abs(pixels(variant).mean((0, 1)) - pixels(source).mean((0, 1))).max() < 40
    none = DistractorRecipe("none", max_side=160).make(photos, 0)
    heavy = DistractorRecipe("heavy", max_side=160).make(photos, 0)
    assert heavy.size != none.size or not np.array_equal(pixels(heavy), pixels(none))


@pytest.mark.parametrize("edits", ["none", "light", "heavy"])
def test_each_distractor_is_a_function_of_its_index_and_seed(photos, edits):
    recipe = DistractorRecipe(edits, seed=3, max_side=120)
    for i in (0, 1):
        assert np.array_equal(pixels(recipe.make(photos, i)), pixels(recipe.make(photos, i)))
    other_seed = DistractorRecipe(edits, seed=4, max_side=120).make(photos, 1)
    assert not np.array_equal(pixels(other_seed), pixels(recipe.make(photos, 1))) or other_seed.size != recipe.make(photos, 1).size


def test_make_distractors_extends_without_rewriting(photos, tmp_path):
    recipe = DistractorRecipe("light", max_side=96)
    first = make_distractors(photos, 3, tmp_path, recipe, progress=False)
    stamps = {f.id: f.path.stat().st_mtime_ns for f in first}
    more = make_distractors(photos, 5, tmp_path, recipe, progress=False)
    assert [f.id for f in more] == [f"D{i:07d}" for i in range(5)]
    assert all(more[i].path.stat().st_mtime_ns == stamps[more[i].id] for i in range(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"D{i:07d}.jpg" for i in range(5)]  # no temporary file left
    assert [distractor_index(f.id) for f in more] == list(range(5))


def test_distractor_index_of_other_ids_is_none():
    assert distractor_index("R000012") is None and distractor_index("D") is None and distractor_index("Dx12") is None


def test_read_photo_list_from_folder_and_file(photos, tmp_path):
    assert sorted(read_photo_list(photos[0].parent)) == sorted(photos)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in photos[:2]) + "\n\n")
    assert read_photo_list(listing) == photos[:2]
    with pytest.raises(CopyseekError, match="missing"):
        read_photo_list(tmp_path / "missing")


GROUND_TRUTH = GroundTruth(frozenset({("Q1", "R1")}), frozenset({"Q1", "Q2"}))
PREDICTIONS = [
    Prediction("Q1", "R1", 0.9),  # the copy
    Prediction("Q1", "D0000000", 0.8),  # photo 0
    Prediction("Q1", "D0000006", 0.7),  # photo 0 again: (6 // 2) % 3 photos = 0
    Prediction("Q1", "D0000002", 0.4),  # photo 1
    Prediction("Q2", "D0000001", 0.6),  # procedural
    Prediction("Q2", "R2", 0.2),  # another benchmark reference
]


def test_false_match_kinds_count_by_what_the_reference_is():
    recipe = DistractorRecipe("light")
    assert false_match_kinds(PREDICTIONS, GROUND_TRUTH, 0.5, recipe, 3) == {"reference": 0, "photo": 2, "procedural": 1}
    assert false_match_kinds(PREDICTIONS, GROUND_TRUTH, 0.1, recipe, 3) == {"reference": 1, "photo": 3, "procedural": 1}
    assert sum(false_match_kinds(PREDICTIONS, GROUND_TRUTH, None, recipe, 3).values()) == 0


def test_one_per_source_keeps_each_querys_best_variant_of_a_photo():
    kept = one_per_source(PREDICTIONS, DistractorRecipe("light"), 3)
    assert sorted((p.query_id, p.reference_id) for p in kept) == sorted(
        [("Q1", "R1"), ("Q1", "D0000000"), ("Q1", "D0000002"), ("Q2", "D0000001"), ("Q2", "R2")]
    )
    # with `none`, distractor 6 is procedural (3 photos used once), so nothing merges
    assert len(one_per_source(PREDICTIONS, DistractorRecipe("none"), 3)) == len(PREDICTIONS)


def test_scene_mates_flags_candidates_close_to_a_benchmark_photo():
    benchmark = np.eye(4, dtype=np.float32)[:2]  # two photos: axes 0 and 1
    near = np.array([0.8, 0.6, 0, 0], np.float32)  # cosine 0.8 to photo 0
    far = np.array([0, 0, 0.6, 0.8], np.float32)  # orthogonal to both
    assert scene_mates(np.stack([near, far]), benchmark, 0.5).tolist() == [True, False]
    assert scene_mates(np.stack([near, far]), benchmark, 0.9).tolist() == [False, False]
    assert scene_mates(np.zeros((0, 4)), benchmark, 0.5).shape == (0,)
    with pytest.raises(CopyseekError, match="descriptors"):
        scene_mates(np.zeros((2, 3)), benchmark, 0.5)


def test_benchmark_photos_lists_every_photo_a_benchmark_uses(tmp_path):
    import json

    (tmp_path / "benchmark.json").write_text(json.dumps({
        "images": "/photos", "references": {"R0": "a.jpg", "R1": "b.jpg"}, "background": {"B0": "c.jpg"},
        "donors": ["d.jpg", "a.jpg"],
    }))
    (tmp_path / "edits.csv").write_text("query_id,is_copy,edits,source\nQ0,1,crop,a.jpg\nQ1,0,blur,e.jpg\n")
    assert [p.name for p in benchmark_photos(tmp_path)] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert all(p.parent == Path("/photos") for p in benchmark_photos(tmp_path))
