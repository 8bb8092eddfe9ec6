"""Graph convolution on the graph core, and cleaning of noisy labels with it (Iscen, Tolias, Avrithis,
Chum, Schmid, "Graph convolutional networks for learning with few clean and many noisy labels",
ECCV 2020). Needs torch (the `learn` extra).

    relevance = gcn_relevance(vectors, clean, noisy)   # (n,) in [0, 1]: how likely each image is relevant
    relevance = collection_relevance(vectors, clean_nodes, clean_classes, noisy_nodes, noisy_classes)
                                                       # (m,): one multi-class GCN over a whole collection

`graph_convolution(x, s, weight)` is the layer as a function (S X W); `GraphConvolution` the module
around it; `TwoLayerGCN` the paper's network. For one class (one reference and its reports), a kNN
graph over its clean and noisy images is built, the network is trained to output 1 on the clean
ones and 0 on the noisy ones, the noisy ones weighted by `noisy_weight` (< 1: many of them are in fact
right), and its output on the noisy ones is their relevance: a wrong report that looks like the clean
images still scores low only if the graph does not tie it to them. Our reading of the paper: the
propagation matrix is D^-1 (A + I) of a `union` kNN graph, features are the descriptors.

Context references (our extension, not in the paper): a wrong report that looks like the reference is
often an image of ANOTHER reference, which a graph over one reference's images never sees. With
`negative`, the clean images of other references join the graph as labelled negatives (target 0, full
weight: they are verified, not noisy), so a report that sits next to another reference's verified
images is pulled down. `nearest_references(prototypes, rows, m)` picks, for a reference, the m other
references whose clean prototypes are nearest to its own (`GCNParams.context_references`).

One GCN over the whole collection (our extension, `collection_relevance`): a per-class graph cannot
tell a look-alike of a "hub" class (whose clean images look like many photos) from a true report when
the look-alike's own class is not among its context references. One two-layer GCN with a softmax
over every class, trained on all clean images (weight 1) and every report as a noisy label of its
reported class (weight `noisy_weight`), sees each report next to its own class's images; a report's
relevance is the probability of the class it was reported for.
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
    """(n, d) features -> (n, outputs) logits: convolution, ReLU, dropout, convolution."""

    def __init__(self, d_in: int, hidden: int = 32, dropout: float = 0.5, outputs: int = 1):
        super().__init__()
        self.first = GraphConvolution(d_in, hidden)
        self.second = GraphConvolution(hidden, outputs)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return self.second(self.dropout(torch.relu(self.first(x, s))), s)


CONTEXT_REFERENCES = 5  # default of GCNParams.context_references, chosen on draw 0 of the benchmark (BENCHMARKS.md, issue 15)
NEIGHBOURS = 10  # default of GCNParams.k: with m = 5 context references, the k that meets GCN >= cosine + 0.03 on
# look-alikes with both copyseek-small's and SSCD's descriptors (5 did on small only; BENCHMARKS.md, issue 15)


@dataclass(frozen=True)
class GCNParams:
    """k: graph neighbours; hidden: hidden units; noisy_weight: weight of a noisy image's BCE term (the
    clean ones weigh 1); epochs, lr, weight_decay, dropout: training; seed: initialisation;
    context_references: how many other references' clean images join a reference's graph as negatives
    (our extension; 0 = the paper's per-reference graph; used by the callers that assemble the graph,
    `copyseek triage` and the benchmark)."""

    k: int = NEIGHBOURS
    hidden: int = 32
    noisy_weight: float = 0.1
    epochs: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    dropout: float = 0.5
    seed: int = 0
    context_references: int = CONTEXT_REFERENCES

    def __post_init__(self) -> None:
        if self.context_references < 0:
            raise CopyseekError(f"GCN context_references must be >= 0, got {self.context_references}")
        if self.k < 1 or self.hidden < 1 or self.epochs < 1:
            raise CopyseekError(f"GCN k, hidden and epochs must be >= 1, got {self.k}, {self.hidden}, {self.epochs}")
        if not 0 < self.noisy_weight <= 1:
            raise CopyseekError(f"GCN noisy_weight must be in (0, 1], got {self.noisy_weight}")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.dropout < 1:
            raise CopyseekError("GCN lr must be > 0, weight_decay >= 0 and dropout in [0, 1)")


def nearest_references(prototypes: np.ndarray, rows: np.ndarray, m: int, chunk: int = 64) -> np.ndarray:
    """(len(rows), min(m, n - 1)) indices of the m prototypes nearest (highest dot product) to each
    prototype `prototypes[rows]`, itself excluded, nearest first; (n, d) `prototypes`, one row per
    reference (unit rows: their clean images' normalised mean)."""
    prototypes = np.asarray(prototypes, np.float32)
    rows = np.asarray(rows, np.int64).reshape(-1)
    if prototypes.ndim != 2:
        raise CopyseekError(f"prototypes must be (n, d), got shape {prototypes.shape}")
    if m < 0:
        raise CopyseekError(f"the number of context references must be >= 0, got {m}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(prototypes)):
        raise CopyseekError(f"prototype rows must lie in [0, {len(prototypes)})")
    m = min(m, len(prototypes) - 1)
    out = np.empty((len(rows), max(m, 0)), np.int64)
    if m <= 0:
        return out
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sims = prototypes[part] @ prototypes.T  # (chunk, n)
        sims[np.arange(len(part)), part] = -np.inf
        top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start : start + len(part)] = np.take_along_axis(top, order, axis=1)
    return out


def gcn_relevance(vectors: np.ndarray, clean: np.ndarray, noisy: np.ndarray, params: GCNParams | None = None,
                  negative: np.ndarray | None = None) -> np.ndarray:
    """(n,) relevance in [0, 1] of every image of one class, from (n, d) unit `vectors` and the boolean
    masks of its clean (verified) and noisy (reported) images; images in neither mask take part in
    the graph only. `negative` (our extension): a mask of clean images of OTHER classes, trained to 0
    with full weight (the paper's graph has none)."""
    params = params or GCNParams()
    vectors = check_vectors(vectors)
    clean, noisy = np.asarray(clean, bool), np.asarray(noisy, bool)
    negative = np.zeros(len(vectors), bool) if negative is None else np.asarray(negative, bool)
    if clean.shape != (len(vectors),) or noisy.shape != (len(vectors),) or negative.shape != (len(vectors),):
        raise CopyseekError(f"clean, noisy and negative must be ({len(vectors)},) masks")
    if not clean.any():
        raise CopyseekError("GCN cleaning needs at least one clean image")
    if (clean & noisy).any():
        raise CopyseekError("an image cannot be both clean and noisy")
    if (negative & (clean | noisy)).any():
        raise CopyseekError("a negative (another class's clean image) cannot be clean or noisy too")
    graph = knn_graph(vectors, k=min(params.k, max(len(vectors) - 1, 1)), symmetrize="union")
    s = sparse_tensor(graph.normalized("rw-self"))
    x = torch.from_numpy(vectors)
    target = torch.from_numpy(clean.astype(np.float32))
    weight = torch.from_numpy(np.where(clean | negative, 1.0, np.where(noisy, params.noisy_weight, 0.0)).astype(np.float32))
    torch.manual_seed(params.seed)
    model = TwoLayerGCN(x.shape[1], params.hidden, params.dropout)
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    for _ in range(params.epochs):
        optimiser.zero_grad()
        loss = (loss_fn(model(x, s)[:, 0], target) * weight).sum() / weight.sum()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x, s)[:, 0]).numpy().astype(np.float64)


def collection_relevance(vectors: np.ndarray, clean_nodes: np.ndarray, clean_classes: np.ndarray,
                         noisy_nodes: np.ndarray, noisy_classes: np.ndarray, params: GCNParams | None = None) -> np.ndarray:
    """(m,) relevance in [0, 1] of m noisy labels ("image noisy_nodes[i] belongs to class
    noisy_classes[i]") from ONE multi-class GCN over the whole collection: (n, d) unit `vectors` (every
    image; images without a label take part in the graph only), (c_clean,) `clean_nodes` with their
    verified (c_clean,) `clean_classes` (any ints; an image may carry several labels). A two-layer GCN
    (hidden width 2 x `params.hidden`: 64 by default, the width measured in BENCHMARKS.md issue 15) on
    the `rw-self` matrix of the union kNN graph (k = `params.k`), one output per class of the clean
    labels, trained with cross-entropy on every label, a noisy one weighted `params.noisy_weight`;
    relevance = the softmax probability of the noisy label's class. `params.context_references` is
    not used: every class is in the graph."""
    params = params or GCNParams()
    vectors = check_vectors(vectors)
    nodes = [np.asarray(a, np.int64).reshape(-1) for a in (clean_nodes, noisy_nodes)]
    classes = [np.asarray(a).reshape(-1) for a in (clean_classes, noisy_classes)]
    if any(len(n) != len(c) for n, c in zip(nodes, classes)):
        raise CopyseekError("clean (and noisy) nodes and classes must have the same length")
    if not len(nodes[0]):
        raise CopyseekError("GCN cleaning needs at least one clean image")
    if any(len(n) and (n.min() < 0 or n.max() >= len(vectors)) for n in nodes):
        raise CopyseekError(f"nodes must lie in [0, {len(vectors)})")
    names = np.unique(classes[0])
    if not np.isin(classes[1], names).all():
        raise CopyseekError("every noisy label's class needs at least one clean image")
    at = torch.from_numpy(np.concatenate(nodes))
    target = torch.from_numpy(np.searchsorted(names, np.concatenate(classes)).astype(np.int64))
    weight = torch.from_numpy(np.r_[np.ones(len(nodes[0])), np.full(len(nodes[1]), params.noisy_weight)].astype(np.float32))
    graph = knn_graph(vectors, k=min(params.k, max(len(vectors) - 1, 1)), symmetrize="union")
    s = sparse_tensor(graph.normalized("rw-self"))
    x = torch.from_numpy(vectors)
    torch.manual_seed(params.seed)
    model = TwoLayerGCN(x.shape[1], 2 * params.hidden, params.dropout, outputs=len(names))
    optimiser = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    for _ in range(params.epochs):
        optimiser.zero_grad()
        loss = (nn.functional.cross_entropy(model(x, s)[at], target, reduction="none") * weight).sum() / weight.sum()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        probability = torch.softmax(model(x, s), dim=1).numpy()
    return probability[nodes[1], target[len(nodes[0]) :].numpy()].astype(np.float64)
