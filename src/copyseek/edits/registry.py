"""The edit registry and the random edit chains built from it.

An edit draws its own parameters from the `np.random.Generator` it is given, so a chain is a pure
function of (image, generator state, severity, donors): nothing reads global random state.

Strength: each call turns `severity` (0..2; 1.6 is calibrated to DISC21, see bench/config.py) into a strength
`severity * U(0.5, 1)` that the edit maps to its parameters; strength 0 is (close to) the identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from copyseek.edits.layout import Layout, Moved
from copyseek.errors import CopyseekError
from copyseek.io.images import to_rgb as _to_rgb_array

KINDS = ("geometric", "photometric", "overlay", "composite")
MAX_SEVERITY = 2.0
MAX_EDITS = 6

Donors = Sequence[Image.Image]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode (L, P, RGBA, I;16, CMYK...) -> RGB; alpha is composited on white."""
    if not isinstance(image, Image.Image):
        raise CopyseekError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise CopyseekError(f"cannot edit an empty image ({image.width}x{image.height})")
    if image.mode == "RGB":
        return image
    return Image.fromarray(_to_rgb_array(image))


def check_severity(severity: float) -> float:
    """Validate severity (0..2) and return it as a float."""
    severity = float(severity)
    if not 0.0 <= severity <= MAX_SEVERITY:
        raise CopyseekError(f"severity must be between 0 and {MAX_SEVERITY:g}, got {severity:g}")
    return severity


@dataclass(frozen=True)
class Edit:
    """One kind of edit; its parameters are drawn anew on each call.

    name:   registry key, also what `random_edits` reports.
    kind:   one of KINDS; "composite" edits combine the image with donor photos.
    fn:     fn(rgb, rng, strength) or, for composites, fn(rgb, rng, strength, donors) -> image, or
            a `Moved` (the image and how it moved the copy, see edits/layout.py).
    weight: relative chance that `random_edits` draws this edit.
    early:  the edit can cut content away (crops). Chains run it before any `exclusive` edit,
            which may shrink the image to a small part of the frame that a crop could remove.
    frames: the edit shrinks the image into a larger frame (a screenshot); like composites, it
            is `exclusive`: at most one such edit per chain, so a copy is never shrunk twice.
    """

    name: str
    kind: str
    fn: Callable[..., Image.Image]
    weight: float = 1.0
    early: bool = False
    frames: bool = False

    @property
    def needs_donors(self) -> bool:
        return self.kind == "composite"

    @property
    def exclusive(self) -> bool:
        return self.needs_donors or self.frames

    def __call__(
        self, image: Image.Image, rng: np.random.Generator, severity: float = 1.0, donors: Donors = ()
    ) -> Image.Image:
        """Edit `image` (any mode, >= 1x1) and return an RGB image (>= 1x1)."""
        edited, _ = self.apply(image, rng, severity, donors)
        return edited

    def apply(
        self,
        image: Image.Image,
        rng: np.random.Generator,
        severity: float = 1.0,
        donors: Donors = (),
        layout: Layout | None = None,
    ) -> tuple[Image.Image, Layout]:
        """Edit `image` and follow where the copy and overlays go: returns the RGB image and the
        layout of the result (`layout` describes `image`; by default the copy is the whole of it).
        Draws the same random numbers as calling the edit."""
        severity = check_severity(severity)
        if self.needs_donors and len(donors) == 0:
            raise CopyseekError(f"edit {self.name!r} pastes other photos: pass at least one donor image")
        strength = severity * rng.uniform(0.5, 1.0)
        rgb = to_rgb(image)
        layout = Layout.whole(rgb.size) if layout is None else layout
        result = self.fn(rgb, rng, strength, donors) if self.needs_donors else self.fn(rgb, rng, strength)
        layout = layout.after(result)
        edited = to_rgb(result.image if isinstance(result, Moved) else result)
        return edited, layout


EDITS: dict[str, Edit] = {}
"""All edits by name, filled in by the modules of this package as they are imported."""


def register(name: str, kind: str, weight: float = 1.0, early: bool = False, frames: bool = False):
    """Decorator adding an edit function to EDITS (see Edit for the arguments)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def add(fn: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        if name in EDITS:
            raise ValueError(f"edit {name!r} is registered twice")
        EDITS[name] = Edit(name, kind, fn, weight, early, frames)
        return fn

    return add


def draw_chain(
    rng: np.random.Generator, severity: float, with_donors: bool, n_edits: int | None = None
) -> list[Edit]:
    """Distinct edits in the order to apply them.

    n_edits defaults to 1 + Poisson(1.5 * severity), at most MAX_EDITS. At most one `exclusive`
    edit is drawn, and `early` edits drawn after it are moved before it.
    """
    pool = [edit for edit in EDITS.values() if with_donors or not edit.needs_donors]
    longest = sum(not edit.exclusive for edit in pool) + any(edit.exclusive for edit in pool)
    if n_edits is None:
        n_edits = min(1 + int(rng.poisson(1.5 * severity)), MAX_EDITS)
    elif not 1 <= int(n_edits) <= longest:
        raise CopyseekError(f"n_edits must be between 1 and {longest}, got {n_edits}")
    weights = np.array([edit.weight for edit in pool], dtype=np.float64)
    chain: list[Edit] = []
    for _ in range(int(n_edits)):
        edit = pool[rng.choice(len(pool), p=weights / weights.sum())]
        chain.append(edit)
        for i, other in enumerate(pool):
            if other is edit or (edit.exclusive and other.exclusive):
                weights[i] = 0.0
    exclusive = next((i for i, edit in enumerate(chain) if edit.exclusive), None)
    if exclusive is None:
        return chain
    before, after = chain[:exclusive], chain[exclusive + 1 :]
    return before + [e for e in after if e.early] + [chain[exclusive]] + [e for e in after if not e.early]


def random_edits(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    severity: float = 1.0,
    donors: Donors = (),
    n_edits: int | None = None,
) -> tuple[Image.Image, list[str]]:
    """Apply a random chain of DISC21-style edits.

    image:    any mode, any size >= 1x1.
    rng:      the only source of randomness (same state -> same output).
    severity: 0..2; 1.6 makes benchmarks as hard as DISC21, 0 leaves the image almost unchanged.
    donors:   other photos for the paste / overlay / collage / blend edits; those edits are not
              drawn when it is empty. They must never be photos the edited image could be
              matched to (e.g. benchmark references).
    n_edits:  chain length; by default random, longer at higher severity.
    Returns the edited RGB image and the names of the edits applied, in order.
    """
    edited, names, _ = random_edits_with_layout(image, rng, severity=severity, donors=donors, n_edits=n_edits)
    return edited, names


def random_edits_with_layout(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    severity: float = 1.0,
    donors: Donors = (),
    n_edits: int | None = None,
) -> tuple[Image.Image, list[str], Layout]:
    """`random_edits` (same arguments, same random draws, same image) that also returns the
    layout of the result: where the copied image and the overlays lie (edits/layout.py)."""
    severity = check_severity(severity)
    chain = draw_chain(rng, severity, len(donors) > 0, n_edits)
    edited = to_rgb(image)
    layout = Layout.whole(edited.size)
    for edit in chain:
        edited, layout = edit.apply(edited, rng, severity, donors, layout)
    return edited, [edit.name for edit in chain], layout
