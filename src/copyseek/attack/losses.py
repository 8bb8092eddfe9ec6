"""The targeted mismatch attack's losses: what "looks like the target to the model" means.

Following Tolias, Radenovic and Chum, "Targeted Mismatch Adversarial Attack: Query with a Flower to
Retrieve the Tower" (ICCV 2019), the adversarial image can be made to match the target in several
spaces, each a swappable piece here:

    global    the model's own unit descriptor, 1 - cosine (white box: pooling and projection known)
    avg, gem, max, pooling
              pooling-agnostic: the backbone activations (N, C, h, w) pooled by average, GeM (p=3),
              max, or all three (`pooling`), L2-normalised, 1 - cosine: for an unknown pooling
              or head on top of a known backbone
    hist      per-channel soft histograms of the activations (scaled by the target's largest
              activation, 21 bins over 0..1, Gaussian kernel sigma 0.1), L2 distance per channel:
              matches the activations' statistics, not their positions
    tensor    the activation tensor itself (scaled by a tenth of the target's largest activation),
              mean squared difference: the strongest constraint, position for position
    carrier   mean squared pixel difference to the carrier (pixels in 0..1), to stay close to it
    ssim      1 - SSIM to the carrier: the same closeness as people judge it (our addition)

Multi-resolution (an unknown input size) is not a loss but the attack's `sizes`: every loss above is
averaged over the input sizes the model is shown (`copyseek.attack.mismatch.AttackParams`).

Every piece is a pure function on tensors (gradient-checked in float64 by the tests) and a thin
object around it with `space` (what it compares: "descriptor", "activations" or "pixels"),
`reference(target)` (computed once from the target, or the carrier for pixel losses) and
`__call__(x, reference) -> scalar`. A loss spec is a `+`-joined list of registered names with
optional weights, `global+pooling@0.5+carrier@10`, read by `parse_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from copyseek.errors import CopyseekError

SPACES = ("descriptor", "activations", "pixels")
EPS = 1e-6


# ---------------------------------------------------------------- functions


def cosine_distance(x: Tensor, y: Tensor) -> Tensor:
    """1 - cosine similarity of rows: (N, D), (N, D) or (D,) -> (N,). Neither needs unit norm."""
    return 1.0 - F.cosine_similarity(x, y.expand_as(x), dim=1, eps=EPS)


def gem_pool(x: Tensor, p: float) -> Tensor:
    """Generalised mean over space: (N, C, h, w) -> (N, C). p = 1 is the average, p = inf the
    maximum; activations are clamped at a small positive value for 1 < p < inf (GeM needs x >= 0)."""
    if p == math.inf:
        return x.amax(dim=(2, 3))
    if p == 1:
        return x.mean(dim=(2, 3))
    return x.clamp(min=EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def soft_histogram(x: Tensor, centers: Tensor, sigma: float) -> Tensor:
    """Per-channel soft histogram: (N, C, h, w) -> (N, C, B) rows summing to 1.

    Each activation votes for every bin centre c with weight exp(-(x - c)^2 / (2 sigma^2)),
    normalised over the bins, so the histogram is differentiable in x; bins are averaged over space.
    """
    votes = torch.exp(-(x.flatten(2).unsqueeze(-1) - centers).pow(2) / (2 * sigma**2))  # (N, C, hw, B)
    votes = votes / votes.sum(dim=-1, keepdim=True).clamp(min=EPS)
    return votes.mean(dim=2)


def histogram_distance(h: Tensor, g: Tensor) -> Tensor:
    """Mean over channels of the L2 distance between histograms: (N, C, B), (N, C, B) -> (N,).
    (The square root is taken of a value kept off zero, so the gradient exists at h = g.)"""
    return (h - g).pow(2).sum(dim=-1).add(EPS**2).sqrt().mean(dim=1)


def tensor_distance(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared difference of activation tensors: (N, C, h, w), same shape -> (N,)."""
    if x.shape[1:] != y.shape[1:]:
        raise CopyseekError(
            f"the tensor loss compares activations of equal shape, got {tuple(x.shape[1:])} and {tuple(y.shape[1:])} "
            "(show the model both images at the same square size)"
        )
    return (x - y).pow(2).flatten(1).mean(dim=1)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).view(1, 1, 1, -1)


def ssim_index(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)
    of images in 0..1: (N, C, H, W), (N or 1, C, H, W) with H, W >= 11 -> (N,), the mean over the
    valid windows and the channels. 1 = identical."""
    n, channels = x.shape[:2]
    window = _gaussian_window().to(x)
    row, col = window.repeat(channels, 1, 1, 1), window.transpose(2, 3).repeat(channels, 1, 1, 1)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, row, groups=channels), col, groups=channels)

    y = y.expand_as(x)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return index.flatten(1).mean(dim=1)


def pixel_distance(x: Tensor, c: Tensor) -> Tensor:
    """Mean squared pixel difference: (N, 3, H, W), (N or 1, 3, H, W) in 0..1 -> (N,)."""
    return (x - c).pow(2).flatten(1).mean(dim=1)


# ---------------------------------------------------------------- pieces


class AttackLoss(Protocol):
    """One loss piece. `space`: what it compares ("descriptor" (N, D), "activations" (N, C, h, w)
    or "pixels" (N, 3, H, W) in 0..1)."""

    space: str

    def reference(self, target: Tensor) -> Any:
        """What the adversarial image is compared with, computed once (without gradient) from the
        target's descriptor or activations, or from the carrier's pixels for a pixel loss."""

    def __call__(self, x: Tensor, reference: Any) -> Tensor:
        """Scalar loss (mean over the batch), differentiable in x."""


class DescriptorLoss:
    """1 - cosine of the model's own descriptors."""

    space = "descriptor"

    def reference(self, target: Tensor) -> Tensor:
        return target.detach()

    def __call__(self, x: Tensor, reference: Tensor) -> Tensor:
        return cosine_distance(x, reference).mean()


class PoolingLoss:
    """1 - cosine of L2-normalised pooled activations, averaged over the poolings (exponents p:
    1 = average, 3 = GeM, inf = max)."""

    space = "activations"

    def __init__(self, powers: tuple[float, ...] = (1.0, 3.0, math.inf)):
        if not powers or any(not p >= 1 for p in powers):
            raise CopyseekError(f"pooling exponents must be >= 1, got {powers}")
        self.powers = tuple(float(p) for p in powers)

    def reference(self, target: Tensor) -> list[Tensor]:
        return [gem_pool(target, p).detach() for p in self.powers]

    def __call__(self, x: Tensor, reference: list[Tensor]) -> Tensor:
        return torch.stack([cosine_distance(gem_pool(x, p), ref).mean() for p, ref in zip(self.powers, reference)]).mean()


class HistogramLoss:
    """Distance of per-channel activation histograms, both scaled by the target's largest activation."""

    space = "activations"

    def __init__(self, bins: int = 21, sigma: float = 0.1):
        if bins < 2 or not sigma > 0:
            raise CopyseekError(f"histograms need >= 2 bins and sigma > 0, got bins={bins} sigma={sigma}")
        self.centers = torch.linspace(0.0, 1.0, bins)
        self.sigma = float(sigma)

    def reference(self, target: Tensor) -> tuple[Tensor, Tensor]:
        scale = target.detach().amax().clamp(min=EPS)
        centers = self.centers.to(target)
        return soft_histogram((target.detach() / scale).clamp(0, 1), centers, self.sigma), scale

    def __call__(self, x: Tensor, reference: tuple[Tensor, Tensor]) -> Tensor:
        hist, scale = reference
        return histogram_distance(soft_histogram((x / scale).clamp(0, 1), self.centers.to(x), self.sigma), hist).mean()


class TensorLoss:
    """Mean squared difference of activation tensors, scaled by a tenth of the target's largest value
    (so that the loss is of order one whatever the layer's range)."""

    space = "activations"

    def reference(self, target: Tensor) -> tuple[Tensor, Tensor]:
        scale = 0.1 * target.detach().amax().clamp(min=EPS)
        return target.detach() / scale, scale

    def __call__(self, x: Tensor, reference: tuple[Tensor, Tensor]) -> Tensor:
        scaled_target, scale = reference
        return tensor_distance(x / scale, scaled_target).mean()


class CarrierLoss:
    """Mean squared pixel difference (0..1) to the carrier."""

    space = "pixels"

    def reference(self, carrier: Tensor) -> Tensor:
        return carrier.detach()

    def __call__(self, x: Tensor, reference: Tensor) -> Tensor:
        return pixel_distance(x, reference).mean()


class SSIMLoss:
    """1 - SSIM to the carrier: closeness as people see it (noise on flat areas costs most)."""

    space = "pixels"

    def reference(self, carrier: Tensor) -> Tensor:
        return carrier.detach()

    def __call__(self, x: Tensor, reference: Tensor) -> Tensor:
        return (1.0 - ssim_index(x, reference)).mean()


# ---------------------------------------------------------------- registry

LOSSES: dict[str, Callable[[], AttackLoss] | str] = {
    "global": DescriptorLoss,
    "avg": lambda: PoolingLoss((1.0,)),
    "gem": lambda: PoolingLoss((3.0,)),
    "max": lambda: PoolingLoss((math.inf,)),
    "pooling": PoolingLoss,
    "hist": HistogramLoss,
    "tensor": TensorLoss,
    "carrier": CarrierLoss,
    "ssim": SSIMLoss,
}
"""Loss name -> factory of the piece with its defaults."""


def register_loss(name: str, factory: Callable[[], AttackLoss] | str) -> None:
    """Make `name` usable in loss specs: `factory()` returns the piece (its `space` one of SPACES);
    a "module:attribute" string naming the factory is loaded on first use (as copyseek.registry)."""
    if not isinstance(name, str) or not name or any(c in name for c in " ,+:@/"):
        raise CopyseekError(f"an attack loss name must be a non-empty string without spaces or ,+:@/, got {name!r}")
    if not (isinstance(factory, str) or callable(factory)):
        raise CopyseekError(f"attack loss {name!r}: expected a factory or 'module:attribute', got {factory!r}")
    if name in LOSSES and LOSSES[name] != factory:
        raise CopyseekError(f"a different attack loss is already registered as {name!r}")
    LOSSES[name] = factory


def make_loss(name: str) -> AttackLoss:
    from copyseek.registry import resolve

    if name not in LOSSES:
        raise CopyseekError(f"unknown attack loss {name!r}; choose from {', '.join(sorted(LOSSES))}")
    loss = resolve(LOSSES[name])()
    if getattr(loss, "space", None) not in SPACES:
        raise CopyseekError(f"attack loss {name!r} has space {getattr(loss, 'space', None)!r}; expected one of {SPACES}")
    return loss


def parse_loss(spec: str) -> list[tuple[str, AttackLoss, float]]:
    """"global+pooling@0.5+carrier@10" -> [(name, piece, weight), ...]; weights default to 1."""
    terms = []
    for part in spec.split("+"):
        name, _, weight = part.strip().partition("@")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = math.nan
        if not value > 0 or not math.isfinite(value):
            raise CopyseekError(f"attack loss terms look like NAME or NAME@WEIGHT with WEIGHT > 0, got {part!r} in {spec!r}")
        terms.append((name, make_loss(name), value))
    names = [name for name, _, _ in terms]
    if len(set(names)) != len(names):
        raise CopyseekError(f"attack loss spec names a loss twice: {spec!r}")
    if all(loss.space == "pixels" for _, loss, _ in terms):
        raise CopyseekError(f"attack loss spec {spec!r} has no term on the model (add global, pooling, hist or tensor)")
    return terms
