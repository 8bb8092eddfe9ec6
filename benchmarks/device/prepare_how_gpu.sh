#!/bin/bash
# Fills gpu/ (git-ignored through .git/info/exclude) with what benchmarks/device/how_gpu.sh needs on
# the device machine, which has torch, opencv and onnx but not AugLy (our edits) and whose working
# tree may not exceed 64 MiB: the HOW training photos, AugLy with its image code, emoji and templates
# but only 83 of its 364 fonts (a seeded random 11.5 MB of them; text overlays draw from those alone),
# iopath, portalocker, python-magic and libmagic.
#   usage: benchmarks/device/prepare_how_gpu.sh HOLDOUT.txt   (run from the repository root, after make install)
set -eu
HOLDOUT=$1
SP=$(.venv/bin/python -c "import augly, pathlib; print(pathlib.Path(augly.__file__).parent.parent)")
grep -qx "/gpu/" .git/info/exclude || echo "/gpu/" >> .git/info/exclude
rm -rf gpu && mkdir -p gpu/holdout gpu/site gpu/lib
while read -r photo; do cp "$photo" gpu/holdout/; done < <(grep -v '^#' "$HOLDOUT" | grep .)
ls gpu/holdout | sed 's/^/holdout\//' > gpu/holdout.txt
cp -r "$SP/augly" "$SP/magic" "$SP/iopath" "$SP/portalocker" gpu/site/
rm -rf gpu/site/augly/tests gpu/site/augly/video gpu/site/augly/audio gpu/site/augly/assets/fonts
find gpu/site -name __pycache__ -prune -exec rm -rf {} +
mkdir gpu/site/augly/assets/fonts
.venv/bin/python - "$SP/augly/assets/fonts" <<'PY'
import random, shutil, sys
from pathlib import Path
source, target = Path(sys.argv[1]), Path("gpu/site/augly/assets/fonts")
fonts = sorted(f for f in source.glob("*.ttf") if f.with_suffix(".pkl").exists())
random.Random(0).shuffle(fonts)
total = 0
for font in fonts:
    size = font.stat().st_size + font.with_suffix(".pkl").stat().st_size
    if total + size <= 11.5e6:
        shutil.copy(font, target); shutil.copy(font.with_suffix(".pkl"), target); total += size
for name in ("list", "Raleway-ExtraBold.ttf"):  # AugLy's font list and its meme font are read by name
    shutil.copy(source / name, target)
print(f"{len(list(target.glob('*.pkl')))} of {len(fonts)} fonts, {total / 1e6:.1f} MB")
PY
cp /usr/lib/x86_64-linux-gnu/libmagic.so.1 gpu/lib/
du -sh gpu
