"""Device run: one view bank of the HOW training photos at the largest size (copyseek's own
build_view_bank, workers in parallel), and banks at smaller sizes made by resizing those same views.

    usage: make_banks.py IMAGES.txt OUT_DIR VIEWS_PER_PHOTO WORKERS 384,288,192   (OUT_DIR/<size>/ each)
"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import cv2

from copyseek.learn.data import EditAugment, ViewMaker, build_view_bank, discover_photos

images, out, views, workers = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sizes = [int(s) for s in sys.argv[5].split(",")]
start = time.time()
photos = discover_photos(images)
top = max(sizes)
maker = ViewMaker(photos, EditAugment(severity=1.6), decode_side=top)
build_view_bank(out / str(top), maker, top, views, seed=0, workers=workers)
print(f"bank {top}: {time.time() - start:.0f} s", flush=True)
big = np.load(out / str(top) / "images.npy", mmap_mode="r")
for size in sizes:
    if size == top:
        continue
    folder = out / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:  # cv2 releases the GIL
        small = np.stack(list(pool.map(lambda v: cv2.resize(np.asarray(v), (size, size), interpolation=cv2.INTER_AREA), big, chunksize=64)))
    np.save(folder / "images.npy", small)
    np.save(folder / "labels.npy", np.load(out / str(top) / "labels.npy"))
    meta = json.loads((out / str(top) / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "size": size, "resized_from": top}))
    print(f"bank {size}: {time.time() - start:.0f} s", flush=True)
