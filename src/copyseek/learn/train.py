"""The trainer: time- or step-bounded training with huge chunked batches, checkpoints and resume.

A run directory holds config.json, last.pt (resumable checkpoint), metrics.csv (one row per step),
curves.png, snapshots/ (optional, model weights over time) and the exported model.onnx + model.json.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from copyseek.describe.models import load_model
from copyseek.describe.preprocess import Preprocess
from copyseek.errors import CopyseekError
from copyseek.learn.chunked import chunked_backward
from copyseek.learn.config import TrainConfig
from copyseek.learn.data import (
    Augment, BatchSource, EditAugment, OnlineViews, PrefetchedViews, ViewBank, ViewMaker, build_view_bank,
    discover_photos,
)
from copyseek.learn.export import export_onnx
from copyseek.learn.mining import (
    CollectionMiner, MinedBatches, PhotoBatches, PoolMiner, PoolNegatives, build_pool, describe_photos,
)
from copyseek.learn.models import Descriptor, build_model
from copyseek.learn.registry import MINERS, build_loss

METRICS = ("step", "minutes", "images", "batch_size", "lr", "loss", "batch_recall_at_1", "teacher_cosine")


def build_network(config: TrainConfig) -> nn.Module:
    """The network config.head names: a global Descriptor, or a HOW network (copyseek.learn.how)."""
    if config.head == "how":
        from copyseek.learn.how import build_how

        return build_how(config.arch, config.dim, config.skip_stages)
    return build_model(config.arch, config.dim, config.image_size)


def how_params(config: TrainConfig):
    """How a HOW run describes photos for its whitening and codebook."""
    from copyseek.how.features import HowParams

    return HowParams(config.how_side, HowParams.parse_scales(config.how_scales), config.how_features)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CopyseekError("--device cuda: no CUDA device is available (use auto or cpu)")
    return torch.device(name)


def learning_rate(config: TrainConfig, progress: float) -> float:
    """Linear warm-up over the first `warmup` fraction of the budget, then cosine decay to 0."""
    if progress < config.warmup:
        return config.lr * progress / config.warmup
    span = max(1e-9, 1 - config.warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - config.warmup) / span)))


def budget_progress(config: TrainConfig, step: int, seconds: float) -> float:
    """Fraction of the budget used: the larger of the time and step fractions that are set."""
    fractions = []
    if config.minutes > 0:
        fractions.append(seconds / (60 * config.minutes))
    if config.steps > 0:
        fractions.append(step / config.steps)
    return max(fractions)


def batch_recall_at_1(embeddings: Tensor, labels: Tensor) -> float:
    """Share of the batch whose nearest other element has its class (a free training signal)."""
    sim = embeddings @ embeddings.T
    sim.fill_diagonal_(-float("inf"))
    return float((labels[sim.argmax(dim=1)] == labels).float().mean())


def train_mode(model: nn.Module, config: TrainConfig) -> None:
    """Train mode; with config.freeze_norm, BatchNorm layers stay in eval mode (their statistics and
    the folded ones of a model rebuilt from ONNX are kept, as in fine-tuning)."""
    model.train()
    if config.freeze_norm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases, norm scales and GeM exponents (1-d and 0-d parameters).
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.lr)


def mined_source(config: TrainConfig, model: nn.Module, miner: CollectionMiner, progress: bool) -> BatchSource:
    """Batches of the tuples a collection miner finds among the training photos, described by `model`."""
    photos = discover_photos(config.images)
    vectors = describe_photos(model, photos.paths, config.image_size, progress=progress)
    miner.params = config.mining_params()
    sampler = MinedBatches(miner.mine(vectors), config.classes_per_batch, config.views_per_class)
    return photo_batches(config, photos.paths, sampler)


def photo_batches(config: TrainConfig, paths: list[Path], sampler) -> PhotoBatches:
    """Batches of the collection photos `sampler` chooses, a share `config.photo_edits` of them edited."""
    return PhotoBatches(paths, sampler, config.image_size, augment=EditAugment(config.severity, config.colour_edits),
                        edited=config.photo_edits)


def make_source(config: TrainConfig, out: Path, augment: Augment | None, progress: bool,
                model: nn.Module | None = None, first_batch: int = 0) -> BatchSource:
    """Batches of the configured data: reported pairs weighted by relevance, the tuples of a collection
    miner (described by `model`), a view bank (made first if missing) or fresh views (made by
    `workers` processes from batch number `first_batch` on, when there are workers)."""
    if config.pairs:
        from copyseek.learn.pseudo import PseudoLabelBatches
        from copyseek.learn.reports import report_classes

        paths, classes = report_classes(config.images, config.pairs, config.pair_queries)
        return photo_batches(config, paths, PseudoLabelBatches(classes, config.classes_per_batch, config.views_per_class))
    miner = MINERS[config.miner]()
    if isinstance(miner, CollectionMiner):
        if model is None or config.head != "global":
            raise CopyseekError(f"miner {config.miner!r} describes the training photos: it needs a global descriptor model")
        return mined_source(config, model, miner, progress)
    photos = discover_photos(config.images)
    teacher = load_model(config.teacher) if config.needs_teacher else None
    decode_side = max(config.image_size, teacher.preprocess.size if teacher else 0)
    maker = ViewMaker(photos, augment or EditAugment(config.severity, config.colour_edits), decode_side)
    if isinstance(miner, PoolMiner):
        if model is None:
            raise CopyseekError("miner 'pool' describes its pool with the model being trained: it needs the model")
        images, labels = build_pool(maker, config.image_size, config.pool_views, config.seed)
        views = views_source(config, out, maker, photos, teacher, progress, first_batch)
        return PoolNegatives(views, images, labels, model, config.pool_every, config.pool_negatives)
    return views_source(config, out, maker, photos, teacher, progress, first_batch)


def views_source(config: TrainConfig, out: Path, maker: ViewMaker, photos, teacher, progress: bool,
                 first_batch: int = 0) -> BatchSource:
    """Batches of edited views of the photos: fresh ones, or a view bank (made first if missing)."""
    if config.bank_views <= 0:
        views = OnlineViews(maker, config.image_size, config.classes_per_batch, config.views_per_class, teacher)
        return PrefetchedViews(views, config.workers, config.seed, first_batch) if config.workers > 0 else views
    folder = Path(config.bank) if config.bank else out / "bank"
    if not (folder / "meta.json").exists():
        with tqdm(total=photos.n_classes, desc="making views", unit="class", disable=not progress) as bar:
            build_view_bank(folder, maker, config.image_size, config.bank_views, config.seed, teacher,
                            config.teacher, config.workers, bar.update)
    bank = ViewBank(folder, config.classes_per_batch, config.views_per_class)
    if bank.size != config.image_size:
        raise CopyseekError(f"view bank {folder} holds {bank.size} px views; the config trains at {config.image_size}")
    if config.needs_teacher and bank.meta["teacher"] != config.teacher:
        raise CopyseekError(f"view bank {folder} has embeddings of teacher {bank.meta['teacher']!r}, not {config.teacher!r}")
    return bank


@dataclass
class State:
    step: int = 0
    seconds: float = 0.0  # training time so far, over all sessions of the run
    images: int = 0


def save_atomically(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint_model(path: Path) -> tuple[Descriptor, TrainConfig]:
    """The model saved in a checkpoint or snapshot, with the config that made it."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise CopyseekError(f"cannot read checkpoint {path}: {exc}") from exc
    config = TrainConfig(**saved["config"])
    model = build_network(config)
    model.load_state_dict(saved["model"])
    return model.eval(), config


def init_is_checkpoint(init: str) -> bool:
    """Whether `init` names a checkpoint or snapshot (.pt) holding the whole network, head included,
    rather than an exported descriptor (`copyseek-small`, an .onnx file) that gives a HOW run its trunk only."""
    return bool(init) and init != "copyseek-small" and Path(init).suffix != ".onnx"


def load_init_weights(model: nn.Module, path: Path) -> None:
    """Start `model` from the weights of a checkpoint or snapshot (`init`): same arch, dim and size;
    or from one of our exported ResNet descriptors (`copyseek-small` or an .onnx file): the whole of
    a global descriptor, the trunk of a HOW network."""
    if not init_is_checkpoint(str(path)):
        from copyseek.describe.models import model_path
        from copyseek.learn.from_onnx import descriptor_from_onnx
        from copyseek.learn.how import load_trunk_from_onnx

        onnx_path = model_path(str(path))[1] if str(path) == "copyseek-small" else Path(path)
        if isinstance(model, Descriptor):  # the whole descriptor, projection included
            descriptor_from_onnx(onnx_path, model)
        else:
            load_trunk_from_onnx(model.backbone, onnx_path)
        return
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as exc:
        raise CopyseekError(f"init: cannot read checkpoint {path}: {exc}") from exc
    weights = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(weights, dict):
        raise CopyseekError(f"init: {path} holds no model weights")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CopyseekError(f"init: the weights of {path} do not fit this model (arch, dim?): {exc}") from exc


class Trainer:
    """One run: model, optimiser, loss and batches, stepping until the budget is spent. `source(model)`,
    called once the model has its starting weights, replaces the configured batches (label
    propagation's rounds, learn/pseudo.py)."""

    def __init__(self, config: TrainConfig, out: Path, *, resume: bool = False, augment: Augment | None = None,
                 progress: bool = True, source: Callable[[nn.Module], BatchSource] | None = None):
        self.config = config.validate()
        self.out = Path(out)
        self.progress = progress
        last = self.out / "last.pt"
        if last.exists() and not resume:
            raise CopyseekError(f"{out} already holds a run: add --resume to continue it, or use another --out")
        if resume and not last.exists():
            raise CopyseekError(f"--resume: no checkpoint {last} to resume from")
        self.out.mkdir(parents=True, exist_ok=True)
        config.save(self.out / "config.json")
        self.device = pick_device(config.device)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        # Channels-last suits batches made from NHWC arrays and runs convolutions ~2x faster on CPUs.
        self.model = build_network(config).to(self.device, memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model, config)
        self.loss = build_loss(config).to(self.device)
        self.state = State()
        if config.init and not resume:  # a resumed run has its own weights already
            load_init_weights(self.model, Path(config.init))
        # A HOW checkpoint brings the whitening its trunk was trained with; a new one would undo that training.
        if config.head == "how" and not resume and not init_is_checkpoint(config.init):
            from copyseek.learn.how import init_whitening

            init_whitening(self.model, list(discover_photos(config.images).paths), how_params(config), progress=progress)
        if resume:
            self.restore(torch.load(last, map_location=self.device, weights_only=False))
        train_mode(self.model, config)  # after the weights: a model rebuilt from ONNX comes in eval mode
        self.source = source(self.model) if source else make_source(config, self.out, augment, progress, self.model,
                                                                    first_batch=self.state.step)

    def checkpoint(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "state": vars(self.state).copy(), "config": self.config.to_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": self.rng.bit_generator.state}

    def restore(self, saved: dict) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = State(**saved["state"])
        torch.set_rng_state(saved["torch_rng"])
        self.rng.bit_generator.state = saved["numpy_rng"]

    def progress_fraction(self) -> float:
        return budget_progress(self.config, self.state.step, self.state.seconds)

    def step(self) -> dict:
        """One optimisation step on one (chunked) batch; returns its metrics row."""
        started = time.perf_counter()
        lr = learning_rate(self.config, self.progress_fraction())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.source.next_batch(self.rng)
        labels = batch.labels.to(self.device)
        teacher = batch.teacher.to(self.device) if batch.teacher is not None else None
        self.optimizer.zero_grad(set_to_none=True)
        result = chunked_backward(self.model, batch.images, lambda e: self.loss(e, labels, teacher),
                                  self.config.chunk_size, self.device)
        self.optimizer.step()
        self.state.step += 1
        self.state.seconds += time.perf_counter() - started
        self.state.images += len(labels)
        cosine = ""
        if teacher is not None and teacher.shape[1] == result.embeddings.shape[1]:
            cosine = f"{float((result.embeddings * F.normalize(teacher, dim=1)).sum(1).mean()):.4f}"
        return {"step": self.state.step, "minutes": round(self.state.seconds / 60, 4), "images": self.state.images,
                "batch_size": len(labels), "lr": f"{lr:.3g}", "loss": f"{result.loss:.5f}",
                "batch_recall_at_1": f"{batch_recall_at_1(result.embeddings, labels):.4f}",
                "teacher_cosine": cosine}

    def run(self) -> Path:
        """Step until the budget is spent, logging every step and checkpointing every few minutes;
        then export the model. Returns the ONNX model's path."""
        try:
            self.train()
        finally:
            self.close()
        return export_model(self.model, self.config, self.out, progress=self.progress)

    def close(self) -> None:
        """End the batch source's worker processes, if it has any (PrefetchedViews)."""
        close = getattr(self.source, "close", None)
        if close:
            close()

    def train(self) -> None:
        """Step until the budget is spent; the last checkpoint and the curves are saved at the end."""
        config, state = self.config, self.state
        metrics = self.out / "metrics.csv"
        append = metrics.exists() and state.step > 0
        if append:
            keep_rows_up_to(metrics, state.step)  # steps after the last checkpoint are run again
        by_time = config.minutes > 0
        total = round(60 * config.minutes) if by_time else config.steps
        saved_at = snapshot_at = state.seconds
        with open(metrics, "a" if append else "w", newline="") as handle, \
                tqdm(total=total, unit="s" if by_time else "step", desc="training", disable=not self.progress,
                     dynamic_ncols=True) as bar:
            writer = csv.DictWriter(handle, METRICS)
            if not append:
                writer.writeheader()
            while self.progress_fraction() < 1:
                row = self.step()
                writer.writerow(row)
                handle.flush()
                bar.n = min(total, round(state.seconds) if by_time else state.step)
                bar.set_postfix(loss=row["loss"], r1=row["batch_recall_at_1"])
                if state.seconds - saved_at >= 60 * config.checkpoint_minutes:
                    save_atomically(self.checkpoint(), self.out / "last.pt")
                    saved_at = state.seconds
                if config.snapshot_minutes > 0 and state.seconds - snapshot_at >= 60 * config.snapshot_minutes:
                    self.snapshot()
                    snapshot_at = state.seconds
        save_atomically(self.checkpoint(), self.out / "last.pt")
        plot_curves(metrics, self.out / "curves.png")

    def snapshot(self) -> None:
        """Keep the current weights (for curves of retrieval quality against training time)."""
        folder = self.out / "snapshots"
        folder.mkdir(exist_ok=True)
        save_atomically({"model": self.model.state_dict(), "state": vars(self.state).copy(),
                         "config": self.config.to_dict()}, folder / f"step-{self.state.step:06d}.pt")


def export_model(model: nn.Module, config: TrainConfig, out: Path, *, progress: bool = True) -> Path:
    """Write `model` (trained as `config` says) to out/model.onnx + model.json; a HOW head also gets
    its ASMK codebook (out/model.codebook.npz, learned on the training photos). Returns the ONNX path."""
    if config.head == "how":
        from copyseek.learn.how import export_how_run

        return export_how_run(model, out, list(discover_photos(config.images).paths), how_params(config),
                              config.codebook_words, name=config.name, seed=config.seed, progress=progress)
    return export_onnx(model, out / "model.onnx", Preprocess("square", config.image_size), name=config.name)


def export_checkpoint(checkpoint: Path, out: Path, *, images: str | None = None, progress: bool = True) -> Path:
    """Export the model of a checkpoint or snapshot (.pt) to folder `out` as its run exports at its
    end (e.g. to benchmark a run's snapshots); returns the ONNX path. A HOW head's codebook is learned
    on the run's training photos, or on `images` (a run trained on another machine)."""
    model, config = load_checkpoint_model(checkpoint)
    if images:
        config = replace(config, images=images)
    elif config.head == "how" and not Path(config.images).exists():
        raise CopyseekError(f"the run's training photos {config.images} are not here: the HOW codebook is learned "
                            f"on them; give the photos with --images")
    return export_model(model, config, Path(out), progress=progress)


def train(config: TrainConfig, out: Path, *, resume: bool = False, augment: Augment | None = None,
          progress: bool = True) -> Path:
    """Train as configured into run directory `out`; returns the exported ONNX model's path."""
    return Trainer(config, out, resume=resume, augment=augment, progress=progress).run()


def keep_rows_up_to(metrics: Path, step: int) -> None:
    with open(metrics, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    with open(metrics, "w", newline="") as handle:
        writer = csv.DictWriter(handle, METRICS)
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """Loss, batch recall@1 and teacher cosine against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(metrics_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    minutes = [float(r["minutes"]) for r in rows]
    panels = [(key, [float(r[key]) for r in rows]) for key in ("loss", "batch_recall_at_1", "teacher_cosine")
              if rows and all(r[key] for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), squeeze=False)
    for ax, (key, values) in zip(axes[0], panels):
        ax.plot(minutes, values, lw=0.8)
        ax.set_xlabel("training minutes")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
