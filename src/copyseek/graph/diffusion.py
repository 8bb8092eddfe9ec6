"""Manifold ranking by diffusion on a kNN graph: f = (I - alpha S)^-1 y, solved four ways
(Iscen et al., "Hybrid Diffusion: Spectral-Temporal Graph Filtering for Manifold Ranking", 2018).

    diffusion = Diffusion(alpha=0.99, solver="hybrid", rank=64).fit(graph)
    y = diffusion.seeds(rows, sims)            # a query's kNN in the graph -> (n,) seed vector
    f = diffusion.rank(y)                      # (n,) or (n, m): manifold similarity to the seeds

Solvers (registered in SOLVERS, all `fit(S, alpha)` then `rank(y) -> f`):
- temporal: conjugate gradient on (I - alpha S) f = y for each query, optionally restricted to the
  query's truncated neighbourhood (the M nodes nearest the seeds in hops); nothing stored offline.
- spectral: the top-r eigenpairs (U, Lambda) of S, computed once (scipy eigsh);
  f = U diag(1 / (1 - alpha Lambda)) U^T y. Exact only when r = n; memory n * r.
- hybrid: the same r eigenpairs plus CG on the rest of the spectrum: f = U h(Lambda) U^T y + x with
  (I - alpha S) x = (I - U U^T) y. The right-hand side has no component on U's invariant subspace,
  so CG only meets lambda_{r+1}, lambda_{r+2}, ... and needs fewer iterations, each as cheap as
  temporal's (one sparse product: the eigenvectors are used once per query, not per iteration).
  This equals the paper's (I - alpha S)^-1 = U h(Lambda) U^T + (I - alpha S_r)^-1 - U U^T with
  S_r = S - U Lambda U^T (our reading of the paper's spectral/temporal split; its code was not
  available to us), solved in the deflated form.
- hybrid-agg (ours): the spectral part on a sparse basis instead of eigenvectors, one vector per
  aggregate of closely linked nodes (n nonzeros in all), solved exactly as one small sparse system,
  plus deflated CG on the rest (`AggregatedHybridSolver`). It needs the graph's edge weights, so
  Diffusion fits solvers through `fit_graph(graph, alpha)` (by default `fit(S, alpha)`).

`components=True` (every solver): (I - alpha S)^-1 is block diagonal over the graph's connected
components, so each query is solved exactly on the components its seeds touch, and the eigenpairs are
computed per component (each eigenvector lives on one component; the r largest over all are kept).
Copy-detection graphs are many small components (one per photo's versions) beside a few large ones:
a query of a small component costs a few products on a few dozen nodes, and the eigenpairs go where
CG is slow, to the large components (hybrid-agg factorises one coarse system per component).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from copyseek.errors import CopyseekError
from copyseek.graph.knn import KnnGraph
from copyseek.validation import from_options

try:  # scipy's CSR kernel Y += A X into a given Y: private, but where scipy has kept it for years
    from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs
except ImportError:  # pragma: no cover - a scipy that moved it: add_product uses the public product
    _csr_matvecs = None

LinearOperator = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""operator(v, out) writes A v into `out` (shaped like v, never v itself) and returns it: CG hands
the same array every step, so a solve maps no new (n, k) memory per step."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at max_iter before reaching its tolerance."""


def as_operator(product: Callable[[np.ndarray], np.ndarray]) -> LinearOperator:
    """A LinearOperator from a function v -> A v that makes its own result (copied into `out`)."""

    def operator(v: np.ndarray, out: np.ndarray) -> np.ndarray:
        np.copyto(out, product(v))
        return out

    return operator


def _refuse_old_operator(matvec: Callable[..., np.ndarray]) -> None:
    """Raise CopyseekError, saying what to do, if `matvec` cannot be called as operator(v, out)
    (before session 30 CG's operators took v alone); called only once a TypeError has happened, so a
    solve pays nothing for it."""
    try:
        inspect.signature(matvec).bind(None, None)
    except ValueError:  # a callable without a readable signature (a C function): trusted
        return
    except TypeError:
        raise CopyseekError(
            "conjugate_gradient's operator is called as operator(v, out) and writes A v into out; "
            "wrap a function v -> A v in as_operator(...)"
        ) from None


def shifted_product(s: sp.spmatrix, alpha: float, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(I - alpha S) v for (n, n) `s` and (n, k) `v`, written into `out` (a new array if None) as
    -alpha (S v - v / alpha): one scaled copy, S v accumulated into it, one scaling. Given an `out`
    that CG reuses, no (n, k) memory is mapped anew, whose page faults cost 10-20% of a solve at
    100k nodes and vary with the heap's history (BENCHMARKS.md, issue 14, session 30)."""
    out = np.empty_like(v) if out is None else out
    if alpha == 0:
        np.copyto(out, v)
        return out
    np.multiply(v, -1.0 / alpha, out=out)
    add_product(s, v, out)
    out *= -alpha
    return out


def add_product(a: sp.spmatrix, x: np.ndarray, out: np.ndarray) -> None:
    """out += a @ x in place for a sparse (n, m) `a`, (m, k) `x` and (n, k) `out`, without the (n, k)
    temporary of `a @ x` (deflated CG's correction, every step; BENCHMARKS.md, issue 14, session 29).
    scipy's own CSR kernel does it when it is where scipy has kept it (a private module), `a` is CSR
    and `out` is C-ordered float64; otherwise the public product."""
    if x.shape != (a.shape[1], out.shape[1]) or out.shape[0] != a.shape[0]:
        raise ValueError(f"add_product: a {a.shape} @ x {x.shape} does not fit out {out.shape}")
    kernel_fits = a.format == "csr" and out.dtype == np.float64 and out.flags.c_contiguous
    if _csr_matvecs is None or not kernel_fits:
        out += a @ x
        return
    x = np.ascontiguousarray(x, dtype=np.float64)
    _csr_matvecs(a.shape[0], a.shape[1], out.shape[1], a.indptr, a.indices, a.data, x.reshape(-1), out.reshape(-1))


CG_BLOCK = 32
"""Columns that conjugate_gradient solves together. All columns of a block run until its slowest
converges, and the (n, block) working arrays stay small: on the 10k benchmark graph 200 queries 32 at
a time take temporal 1.5x and hybrid-agg 1.2x less time than all at once (at 100k the gain is within
the run-to-run noise; BENCHMARKS.md, issue 14, session 29)."""


_WORK_ARRAYS = 5
"""x, r, p, A p and the scaled update: the (n, k) arrays one CG solve works in."""


def conjugate_gradient(
    matvec: LinearOperator,
    b: np.ndarray,
    tol: float = 1e-6,
    max_iter: int = 200,
    scale: np.ndarray | None = None,
    deflation: "Deflation | None" = None,
    block: int | None = None,
) -> tuple[np.ndarray, int]:
    """Solve A x = b for a symmetric positive definite A given as `matvec`, every column of (n, m) `b`,
    `block` columns at a time (CG_BLOCK by default), each column with its own step sizes (a column that
    has reached its tolerance stops moving). Stops when every column's residual is below tol * |b|, or
    below tol * scale with `scale` (m,) given: the norms of a larger system's right-hand sides when b
    is only the part of them that CG still has to solve (hybrid's deflated seeds). With a `deflation`
    (a coarse space Z of the same A), CG starts from the coarse solution and searches A-orthogonally to
    Z (deflated CG, Saad et al. 2000), so the slow directions Z spans cost no iterations.
    The work arrays are made once per call and every block reuses them (fresh (n, block) arrays per
    block or per step cost 10-20% of a solve at 100k nodes in page faults; BENCHMARKS.md, issue 14,
    session 30). Returns (x (n, m), the most iterations a block took); warns with
    ConvergenceWarning at max_iter."""
    block = CG_BLOCK if block is None else block
    if int(block) != block or block < 1:
        raise CopyseekError(f"CG block must be a whole number >= 1, got {block}")
    n, m = b.shape
    several = m > block
    # flat buffers (a block's right-hand sides too, when there are several blocks), so that a
    # narrower last block works in a C-ordered prefix of each
    count = _WORK_ARRAYS + 1 if several else _WORK_ARRAYS
    buffers = [np.empty(n * min(block, m), dtype=b.dtype) for _ in range(count)]

    def work(width: int) -> list[np.ndarray]:
        return [buffer[: n * width].reshape(n, width) for buffer in buffers]

    try:
        if not several:  # one block: its solution (a work array of this call) is the answer
            x, iterations, converged = _solve_columns(matvec, b, tol, max_iter, scale, deflation, work(m))
        else:
            x, iterations, converged = np.empty_like(b), 0, True
            for start in range(0, m, block):
                stop = min(start + block, m)
                rhs, *arrays = work(stop - start)
                np.copyto(rhs, b[:, start:stop])
                x[:, start:stop], its, done = _solve_columns(
                    matvec, rhs, tol, max_iter, None if scale is None else scale[start:stop], deflation, arrays
                )
                iterations, converged = max(iterations, its), converged and done
    except TypeError:
        _refuse_old_operator(matvec)
        raise
    if not converged:
        warnings.warn(f"conjugate gradient stopped at max_iter={max_iter} before tol={tol:g}", ConvergenceWarning, stacklevel=3)
    return x, iterations


def _solve_columns(
    matvec: LinearOperator,
    b: np.ndarray,
    tol: float,
    max_iter: int,
    scale: np.ndarray | None,
    deflation: "Deflation | None",
    work: list[np.ndarray],
) -> tuple[np.ndarray, int, bool]:
    """conjugate_gradient on all columns of `b` at once, in the `work` arrays (_WORK_ARRAYS of them,
    shaped like b, their contents overwritten): (x, one of `work`; iterations; converged)."""
    x, r, p, ap, scaled = work
    if deflation is None:
        x.fill(0)
        np.copyto(r, b)
        np.copyto(p, r)
    else:
        deflation.coarse(b, out=x)
        np.subtract(b, matvec(x, r), out=r)
        np.copyto(p, r)
        deflation.subtract_correction(r, p)
    rr = np.einsum("ij,ij->j", r, r)
    norms2 = np.einsum("ij,ij->j", b, b) if scale is None else np.asarray(scale, np.float64) ** 2
    target = (tol**2) * np.maximum(norms2, 1e-300)
    for iteration in range(1, max_iter + 1):
        active = rr > target
        if not active.any():
            return x, iteration - 1, True
        matvec(p, ap)
        pap = np.einsum("ij,ij->j", p, ap)
        # a finished column's residual may be rounding noise (the coarse solution can be exact), whose
        # tiny p.Ap would make a huge step
        step = np.divide(rr, pap, out=np.zeros_like(rr), where=(pap > 0) & active)
        x += np.multiply(p, step, out=scaled)
        r -= np.multiply(ap, step, out=scaled)
        rr_new = np.einsum("ij,ij->j", r, r)
        p *= np.divide(rr_new, rr, out=np.zeros_like(rr), where=rr > 0)
        p += r
        if deflation is not None:
            deflation.subtract_correction(r, p)
        rr = rr_new
    return x, max_iter, bool((rr <= target).all())


class Solver(ABC):
    """f = (I - alpha S)^-1 y for a symmetric normalised S. `fit` does the offline work once."""

    name: ClassVar[str]
    iterations_: int = 0
    """CG iterations of the last `rank` call (0 for solvers without CG)."""

    @abstractmethod
    def fit(self, s: sp.csr_matrix, alpha: float) -> "Solver":
        """Offline work on the (n, n) matrix S; returns self."""

    def fit_graph(self, graph: KnnGraph, alpha: float) -> "Solver":
        """What Diffusion.fit calls: `fit` on the graph's S. A solver that also needs the graph's edge
        weights (its affinity A) overrides this."""
        return self.fit(graph.normalized("sym"), alpha)

    @abstractmethod
    def rank(self, y: np.ndarray) -> np.ndarray:
        """(n, m) seeds -> (n, m) diffusion scores."""

    def nbytes(self) -> int:
        """Bytes the offline work keeps (eigenvectors); the graph itself is not counted."""
        return 0


@dataclass(frozen=True)
class CGParams:
    """tol: relative residual to stop at; max_iter: CG iterations at most; truncate: with a number M,
    each query is solved on the subgraph of the M nodes nearest its seeds in hops (None: whole graph);
    components: each query solved on the connected components its seeds touch (exact)."""

    tol: float = 1e-4
    max_iter: int = 500
    truncate: int | None = None
    components: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.tol < 1:
            raise CopyseekError(f"CG tol must be in (0, 1), got {self.tol}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise CopyseekError(f"CG max_iter must be a whole number >= 1, got {self.max_iter}")
        if self.truncate is not None and (int(self.truncate) != self.truncate or self.truncate < 1):
            raise CopyseekError(f"truncate must be a whole number >= 1 or None, got {self.truncate}")
        if not isinstance(self.components, bool):
            raise CopyseekError(f"components must be True or False, got {self.components!r}")
        if self.components and self.truncate is not None:
            raise CopyseekError("truncate and components exclude each other: choose one restriction")


def hop_neighbourhood(s: sp.csr_matrix, seeds: np.ndarray, size: int) -> np.ndarray:
    """Sorted rows of the `size` nodes nearest `seeds` in hops (breadth first; the last ring is cut
    by the order CSR lists it in)."""
    chosen = np.zeros(s.shape[0], bool)
    chosen[seeds] = True
    frontier = np.unique(seeds)
    count = len(frontier)
    while count < size and len(frontier):
        reached = np.unique(s[frontier].indices)
        fresh = reached[~chosen[reached]][: size - count]
        chosen[fresh] = True
        count += len(fresh)
        frontier = fresh
    return np.flatnonzero(chosen)


def independent_set(c: sp.csr_matrix, max_degree: int) -> np.ndarray:
    """Sorted rows of a greedy independent set of the symmetric (m, m) `c`'s graph (no two chosen rows
    share an off-diagonal entry), taken by increasing degree among rows of <= `max_degree` neighbours:
    eliminating a row of degree d adds up to d^2 entries, so the cheap ones go first."""
    degrees = np.diff(c.indptr) - (c.diagonal() != 0)
    blocked = np.zeros(c.shape[0], bool)
    chosen = []
    for i in np.argsort(degrees, kind="stable"):
        if degrees[i] > max_degree:
            break
        if not blocked[i]:
            chosen.append(i)
            blocked[c.indices[c.indptr[i] : c.indptr[i + 1]]] = True
    return np.sort(np.asarray(chosen, dtype=np.int64))


class LevelElimination:
    """Exact solver of a sparse symmetric positive definite (m, m) E for many right-hand sides at once:
    block LDL^T by levels. Each level is an independent set of E's (current Schur complement's) graph,
    so its pivot block is diagonal and eliminating it is two sparse products; what stays once the
    sets get small or dense (the tail) is inverted densely, one block per connected component of the
    tail. A solve is then sparse products and dense matrix products over all columns: on the 10k
    benchmark graph's E (1391 rows, 8k nonzeros) 3.3x faster than SuperLU's triangular solves, which
    go one column at a time (2.7 against 8.7 ms for 200 columns, one thread).

    `order` (m,): the rows in elimination order; `solve` takes and returns vectors in that order, so a
    caller permutes its basis once instead of every vector. `max_degree`: rows of more neighbours are
    left to the tail; `min_share`: a level smaller than this share of the remaining rows ends them;
    `dense_up_to`: a matrix of at most this many rows is inverted whole (one product per solve beats
    a few levels of small ones: the per-component solvers' small components)."""

    def __init__(self, e: sp.csr_matrix, max_degree: int = 16, min_share: float = 0.02, dense_up_to: int = 64):
        from scipy.sparse.csgraph import connected_components

        c, m = sp.csr_matrix(e), e.shape[0]
        ids = np.arange(m)  # the original row of each row of c
        eliminated: list[np.ndarray] = []
        levels: list[tuple[np.ndarray, sp.csr_matrix, np.ndarray]] = []
        while c.shape[0] > dense_up_to:
            chosen = independent_set(c, max_degree)
            if len(chosen) == 0 or len(chosen) < min_share * c.shape[0]:
                break
            rest = np.setdiff1d(np.arange(c.shape[0]), chosen)
            pivots_inv = 1.0 / c.diagonal()[chosen]
            rest_rows = c[rest]
            low = sp.csr_matrix(rest_rows[:, chosen])  # E_rest,level
            levels.append((pivots_inv, low, ids[rest]))
            eliminated.append(ids[chosen])
            c = sp.csr_matrix(rest_rows[:, rest] - low @ sp.diags(pivots_inv) @ low.T)
            ids = ids[rest]
        # the tail, grouped by connected component so that its inverse is block diagonal
        tail_labels = connected_components(c, directed=False)[1] if c.shape[0] else np.zeros(0, np.int64)
        grouped = np.argsort(tail_labels, kind="stable")
        self.order = np.concatenate(eliminated + [ids[grouped]])
        position = np.empty(m, np.int64)
        position[self.order] = np.arange(m)
        self.levels: list[tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]] = []
        start = 0
        for pivots_inv, low, rest_ids in levels:  # rows of each `low` in the final order
            start += len(pivots_inv)
            low = sp.csr_matrix(low[np.argsort(position[rest_ids] - start)])
            self.levels.append((pivots_inv, low, sp.csr_matrix(low.T)))
        bounds = np.searchsorted(tail_labels[grouped], np.arange(len(np.unique(tail_labels)) + 1))
        dense = c[grouped][:, grouped]
        self.tail = [
            (start + first, start + last, np.linalg.inv(dense[first:last, first:last].toarray()))
            for first, last in zip(bounds[:-1], bounds[1:])
        ]

    def solve(self, b: np.ndarray) -> np.ndarray:
        """(m,) or (m, k) right-hand sides in `order` -> E^-1 b in `order`."""
        x = np.array(b, dtype=np.float64).reshape(len(self.order), -1)
        start = 0
        for pivots_inv, low, _ in self.levels:  # forward: each level's rows out of the rest
            stop = start + len(pivots_inv)
            x[stop:] -= low @ (pivots_inv[:, None] * x[start:stop])
            start = stop
        for first, last, inverse in self.tail:
            x[first:last] = inverse @ x[first:last]
        for pivots_inv, _, up in reversed(self.levels):  # backward: each level from the rest's solution
            stop, start = start, start - len(pivots_inv)
            x[start:stop] = pivots_inv[:, None] * (x[start:stop] - up @ x[stop:])
        return x.reshape(np.shape(b))

    def nbytes(self) -> int:
        arrays = [self.order] + [inverse for *_, inverse in self.tail]
        for pivots_inv, low, up in self.levels:
            arrays += [pivots_inv, low.data, low.indices, low.indptr, up.data, up.indices, up.indptr]
        return int(sum(a.nbytes for a in arrays))


class Deflation:
    """A coarse space for deflated CG on A = I - alpha S: a sparse basis Z (n, m), (A Z)^T and the
    m x m Galerkin matrix E = Z^T A Z, solved by `LevelElimination` (Z's columns are kept in its
    elimination order, so no coarse vector is ever permuted).

    coarse(b) = Z E^-1 Z^T b is the best solution within span(Z) (in A's norm); the correction
    Z E^-1 (A Z)^T r is what CG's search direction loses to stay A-orthogonal to Z."""

    def __init__(self, a: sp.csr_matrix, basis: sp.csr_matrix):
        basis = sp.csr_matrix(basis)
        a_basis = sp.csr_matrix(a @ basis)
        self.elimination = LevelElimination(sp.csr_matrix(basis.T @ a_basis))
        self.basis = sp.csr_matrix(basis[:, self.elimination.order])
        # (A Z)^T column-major (A Z's own rows): its product reads r's rows in order and scatters into
        # the small (m, k) result, where a row-major copy gathers rows of r from all over the graph
        # (2.3x faster at 100k nodes; BENCHMARKS.md, issue 14, session 30)
        self.a_basis_t = sp.csc_matrix(a_basis[:, self.elimination.order].T)

    def coarse(self, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Z E^-1 Z^T b for (n, k) `b`, written into `out` when given."""
        out = np.empty_like(b) if out is None else out
        out.fill(0)
        add_product(self.basis, self.elimination.solve(np.asarray(self.basis.T @ b)), out)
        return out

    def subtract_correction(self, r: np.ndarray, p: np.ndarray) -> None:
        """p -= Z E^-1 (A Z)^T r, in place: (n, k) r and p."""
        mu = self.elimination.solve(np.asarray(self.a_basis_t @ r))
        np.negative(mu, out=mu)
        add_product(self.basis, mu, p)

    def nbytes(self) -> int:
        arrays = []
        for m in (self.basis, self.a_basis_t):
            arrays += [m.data, m.indices, m.indptr]
        return int(sum(a.nbytes for a in arrays)) + self.elimination.nbytes()


def aggregates(affinity: sp.csr_matrix, strength: float) -> np.ndarray:
    """(n,) aggregate of every node of the symmetric (n, n) `affinity` (-1 for an isolated node), by
    the greedy aggregation of algebraic multigrid (Vanek, Mandel and Brezina 1996): an edge i-j is
    strong for i when its weight is >= `strength` x i's strongest; taking nodes by decreasing degree,
    a node whose strong neighbours are all still free forms an aggregate with them; a node left over
    joins the aggregate it is most strongly linked to (in the same order), and what is still free
    becomes an aggregate of its own. Aggregates are small sets of closely linked nodes (about 7 on a
    copy-detection graph with k = 10)."""
    w = sp.csr_matrix(affinity)
    n = w.shape[0]
    row_of = np.repeat(np.arange(n), np.diff(w.indptr))
    strongest = np.zeros(n)
    np.maximum.at(strongest, row_of, w.data)
    strong = w.data >= strength * strongest[row_of]
    degrees = np.bincount(row_of, weights=w.data, minlength=n)
    labels = np.full(n, -1)
    order = np.argsort(-degrees, kind="stable")
    linked = order[degrees[order] > 0]
    count = 0
    for i in linked:
        edges = slice(w.indptr[i], w.indptr[i + 1])
        group = w.indices[edges][strong[edges]]
        if labels[i] < 0 and (labels[group] < 0).all():
            labels[i] = labels[group] = count
            count += 1
    for i in linked:
        edges = slice(w.indptr[i], w.indptr[i + 1])
        neighbours, weights = w.indices[edges], w.data[edges]
        taken = labels[neighbours] >= 0
        if labels[i] < 0 and taken.any():
            labels[i] = labels[neighbours[taken][np.argmax(weights[taken])]]
    left = linked[labels[linked] < 0]
    labels[left] = count + np.arange(len(left))
    return labels


def aggregate_basis(labels: np.ndarray, degrees: np.ndarray) -> sp.csr_matrix:
    """(n, m) basis with one column per aggregate: D^1/2 restricted to the aggregate, unit norm. On a
    connected component D^1/2 1 is S's eigenvector of eigenvalue 1, so these columns span the slow,
    nearly constant modes of each cluster of the graph. Rows of nodes without an aggregate are empty."""
    rows = np.flatnonzero(labels >= 0)
    weights = np.sqrt(np.maximum(degrees[rows], 0))
    norms = np.sqrt(np.bincount(labels[rows], weights=weights**2))
    return sp.csr_matrix((weights / norms[labels[rows]], (rows, labels[rows])), shape=(len(labels), len(norms)))


def component_labels(s: sp.csr_matrix) -> np.ndarray:
    """(n,) connected-component label of every node of S's graph (an isolated node is its own)."""
    from scipy.sparse.csgraph import connected_components

    return connected_components(s, directed=False)[1]


class Components:
    """The nodes of each connected component, to restrict a query to the components it touches."""

    def __init__(self, labels: np.ndarray):
        self.labels = labels
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(labels.max() + 2))
        self._members = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def touched(self, rows: np.ndarray) -> np.ndarray:
        """Component labels that `rows` fall in, sorted."""
        return np.unique(self.labels[rows])

    def nodes(self, labels: np.ndarray) -> np.ndarray:
        """Sorted rows of the components `labels`."""
        return np.sort(np.concatenate([self._members[c] for c in labels]))

    def members(self, label: int) -> np.ndarray:
        return self._members[label]

    def __len__(self) -> int:
        return len(self._members)


def solve_by_components(
    components: Components, y: np.ndarray, solve: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, int]]
) -> tuple[np.ndarray, int]:
    """f for (n, m) seeds, each column solved on the components its seeds touch, by
    `solve(nodes, touched labels, y[nodes] of the columns that touch exactly those)`; the columns with
    the same touched components are solved as one block. Elsewhere f is 0 (no path leads there)."""
    f = np.zeros_like(y)
    groups: dict[tuple[int, ...], list[int]] = {}
    for column in range(y.shape[1]):
        touched = components.touched(np.flatnonzero(y[:, column]))
        if len(touched):
            groups.setdefault(tuple(touched.tolist()), []).append(column)
    iterations = 0
    for touched, columns in groups.items():
        labels = np.asarray(touched)
        nodes = components.nodes(labels)
        part, its = solve(nodes, labels, y[np.ix_(nodes, columns)])
        f[np.ix_(nodes, columns)] = part
        iterations = max(iterations, its)
    return f, iterations


class TemporalSolver(Solver):
    """CG on (I - alpha S) f = y; nothing precomputed."""

    name = "temporal"

    def __init__(self, **options: Any):
        self.params = from_options(CGParams, options, "temporal solver")

    def fit(self, s: sp.csr_matrix, alpha: float) -> "TemporalSolver":
        self.s_, self.alpha_ = sp.csr_matrix(s), alpha
        if self.params.components:
            self.components_ = Components(component_labels(self.s_))
        return self

    def rank(self, y: np.ndarray) -> np.ndarray:
        if self.params.components:
            def solve(nodes: np.ndarray, _touched: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, int]:
                sub = self.s_[nodes][:, nodes]
                return conjugate_gradient(partial(shifted_product, sub, self.alpha_), part, self.params.tol, self.params.max_iter)

            f, self.iterations_ = solve_by_components(self.components_, y, solve)
            return f
        if self.params.truncate is None or self.params.truncate >= self.s_.shape[0]:
            f, self.iterations_ = conjugate_gradient(
                partial(shifted_product, self.s_, self.alpha_), y, self.params.tol, self.params.max_iter
            )
            return f
        f = np.zeros_like(y)
        self.iterations_ = 0
        for column in range(y.shape[1]):  # each query has its own neighbourhood
            nodes = hop_neighbourhood(self.s_, np.flatnonzero(y[:, column]), self.params.truncate)
            sub = self.s_[nodes][:, nodes]
            part, its = conjugate_gradient(
                partial(shifted_product, sub, self.alpha_), y[nodes, column : column + 1], self.params.tol, self.params.max_iter
            )
            f[nodes, column] = part[:, 0]
            self.iterations_ = max(self.iterations_, its)
        return f


@dataclass(frozen=True)
class SpectralParams:
    """rank: eigenpairs kept (r); tol: eigsh's tolerance (0 = machine precision); components: the
    eigenpairs computed per connected component (see the module docstring)."""

    rank: int = 64
    tol: float = 1e-4
    components: bool = False

    def __post_init__(self) -> None:
        if int(self.rank) != self.rank or self.rank < 1:
            raise CopyseekError(f"spectral rank must be a whole number >= 1, got {self.rank}")
        if self.tol < 0:
            raise CopyseekError(f"eigsh tol must be >= 0, got {self.tol}")
        if not isinstance(self.components, bool):
            raise CopyseekError(f"components must be True or False, got {self.components!r}")


SHIFT = 1e-3
"""eigsh works on (S - (1 + SHIFT) I)^-1 (shift-invert): S's eigenvalues are at most 1, and the top
ones of a copy-detection graph are clustered within 0.01 of it (one per family), where plain Lanczos
needs many restarts to separate them (256 of them on a 43k-node component: not done in 20 minutes);
inverted, they become the largest and best separated (32 s for those, 8 s on 8.7k nodes)."""


def top_eigenpairs(s: sp.csr_matrix, rank: int, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(values (r,), vectors (n, r) float32) of the r largest eigenvalues of the symmetric S (whose
    eigenvalues are at most 1, as a normalised affinity's are)."""
    from scipy.sparse.linalg import eigsh

    n = s.shape[0]
    if rank >= n - 1:  # eigsh needs r < n; a graph this small is decomposed densely
        values, vectors = np.linalg.eigh(s.toarray())
        values, vectors = values[::-1][:rank], vectors[:, ::-1][:, :rank]
    else:
        v0 = np.random.default_rng(0).standard_normal(n)  # fixed start: the same graph gives the same pairs
        # nearest to 1 + SHIFT from below = the largest, since none is above 1
        values, vectors = eigsh(sp.csc_matrix(s, dtype=np.float64), k=rank, sigma=1.0 + SHIFT, which="LM", tol=tol, v0=v0)
        order = np.argsort(-values)
        values, vectors = values[order], vectors[:, order]
    return values.astype(np.float64), vectors.astype(np.float32)


DENSE_COMPONENT = 3000
"""Components up to this many nodes are decomposed densely (eigh): faster than eigsh for many
eigenpairs of a few thousand nodes."""
DENSE_MANY = 10_000
"""Components up to this many nodes are also decomposed densely when more than a sixteenth of their
eigenpairs is asked for: Lanczos (eigsh) then costs more than a full eigh (n^2 floats of memory)."""


def component_eigenpairs(
    s: sp.csr_matrix, rank: int, tol: float, components: Components
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `rank` largest eigenpairs of the block-diagonal S, each eigenvector computed within its
    connected component: (values (r,), vectors (n, r) float32, component of each vector (r,)).
    Ties (every component has an eigenvalue near 1) go to the larger component first."""
    values, vecs, owners = [], [], []
    for label in np.argsort([-len(components.members(c)) for c in range(len(components))], kind="stable"):
        nodes = components.members(label)
        block = s[nodes][:, nodes]
        keep = min(rank, len(nodes))
        many = keep * 16 >= len(nodes) and len(nodes) <= DENSE_MANY
        if len(nodes) <= DENSE_COMPONENT or many or keep >= len(nodes) - 1:
            w, v = np.linalg.eigh(block.toarray())
            w, v = w[::-1][:keep], v[:, ::-1][:, :keep]
        else:
            w, v = top_eigenpairs(block, keep, tol)
        values.append(w)
        vecs.append((nodes, v.astype(np.float32)))
        owners.append(np.full(len(w), label))
    all_values, all_owners = np.concatenate(values), np.concatenate(owners)
    chosen = np.argsort(-all_values, kind="stable")[:rank]
    vectors = np.zeros((s.shape[0], len(chosen)), np.float32)
    starts = np.cumsum([0] + [len(w) for w in values])
    for column, index in enumerate(chosen):
        block = np.searchsorted(starts, index, side="right") - 1
        nodes, v = vecs[block]
        vectors[nodes, column] = v[:, index - starts[block]]
    return all_values[chosen].astype(np.float64), vectors, all_owners[chosen]


class SpectralSolver(Solver):
    """f = U diag(1 / (1 - alpha Lambda)) U^T y with S's top-r eigenpairs."""

    name = "spectral"

    def __init__(self, **options: Any):
        self.params = from_options(SpectralParams, options, "spectral solver")

    def fit(self, s: sp.csr_matrix, alpha: float) -> "SpectralSolver":
        if self.params.components:
            components = Components(component_labels(s))
            self.values_, self.vectors_, _ = component_eigenpairs(s, self.params.rank, self.params.tol, components)
        else:
            self.values_, self.vectors_ = top_eigenpairs(s, self.params.rank, self.params.tol)
        self.filter_ = (1.0 / (1.0 - alpha * self.values_)).astype(np.float32)
        return self

    def rank(self, y: np.ndarray) -> np.ndarray:
        return self.vectors_ @ (self.filter_[:, None] * (self.vectors_.T @ y.astype(np.float32))).astype(y.dtype)

    def nbytes(self) -> int:
        return int(self.vectors_.nbytes + self.values_.nbytes)

    def keep_rank(self, rank: int) -> "SpectralSolver":
        """A fitted copy on the first `rank` eigenpairs (the largest: what fitting at that rank
        computes), without decomposing again: r swept from one decomposition."""
        return keep_rank(self, rank)


@dataclass(frozen=True)
class HybridParams:
    """rank: eigenpairs kept (r); tol, max_iter: CG on the remainder; eig_tol: eigsh's tolerance;
    components: eigenpairs and solves per connected component (see the module docstring)."""

    rank: int = 64
    tol: float = 1e-4
    max_iter: int = 500
    eig_tol: float = 1e-4
    components: bool = False

    def __post_init__(self) -> None:
        SpectralParams(self.rank, self.eig_tol, self.components)
        CGParams(self.tol, self.max_iter)


class HybridSolver(Solver):
    """Spectral part on the top-r eigenpairs plus CG on the better-conditioned remainder."""

    name = "hybrid"

    def __init__(self, **options: Any):
        self.params = from_options(HybridParams, options, "hybrid solver")

    def fit(self, s: sp.csr_matrix, alpha: float) -> "HybridSolver":
        self.s_, self.alpha_ = sp.csr_matrix(s), alpha
        if self.params.components:
            self.components_ = Components(component_labels(self.s_))
            self.values_, self.vectors_, self.owners_ = component_eigenpairs(
                self.s_, self.params.rank, self.params.eig_tol, self.components_
            )
        else:
            self.values_, self.vectors_ = top_eigenpairs(s, self.params.rank, self.params.eig_tol)
        self.filter_ = (1.0 / (1.0 - alpha * self.values_)).astype(np.float32)
        return self

    def _solve(self, s: sp.csr_matrix, u: np.ndarray, filter_: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
        """Spectral part on u plus CG on the deflated right-hand side (I - u u^T) y."""
        coefficients = u.T @ y.astype(np.float32)
        rest = y - (u @ coefficients).astype(y.dtype)
        alpha = self.alpha_
        # CG stops at tol x |y|, temporal's residual on the whole system: the spectral part is exact
        # on U's span, so the whole residual is CG's; measured against |rest| it would be stricter.
        x, iterations = conjugate_gradient(
            partial(shifted_product, s, alpha), rest, self.params.tol, self.params.max_iter, np.linalg.norm(y, axis=0)
        )
        return x + (u @ (filter_[:, None] * coefficients)).astype(y.dtype), iterations

    def rank(self, y: np.ndarray) -> np.ndarray:
        if not self.params.components:
            f, self.iterations_ = self._solve(self.s_, self.vectors_, self.filter_, y)
            return f

        def solve(nodes: np.ndarray, touched: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, int]:
            mine = np.flatnonzero(np.isin(self.owners_, touched))
            return self._solve(self.s_[nodes][:, nodes], self.vectors_[nodes][:, mine], self.filter_[mine], part)

        f, self.iterations_ = solve_by_components(self.components_, y, solve)
        return f

    def nbytes(self) -> int:
        return int(self.vectors_.nbytes + self.values_.nbytes)

    def keep_rank(self, rank: int) -> "HybridSolver":
        """A fitted copy on the first `rank` eigenpairs, as SpectralSolver.keep_rank."""
        return keep_rank(self, rank)

    def spectral(self) -> SpectralSolver:
        """The spectral solver on the same eigenpairs (the part of f that hybrid's CG completes)."""
        spectral = SpectralSolver(rank=self.params.rank, tol=self.params.eig_tol, components=self.params.components)
        spectral.values_, spectral.vectors_, spectral.filter_ = self.values_, self.vectors_, self.filter_
        return spectral


@dataclass(frozen=True)
class AggregatedParams:
    """strength: an edge is strong for a node at >= strength x its strongest (`aggregates`); tol,
    max_iter: the deflated CG's; components: a coarse space and a solve per connected component."""

    strength: float = 0.25
    tol: float = 1e-4
    max_iter: int = 500
    components: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0:
            raise CopyseekError(f"aggregation strength must be in [0, 1], got {self.strength}")
        CGParams(self.tol, self.max_iter, components=self.components)


class AggregatedHybridSolver(Solver):
    """Hybrid diffusion whose spectral part is a sparse coarse space instead of eigenvectors (ours): the
    graph's nodes are grouped into small aggregates, f's restriction to their span is solved exactly
    (one sparse m x m system, m ~ n / 7), and deflated CG solves the rest. With Z = U (eigenvectors) it
    is exactly `hybrid`: E = I - alpha Lambda is the spectral filter and the correction vanishes.

    On a copy-detection graph the eigenvalues near 1 are one per tight cluster of versions (hundreds),
    so `hybrid` needs as many dense eigenvectors (n x r floats) before its CG speeds up; aggregates span
    those slow modes with n nonzeros in all. Measured in BENCHMARKS.md (issue 14, session 26)."""

    name = "hybrid-agg"

    def __init__(self, **options: Any):
        self.params = from_options(AggregatedParams, options, "aggregated hybrid solver")

    def fit(self, s: sp.csr_matrix, alpha: float, affinity: sp.csr_matrix | None = None) -> "AggregatedHybridSolver":
        """`affinity`: the graph's A, whose edge weights and degrees make the better aggregates
        (`fit_graph` passes it); without it S's own entries are used."""
        self.s_, self.alpha_ = sp.csr_matrix(s), alpha
        weights = self.s_ if affinity is None else sp.csr_matrix(affinity)
        self.aggregates_ = aggregates(weights, self.params.strength)
        basis = aggregate_basis(self.aggregates_, np.asarray(weights.sum(axis=1)).ravel())
        a = sp.identity(self.s_.shape[0], format="csr") - alpha * self.s_
        if not self.params.components:
            self.deflation_ = Deflation(a, basis)
            return self
        # An aggregate never spans two components (it is built along edges), so E is block diagonal:
        # one small factorisation per component instead of one for the whole graph.
        self.components_ = Components(component_labels(self.s_))
        order = np.argsort(self.components_.labels, kind="stable")
        bounds = np.searchsorted(self.components_.labels[order], np.arange(len(self.components_) + 1))
        a, basis = sp.csr_matrix(a[order][:, order]), sp.csr_matrix(basis[order])  # components contiguous
        self.deflations_: dict[int, Deflation] = {}
        for label, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            block = basis[start:stop]
            columns = np.unique(block.indices)
            if len(columns):  # an isolated node has no aggregate: plain CG solves it in one step
                self.deflations_[label] = Deflation(a[start:stop, start:stop], block[:, columns])
        return self

    def fit_graph(self, graph: KnnGraph, alpha: float) -> "AggregatedHybridSolver":
        return self.fit(graph.normalized("sym"), alpha, graph.affinity())

    def rank(self, y: np.ndarray) -> np.ndarray:
        if not self.params.components:
            f, self.iterations_ = conjugate_gradient(
                partial(shifted_product, self.s_, self.alpha_), y, self.params.tol, self.params.max_iter, deflation=self.deflation_
            )
            return f

        def solve(nodes: np.ndarray, touched: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, int]:
            # each touched component on its own, with its own coarse space; every piece stops at
            # tol x |y| / sqrt(pieces), so the whole residual meets temporal's tol x |y|
            scale = np.linalg.norm(part, axis=0) / np.sqrt(len(touched))
            f, iterations = np.zeros_like(part), 0
            for label in touched:
                mine = np.flatnonzero(self.components_.labels[nodes] == label)
                sub = self.s_[nodes[mine]][:, nodes[mine]]
                f[mine], its = conjugate_gradient(
                    partial(shifted_product, sub, self.alpha_), part[mine], self.params.tol, self.params.max_iter, scale,
                    self.deflations_.get(int(label)),
                )
                iterations = max(iterations, its)
            return f, iterations

        f, self.iterations_ = solve_by_components(self.components_, y, solve)
        return f

    def nbytes(self) -> int:
        if self.params.components:
            return sum(deflation.nbytes() for deflation in self.deflations_.values())
        return self.deflation_.nbytes()


def keep_rank(solver: Solver, rank: int) -> Any:
    """`solver` (spectral or hybrid, fitted) copied with its first `rank` eigenpairs."""
    import copy

    if int(rank) != rank or not 1 <= rank <= len(solver.values_):
        raise CopyseekError(f"keep_rank needs 1 <= rank <= {len(solver.values_)} (the fitted rank), got {rank}")
    kept = copy.copy(solver)
    kept.params = dataclasses.replace(solver.params, rank=rank)
    kept.values_, kept.filter_ = solver.values_[:rank], solver.filter_[:rank]
    kept.vectors_ = np.ascontiguousarray(solver.vectors_[:, :rank])
    if hasattr(solver, "owners_"):
        kept.owners_ = solver.owners_[:rank]
    return kept


SOLVERS: dict[str, Callable[..., Solver]] = {
    "temporal": TemporalSolver,
    "spectral": SpectralSolver,
    "hybrid": HybridSolver,
    "hybrid-agg": AggregatedHybridSolver,
}
"""Solver name -> constructor taking the solver's own parameters as keywords."""


def register_solver(name: str, constructor: Callable[..., Solver]) -> None:
    SOLVERS[name] = constructor


def make_solver(name: str, **options: Any) -> Solver:
    if name not in SOLVERS:
        raise CopyseekError(f"unknown diffusion solver {name!r}; known: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](**options)


class Diffusion:
    """Manifold ranking on a KnnGraph (scikit-learn shape: parameters in __init__, `fit` returns self,
    learned state ends in _).

    alpha:  0 < alpha < 1; 0.99 as in the papers (the closer to 1, the further scores spread).
    solver: a name in SOLVERS or a Solver; options go to the named solver (e.g. rank=64, truncate=1000).
    """

    def __init__(self, alpha: float = 0.99, solver: str | Solver = "temporal", **options: Any):
        if not 0.0 < alpha < 1.0:
            raise CopyseekError(f"diffusion alpha must be in (0, 1), got {alpha}")
        if isinstance(solver, Solver) and options:
            raise CopyseekError("solver options go to a solver named by string, not to a Solver instance")
        self.alpha = alpha
        self.solver = solver
        self.options = options

    def fit(self, graph: KnnGraph) -> "Diffusion":
        self.graph_ = graph
        self.solver_ = self.solver if isinstance(self.solver, Solver) else make_solver(self.solver, **self.options)
        self.solver_.fit_graph(graph, self.alpha)
        return self

    @classmethod
    def from_fitted(cls, graph: KnnGraph, solver: Solver, alpha: float = 0.99) -> "Diffusion":
        """A fitted Diffusion around a solver already fitted on `graph` with `alpha` (e.g. one from
        `keep_rank`), so that it is not fitted again."""
        diffusion = cls(alpha, solver)
        diffusion.graph_, diffusion.solver_ = graph, solver
        return diffusion

    def seeds(self, rows: np.ndarray, similarities: np.ndarray) -> np.ndarray:
        """(n,) or (n, m) seed vectors from the query's (k,) or each of m queries' (m, k) neighbours in
        the graph: y[row] = max(similarity, 0) ** gamma, as the graph weighs its own edges."""
        rows = np.atleast_2d(np.asarray(rows, np.int64))
        sims = np.atleast_2d(np.asarray(similarities, np.float64))
        if rows.shape != sims.shape:
            raise CopyseekError(f"rows {rows.shape} and similarities {sims.shape} must have the same shape")
        y = np.zeros((self.graph_.n_nodes, len(rows)))
        valid = rows >= 0
        cols = np.broadcast_to(np.arange(len(rows))[:, None], rows.shape)
        np.add.at(y, (rows[valid], cols[valid]), np.maximum(sims[valid], 0) ** self.graph_.params.gamma)
        return y[:, 0] if np.ndim(similarities) == 1 else y

    def rank(self, y: np.ndarray) -> np.ndarray:
        """(n,) or (n, m) seeds -> diffusion scores of the same shape (float64)."""
        y = np.asarray(y, np.float64)
        one = y.ndim == 1
        y2 = y[:, None] if one else y
        if y2.ndim != 2 or y2.shape[0] != self.graph_.n_nodes:
            raise CopyseekError(f"seeds must have shape ({self.graph_.n_nodes},) or ({self.graph_.n_nodes}, m), got {y.shape}")
        f = self.solver_.rank(y2)
        return f[:, 0] if one else f

    @property
    def iterations_(self) -> int:
        return self.solver_.iterations_
