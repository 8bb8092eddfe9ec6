"""Learning the local branch's patch describers from our own edits (never from downloads):
MKD's whitenings and the kernelized deep patch descriptor (KDP).

    python -m copyseek.learn.patches whitening --images holdout.txt
    python -m copyseek.learn.patches kdp --images holdout.txt --head polar --steps 1500

Both mine true correspondences from photos (give held-out photos only: the benchmark's
holdout.txt) with `copyseek.local.patch_pairs`: every photo x every edit kind, the photo's SIFT
frames and the same frames mapped into the edit, with mild misregistration of the edited side
(TRAIN_NOISE) as detected keypoints would have. The last VALIDATION fraction of the photos is kept
for validation (support choice, training curves).

- whitening: raw MKD of the mined patches at several supports; for each, 'pcawt' (unsupervised) and
  'lw' (from the correspondences) fitted on the training photos and scored by matching mAP on the
  validation photos; the best support by lw's mAP is written with both whitenings to
  `copyseek/local/mkd_whitening.npz`.
- kdp: KDPNet (`copyseek.local.kdp`, head 'polar', 'cart' or 'fc') trained with the
  hardest-in-batch triplet loss (HardNet): for each anchor-positive pair of a batch, the closest
  non-matching descriptor among the batch's anchors and positives is the negative;
  loss = mean(max(0, margin + d(a, p) - d(a, n))). Same data, steps and seed for every head, so
  the heads compare at equal training. Written to `copyseek/local/kdp_<head>.npz`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copyseek.errors import CopyseekError
from copyseek.local.patch_pairs import KINDS, Misregistration, make_pairs
from copyseek.local.patches import extract_patches
from copyseek.progress import progress_bar

TRAIN_NOISE = Misregistration(position=0.1, orientation=5.0)
VALIDATION = 0.15
WHITENING_FRAMES = 24
"""Frames per pair for the whitenings (a 238 x 238 covariance needs far fewer than a CNN)."""
MAX_FRAMES = 100
"""Frames kept per pair (a random subset), so that every photo weighs about the same."""


@dataclass
class MinedPatches:
    """anchors, positives: (N, 32, 32) uint8 patches of corresponding frames; pair: (N,) int index
    of the image pair each comes from; validation: (N,) bool, from a validation photo."""

    anchors: np.ndarray
    positives: np.ndarray
    pair: np.ndarray
    validation: np.ndarray

    def subset(self, mask: np.ndarray) -> "MinedPatches":
        return MinedPatches(self.anchors[mask], self.positives[mask], self.pair[mask], self.validation[mask])


def photo_list(images: str) -> list[Path]:
    """A folder (recursive) or a .txt list of photo paths."""
    from copyseek.io.images import find_images

    path = Path(images)
    if path.suffix == ".txt":
        return [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
    return sorted(f.path for f in find_images(path)[0])


def mine(
    photos: list[Path], supports: list[float], max_frames: int = MAX_FRAMES, seed: int = 0, progress: bool = True
) -> dict[float, MinedPatches]:
    """Corresponding patches of every (photo, edit kind) pair at each support (keypoint sizes), at
    most `max_frames` random frames per pair (the same frames at every support)."""
    from copyseek.io.images import load_rgb

    if not photos:
        raise CopyseekError("no photos to mine patches from")
    rng = np.random.default_rng(seed)
    first_validation = int(round(len(photos) * (1 - VALIDATION)))
    parts: dict[float, list] = {support: [] for support in supports}
    pair_ids, validation = [], []
    bar = progress_bar(len(photos), "mining patches", disable=not progress)
    for index, path in enumerate(photos):
        for pair in make_pairs([load_rgb(path)], KINDS, seed=seed * 100003 + index):
            keep = rng.permutation(len(pair.frames))[:max_frames]
            if len(keep) < 2:
                continue
            frames = pair.frames.select(keep)
            edited = TRAIN_NOISE.apply(pair.edited_frames.select(keep), rng)
            for support in supports:
                parts[support].append(
                    (_to_uint8(extract_patches(pair.gray, frames, support)), _to_uint8(extract_patches(pair.edited, edited, support)))
                )
            pair_ids.append(np.full(len(keep), len(pair_ids)))
            validation.append(np.full(len(keep), index >= first_validation))
        bar.update(1)
    bar.close()
    pair, validation_mask = np.concatenate(pair_ids), np.concatenate(validation)
    return {
        support: MinedPatches(
            np.concatenate([a for a, _ in got]), np.concatenate([p for _, p in got]), pair, validation_mask
        )
        for support, got in parts.items()
    }


def _to_uint8(patches: np.ndarray) -> np.ndarray:
    return np.round(np.clip(patches, 0, 1) * 255).astype(np.uint8)


def pair_map(desc: np.ndarray, positives: np.ndarray, pair: np.ndarray) -> float:
    """Mean over image pairs of the matching AP (as the patch benchmark computes it)."""
    from copyseek.bench.patches import pair_scores

    return float(np.mean([pair_scores(desc[pair == i], positives[pair == i])[0] for i in np.unique(pair)]))


def fit_whitening(photos: list[Path], supports: list[float], out: Path, progress: bool = True) -> str:
    """Choose MKD's support and fit both whitenings (see the module docstring); returns a markdown
    table of validation mAP per support."""
    from copyseek.local.describers import MKD
    from copyseek.local.whitening import Whitening, WhiteningParams

    lines = ["| support | raw | pcawt | lw |", "|---|---|---|---|"]
    best = None
    for support, mined in mine(photos, supports, max_frames=WHITENING_FRAMES, progress=progress).items():
        raw_mkd = MKD(None, support)
        describe = lambda x: np.concatenate(  # noqa: E731
            [raw_mkd.describe_patches(x[i : i + 2048].astype(np.float32) / 255) for i in range(0, len(x), 2048)]
        )
        anchors, positives = describe(mined.anchors), describe(mined.positives)
        train, val = ~mined.validation, mined.validation
        x = np.concatenate([anchors[train], positives[train]])
        n = int(train.sum())
        pairs = np.stack([np.arange(n), np.arange(n) + n], axis=1)
        fitted = {
            "pcawt": Whitening(WhiteningParams("pcawt")).fit(x),
            "lw": Whitening(WhiteningParams("lw")).fit(x, pairs),
        }
        scores = {"raw": pair_map(anchors[val], positives[val], mined.pair[val])}
        for kind, whitening in fitted.items():
            scores[kind] = pair_map(whitening.transform(anchors[val]), whitening.transform(positives[val]), mined.pair[val])
        lines.append(f"| {support:g} | {scores['raw']:.3f} | {scores['pcawt']:.3f} | {scores['lw']:.3f} |")
        if progress:
            print(lines[-1], flush=True)
        if best is None or scores["lw"] > best[0]:
            best = (scores["lw"], support, fitted)
    _, support, fitted = best
    arrays = {"support": np.array(support, np.float32)}
    for kind, whitening in fitted.items():
        arrays.update(whitening.to_arrays(kind))
    np.savez(out, **arrays)
    return "\n".join(lines)


def hardest_triplet_loss(anchors, positives, margin: float = 1.0):
    """HardNet's loss on (B, d) unit descriptors of B corresponding pairs: for pair i the negative
    is the closest of anchors[j] and positives[j], j != i, to either side."""
    import torch

    distance = torch.cdist(anchors, positives)  # (B, B); diagonal = matching pairs
    eye = torch.eye(len(anchors), dtype=torch.bool, device=anchors.device)
    off = distance.masked_fill(eye, float("inf"))
    negative = torch.minimum(off.min(dim=1).values, off.min(dim=0).values)
    return torch.relu(margin + distance.diagonal() - negative).mean()


def train_kdp(
    mined: MinedPatches, head: str, steps: int, batch: int = 256, lr: float = 1e-3, seed: int = 0, progress: bool = True
):
    """Train a KDPNet on the mined training patches; returns (net in eval mode, log lines)."""
    import torch

    from copyseek.local.kdp import KDPNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train = mined.subset(~mined.validation)
    val = mined.subset(mined.validation)
    net = KDPNet(head)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    as_tensor = lambda x: torch.from_numpy(x[:, None].astype(np.float32) / 255)  # noqa: E731
    log = []
    bar = progress_bar(steps, f"training kdp:{head}", disable=not progress, unit="step")
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(steps):
        ids = rng.choice(len(train.anchors), batch, replace=False)
        a, p = train.anchors[ids], train.positives[ids]
        if rng.random() < 0.5:  # mirrored content, as mirrored queries present it (rows reversed)
            a, p = a[:, ::-1], p[:, ::-1]
        net.train()
        loss = hardest_triplet_loss(net(as_tensor(a)), net(as_tensor(p)))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % max(1, steps // 5) == 0 or step + 1 == steps:
            score = validation_map(net, val, as_tensor)
            log.append(f"step {step + 1}: loss {loss.item():.3f}, validation mAP {score:.3f}, {time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU")
    bar.close()
    return net.eval(), log


def validation_map(net, val: MinedPatches, as_tensor) -> float:
    import torch

    net.eval()
    with torch.inference_mode():
        describe = lambda x: torch.cat([net(as_tensor(x[i : i + 1024])) for i in range(0, len(x), 1024)]).numpy()  # noqa: E731
        return pair_map(describe(val.anchors), describe(val.positives), val.pair)


def main(argv: list[str] | None = None) -> None:
    import torch

    from copyseek.local.describers import HERE, MKD_WHITENING_PATH, kdp_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("whitening", help="choose MKD's support and fit pcawt and lw")
    w.add_argument("--images", required=True, help="held-out photos: a folder or a .txt list")
    w.add_argument("--supports", default="6,8,10,12,14", help="patch sides in keypoint sizes to try")
    w.add_argument("--out", type=Path, default=MKD_WHITENING_PATH)
    k = sub.add_parser("kdp", help="train the deep patch descriptor")
    k.add_argument("--images", required=True, help="held-out photos: a folder or a .txt list")
    k.add_argument("--heads", default="polar,cart,fc", help="heads to train, one after the other on the same data")
    k.add_argument("--steps", type=int, default=600, help="steps per head (default %(default)s)")
    k.add_argument("--batch", type=int, default=128, help="corresponding pairs per step (default %(default)s)")
    k.add_argument("--max-frames", type=int, default=MAX_FRAMES, help="frames mined per image pair")
    k.add_argument("--support", type=float, default=None, help="patch side in keypoint sizes (default: MKD's)")
    k.add_argument("--out", type=Path, default=None, help="folder for kdp_<head>.npz (default: the package's)")
    k.add_argument("--cache", type=Path, default=None, help=".npz of mined patches: read if it exists, else written")
    k.add_argument(
        "--seed", type=int, default=0, help="training seed: initialisation and batches (default 0; the mined patches do not change)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = photo_list(args.images)
    if args.what == "whitening":
        print(fit_whitening(photos, [float(s) for s in args.supports.split(",")], args.out))
        print(f"wrote {args.out}")
        return
    support = args.support
    if support is None:
        with np.load(MKD_WHITENING_PATH) as data:
            support = float(data["support"])
    if args.cache is not None and args.cache.exists():
        with np.load(args.cache) as data:
            mined = MinedPatches(data["anchors"], data["positives"], data["pair"], data["validation"])
    else:
        mined = mine(photos, [support], max_frames=args.max_frames)[support]
        if args.cache is not None:
            np.savez(args.cache, **vars(mined))
    print(f"{len(mined.anchors)} corresponding patch pairs ({int(mined.validation.sum())} for validation), support {support:g}")
    from copyseek.local.kdp import save_weights

    for head in args.heads.split(","):
        net, log = train_kdp(mined, head, args.steps, batch=args.batch, seed=args.seed)
        print(f"kdp:{head}\n" + "\n".join(log), flush=True)
        out = (args.out or HERE) / kdp_path(head).name
        save_weights(net, out, support)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)


if __name__ == "__main__":
    main()
