"""DISC21-style image edits, shared by the benchmark builder and the training-data pipeline.

    from copyseek.edits import random_edits, EDITS
    edited, names = random_edits(image, np.random.default_rng(0), severity=1.0, donors=[photo, ...])
    flipped = EDITS["hflip"](image, rng)          # one edit: (image, rng, severity, donors) -> RGB
    edited, names, layout = random_edits_with_layout(image, rng)   # + where the copy / overlays lie

Edits: AugLy's image augmentations (geometric, photometric, overlays) plus the hard DISC21 edits
that mix in other photos (`kind == "composite"`: paste_into, paste_over, collage, blend). Every
random choice comes from the Generator passed in; AugLy's assets are used, nothing is downloaded.
"""

from copyseek.edits.layout import Layout, Moved
from copyseek.edits.registry import EDITS, KINDS, MAX_SEVERITY, Edit, random_edits, random_edits_with_layout, to_rgb

# Importing the modules registers their edits in EDITS.
from copyseek.edits import composite, geometric, overlays, photometric  # noqa: E402,F401  isort: skip

__all__ = ["EDITS", "KINDS", "MAX_SEVERITY", "Edit", "Layout", "Moved", "random_edits", "random_edits_with_layout", "to_rgb"]
