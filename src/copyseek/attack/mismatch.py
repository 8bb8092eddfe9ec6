"""The targeted mismatch attack (Tolias, Radenovic and Chum, ICCV 2019): change the pixels of an
innocent carrier image so that a model describes it as it describes a target image.

Starting from the carrier, Adam updates the pixels (0..1) to minimise the weighted loss terms of
`copyseek.attack.losses`, each averaged over the model input sizes in `sizes` (resized squares, as
copyseek's `square:S` preprocessing does; several sizes = multi-resolution, for a system whose input
size is unknown), and clamps them to the image range after each step. Optional randomness (start
noise, a random size offset per step so the result holds between the trained sizes) comes from
an explicit `torch.Generator` seeded by the parameters, so an attack is a pure function of its inputs.

`targeted_mismatch(model, target, carrier, params)` is the function; `TargetedMismatch(model,
params).fit(target).transform(carrier)` the object around it, for one target and many carriers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from copyseek.attack.losses import parse_loss
from copyseek.attack.models import AttackModel
from copyseek.errors import CopyseekError
from copyseek.progress import progress_bar
from copyseek.validation import check_choice, check_int, check_number, check_image, from_options

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class AttackParams:
    """loss:   loss spec, e.g. "global", "pooling", "global+carrier@10" (see losses.parse_loss).
    sizes:  model input sizes in pixels (square resizes); several = multi-resolution.
    steps:  Adam steps.
    lr:     Adam learning rate on pixels in 0..1 (0.004 = one grey level).
    The defaults are our measured recipe (docs/attack.md: SSIM to the carrier held at ~0.905, the
    descriptor pulled towards cosine 0.995; with `lowres` = the model's input size, as the CLI
    does for one size); the paper's is loss "global", 100 steps, lr 0.01, constant schedule, no
    goal or budget, which changes the carrier far more (SSIM to it ~0.3 on our 256 px images).
    jitter: each step shows the model each size + an offset drawn uniformly in [-jitter, jitter] px.
    noise:  the start is the carrier plus uniform noise in [-noise, noise] (pixels in 0..1).
    blur:   the model sees the image blurred by a Gaussian of this sigma (pixels of the image; 0 =
            none), which steers the change to low frequencies that survive resizing and JPEG (the
            paper's sigma_blur, there 0.3 at 1024 px).
    seed:   seed of the attack's own random generator (noise, jitter).
    schedule: "constant" learning rate, or "cosine": decayed along half a cosine to 0 at the last
            step, so the last steps refine instead of jittering by lr around the optimum.
    goal:   descriptor goal (0 = none): once the model terms' loss is below 1 - goal (for `global`,
            once the cosine to the target exceeds `goal`) they stop pulling and the closeness terms
            alone move the image back towards the carrier until the goal is lost again: the change
            is spent where the descriptor needs it, not beyond.
    budget: closeness budget (0 = none): each closeness term counts only beyond it, in its own
            units (1 - SSIM for ssim, mean squared difference for carrier), times its weight: with
            loss "global+ssim@10" and budget 0.095 the attack spends the change freely down to SSIM
            0.905 to the carrier and is pushed back below it: the best descriptor within a
            perceptual budget rather than a fixed trade-off.
    lowres: side of the square grid on which the change is optimised (0 = every pixel): the change
            lives at the model's input resolution and is upsampled (bilinear) to the carrier's size,
            so no change is spent on detail the model's resize throws away.
    """

    loss: str = "global+ssim@10"
    sizes: tuple[int, ...] = (160,)
    steps: int = 800
    lr: float = 0.005
    jitter: int = 0
    noise: float = 0.0
    blur: float = 0.0
    seed: int = 0
    schedule: str = "cosine"
    goal: float = 0.995
    budget: float = 0.095
    lowres: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.sizes, (str, bytes)) or not hasattr(self.sizes, "__iter__") or not self.sizes:
            raise CopyseekError(f"attack sizes must be a non-empty list of pixel sizes, got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(check_int("attack size", s, 16, 2048) for s in self.sizes))
        parse_loss(self.loss)  # refuses unknown names and bad weights now, not mid-attack
        check_int("attack steps", self.steps, minimum=1)
        check_number("attack learning rate", self.lr, 0, open_minimum=True)
        check_int("attack jitter", self.jitter, 0, min(self.sizes) // 2 - 1)
        check_number("attack start noise", self.noise, 0, 1)
        check_number("attack blur sigma", self.blur, 0, 10)
        check_int("attack seed", self.seed, minimum=0)
        check_choice("attack learning-rate schedule", self.schedule, SCHEDULES)
        check_number("attack descriptor goal", self.goal, 0, 1)
        check_number("attack closeness budget", self.budget, 0)
        if self.lowres:
            check_int("attack change grid (lowres)", self.lowres, 8, 2048)

    @classmethod
    def from_dict(cls, values: dict) -> "AttackParams":
        """Parameters from a dict (e.g. JSON); unknown keys are refused by name."""
        return from_options(cls, values, "attack")

    def spec(self) -> str:
        """Short text naming everything that changes the result, e.g. for file names and tables."""
        sizes = "+".join(map(str, self.sizes))
        extra = (f" jitter {self.jitter}" if self.jitter else "") + (f" noise {self.noise:g}" if self.noise else "")
        extra += f" blur {self.blur:g}" if self.blur else ""
        extra += f" {self.schedule}" if self.schedule != "constant" else ""
        extra += (f" goal {self.goal:g}" if self.goal else "") + (f" budget {self.budget:g}" if self.budget else "")
        extra += (f" lowres {self.lowres}" if self.lowres else "")
        return f"{self.loss} @{sizes} {self.steps} steps lr {self.lr:g}{extra}"


@dataclass
class AttackResult:
    """image: (3, H, W) float in 0..1, the carrier's size. history: total loss before each step;
    model_history: its model terms alone (for `global`, 1 - cosine to the target)."""

    image: Tensor
    history: list[float] = field(default_factory=list)
    model_history: list[float] = field(default_factory=list)

    def to_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8, rounded (what a PNG of the result holds)."""
        return (self.image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def to_tensor(rgb: np.ndarray) -> Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in 0..1."""
    return torch.from_numpy(check_image(rgb).copy()).permute(2, 0, 1).float() / 255


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """(N, C, H, W) -> the same, each channel convolved with a Gaussian of `sigma` pixels (reflected
    borders; kernel radius 3 sigma)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def model_view(image: Tensor, size: int, blur: float = 0.0) -> Tensor:
    """(N, 3, H, W) in 0..1 -> (N, 3, size, size) in 0..255: optionally blurred, then a square
    bilinear, antialiased resize (as copyseek's square:S preprocessing, done in torch so that
    gradients flow through it)."""
    if blur:
        image = gaussian_blur(image, blur)
    if image.shape[-2:] != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return image * 255


class TargetedMismatch:
    """The attack for one target and any number of carriers (scikit-learn shape).

    fit(target): describes the target at every input size once (`references_`).
    transform(carrier): runs the attack, returns the adversarial (H, W, 3) uint8 image; the last
    result (float image, loss history) is kept as `result_`.
    """

    def __init__(self, model: AttackModel, params: AttackParams | None = None, *, progress: bool = False):
        self.model = model
        self.params = params or AttackParams()
        self.terms = parse_loss(self.params.loss)
        self.progress = progress
        if any(loss.space == "activations" for _, loss, _ in self.terms) and not model.has_activations:
            raise CopyseekError(f"loss {self.params.loss!r} needs activations, which {model.name} does not expose; use 'global'")

    def fit(self, target: np.ndarray | Tensor) -> "TargetedMismatch":
        """target: (H, W, 3) uint8 or (3, H, W) float in 0..1."""
        self.target_ = to_tensor(target) if isinstance(target, np.ndarray) else target
        self.references_: dict[int, list] = {}
        for size in self.params.sizes:
            self._references(size)
        return self

    def _references(self, size: int) -> list:
        """Each model term's reference for the target seen at `size` (cached: jitter revisits sizes)."""
        if size not in self.references_:
            with torch.no_grad():
                features = self._features(self.target_[None], size)
            self.references_[size] = [
                loss.reference(_pick(features, loss.space)) if loss.space != "pixels" else None
                for _, loss, _ in self.terms
            ]
        return self.references_[size]

    def describe(self, rgb: np.ndarray, size: int) -> np.ndarray:
        """The attacked model's unit descriptor (D,) of an (H, W, 3) uint8 image seen at `size`."""
        with torch.no_grad():
            return self.model.features(model_view(to_tensor(rgb)[None], size, self.params.blur)).descriptor[0].numpy()

    def _features(self, image: Tensor, size: int):
        wants_maps = any(loss.space == "activations" for _, loss, _ in self.terms)
        return self.model.features(model_view(image, size, self.params.blur), activations=wants_maps)

    def objective(self, image: Tensor, carrier: Tensor, sizes: list[int]) -> tuple[Tensor, Tensor]:
        """(total, model part) of the weighted loss of (1, 3, H, W) pixels in 0..1: the model terms
        averaged over `sizes` (held at 1 - goal once below it, see AttackParams.goal), plus the pixel
        terms against the carrier (counted beyond AttackParams.budget)."""
        model_part = image.new_zeros(())
        for size in sizes:
            features, references = self._features(image, size), self._references(size)
            for (_, loss, weight), reference in zip(self.terms, references):
                if loss.space != "pixels":
                    model_part = model_part + weight * loss(_pick(features, loss.space), reference) / len(sizes)
        total = model_part.clamp(min=1 - self.params.goal) if self.params.goal else model_part
        for _, loss, weight in self.terms:
            if loss.space == "pixels":
                total = total + weight * (loss(image, loss.reference(carrier)) - self.params.budget).clamp(min=0)
        return total, model_part.detach()

    def transform(self, carrier: np.ndarray | Tensor) -> np.ndarray:
        """carrier: (H, W, 3) uint8 or (3, H, W) float in 0..1 -> adversarial (H, W, 3) uint8."""
        if not hasattr(self, "target_"):
            raise CopyseekError("TargetedMismatch: call fit(target) before transform(carrier)")
        start = (to_tensor(carrier) if isinstance(carrier, np.ndarray) else carrier)[None]
        params = self.params
        generator = torch.Generator().manual_seed(params.seed)
        # what Adam moves: the pixels themselves, or a change on a lowres grid that is upsampled
        if params.lowres:
            variable = torch.zeros(1, 3, params.lowres, params.lowres)
        else:
            variable = start.clone()
        if params.noise:
            variable += (torch.rand(variable.shape, generator=generator) * 2 - 1) * params.noise
        variable = (variable if params.lowres else variable.clamp(0, 1)).requires_grad_(True)

        def current() -> Tensor:
            if not params.lowres:
                return variable
            change = F.interpolate(variable, size=start.shape[-2:], mode="bilinear", align_corners=False)
            return (start + change).clamp(0, 1)

        optimizer = torch.optim.Adam([variable], lr=params.lr)
        schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, params.steps) if params.schedule == "cosine"
                    else None)
        history, model_history = [], []
        with progress_bar(params.steps, "attack", disable=not self.progress, unit="step") as bar:
            for _ in range(params.steps):
                sizes = list(params.sizes)
                if params.jitter:
                    offsets = torch.randint(-params.jitter, params.jitter + 1, (len(sizes),), generator=generator)
                    sizes = [s + int(o) for s, o in zip(sizes, offsets)]
                optimizer.zero_grad()
                loss, model_part = self.objective(current(), start, sizes)
                loss.backward()
                optimizer.step()
                if schedule is not None:
                    schedule.step()
                if not params.lowres:
                    with torch.no_grad():
                        variable.clamp_(0, 1)
                history.append(float(loss.detach()))
                model_history.append(float(model_part))
                bar.update(1)
        with torch.no_grad():
            self.result_ = AttackResult(current().detach()[0], history, model_history)
        return self.result_.to_rgb()


def _pick(features, space: str) -> Tensor:
    return features.descriptor if space == "descriptor" else features.activations


def targeted_mismatch(
    model: AttackModel, target: np.ndarray, carrier: np.ndarray, params: AttackParams | None = None, *, progress: bool = False
) -> np.ndarray:
    """The carrier (H, W, 3) uint8, changed so that `model` describes it as it describes the target
    (H', W', 3) uint8; returns the adversarial (H, W, 3) uint8 image."""
    return TargetedMismatch(model, params, progress=progress).fit(target).transform(carrier)
