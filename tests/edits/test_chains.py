"""random_edits: the chains it draws, determinism, the public API."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from copyseek.edits import EDITS, random_edits
from copyseek.edits.registry import MAX_EDITS, draw_chain
from copyseek.errors import CopyseekError
from copyseek.synthetic import synthetic_photo

PHOTO = synthetic_photo(np.random.default_rng(0), 200, 150)
DONORS = [synthetic_photo(np.random.default_rng(i), 120, 90) for i in (1, 2)]


def test_same_generator_state_same_result():
    first, names = random_edits(PHOTO, np.random.default_rng(42), donors=DONORS)
    again, names_again = random_edits(PHOTO, np.random.default_rng(42), donors=DONORS)
    assert names == names_again
    assert first.tobytes() == again.tobytes()


def test_different_seeds_different_results():
    results = {
        random_edits(PHOTO, np.random.default_rng(seed), donors=DONORS)[0].tobytes() for seed in range(8)
    }
    assert len(results) == 8


def test_result_is_rgb_and_names_are_registered_edits():
    for mode in ("L", "RGBA", "P", "I;16"):
        image = PHOTO.convert("L").convert(mode) if mode == "I;16" else PHOTO.convert(mode)
        edited, names = random_edits(image, np.random.default_rng(1), donors=DONORS)
        assert isinstance(edited, Image.Image) and edited.mode == "RGB"
        assert names and all(name in EDITS for name in names)


def test_chains_follow_their_rules():
    for seed in range(300):
        chain = draw_chain(np.random.default_rng(seed), 2.0, with_donors=True)
        assert 1 <= len(chain) <= MAX_EDITS
        assert len({edit.name for edit in chain}) == len(chain), "an edit is drawn at most once"
        exclusive = [i for i, edit in enumerate(chain) if edit.exclusive]
        assert len(exclusive) <= 1, "at most one composite or framing edit"
        if exclusive:
            assert not any(edit.early for edit in chain[exclusive[0] :]), "crops come before a composite"


def test_no_composite_without_donors_and_some_with():
    drawn = [
        edit
        for seed in range(200)
        for edit in draw_chain(np.random.default_rng(seed), 1.0, with_donors=False)
    ]
    assert not any(edit.needs_donors for edit in drawn)
    drawn = [
        edit for seed in range(200) for edit in draw_chain(np.random.default_rng(seed), 1.0, with_donors=True)
    ]
    share = np.mean([edit.needs_donors for edit in drawn])
    assert 0.1 < share < 0.4


def test_severity_makes_chains_longer():
    def mean_length(severity: float) -> float:
        return np.mean([len(draw_chain(np.random.default_rng(s), severity, True)) for s in range(300)])

    assert mean_length(0.0) == 1.0
    assert mean_length(0.5) < mean_length(1.0) < mean_length(2.0)


def test_n_edits_is_respected_and_checked():
    _, names = random_edits(PHOTO, np.random.default_rng(0), n_edits=4, donors=DONORS)
    assert len(names) == 4
    for bad in (0, 100):
        with pytest.raises(CopyseekError, match="n_edits"):
            random_edits(PHOTO, np.random.default_rng(0), n_edits=bad)
    with pytest.raises(CopyseekError, match="severity"):
        random_edits(PHOTO, np.random.default_rng(0), severity=-0.1)


def test_donors_are_not_modified():
    before = [d.tobytes() for d in DONORS]
    for seed in range(20):
        random_edits(PHOTO, np.random.default_rng(seed), donors=DONORS, severity=2.0)
    assert [d.tobytes() for d in DONORS] == before
