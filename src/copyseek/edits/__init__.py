"""DISC21-style image edits, shared by the benchmark builder and the training-data pipeline.

>>> import numpy as np
>>> from copyseek.edits import EDITS, random_edits, random_edits_with_layout
>>> from copyseek.synthetic import synthetic_photo
>>> rng = np.random.default_rng(0)
>>> image, donor = synthetic_photo(rng, 320, 240), synthetic_photo(rng, 320, 240)
>>> edited, names = random_edits(image, rng, severity=1.0, donors=[donor])   # PIL images in and out
>>> edited.mode, len(names) >= 1
('RGB', True)
>>> EDITS["hflip"](image, rng).size          # one edit: (image, rng, severity, donors) -> RGB image
(320, 240)
>>> edited, names, layout = random_edits_with_layout(image, rng, donors=[donor])   # + where the copy lies
>>> layout.size == edited.size and len(layout.copy) == 4
True

Edits: AugLy's image augmentations (geometric, photometric, overlays) plus the hard DISC21 edits
that mix in other photos (`kind == "composite"`: paste_into, paste_over, collage, blend). Every
random choice comes from the Generator passed in; AugLy's assets are used, nothing is downloaded.
"""

from copyseek.edits.layout import Layout, Moved
from copyseek.edits.registry import EDITS, KINDS, MAX_SEVERITY, Edit, random_edits, random_edits_with_layout, to_rgb

# Importing the modules registers their edits in EDITS.
from copyseek.edits import composite, geometric, overlays, photometric  # noqa: E402,F401  isort: skip

__all__ = ["EDITS", "KINDS", "MAX_SEVERITY", "Edit", "Layout", "Moved", "random_edits", "random_edits_with_layout", "to_rgb"]
