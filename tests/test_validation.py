"""Checks at the boundary (copyseek/validation.py), and the contract every parameter dataclass keeps:
a value of the wrong type or out of range raises a CopyseekError naming it (never a TypeError or a
silent default), and an options dict with an unknown key is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from copyseek.describe.global_branch import GlobalOptions
from copyseek.errors import CopyseekError
from copyseek.local.features import SiftParams
from copyseek.local.search import SearchParams
from copyseek.local.verify import VerifyParams
from copyseek.match.fusion import FusionParams
from copyseek.match.matcher import MatchOptions
from copyseek.validation import check_image, check_images, check_int, check_number, check_vectors, from_options

PARAMETERS = [MatchOptions, FusionParams, GlobalOptions, SiftParams, SearchParams, VerifyParams]
"""Frozen parameter dataclasses that validate themselves when made; a new one joins here."""


def wrong_values(default):
    """Values of the wrong kind for a field whose default is `default`."""
    if isinstance(default, bool):
        return ["yes", 2]
    if isinstance(default, int):
        return ["8", 2.5, None, True]
    if isinstance(default, float):
        return ["0.5", float("nan"), None]
    if isinstance(default, str):
        return [3, ""]
    return []


CASES = [
    (cls, field.name, value)
    for cls in PARAMETERS
    for field in dataclasses.fields(cls)
    for value in wrong_values(field.default)
]


@pytest.mark.parametrize(("cls", "name", "value"), CASES, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in CASES])
def test_every_parameter_refuses_a_wrong_value_naming_it(cls, name, value):
    with pytest.raises(CopyseekError) as error:
        cls(**{name: value})
    assert name.split("_")[-1] in str(error.value)


@pytest.mark.parametrize("cls", PARAMETERS)
def test_every_parameter_class_is_frozen_and_refuses_unknown_keys(cls):
    made = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(cls)[0].name, None)
    with pytest.raises(CopyseekError, match="unknown .*'facotry'"):
        from_options(cls, {"facotry": "Flat"})
    assert from_options(cls, {}) == made


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: MatchOptions(candidates=-5), "candidates must be an integer >= 1, got -5"),
        (lambda: FusionParams(candidates=0), "fusion candidates must be an integer >= 1, got 0"),
        (lambda: FusionParams(region_k=-1), "fusion region_k must be an integer >= 1, got -1"),
        (lambda: FusionParams(skip_crops_above=1.5), "skip_crops_above"),
        (lambda: FusionParams(max_crops=0), "fusion max_crops must be an integer >= 1, got 0"),
        (lambda: FusionParams(crop_size=8), "fusion crop_size must be an integer >= 32, got 8"),
        (lambda: GlobalOptions(batch_size=0), "global batch_size"),
    ],
)
def test_the_values_the_issue_names_are_refused(make, named):
    with pytest.raises(CopyseekError, match=named):
        make()


def test_ints_and_numbers():
    assert check_int("n", np.int64(3), minimum=1) == 3
    for bad in (True, 1.0, "1", 0):
        with pytest.raises(CopyseekError, match="n must be an integer >= 1"):
            check_int("n", bad, minimum=1)
    with pytest.raises(CopyseekError, match=r"in \[1, 3\], got 4"):
        check_int("n", 4, minimum=1, maximum=3)
    assert check_number("x", 1, minimum=0.0) == 1.0
    with pytest.raises(CopyseekError, match="x must be a number > 0"):
        check_number("x", 0.0, minimum=0.0, open_minimum=True)
    with pytest.raises(CopyseekError, match="finite"):
        check_number("x", float("inf"))


def test_vectors_are_checked_and_converted_for_faiss():
    converted = check_vectors(np.arange(6, dtype=np.float64).reshape(2, 3)[:, ::-1], 3)
    assert converted.dtype == np.float32 and converted.flags.c_contiguous
    assert check_vectors(np.ones(3), 3).shape == (1, 3)
    with pytest.raises(CopyseekError, match=r"shape \(n, 4\), got \(2, 3\)"):
        check_vectors(np.ones((2, 3)), 4)
    with pytest.raises(CopyseekError, match="real numbers"):
        check_vectors(np.array([["a", "b"]]), 2)
    with pytest.raises(CopyseekError, match="NaN"):
        check_vectors(np.array([[np.nan, 1.0]]), 2)


def test_images_must_be_rgb_uint8_arrays():
    image = np.zeros((4, 5, 3), np.uint8)
    assert check_image(image) is image and check_images([image, image]) == [image, image]
    for bad in (image.astype(np.float32), image[:, :, 0], np.zeros((0, 5, 3), np.uint8), image.tolist()):
        with pytest.raises(CopyseekError, match="uint8"):
            check_image(bad)
    with pytest.raises(CopyseekError, match=r"images\[1\]"):
        check_images([image, image[:, :, :2]])
    with pytest.raises(CopyseekError, match="a list"):
        check_images(np.stack([image, image]))


def test_vector_of_the_wrong_dimension_at_a_searcher_is_a_clear_error():
    """Before: a bare AssertionError from inside Faiss, a traceback at the command line."""
    from copyseek.describe.global_branch import VectorSearcher

    searcher = VectorSearcher(8)
    searcher.add({"vectors": np.eye(8, dtype=np.float32)})
    with pytest.raises(CopyseekError, match=r"global query vectors must have shape \(n, 8\), got \(1, 7\)"):
        searcher.search_vectors(np.ones((1, 7), np.float32), 3)
    with pytest.raises(CopyseekError, match=r"global chunk vectors must have shape \(n, 8\), got \(2, 9\)"):
        searcher.add({"vectors": np.ones((2, 9), np.float32)})
