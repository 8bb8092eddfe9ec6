import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def photo_list(tmp_path_factory):
    """A .txt list of 6 small synthetic photos (smooth gradients with blocks)."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        y, x = np.mgrid[0:96, 0:128]
        image = np.stack([x * 2 % 256, y * 2 % 256, (x + y + 40 * i) % 256], axis=2).astype(np.uint8)
        x0, y0 = rng.integers(0, 80), rng.integers(0, 60)
        image[y0 : y0 + 30, x0 : x0 + 40] = rng.integers(0, 256, size=3)
        path = root / f"p{i}.jpg"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    listing = root / "photos.txt"
    listing.write_text("\n".join(paths) + "\n")
    return listing
