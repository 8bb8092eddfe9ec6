"""One training step on a batch far larger than memory allows at once.

A loss on a whole batch (Recall@k ranks every element against all others) needs every embedding,
but only the embeddings, not the activations that made them. So:

1. embed the batch chunk by chunk without a graph: (N, D) embeddings for the price of one chunk;
2. compute the loss on all N embeddings and its gradient dL/dE, (N, D), with respect to them;
3. re-run each chunk with a graph and back-propagate its cached slice of dL/dE; parameter gradients
   add up over chunks to exactly the full-batch gradient.

Peak memory is one chunk's activations plus the (N, D) embeddings and the loss's own graph, so the
batch size is bounded by the time a step may take, not by memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from copyseek.errors import CopyseekError

LossOnEmbeddings = Callable[[Tensor], Tensor]
"""(N, D) embeddings of the whole batch -> scalar loss (labels, teacher targets... bound inside)."""


@dataclass
class StepResult:
    loss: float
    embeddings: Tensor  # (N, D), detached


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """Restore BatchNorm running statistics on exit: the graph-free pass must not count each chunk
    twice in them (the second pass updates them once per chunk)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [{k: v.clone() for k, v in m.state_dict().items()} for m in norms]
    try:
        yield
    finally:
        for module, state in zip(norms, saved):
            module.load_state_dict(state)


def split_evenly(tensor: Tensor, chunk_size: int) -> tuple[Tensor, ...]:
    """Chunks of at most chunk_size rows and near-equal sizes (no tiny last chunk for BatchNorm)."""
    return torch.tensor_split(tensor, -(-tensor.shape[0] // chunk_size))


def embed_in_chunks(model: nn.Module, images: Tensor, chunk_size: int, device: torch.device) -> Tensor:
    """(N, 3, H, W) -> (N, D) embeddings, at most `chunk_size` images at a time, without a graph."""
    with torch.no_grad():
        return torch.cat([model(chunk.to(device, non_blocking=True)) for chunk in split_evenly(images, chunk_size)])


def chunked_backward(model: nn.Module, images: Tensor, loss_fn: LossOnEmbeddings, chunk_size: int,
                     device: torch.device | str = "cpu") -> StepResult:
    """Accumulate into the parameters' .grad the gradient of loss_fn(model(images)) over the whole batch.

    images: (N, 3, H, W) on any device (uint8 keeps a large batch small); each chunk is moved to
    `device`. The gradients equal those of a single full-batch backward whenever the model treats
    each image independently (no dropout; BatchNorm in eval mode, or chunk statistics accepted).
    The caller zeroes gradients and steps the optimiser.
    """
    if chunk_size < 1:
        raise CopyseekError(f"chunk size must be positive, got {chunk_size}")
    if images.shape[0] == 0:
        raise CopyseekError("cannot take a training step on an empty batch")
    device = torch.device(device)
    if images.shape[0] <= chunk_size:  # one chunk: an ordinary step, without the extra forward pass
        embeddings = model(images.to(device))
        loss = loss_fn(embeddings)
        loss.backward()
        return StepResult(float(loss.detach()), embeddings.detach())
    with frozen_norm_statistics(model):
        embeddings = embed_in_chunks(model, images, chunk_size, device)
    embeddings.requires_grad_(True)
    loss = loss_fn(embeddings)
    (grad,) = torch.autograd.grad(loss, embeddings)
    for chunk, chunk_grad in zip(split_evenly(images, chunk_size), split_evenly(grad, chunk_size)):
        model(chunk.to(device, non_blocking=True)).backward(chunk_grad)
    return StepResult(float(loss.detach()), embeddings.detach())
