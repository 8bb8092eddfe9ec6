"""Distilling a detector: plain feature imitation, and Hands-on Guidance Distillation (HGD).

The HGD paper (Qin et al., 2021) could be read only through its abstract here: "distills the latent
knowledge of all stage features", "correspondence establishment for consistency, hands-on imitation
loss measure and re-weighted optimization from both micro and macro perspectives". What follows is
our reading of those words, not the paper's equations:

- correspondence: every student stage (strides 4, 8, 16, 32 and the stride-4 neck) is paired with
  the teacher's stage at the same stride through its own adaptor (1x1 convolution + batch norm,
  student channels -> teacher channels);
- hands-on imitation loss: per location, the squared distance between the adapted student feature
  and the teacher's, both normalised per channel over the batch and locations (so each stage's
  scale does not decide its weight, and the student imitates the pattern, not the magnitude);
- micro re-weighting (per location): weight 1 + `focus` x the object evidence at that location,
  max of the ground-truth heat maps and the teacher's own heat maps, pooled to the stage's stride
  ("focuses on the essence": object centres and their surroundings count more than background);
- macro re-weighting (per stage): each stage's loss is weighted by its share of the total
  (detached): stages that lag behind the teacher most get the most attention.

`head` (ours, not the paper's: its abstract names stage features only) adds the teacher's outputs
as the last stage: the student's centre logits learn the teacher's probabilities (binary cross
entropy against soft targets, weighted per location as above) and its log sizes and offsets the
teacher's where the teacher sees an object (L1 weighted by the teacher's evidence). It costs
almost nothing (2 + 4 channels at stride 4); with weight 8, over five seeds, it raised the
overlays' AP50 by 2 points over HGD alone and not the copies' (BENCHMARKS.md issue 18, session 19).

"plain" is the classic baseline (FitNets-style hints): the neck alone, one adaptor, unnormalised
mean squared error, uniform weights.

`locations` (ours, not the paper's): on a CPU the imitation itself costs more than the student's
own step (batch 32 at stride 4 is 51,200 locations of 56-64 channels, standardised, weighted and
differentiated per stage: 0.33 CPU s more per step, against the student's own 0.24), so at equal
time a distilled student gets about 40% of the steps. With `locations` = L, each stage's loss is computed on L
locations per image drawn uniformly without replacement, their weights scaled by (h w) / L: an
unbiased estimate of the same weighted sum, and the per-channel standardisation is estimated on
the same locations. Stages with at most L locations are used whole. With L = 128 and the cache
read at the drawn locations only, the imitation costs ~25 CPU ms forward and backward per batch
of 32 (half of it before the standardisation went through batch norm's kernel and the draw through
top-k), yet a step still costs ~0.2 CPU s against the student's 0.14: the student's own backward
slows when its stages take the imitation's gradients (BENCHMARKS.md issue 18, session 18).

The teacher's side of the losses is `teacher_outputs`; a training run over a fixed pool can read it
from a cache instead (detect/teacher_cache.py), so a step costs the student little more than alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from copyseek.detect.model import DetectorNet
from copyseek.errors import CopyseekError


def adaptor(cin: int, cout: int) -> nn.Module:
    """Student channels -> teacher channels at the same stride."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


def _channels(net: DetectorNet) -> list[int]:
    """Channels of `out["stages"]`: the four backbone stages, then the neck."""
    return [*net.config.widths[1:], net.config.neck]


def normalised(x: Tensor) -> Tensor:
    """(B, C, h, w) standardised per channel over batch and locations (biased variance).

    Through batch norm's fused kernel without affine or running statistics: the same numbers as
    (x - mean) / std, and on a CPU much faster forward and backward than `Tensor.std` over dims
    (0, 2, 3), which halved the imitation's time (benchmarks/profile_hgd.py)."""
    return F.batch_norm(x, None, None, training=True, eps=1e-10)


def hands_on_loss(student: Tensor, teacher: Tensor, weight: Tensor) -> Tensor:
    """Per-location squared distance of standardised features, weighted: student / teacher
    (B, C, h, w), weight (B, 1, h, w) summing to 1 per image -> scalar (mean over the batch)."""
    distance = (normalised(student) - normalised(teacher)).pow(2).mean(dim=1, keepdim=True)
    return (distance * weight).sum(dim=(1, 2, 3)).mean()


def location_weights(evidence: Tensor, size: tuple[int, int], focus: float) -> Tensor:
    """(B, 1, H, W) object evidence 0..1 at stride 4 -> (B, 1, h, w) weights 1 + focus * pooled
    evidence, normalised to sum 1 per image."""
    pooled = F.adaptive_max_pool2d(evidence, size)
    weight = 1.0 + focus * pooled
    return weight / weight.sum(dim=(1, 2, 3), keepdim=True)


def sampled(x: Tensor, index: Tensor) -> Tensor:
    """(B, C, h, w) map, (B, L) flat location indices -> (B, C, L, 1): the map at those locations
    (a map still, so that the 1x1 adaptors and the losses apply unchanged)."""
    return x.flatten(2).gather(2, index[:, None, :].expand(-1, x.shape[1], -1)).unsqueeze(-1)


def head_maps(out: dict) -> Tensor:
    """A detector's outputs as one (B, C + 4, S/4, S/4) map: centre logits, log size, offset."""
    return torch.cat([out["heat"], out["log_size"], out["offset"]], dim=1)


def teacher_outputs(teacher: DetectorNet, images: Tensor) -> dict:
    """What the distillers use of the (frozen, eval-mode) teacher on (B, 3, S, S) images:
    "stages", the five maps of its `out["stages"]` (B, C_i, h_i, w_i), "evidence", its centre
    probability max over the classes (B, 1, S/4, S/4), and "heads", its `head_maps`."""
    with torch.no_grad():
        out = teacher(images)
    return {"stages": list(out["stages"]), "evidence": torch.sigmoid(out["heat"]).amax(dim=1, keepdim=True),
            "heads": head_maps(out)}


def head_loss(student: Tensor, teacher: Tensor, weight: Tensor, evidence: Tensor) -> Tensor:
    """Output imitation: student / teacher `head_maps` (B, C + 4, h, w), weight (B, 1, h, w) summing
    to 1 per image, evidence (B, 1, h, w) the teacher's centre probability -> scalar: soft-target
    cross entropy of the C centre maps (weighted by `weight`) plus the L1 of the 4 box maps
    (weighted by `evidence`), each a mean over the batch."""
    c = student.shape[1] - 4
    heat = F.binary_cross_entropy_with_logits(student[:, :c], torch.sigmoid(teacher[:, :c]), reduction="none")
    heat = (heat.mean(dim=1, keepdim=True) * weight).sum(dim=(1, 2, 3)).mean()
    boxes = (student[:, c:] - teacher[:, c:]).abs().mean(dim=1, keepdim=True)
    boxes = (boxes * evidence).sum(dim=(1, 2, 3)) / evidence.sum(dim=(1, 2, 3)).clamp(min=1e-6)
    return heat + boxes.mean()


class Distiller(nn.Module):
    """Computes the distillation loss of a student's output given the images; holds the adaptors
    (trained with the student) and the frozen teacher."""

    def __init__(self, student: DetectorNet, teacher: DetectorNet, stages: list[int], hgd: bool, focus: float = 4.0,
                 locations: int = 0, head: float = 0.0):
        super().__init__()
        if locations < 0:
            raise CopyseekError(f"locations must be >= 0 (0: every location), got {locations}")
        if head < 0:
            raise CopyseekError(f"the head imitation's weight must be >= 0, got {head}")
        s_channels, t_channels = _channels(student), _channels(teacher)
        self.stages = stages
        self.adaptors = nn.ModuleList(adaptor(s_channels[i], t_channels[i]) for i in stages)
        self.teacher = [teacher.eval()]  # a list: not a sub-module, so neither trained nor saved
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.hgd, self.focus, self.locations, self.head = hgd, focus, locations, head

    def draw_locations(self, batch: int, sizes: list[tuple[int, int]]) -> dict[int, Tensor | None]:
        """Per distilled stage i (sizes[i] = its (h, w)), the (batch, L) flat locations where the
        imitation is computed, drawn uniformly without replacement; None: every location."""
        drawn: dict[int, Tensor | None] = {}
        for i in self.stages:
            count = sizes[i][0] * sizes[i][1]
            drawn[i] = torch.rand(batch, count).topk(self.locations, dim=1, sorted=False).indices if 0 < self.locations < count else None
        return drawn

    def forward(self, images: Tensor, out: dict, targets: dict, t_out: dict | None = None,
                locations: dict[int, Tensor | None] | None = None) -> Tensor:
        """The distillation loss (scalar) of the student's `out` on `images`; `t_out`: the teacher's
        `teacher_outputs` on the same images when precomputed (a cache), else the teacher runs.
        `locations`: `draw_locations`' answer, when the teacher's maps in `t_out` were read at
        those locations only (`TeacherCache.lookup(..., locations)`: (B, C, L, 1) maps); else drawn here."""
        if t_out is None:
            t_out = teacher_outputs(self.teacher[0], images)
        presampled = locations is not None
        if locations is None:
            locations = self.draw_locations(images.shape[0], [tuple(m.shape[2:]) for m in out["stages"]])
        losses = []
        evidence = None
        if self.hgd or self.head:
            evidence = torch.maximum(targets["heat"].amax(dim=1, keepdim=True), t_out["evidence"])
        for adapt, i in zip(self.adaptors, self.stages):
            s_feat, t_feat = out["stages"][i], t_out["stages"][i]
            size = tuple(s_feat.shape[2:])
            index = locations[i]
            if not (presampled and index is not None) and size != t_feat.shape[2:]:
                raise CopyseekError(f"stage {i}: student {tuple(s_feat.shape)} and teacher {tuple(t_feat.shape)} strides differ")
            weight = location_weights(evidence, size, self.focus) if self.hgd else None
            if index is not None:
                s_feat = sampled(s_feat, index)
                t_feat = t_feat if presampled else sampled(t_feat, index)
                if weight is not None:
                    weight = sampled(weight, index) * (size[0] * size[1] / index.shape[1])
            s_feat = adapt(s_feat)
            if weight is not None:
                losses.append(hands_on_loss(s_feat, t_feat, weight))
            else:
                losses.append(F.mse_loss(s_feat, t_feat))
        stacked = torch.stack(losses)
        if self.hgd:  # macro: the stages furthest from the teacher weigh most
            shares = stacked.detach() / stacked.detach().sum().clamp(min=1e-12)
            loss = (shares * stacked).sum() * len(losses)
        else:
            loss = stacked.mean()
        if self.head:
            size = tuple(out["heat"].shape[2:])
            weight = location_weights(evidence, size, self.focus)
            loss = loss + self.head * head_loss(head_maps(out), t_out["heads"], weight, t_out["evidence"])
        return loss


def make_distiller(kind: str, student: DetectorNet, teacher: DetectorNet, locations: int = 0,
                   head: float = 0.0) -> Distiller:
    """"plain": the neck alone, MSE; "hgd": every stage, hands-on loss, micro and macro weights;
    `locations` per image and stage (0: all; see the module docstring); `head`: the weight of the
    output imitation added to either (0: none)."""
    if student.config.input_size != teacher.config.input_size:
        raise CopyseekError("student and teacher must take the same input size")
    if kind == "plain":
        return Distiller(student, teacher, stages=[4], hgd=False, locations=locations, head=head)
    if kind == "hgd":
        return Distiller(student, teacher, stages=[0, 1, 2, 3, 4], hgd=True, locations=locations, head=head)
    raise CopyseekError(f"unknown distillation {kind!r}; choose plain or hgd")
