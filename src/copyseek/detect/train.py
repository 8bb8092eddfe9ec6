"""Training the detector on synthetic queries, with checkpoints, resume and ONNX export.

    copyseek train-detector --images BENCH/holdout.txt --out runs/det --minutes 15
    copyseek train-detector --out runs/det --resume --minutes 20          # continue to a larger budget
    copyseek train-detector ... --preset student --teacher runs/teacher/checkpoint.pt --distill hgd
    ... --set teacher_cache=DIR        # the teacher's outputs over the pool, computed once (detect/teacher_cache.py)

A run directory holds config.json (the settings; --resume reuses them), checkpoint.pt (model,
optimiser, step, elapsed time, random state; written atomically every `checkpoint_minutes`),
metrics.csv (losses per logged step), val.csv (box AP on a benchmark's first queries every
`val_minutes`, when `val` names one: the learning curve) and, at the end, detector.onnx (+ detector.json).
The learning rate follows a cosine over the time budget (or the step budget), so a run of N
minutes ends annealed whatever the machine's speed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from copyseek.detect.data import Sample, SyntheticQueries, load_photos
from copyseek.detect.model import STRIDE, DetectorNet, NetConfig, load_checkpoint
from copyseek.detect.targets import detection_loss, make_targets
from copyseek.detect.teacher_cache import TeacherCache, check_dtype
from copyseek.errors import CopyseekError

DISTILL = ("none", "plain", "hgd")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
TRAINABLE = ("all", "guide")


def training_mode(net: DetectorNet, trainable: str) -> None:
    """Train mode for what learns; frozen parts stay in eval mode (their batch norm statistics fixed)."""
    if trainable == "all":
        net.train()
    else:
        net.eval()
        net.selective.train()


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything a run depends on (saved as RUN_DIR/config.json).

    images: folder or .txt list of training photos (held-out ones); preset / net: the network
    (NetConfig.preset name, then NetConfig fields to change); pool: synthetic queries made once
    and cycled through, mirrored at random (0: a fresh query for every sample); pool_file: an .npz
    where the pool is kept, reused by other runs (same data for compared runs); photo_side: photos
    are shrunk to this before editing; minutes / steps: budgets (at least one);
    teacher: checkpoint.pt of a trained detector to distil from, with `distill` "plain" (the neck
    alone, one adaptor, uniform weights) or "hgd" (detect/hgd.py); distill_weight: its loss weight;
    teacher_cache: a folder where the teacher's outputs over the pool (every sample and its mirror)
    are computed once and read back at every step instead of running the teacher (needs a pool;
    refused if made for another pool or teacher); teacher_cache_dtype: how the cache stores the maps,
    "float16" or "int8" (half the size, ~1% error: detect/teacher_cache.py); distill_locations: locations per image and stage
    where the imitation is computed (0: every one; detect/hgd.py); distill_head: weight of the
    imitation of the teacher's outputs (centre probabilities as soft targets, boxes where it sees
    an object; 0: none), added to `distill`'s stage imitation;
    alternatives: the target weight of the other photos that could be the copy (a paste's other
    photo, a collage's other cells; detect/targets.py), 0 leaves them negatives (the defaults, pool
    40000 (3 GB in memory) and alternatives 0.3, with 10,716 steps, are the shipped detector's
    recipe: with a pool of 2,200 the network overfits it, copy AP50 0.63-0.66 against 0.85,
    BENCHMARKS.md issue 18);
    scn_direct: weight of the SCN guide's direct supervision (masks from the copy boxes; 0 leaves
    only the indirect signal through the detection loss) when the net is selective;
    clock: what `minutes` counts: "wall" time of the training steps, or the process's "cpu" time
    (fair between runs on a shared machine, whose share of the cores changes from minute to minute);
    init: a checkpoint.pt whose weights the net starts from (parts it lacks, e.g. a new SCN guide,
    start fresh); trainable: "all", or "guide" (only the SCN guidance head learns: the rest of the
    initialised net stays frozen, batch norm statistics included);
    val: a built benchmark (with layouts.json) whose first `val_limit` queries are scored every
    `val_minutes` of training (the time spent validating is not counted in the budget).
    """

    images: str = ""
    preset: str = "student"
    net: dict | None = None
    pool: int = 40000
    pool_file: str = ""
    photo_side: int = 320
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    minutes: float = 0.0
    steps: int = 0
    seed: int = 0
    checkpoint_minutes: float = 2.0
    log_every: int = 20
    teacher: str = ""
    distill: str = "none"
    distill_weight: float = 1.0
    teacher_cache: str = ""
    teacher_cache_dtype: str = "float16"
    distill_locations: int = 0
    distill_head: float = 0.0
    alternatives: float = 0.3
    scn_direct: float = 1.0
    clock: str = "wall"
    init: str = ""
    trainable: str = "all"
    val: str = ""
    val_limit: int = 64
    val_minutes: float = 3.0

    def __post_init__(self):
        if self.minutes <= 0 and self.steps <= 0:
            raise CopyseekError("set a budget: minutes > 0 or steps > 0")
        if self.batch < 1 or self.pool < 0 or self.photo_side < 32:
            raise CopyseekError(f"batch must be >= 1, pool >= 0 and photo_side >= 32, got "
                                f"{self.batch}, {self.pool}, {self.photo_side}")
        if not 0.0 <= self.alternatives < 1.0:
            raise CopyseekError(f"alternatives must be a weight in [0, 1), got {self.alternatives}")
        if self.val_limit < 1 or self.val_minutes <= 0:
            raise CopyseekError(f"val_limit must be >= 1 and val_minutes > 0, got {self.val_limit}, {self.val_minutes}")
        if self.trainable not in TRAINABLE:
            raise CopyseekError(f"trainable must be one of {', '.join(TRAINABLE)}, got {self.trainable!r}")
        if self.trainable == "guide" and not (self.init and (self.net or {}).get("selective")):
            raise CopyseekError("trainable=guide needs a selective net and an init checkpoint to freeze")
        if self.clock not in CLOCKS:
            raise CopyseekError(f"clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")
        if self.distill not in DISTILL:
            raise CopyseekError(f"distill must be one of {', '.join(DISTILL)}, got {self.distill!r}")
        if (self.distill != "none") != bool(self.teacher):
            raise CopyseekError("--distill plain|hgd needs --teacher CHECKPOINT, and a teacher needs --distill")
        if self.distill_locations < 0:
            raise CopyseekError(f"distill_locations must be >= 0 (0: every location), got {self.distill_locations}")
        if self.distill_head < 0 or (self.distill_head and self.distill == "none"):
            raise CopyseekError(f"distill_head must be >= 0 and needs --distill plain|hgd, got {self.distill_head}")
        if self.teacher_cache and (self.distill == "none" or self.pool <= 0):
            raise CopyseekError("teacher_cache needs a teacher (--distill plain|hgd) and a pool (pool > 0)")
        check_dtype(self.teacher_cache_dtype)
        self.net_config()  # validates preset and net

    def net_config(self) -> NetConfig:
        return NetConfig.preset(self.preset, **(self.net or {}))

    @classmethod
    def from_dict(cls, data: dict) -> DetectorTrainConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise CopyseekError(f"unknown detector training settings: {', '.join(sorted(unknown))}")
        return cls(**data)


def image_paths(images: str) -> list[Path]:
    """A folder (searched recursively) or a .txt list of image paths."""
    from copyseek.io.images import find_images

    path = Path(images)
    if path.suffix == ".txt" and path.is_file():
        return [Path(line.strip()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not path.is_dir():
        raise CopyseekError(f"--images: no folder or .txt list at {images}")
    return [f.path for f in find_images(path)[0]]


def collate(samples: list[Sample], grid: int, alternative_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Samples -> (B, 3, S, S) float images in [0, 1] and batched dense targets."""
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255.0
    targets = [make_targets(s.boxes, s.labels, grid, STRIDE, s.alternatives, alternative_weight) for s in samples]
    return images, {k: torch.from_numpy(np.stack([t[k] for t in targets])) for k in targets[0]}


def save_pool(samples: list[Sample], path: str | Path) -> None:
    """Samples -> one .npz (images stacked; boxes and labels concatenated with counts)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=np.stack([s.image for s in samples]), counts=np.array([len(s.labels) for s in samples]),
             boxes=np.concatenate([s.boxes for s in samples]), labels=np.concatenate([s.labels for s in samples]),
             alternative_counts=np.array([len(s.alternatives) for s in samples]),
             alternatives=np.concatenate([s.alternatives for s in samples]).reshape(-1, 4))
    os.replace(tmp, path)


def load_pool(path: str | Path) -> list[Sample]:
    """The samples `save_pool` wrote."""
    with np.load(path) as data:  # each data[key] reads the array anew: read each once
        images, counts, boxes, labels = data["images"], data["counts"], data["boxes"], data["labels"]
        # pools saved before alternatives were recorded have none
        alternative_counts = data["alternative_counts"] if "alternative_counts" in data else np.zeros(len(images), int)
        alternatives = data["alternatives"] if "alternatives" in data else np.zeros((0, 4), np.float32)
    ends, alternative_ends = np.cumsum(counts), np.cumsum(alternative_counts)
    return [Sample(images[i], boxes[a:b], labels[a:b], alternatives[c:d])
            for i, (a, b, c, d) in enumerate(zip(ends - counts, ends, alternative_ends - alternative_counts, alternative_ends))]


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _Validation:
    """Box AP of the training net on a benchmark's first queries, appended to RUN_DIR/val.csv."""

    COLUMNS = ["step", "elapsed_s", "copy_AP50", "copy_AP", "overlay_AP50", "overlay_AP"]

    def __init__(self, config: DetectorTrainConfig, out: Path):
        from copyseek.detect.evaluate import load_queries

        self.images, self.truths = load_queries(config.val, config.val_limit)
        self.path = out / "val.csv"
        if not self.path.exists():
            self.path.write_text(",".join(self.COLUMNS) + "\n", encoding="utf-8")

    def __call__(self, net: DetectorNet, step: int, elapsed: float) -> dict:
        from copyseek.detect.evaluate import TorchDetector, evaluate_detector

        was_training = {m: m.training for m in net.modules()}
        net.eval()
        with torch.no_grad():
            result = evaluate_detector(TorchDetector(net), self.images, self.truths, batch=16)
        for module, mode in was_training.items():
            module.train(mode)
        row = [step, round(elapsed, 1), *(f"{result[c][k]:.4f}" for c in ("copy", "overlay") for k in ("AP50", "AP"))]
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(",".join(map(str, row)) + "\n")
        return result


class _Batches:
    """Batches from a pool made once (or fresh samples when pool == 0), mirrored at random."""

    def __init__(self, config: DetectorTrainConfig, input_size: int, rng: np.random.Generator, progress: bool):
        self.config, self.rng = config, rng
        self.pool, self.data = None, None
        if config.pool and config.pool_file and Path(config.pool_file).is_file():
            self.pool = load_pool(config.pool_file)[: config.pool]
            return
        # photos are needed only to make queries
        self.data = SyntheticQueries(load_photos(image_paths(config.images), config.photo_side), input_size)
        if config.pool:
            self.pool = self.data.pool(config.pool, rng, progress)
            if config.pool_file:
                save_pool(self.pool, config.pool_file)

    def next(self) -> tuple[list[Sample], np.ndarray | None, np.ndarray]:
        """A batch, the pool indices of its samples (None without a pool) and which are mirrored."""
        indices = None
        if self.pool is None:
            samples = [self.data.sample(self.rng) for _ in range(self.config.batch)]
        else:
            indices = self.rng.integers(len(self.pool), size=self.config.batch)
            samples = [self.pool[int(i)] for i in indices]
        mirrored = np.array([self.rng.random() < 0.5 for _ in samples])
        return [s.flipped() if m else s for s, m in zip(samples, mirrored)], indices, mirrored


def train(config: DetectorTrainConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> Path:
    """Train (or continue) a run in `out`; returns the exported ONNX model's path."""
    from copyseek.detect.export import export_detector
    from copyseek.progress import progress_bar

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    if not resume and checkpoint.exists():
        raise CopyseekError(f"{out} already holds a run: use --resume to continue it, or another --out")
    (out / "config.json").write_text(json.dumps(asdict(config), indent=1), encoding="utf-8")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net_config = config.net_config()
    net = DetectorNet(net_config)
    distiller = None
    if config.distill != "none":
        from copyseek.detect.hgd import make_distiller

        teacher, _ = load_checkpoint(config.teacher)
        distiller = make_distiller(config.distill, net, teacher, config.distill_locations, config.distill_head)
    if config.init:
        missing, unexpected = net.load_state_dict(load_checkpoint(config.init)[0].state_dict(), strict=False)
        if unexpected or any(not key.startswith("selective.") for key in missing):
            raise CopyseekError(f"--set init={config.init}: its net differs from this one "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    if config.trainable == "guide":
        for name, p in net.named_parameters():
            p.requires_grad_(name.startswith("selective.guide"))
    learning = [p for p in net.parameters() if p.requires_grad]
    params = learning + (list(distiller.parameters()) if distiller is not None else [])
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step, elapsed = 0, 0.0
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        if distiller is not None and state.get("distiller") is not None:
            distiller.load_state_dict(state["distiller"])
        step, elapsed = state["step"], state["elapsed"]
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])

    batches = _Batches(config, net_config.input_size, rng, progress)
    cache = None
    if config.teacher_cache:  # built before the clock starts: a one-off shared by the runs of a pool
        cache = TeacherCache.open_or_build(config.teacher_cache, distiller.teacher[0], batches.pool, progress,
                                           config.teacher_cache_dtype)
    validate = _Validation(config, out) if config.val else None
    grid = net_config.input_size // STRIDE

    def save() -> None:
        _save_atomic({"model": net.state_dict(), "optimiser": optimiser.state_dict(), "step": step,
                      "elapsed": elapsed, "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                      "net": net_config.to_dict(), "config": asdict(config),
                      "distiller": distiller.state_dict() if distiller is not None else None}, checkpoint)

    def fraction() -> float:
        parts = []
        if config.minutes > 0:
            parts.append(elapsed / (60 * config.minutes))
        if config.steps > 0:
            parts.append(step / config.steps)
        return max(parts)

    metrics = open(out / "metrics.csv", "a", newline="", encoding="utf-8")
    writer = csv.writer(metrics)
    if metrics.tell() == 0:
        writer.writerow(["step", "elapsed_s", "lr", "loss", "heat", "size", "offset", "distill", "guide"])
    last_save = last_val = elapsed
    training_mode(net, config.trainable)
    clock = CLOCKS[config.clock]
    with progress_bar(100, "train-detector", disable=not progress, unit="%") as bar:
        while fraction() < 1.0:
            started = clock()
            lr = config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction())))
            for group in optimiser.param_groups:
                group["lr"] = lr
            samples, indices, mirrored = batches.next()
            images, targets = collate(samples, grid, config.alternatives)
            output = net(images)
            losses = detection_loss(output, targets)
            total = losses["total"]
            extra = {"distill": torch.zeros(()), "guide": torch.zeros(())}
            if distiller is not None:
                t_out, locations = None, None
                if cache is not None:  # the sampled locations are drawn first, so that only they are read
                    locations = distiller.draw_locations(len(indices), [tuple(m.shape[2:]) for m in output["stages"]])
                    t_out = cache.lookup(indices, mirrored, locations)
                extra["distill"] = distiller(images, output, targets, t_out, locations)
                total = total + config.distill_weight * extra["distill"]
            if net.selective is not None:
                from copyseek.detect.scn import guide_loss, sparsity_loss

                extra["guide"] = sparsity_loss(output["guide"])
                if config.scn_direct > 0:
                    extra["guide"] = extra["guide"] + config.scn_direct * guide_loss(output["guide"], targets["cover"])
                total = total + extra["guide"]
            optimiser.zero_grad(set_to_none=True)
            total.backward()
            optimiser.step()
            step += 1
            elapsed += clock() - started
            if step % config.log_every == 0:
                writer.writerow([step, round(elapsed, 1), f"{lr:.2e}", f"{total.item():.4f}",
                                 *(f"{losses[k].item():.4f}" for k in ("heat", "size", "offset")),
                                 *(f"{extra[k].item():.4f}" for k in ("distill", "guide"))])
                metrics.flush()
            bar.n = min(100, int(100 * fraction()))
            bar.set_postfix(loss=f"{total.item():.3f}", step=step)
            bar.refresh()
            if elapsed - last_save >= 60 * config.checkpoint_minutes:
                save()
                last_save = elapsed
            if validate is not None and elapsed - last_val >= 60 * config.val_minutes:
                result = validate(net, step, elapsed)
                bar.set_postfix(loss=f"{total.item():.3f}", step=step, val_copy_AP50=f"{result['copy']['AP50']:.3f}")
                last_val = elapsed
    metrics.close()
    if validate is not None:
        validate(net, step, elapsed)
    save()
    return export_detector(net.eval(), out / "detector.onnx")
