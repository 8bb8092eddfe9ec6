"""The label propagation training loop (`copyseek train --pseudo-labels lp --labels labels.csv --rounds R`):
round r is an ordinary run in RUN_DIR/round-r, started from the previous round's weights, whose
batches come from pseudo-labels propagated on the descriptors of the round's starting model
(learn/pseudo.py). With `labelled_steps` the rounds start, as the paper's do, from a model trained
on the labelled photos alone (RUN_DIR/round-0: one class per label, its photos under ordinary
training's edits, since one labelled photo a class has no other positive). RUN_DIR/rounds.csv holds,
per round, the photos with a pseudo-label and their mean confidence, RUN_DIR/round-r/pseudo-labels.csv
the pseudo-labels themselves.
"""

from __future__ import annotations

import csv
import functools
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from copyseek.errors import CopyseekError
from copyseek.learn.config import TrainConfig
from copyseek.learn.data import Photos, discover_photos
from copyseek.learn.mining import PhotoBatches, describe_photos
from copyseek.learn.pseudo import (
    LPParams, PseudoLabelBatches, PseudoLabels, propagate_labels, read_labels, verified, write_pseudo_labels,
)
from copyseek.learn.train import Trainer, photo_batches, train


class RoundSource:
    """A round's batches, made from the model's starting weights: describe every photo, propagate the
    labels, write them to `folder`/pseudo-labels.csv and batch them (Trainer's `source`)."""

    def __init__(self, config: TrainConfig, photos: Photos, labels: np.ndarray, classes: list[str], folder: Path,
                 params: LPParams | None, progress: bool, verify: Callable[[int, int], bool] | None = None):
        self.config, self.photos, self.labels, self.classes = config, photos, labels, classes
        self.folder, self.params, self.progress, self.verify = folder, params, progress, verify
        self.pseudo: PseudoLabels | None = None

    def __call__(self, model: nn.Module) -> PhotoBatches:
        vectors = describe_photos(model, self.photos.paths, self.config.image_size, progress=self.progress)
        self.pseudo = propagate_labels(vectors, self.labels, self.params)
        if self.verify is not None:
            self.pseudo = verified(self.pseudo, self.verify)
        names = [p.stem for p in self.photos.paths]
        write_pseudo_labels(self.folder / "pseudo-labels.csv", names, self.classes, self.pseudo)
        sampler = PseudoLabelBatches(self.pseudo, self.config.classes_per_batch, self.config.views_per_class,
                                     self.config.seed_views, self.config.confident_share,
                                     self.config.confident_select)
        return photo_batches(self.config, self.photos.paths, sampler)


def train_labelled(config: TrainConfig, paths: list[Path], labels: np.ndarray, classes: list[str], out: Path,
                   steps: int, progress: bool = True) -> Path:
    """Train `steps` steps on the labelled photos alone: `paths` (n,) with `labels` (n,) class ids
    (-1 unlabelled) become one class folder each under out/labelled (links); returns the run's ONNX
    model (its weights in out/last.pt)."""
    labelled = np.flatnonzero(labels >= 0)
    n_classes = len(np.unique(labels[labelled]))
    if n_classes < 2:
        raise CopyseekError("training on the labelled photos alone needs labels of >= 2 classes")
    folder = out / "labelled"
    for i in labelled:
        (folder / classes[labels[i]]).mkdir(parents=True, exist_ok=True)
        link = folder / classes[labels[i]] / paths[i].name
        if not link.exists():
            link.symlink_to(paths[i].resolve())
    return train(replace(config, images=str(folder), steps=steps, minutes=0.0,
                         classes_per_batch=min(config.classes_per_batch, n_classes)), out, progress=progress)


def train_lp(config: TrainConfig, out: str | Path, labels_csv: str | Path, rounds: int, params: LPParams | None = None,
             progress: bool = True) -> Path:
    """Rounds of describe -> graph -> propagate -> train (config.minutes or config.steps per round);
    returns the last round's ONNX model, also copied to RUN_DIR/model.onnx (+ model.json)."""
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 1:
        raise CopyseekError(f"--rounds must be a whole number >= 1, got {rounds!r}")
    config = config.validate()
    if config.head != "global":
        raise CopyseekError("label propagation rounds train a global descriptor (head 'global')")
    out = Path(out)
    photos = discover_photos(config.images)
    labels, classes = read_labels(labels_csv, [p.stem for p in photos.paths])
    out.mkdir(parents=True, exist_ok=True)
    verify = None
    if config.pseudo_inliers:  # one verifier for all rounds: features and pair results are kept
        from copyseek.graph.folders import LocalVerifier

        # any inlier span, as measured for this loop (issue 15, session 24); dedup's coverage rule
        # (session 27) was measured on dedup only
        verifier = LocalVerifier(photos.paths, config.pseudo_inliers, min_cover=0.0)
        verify = functools.lru_cache(maxsize=None)(verifier)
    model_path, init = None, config.init
    if config.labelled_steps:
        train_labelled(config, photos.paths, labels, classes, out / "round-0", config.labelled_steps, progress)
        init = str(out / "round-0" / "last.pt")
    with open(out / "rounds.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["round", "pseudo_labelled", "mean_confidence"])
        for r in range(1, rounds + 1):
            folder = out / f"round-{r}"
            source = RoundSource(config, photos, labels, classes, folder, params, progress, verify)
            model_path = Trainer(replace(config, init=init, seed=config.seed + r), folder, progress=progress,
                                 source=source).run()
            init = str(folder / "last.pt")
            has = source.pseudo.labels >= 0
            writer.writerow([r, int(has.sum()), f"{source.pseudo.confidence[has].mean():.4f}"])
            handle.flush()
    for suffix in (".onnx", ".json"):
        shutil.copyfile(model_path.with_suffix(suffix), out / f"model{suffix}")
    return out / "model.onnx"
