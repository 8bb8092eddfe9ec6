"""Graph convolution on the graph core, and cleaning of noisy labels with it (Iscen, Tolias, Avrithis,
Chum, Schmid, "Graph convolutional networks for learning with few clean and many noisy labels",
ECCV 2020). Needs torch (the `learn` extra).

    relevance = gcn_relevance(vectors, clean, noisy)   # (n,) in [0, 1]: how likely each image is relevant

`graph_convolution(x, s, weight)` is the layer as a function (S X W); `GraphConvolution` the module
around it; `TwoLayerGCN` the paper's network. For one class (one reference and its reports), a kNN
graph over its clean and noisy images is built, the network is trained to output 1 on the clean
ones and 0 on the noisy ones, the noisy ones weighted by `noisy_weight` (< 1: many of them are in fact
right), and its output on the noisy ones is their relevance: a wrong report that looks like the clean
images still scores low only if the graph does not tie it to them. Our reading of the paper: the
propagation matrix is D^-1 (A + I) of a `union` kNN graph, features are the descriptors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from copyseek.errors import CopyseekError
from copyseek.graph.knn import check_vectors, knn_graph


def sparse_tensor(matrix: sp.spmatrix) -> Tensor:
    """A scipy sparse (n, n) matrix as a float32 torch sparse COO tensor."""
    coo = sp.coo_matrix(matrix)
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()


def graph_convolution(x: Tensor, s: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """One graph convolution: (n, d_in) features, (n, n) sparse propagation S, (d_in, d_out) weight ->
    (n, d_out) = S X W (+ bias)."""
    if x.shape[0] != s.shape[0] or x.shape[1] != weight.shape[0]:
        raise CopyseekError(f"graph convolution shapes do not fit: x {tuple(x.shape)}, S {tuple(s.shape)}, W {tuple(weight.shape)}")
    out = torch.sparse.mm(s, x @ weight)
    return out + bias if bias is not None else out


class GraphConvolution(nn.Module):
    """The layer `graph_convolution` with its own weight (Glorot-initialised) and bias."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(d_out))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return graph_convolution(x, s, self.weight, self.bias)


class TwoLayerGCN(nn.Module):
    """(n, d) features -> (n,) logits: convolution, ReLU, dropout, convolution."""

    def __init__(self, d_in: int, hidden: int = 32, dropout: float = 0.5):
        super().__init__()
        self.first = GraphConvolution(d_in, hidden)
        self.second = GraphConvolution(hidden, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return self.second(self.dropout(torch.relu(self.first(x, s))), s)[:, 0]


@dataclass(frozen=True)
class GCNParams:
    """k: graph neighbours; hidden: hidden units; noisy_weight: weight of a noisy image's BCE term (the
    clean ones weigh 1); epochs, lr, weight_decay, dropout: training; seed: initialisation."""

    k: int = 5
    hidden: int = 32
    noisy_weight: float = 0.1
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.k < 1 or self.hidden < 1 or self.epochs < 1:
            raise CopyseekError(f"GCN k, hidden and epochs must be >= 1, got {self.k}, {self.hidden}, {self.epochs}")
        if not 0 < self.noisy_weight <= 1:
            raise CopyseekError(f"GCN noisy_weight must be in (0, 1], got {self.noisy_weight}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.dropout < 1:
            raise CopyseekError("GCN lr must be > 0, weight_decay >= 0 and dropout in [0, 1)")


def gcn_relevance(vectors: np.ndarray, clean: np.ndarray, noisy: np.ndarray, params: GCNParams | None = None) -> np.ndarray:
    """(n,) relevance in [0, 1] of every image of one class, from (n, d) unit `vectors` and the boolean
    masks of its clean (verified) and noisy (reported) images; images in neither mask take part in
    the graph only."""
    params = params or GCNParams()
    vectors = check_vectors(vectors)
    clean, noisy = np.asarray(clean, bool), np.asarray(noisy, bool)
    if clean.shape != (len(vectors),) or noisy.shape != (len(vectors),):
        raise CopyseekError(f"clean and noisy must be ({len(vectors)},) masks")
    if not clean.any():
        raise CopyseekError("GCN cleaning needs at least one clean image")
    if (clean & noisy).any():
        raise CopyseekError("an image cannot be both clean and noisy")
    graph = knn_graph(vectors, k=min(params.k, max(len(vectors) - 1, 1)), symmetrize="union")
    s = sparse_tensor(graph.normalized("rw-self"))
    x = torch.from_numpy(vectors)
    target = torch.from_numpy(clean.astype(np.float32))
    weight = torch.from_numpy(np.where(clean, 1.0, np.where(noisy, params.noisy_weight, 0.0)).astype(np.float32))
    torch.manual_seed(params.seed)
    model = TwoLayerGCN(x.shape[1], params.hidden, params.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    for _ in range(params.epochs):
        optimiser.zero_grad()
        loss = (loss_fn(model(x, s), target) * weight).sum() / weight.sum()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x, s)).numpy().astype(np.float64)
