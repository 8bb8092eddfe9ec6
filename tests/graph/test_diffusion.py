from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import scipy.sparse as sp

import copyseek.graph.diffusion as diffusion_module
from copyseek.errors import CopyseekError
from copyseek.graph.diffusion import (
    CG_BLOCK,
    SOLVERS,
    AggregatedHybridSolver,
    ConvergenceWarning,
    Components,
    Deflation,
    Diffusion,
    LevelElimination,
    Solver,
    component_eigenpairs,
    component_labels,
    aggregate_basis,
    add_product,
    aggregates,
    as_operator,
    conjugate_gradient,
    hop_neighbourhood,
    independent_set,
    make_solver,
    register_solver,
    shifted_product,
    top_eigenpairs,
)
from copyseek.graph.knn import knn_graph
from tests.graph.families import families


@pytest.fixture(scope="module")
def graph():
    x, _ = families(n_families=12, size=8, noise=0.8)
    return knn_graph(x, k=6, symmetrize="union")


def exact(graph, y, alpha=0.99):
    s = graph.normalized().toarray()
    return np.linalg.solve(np.eye(len(s)) - alpha * s, y)


def seeds(graph, columns=3):
    y = np.zeros((graph.n_nodes, columns))
    y[np.arange(columns) * 7, np.arange(columns)] = 1.0
    return y


class TestConjugateGradient:
    def test_solves_an_spd_system_column_by_column(self):
        rng = np.random.default_rng(0)
        m = rng.standard_normal((20, 20))
        a = m @ m.T + 20 * np.eye(20)
        b = rng.standard_normal((20, 3))
        x, iterations = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-10, max_iter=100)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), atol=1e-8)
        assert 0 < iterations <= 20 + 1

    def test_leaves_its_right_hand_side_and_the_operator_alone(self):
        # the updates run in place: none of them may reach the caller's arrays
        rng = np.random.default_rng(1)
        s = sp.random(30, 30, density=0.2, random_state=2, format="csr")
        s = (s + s.T) / (2 * max(abs(s).sum(axis=1).max(), 1.0))
        b = rng.standard_normal((30, 2))
        before_b, before_s = b.copy(), s.toarray()
        x, _ = conjugate_gradient(partial(shifted_product, s, 0.9), b, tol=1e-10, max_iter=200)
        np.testing.assert_array_equal(b, before_b)
        np.testing.assert_array_equal(s.toarray(), before_s)
        np.testing.assert_allclose(x, np.linalg.solve(np.eye(30) - 0.9 * before_s, b), atol=1e-8)

    def test_add_product_adds_in_place(self):
        rng = np.random.default_rng(4)
        a = sp.random(7, 5, density=0.4, format="csr", random_state=1)
        x, out = rng.standard_normal((5, 3)), rng.standard_normal((7, 3))
        want, same = out + a @ x, out
        add_product(a, x, out)
        assert out is same
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-12)

    @pytest.mark.parametrize("layout", ["fortran", "column slice", "public product only", "csc matrix", "float32 out"])
    def test_add_product_is_right_whatever_the_layout(self, layout, monkeypatch):
        rng = np.random.default_rng(5)
        a = sp.random(9, 4, density=0.5, format="csr", random_state=2)
        x = rng.standard_normal((4, 3))
        if layout == "fortran":
            out = np.asfortranarray(rng.standard_normal((9, 3)))
        elif layout == "column slice":
            out = rng.standard_normal((9, 6))[:, ::2]
        elif layout == "public product only":
            monkeypatch.setattr(diffusion_module, "_csr_matvecs", None)
            out = rng.standard_normal((9, 3))
        elif layout == "csc matrix":
            a, out = a.tocsc(), rng.standard_normal((9, 3))
        else:
            out = rng.standard_normal((9, 3)).astype(np.float32)
        want = out + a @ x
        add_product(a, x, out)
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-12 if out.dtype == np.float64 else 1e-5)

    def test_add_product_refuses_shapes_that_do_not_fit(self):
        a = sp.random(9, 4, density=0.5, format="csr", random_state=2)
        with pytest.raises(ValueError, match="does not fit"):
            add_product(a, np.ones((4, 3)), np.zeros((8, 3)))
        with pytest.raises(ValueError, match="does not fit"):
            add_product(a, np.ones((5, 3)), np.zeros((9, 3)))

    def test_subtract_correction_is_the_a_orthogonal_projection_step(self):
        rng = np.random.default_rng(6)
        m = rng.standard_normal((12, 12))
        a = sp.csr_matrix(m @ m.T + 12 * np.eye(12))
        z = sp.csr_matrix((rng.uniform(0.5, 1, 12), (np.arange(12), np.arange(12) // 4)), shape=(12, 3))
        r, p = rng.standard_normal((12, 2)), rng.standard_normal((12, 2))
        zd, ad = z.toarray(), a.toarray()
        want = p - zd @ np.linalg.solve(zd.T @ ad @ zd, (ad @ zd).T @ r)
        Deflation(a, z).subtract_correction(r, p)
        np.testing.assert_allclose(p, want, rtol=1e-9, atol=1e-12)

    def test_coarse_is_the_best_solution_within_the_basis_written_into_out(self):
        rng = np.random.default_rng(7)
        m = rng.standard_normal((10, 10))
        a = sp.csr_matrix(m @ m.T + 10 * np.eye(10))
        z = sp.csr_matrix((np.ones(10), (np.arange(10), np.arange(10) // 5)), shape=(10, 2))
        b = rng.standard_normal((10, 3))
        zd = z.toarray()
        want = zd @ np.linalg.solve(zd.T @ a.toarray() @ zd, zd.T @ b)
        deflation = Deflation(a, z)
        np.testing.assert_allclose(deflation.coarse(b), want, atol=1e-12)
        out = np.full_like(b, np.nan)
        assert deflation.coarse(b, out) is out
        np.testing.assert_allclose(out, want, atol=1e-12)

    def test_the_correction_reads_r_in_row_order(self):
        # (A Z)^T kept column-major: its product walks r's rows in order (a row-major copy gathers
        # them from all over the graph, 2.3x slower at 100k nodes)
        a = sp.csr_matrix(np.diag(np.arange(1.0, 7.0)))
        z = sp.csr_matrix((np.ones(6), (np.arange(6), np.arange(6) // 3)), shape=(6, 2))
        deflation = Deflation(a, z)
        assert deflation.a_basis_t.format == "csc"
        np.testing.assert_allclose(deflation.a_basis_t.toarray(), (a @ z)[:, deflation.elimination.order].T.toarray())

    @pytest.mark.parametrize("alpha", [0.9, 0.0])
    @pytest.mark.parametrize("layout", ["csr", "csc"])
    def test_shifted_product_is_i_minus_alpha_s(self, alpha, layout, monkeypatch):
        s = sp.random(6, 6, density=0.5, format=layout, random_state=5)
        v = np.random.default_rng(5).standard_normal((6, 3))
        want = v - alpha * (s.toarray() @ v)
        np.testing.assert_allclose(shifted_product(s, alpha, v), want, atol=1e-12)
        out = np.full_like(v, np.nan)  # whatever out holds is overwritten
        assert shifted_product(s, alpha, v, out) is out
        np.testing.assert_allclose(out, want, atol=1e-12)
        monkeypatch.setattr(diffusion_module, "_csr_matvecs", None)  # the public product's path
        np.testing.assert_allclose(shifted_product(s, alpha, v, out), want, atol=1e-12)

    def test_as_operator_writes_a_function_s_product_into_out(self):
        a = np.arange(9.0).reshape(3, 3)
        out = np.zeros((3, 2))
        assert as_operator(lambda v: a @ v)(np.ones((3, 2)), out) is out
        np.testing.assert_allclose(out, a @ np.ones((3, 2)))

    def test_scale_sets_the_residual_it_stops_at(self):
        a = np.diag(np.linspace(1, 100, 60))
        b = np.ones((60, 1))
        _, own = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-6, max_iter=100)
        x, larger = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-6, max_iter=100, scale=np.array([1e3 * np.linalg.norm(b)]))
        assert larger < own
        assert np.linalg.norm(a @ x - b) <= 1e-6 * 1e3 * np.linalg.norm(b)

    def test_a_coarse_space_that_spans_everything_leaves_nothing_to_iterate(self):
        rng = np.random.default_rng(1)
        m = rng.standard_normal((15, 15))
        a = sp.csr_matrix(m @ m.T + 15 * np.eye(15))
        b = rng.standard_normal((15, 2))
        x, iterations = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-10, deflation=Deflation(a, sp.identity(15, format="csr")))
        np.testing.assert_allclose(x, np.linalg.solve(a.toarray(), b), atol=1e-9)
        assert iterations == 0

    def test_deflated_cg_solves_with_a_partial_coarse_space(self):
        rng = np.random.default_rng(2)
        m = rng.standard_normal((30, 30))
        a = sp.csr_matrix(m @ m.T + np.diag(np.linspace(0.01, 30, 30)))
        basis = sp.csr_matrix((np.ones(30), (np.arange(30), np.arange(30) // 5)), shape=(30, 6))
        b = rng.standard_normal((30, 3))
        x, _ = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-10, max_iter=300, deflation=Deflation(a, basis))
        np.testing.assert_allclose(x, np.linalg.solve(a.toarray(), b), rtol=1e-6, atol=1e-8)

    def test_a_finished_column_stops_moving(self):
        # the second column is solved exactly by the coarse space, the first is not: CG iterates for
        # the first and must leave the second as it is (its residual is rounding noise)
        a = sp.csr_matrix(np.diag([1.0, 2.0, 3.0, 4.0]) + 0.1)
        basis = sp.csr_matrix(np.array([[0.0], [0.0], [0.6], [0.8]]))
        deflation = Deflation(a, basis)
        second = a @ np.array([0.0, 0.0, 0.6, 0.8])
        b = np.column_stack([[1.0, -1.0, 0.5, 0.0], second])
        x, iterations = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-12, max_iter=50, deflation=deflation)
        assert iterations > 0
        np.testing.assert_allclose(x[:, 1], [0.0, 0.0, 0.6, 0.8], atol=1e-12)
        np.testing.assert_allclose(a @ x[:, 0], b[:, 0], atol=1e-10)

    def test_warns_when_it_stops_at_max_iter(self):
        a = np.diag(np.linspace(1, 1000, 50))
        with pytest.warns(ConvergenceWarning, match="max_iter=2"):
            conjugate_gradient(as_operator(lambda v: a @ v), np.ones((50, 1)), tol=1e-12, max_iter=2)

    def test_warns_when_any_block_stops_at_max_iter(self):
        a = np.diag(np.linspace(1, 1000, 50))
        b = np.column_stack([np.ones(50), np.eye(50)[0]])  # the second block converges in one step
        with pytest.warns(ConvergenceWarning, match="max_iter=2"):
            conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-12, max_iter=2, block=1)

    @pytest.mark.parametrize("block, widest", [(2, 2), (3, 3), (None, CG_BLOCK)])
    def test_columns_are_solved_a_block_at_a_time_with_the_same_result(self, block, widest):
        rng = np.random.default_rng(3)
        m = rng.standard_normal((40, 40))
        a = m @ m.T + np.diag(np.linspace(0.1, 40, 40))
        b = rng.standard_normal((40, CG_BLOCK + 5))
        scale = np.linalg.norm(b, axis=0) * rng.uniform(0.5, 2.0, b.shape[1])  # a stopping point per column
        seen = []

        def matvec(v, out):
            seen.append(v.shape[1])
            return np.matmul(a, v, out=out)

        x, iterations = conjugate_gradient(matvec, b, tol=1e-6, max_iter=500, scale=scale, block=block)
        assert max(seen) == widest
        whole, whole_iterations = conjugate_gradient(as_operator(lambda v: a @ v), b, tol=1e-6, max_iter=500, scale=scale, block=b.shape[1])
        # each column's own steps and stopping point: the same solution, and the most iterations of any block
        np.testing.assert_allclose(x, whole, rtol=1e-9, atol=1e-12)
        assert iterations == whole_iterations
        for j in range(b.shape[1]):  # each column stops at tol x its own scale
            assert np.linalg.norm(a @ x[:, j] - b[:, j]) <= 1e-6 * scale[j] * (1 + 1e-9)

    def test_every_block_and_step_writes_into_the_same_arrays(self):
        # fresh (n, block) arrays per block or per step cost 10-20% of a solve at 100k nodes in page
        # faults: every product of one call lands in one array (the narrower last block in its prefix)
        rng = np.random.default_rng(4)
        m = rng.standard_normal((30, 30))
        a = m @ m.T + 30 * np.eye(30)
        b = rng.standard_normal((30, 7))
        outs = []

        def matvec(v, out):
            outs.append(out)  # kept alive, so a new array could not reuse a freed one's memory
            return np.matmul(a, v, out=out)

        x, _ = conjugate_gradient(matvec, b, tol=1e-10, max_iter=100, block=3)
        assert len(outs) > 3 and all(np.shares_memory(out, outs[0]) for out in outs)
        np.testing.assert_allclose(x, np.linalg.solve(a, b), atol=1e-8)

    def test_an_operator_of_v_alone_is_refused_with_what_to_do(self):
        with pytest.raises(CopyseekError, match="as_operator"):
            conjugate_gradient(lambda v: v, np.ones((3, 2)))
        with pytest.raises(TypeError, match="has no len"):  # a TypeError of its own goes through
            conjugate_gradient(lambda v, out: len(3), np.ones((3, 2)))

    @pytest.mark.parametrize("block", [0, -1, 2.5])
    def test_a_block_of_no_columns_is_refused(self, block):
        with pytest.raises(CopyseekError, match="CG block"):
            conjugate_gradient(as_operator(lambda v: v), np.ones((3, 2)), block=block)

    def test_a_block_stops_when_its_own_columns_are_solved(self):
        # an easy column and a hard one: in blocks of one, the easy one's block ends early
        a = np.diag(np.linspace(1, 1000, 50))
        b = np.column_stack([np.eye(50)[0], np.ones(50)])
        calls = []
        conjugate_gradient(as_operator(lambda v: calls.append(1) or a @ v), b, tol=1e-8, max_iter=500, block=1)
        apart = len(calls)
        calls.clear()
        _, iterations = conjugate_gradient(as_operator(lambda v: calls.append(1) or a @ v), b, tol=1e-8, max_iter=500, block=2)
        assert len(calls) == iterations  # together: one product a step for both, as long as the hard one
        assert apart == 1 + iterations  # apart: the easy column's one step, then the hard one's


class TestSolvers:
    @pytest.mark.parametrize(
        "name, options",
        [("temporal", {"tol": 1e-8}), ("hybrid", {"rank": 10, "tol": 1e-8}), ("hybrid-agg", {"tol": 1e-8}),
         ("hybrid-agg", {"tol": 1e-8, "strength": 0.0}), ("hybrid-agg", {"tol": 1e-8, "strength": 1.0})],
    )
    def test_cg_solvers_match_the_exact_solution(self, graph, name, options):
        y = seeds(graph)
        f = Diffusion(0.99, name, **options).fit(graph).rank(y)
        np.testing.assert_allclose(f, exact(graph, y), rtol=1e-5, atol=1e-6 * np.abs(exact(graph, y)).max())

    def test_spectral_is_exact_at_full_rank_and_approximate_below(self, graph):
        y = seeds(graph)
        full = Diffusion(0.99, "spectral", rank=graph.n_nodes).fit(graph).rank(y)
        np.testing.assert_allclose(full, exact(graph, y), atol=1e-3 * np.abs(full).max())
        low = Diffusion(0.99, "spectral", rank=5).fit(graph).rank(y)
        assert np.abs(low - exact(graph, y)).max() > 1e-3 * np.abs(full).max()

    def test_hybrid_needs_fewer_iterations_than_temporal(self, graph):
        y = seeds(graph, 1)
        temporal = Diffusion(0.99, "temporal", tol=1e-6).fit(graph)
        temporal.rank(y)
        hybrid = Diffusion(0.99, "hybrid", rank=30, tol=1e-6).fit(graph)
        hybrid.rank(y)
        assert hybrid.iterations_ < temporal.iterations_

    @pytest.mark.parametrize("components", [False, True])
    def test_hybrid_stops_at_temporals_residual_on_the_whole_system(self, graph, components):
        # seeds mostly on the top eigenvectors: the deflated part is small, and CG must not solve it
        # to tol relative to its own (small) norm, only to tol x |y| as temporal does
        hybrid = Diffusion(0.99, "hybrid", rank=30, tol=1e-3, components=components).fit(graph)
        s = graph.normalized().toarray()
        u = hybrid.solver_.vectors_.astype(np.float64)
        y = u[:, :1] + 1e-2 * seeds(graph, 1)
        f = hybrid.rank(y)
        residual = np.linalg.norm((np.eye(len(s)) - 0.99 * s) @ f - y)
        assert residual <= 2e-3 * np.linalg.norm(y)
        relative = Diffusion(0.99, "temporal", tol=1e-3).fit(graph)
        relative.rank(y - u @ (u.T @ y))
        assert hybrid.iterations_ < relative.iterations_

    def test_aggregated_hybrid_needs_fewer_iterations_than_temporal(self):
        # one family a cluster, weakly linked to the others: one eigenvalue near 1 each, as on copies
        x, _ = families(n_families=40, size=10, noise=0.8)
        clustered = knn_graph(x, k=10)
        y = seeds(clustered)
        temporal = Diffusion(0.99, "temporal", tol=1e-6).fit(clustered)
        temporal.rank(y)  # 62 iterations
        aggregated = Diffusion(0.99, "hybrid-agg", tol=1e-6).fit(clustered)
        aggregated.rank(y)  # 23
        assert aggregated.iterations_ < temporal.iterations_ / 2

    def test_aggregated_hybrid_fits_from_s_alone_too(self, graph):
        y = seeds(graph)
        solver = AggregatedHybridSolver(tol=1e-8).fit(graph.normalized(), 0.99)
        np.testing.assert_allclose(solver.rank(y), exact(graph, y), rtol=1e-5, atol=1e-6 * np.abs(exact(graph, y)).max())

    def test_aggregated_memory_is_sparse(self, graph):
        d = Diffusion(0.99, "hybrid-agg").fit(graph)
        m = d.solver_.aggregates_.max() + 1
        assert 0 < d.solver_.nbytes() < graph.n_nodes * m * 4  # far less than m dense columns
        with pytest.raises(CopyseekError, match="strength"):
            make_solver("hybrid-agg", strength=1.5)

    def test_memory_is_the_eigenvectors(self, graph):
        d = Diffusion(0.99, "spectral", rank=8).fit(graph)
        assert d.solver_.nbytes() >= graph.n_nodes * 8 * 4
        assert Diffusion(0.99, "temporal").fit(graph).solver_.nbytes() == 0

    def test_truncated_temporal_stays_in_the_neighbourhood(self, graph):
        y = seeds(graph, 1)
        f = Diffusion(0.99, "temporal", truncate=20).fit(graph).rank(y)
        assert np.count_nonzero(f) <= 20
        whole = Diffusion(0.99, "temporal").fit(graph).rank(y)
        top = np.argsort(-whole[:, 0])[:5]
        assert (f[top, 0] > 0).all()  # the best-ranked nodes are near the seed

    def test_hop_neighbourhood_grows_by_rings(self, graph):
        s = graph.normalized()
        nodes = hop_neighbourhood(s, np.array([0]), 1 + s[0].nnz)
        assert set(nodes) == {0} | set(s[0].indices)


class TestComponents:
    """The fixture graph is 8 connected components (8 to 24 nodes): each query is solved on its own."""

    @pytest.mark.parametrize(
        "name, options",
        [("temporal", {"tol": 1e-8, "components": True}), ("hybrid", {"rank": 10, "tol": 1e-8, "components": True}),
         ("hybrid-agg", {"tol": 1e-8, "components": True})],
    )
    def test_per_component_solves_are_exact(self, graph, name, options):
        y = seeds(graph)
        f = Diffusion(0.99, name, **options).fit(graph).rank(y)
        np.testing.assert_allclose(f, exact(graph, y), rtol=1e-5, atol=1e-6 * np.abs(exact(graph, y)).max())

    def test_scores_stay_in_the_touched_components(self, graph):
        labels = component_labels(graph.normalized())
        assert len(np.unique(labels)) > 2
        y = seeds(graph, 1)
        f = Diffusion(0.99, "temporal", components=True).fit(graph).rank(y)
        touched = np.unique(labels[np.flatnonzero(y[:, 0])])
        assert np.count_nonzero(f[~np.isin(labels, touched), 0]) == 0
        assert (f[np.isin(labels, touched), 0] > 0).all()

    @pytest.mark.parametrize("dense_up_to", [1000, 10])  # 10: the larger components go through eigsh
    def test_component_eigenpairs_are_eigenpairs_of_the_whole_graph(self, graph, monkeypatch, dense_up_to):
        import copyseek.graph.diffusion as diffusion

        monkeypatch.setattr(diffusion, "DENSE_COMPONENT", dense_up_to)
        monkeypatch.setattr(diffusion, "DENSE_MANY", dense_up_to)
        s = graph.normalized()
        components = Components(component_labels(s))
        values, vectors, owners = component_eigenpairs(s, 12, 1e-10, components)
        np.testing.assert_allclose(values, np.sort(np.linalg.eigvalsh(s.toarray()))[::-1][:12], atol=1e-6)
        np.testing.assert_allclose(s @ vectors, vectors * values, atol=1e-4)
        for column, owner in enumerate(owners):  # each vector lives on the component it is listed for
            assert np.abs(vectors[components.labels != owner, column]).max() == 0

    def test_top_eigenpairs_of_a_clustered_spectrum(self):
        # 30 families in one component: 30 eigenvalues in [0.87, 1], then a gap, and below it
        # eigenvalues of either sign (the largest in magnitude are not all the largest)
        x, _ = families(n_families=30, size=8, noise=0.5)
        s = knn_graph(x, k=8, symmetrize="union").normalized()
        values, vectors = top_eigenpairs(s, 40, 1e-8)
        dense = np.sort(np.linalg.eigvalsh(s.toarray()))[::-1]
        np.testing.assert_allclose(values, dense[:40], atol=1e-7)
        np.testing.assert_allclose(s @ vectors, vectors * values, atol=1e-4)

    def test_spectral_per_component_is_exact_at_full_rank(self, graph):
        y = seeds(graph)
        full = Diffusion(0.99, "spectral", rank=graph.n_nodes, components=True).fit(graph).rank(y)
        np.testing.assert_allclose(full, exact(graph, y), atol=1e-3 * np.abs(full).max())

    def test_aggregated_hybrid_per_component_solves_queries_spanning_components(self, graph):
        # one column seeded in every component: each is solved with its own coarse space, and the
        # pieces together meet the whole system's tolerance (each piece stopping at tol x |y| would
        # leave up to sqrt(8) times that)
        labels = component_labels(graph.normalized())
        y = np.zeros((graph.n_nodes, 2))
        for label in np.unique(labels):
            y[np.flatnonzero(labels == label)[0], 0] = 1.0
        y[5, 1] = 1.0
        d = Diffusion(0.99, "hybrid-agg", tol=1e-3, components=True).fit(graph)
        f = d.rank(y)
        s = graph.normalized().toarray()
        residual = np.linalg.norm((np.eye(len(s)) - 0.99 * s) @ f - y, axis=0)
        assert (residual <= 1e-3 * np.linalg.norm(y, axis=0)).all()
        assert len(d.solver_.deflations_) == len(np.unique(labels[labels >= 0]))  # no isolated node here
        whole = Diffusion(0.99, "hybrid-agg").fit(graph).solver_
        assert d.solver_.nbytes() < 1.1 * whole.nbytes()  # the same factors, split by component

    def test_aggregated_hybrid_per_component_keeps_an_isolated_node(self, graph):
        s = sp.block_diag([graph.normalized(), sp.csr_matrix((1, 1))], format="csr")  # last node: no edge
        y = np.zeros((s.shape[0], 2))
        y[-1, 0], y[3, 1] = 2.0, 1.0
        f = AggregatedHybridSolver(tol=1e-8, components=True).fit(s, 0.99).rank(y)
        np.testing.assert_allclose(f, np.linalg.solve(np.eye(s.shape[0]) - 0.99 * s.toarray(), y), atol=1e-6)

    def test_aggregated_hybrid_per_component_needs_fewer_iterations(self):
        x, _ = families(n_families=40, size=10, noise=0.8)
        clustered = knn_graph(x, k=10)
        y = seeds(clustered)
        temporal = Diffusion(0.99, "temporal", tol=1e-6, components=True).fit(clustered)
        temporal.rank(y)
        aggregated = Diffusion(0.99, "hybrid-agg", tol=1e-6, components=True).fit(clustered)
        aggregated.rank(y)
        assert aggregated.iterations_ < temporal.iterations_ / 2

    def test_hybrid_iterations_fall_once_every_component_is_captured(self, graph):
        y = seeds(graph, 1)
        temporal = Diffusion(0.99, "temporal", tol=1e-6, components=True).fit(graph)
        temporal.rank(y)
        hybrid = Diffusion(0.99, "hybrid", rank=40, tol=1e-6, components=True).fit(graph)
        hybrid.rank(y)
        assert hybrid.iterations_ < temporal.iterations_

    def test_keep_rank_equals_fitting_at_that_rank(self, graph):
        y = seeds(graph)
        large = Diffusion(0.99, "hybrid", rank=30, tol=1e-8, components=True).fit(graph)
        small = Diffusion(0.99, "hybrid", rank=12, tol=1e-8, components=True).fit(graph)
        kept = Diffusion.from_fitted(graph, large.solver_.keep_rank(12))
        np.testing.assert_allclose(kept.solver_.values_, small.solver_.values_, atol=1e-8)
        np.testing.assert_allclose(kept.rank(y), exact(graph, y), rtol=1e-5, atol=1e-6 * np.abs(exact(graph, y)).max())
        assert kept.solver_.nbytes() < large.solver_.nbytes() and large.solver_.vectors_.shape[1] == 30
        spectral = Diffusion.from_fitted(graph, small.solver_.spectral())
        fitted = Diffusion(0.99, "spectral", rank=12, components=True).fit(graph)
        np.testing.assert_allclose(spectral.rank(y), fitted.rank(y), atol=1e-5 * np.abs(fitted.rank(y)).max())
        with pytest.raises(CopyseekError, match="rank"):
            large.solver_.keep_rank(31)

    def test_truncation_and_components_exclude_each_other(self, graph):
        with pytest.raises(CopyseekError, match="exclude"):
            Diffusion(0.99, "temporal", truncate=10, components=True).fit(graph)


class TestDiffusion:
    def test_seeds_weigh_neighbours_like_edges(self, graph):
        d = Diffusion().fit(graph)
        y = d.seeds(np.array([3, 5, -1]), np.array([0.9, -0.2, 0.5]))
        assert y.shape == (graph.n_nodes,)
        assert y[3] == pytest.approx(0.9**3) and y[5] == 0 and np.count_nonzero(y) == 1
        assert d.seeds(np.array([[3], [4]]), np.array([[0.5], [0.5]])).shape == (graph.n_nodes, 2)

    def test_diffusion_ranks_the_seed_family_first(self):
        x, family = families(n_families=10, size=8, noise=0.9, seed=3)
        graph = knn_graph(x, k=6)
        d = Diffusion(0.99, "temporal").fit(graph)
        f = d.rank(d.seeds(graph.neighbors[0], graph.similarities[0]))
        f[0] = -np.inf
        assert (family[np.argsort(-f)[:5]] == family[0]).mean() >= 0.8

    def test_one_and_many_queries_agree(self, graph):
        d = Diffusion(0.99, "hybrid", rank=8).fit(graph)
        y = seeds(graph, 2)
        both = d.rank(y)[:, 0]
        np.testing.assert_allclose(d.rank(y[:, 0]), both, atol=1e-5 * np.abs(both).max())

    @pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5])
    def test_bad_alpha_is_refused(self, alpha):
        with pytest.raises(CopyseekError, match="alpha"):
            Diffusion(alpha)

    @pytest.mark.parametrize(
        "name, options, word",
        [("spectral", {"rank": 0}, "rank"), ("temporal", {"tol": 2.0}, "tol"), ("hybrid", {"rnk": 3}, "rnk"), ("magic", {}, "magic")],
    )
    def test_bad_solver_options_are_refused_by_name(self, graph, name, options, word):
        with pytest.raises(CopyseekError, match=word):
            Diffusion(0.99, name, **options).fit(graph)

    def test_wrong_seed_shape_is_refused(self, graph):
        with pytest.raises(CopyseekError, match="shape"):
            Diffusion().fit(graph).rank(np.zeros(graph.n_nodes + 1))

    def test_registry_takes_a_new_solver(self, graph):
        class Identity(Solver):
            name = "identity"

            def fit(self, s, alpha):
                return self

            def rank(self, y):
                return y

        register_solver("identity", Identity)
        try:
            y = seeds(graph)
            np.testing.assert_array_equal(Diffusion(0.9, "identity").fit(graph).rank(y), y)
            assert isinstance(make_solver("identity"), Identity)
        finally:
            del SOLVERS["identity"]


class TestAggregates:
    def test_aggregates_never_join_unlinked_nodes(self):
        # two triangles joined by one weak edge, and an isolated node
        w = np.zeros((7, 7))
        for i, j, weight in [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 0.9), (3, 4, 1.0), (4, 5, 1.0), (3, 5, 0.9), (2, 3, 0.05)]:
            w[i, j] = w[j, i] = weight
        labels = aggregates(sp.csr_matrix(w), 0.25)
        assert labels[6] == -1
        assert labels[0] == labels[1] == labels[2] != labels[3] == labels[4] == labels[5]

    def test_strength_one_keeps_only_the_strongest_links(self, graph):
        loose = aggregates(graph.affinity(), 0.0)
        tight = aggregates(graph.affinity(), 1.0)
        linked = np.asarray(graph.affinity().sum(axis=1)).ravel() > 0
        assert (loose[linked] >= 0).all() and (tight[linked] >= 0).all()
        assert tight.max() >= loose.max()  # stricter links: more, smaller aggregates

    def test_every_aggregate_is_connected(self, graph):
        from scipy.sparse.csgraph import connected_components

        a = graph.affinity()
        labels = aggregates(a, 0.25)
        for label in range(labels.max() + 1):
            members = np.flatnonzero(labels == label)
            assert connected_components(a[members][:, members], directed=False)[0] == 1

    def test_basis_columns_are_unit_and_disjoint(self):
        labels = np.array([0, 0, 1, -1, 1, 2])
        basis = aggregate_basis(labels, np.array([1.0, 4.0, 2.0, 0.0, 2.0, 9.0])).toarray()
        np.testing.assert_allclose(np.linalg.norm(basis, axis=0), 1.0)
        assert (np.count_nonzero(basis, axis=1) == [1, 1, 1, 0, 1, 1]).all()
        np.testing.assert_allclose(basis[:2, 0], np.array([1.0, 2.0]) / np.sqrt(5.0))  # D^1/2 shape


def spd_of_graph(w: np.ndarray, alpha: float = 0.99) -> sp.csr_matrix:
    """I - alpha D^-1/2 W D^-1/2 for a symmetric non-negative W (isolated nodes keep I)."""
    degrees = w.sum(axis=1)
    scale = np.divide(1.0, np.sqrt(degrees), out=np.zeros_like(degrees), where=degrees > 0)
    return sp.csr_matrix(np.eye(len(w)) - alpha * scale[:, None] * w * scale[None, :])


def clustered_spd(seed: int = 0) -> sp.csr_matrix:
    """A sparse random graph (levels to eliminate), two cliques of 30 (dense tails of their own) and two
    isolated nodes, shuffled so that no block is contiguous."""
    rng = np.random.default_rng(seed)
    n_sparse, clique = 120, 30
    n = n_sparse + 2 * clique + 2
    w = np.zeros((n, n))
    for _ in range(3 * n_sparse):
        i, j = rng.integers(0, n_sparse, 2)
        if i != j:
            w[i, j] = w[j, i] = rng.uniform(0.2, 1.0)
    for start in (n_sparse, n_sparse + clique):
        block = slice(start, start + clique)
        w[block, block] = rng.uniform(0.5, 1.0, (clique, clique))
        w[block, block] = (w[block, block] + w[block, block].T) / 2
        np.fill_diagonal(w[block, block], 0.0)
    shuffle = rng.permutation(n)
    return spd_of_graph(w[shuffle][:, shuffle])


class TestLevelElimination:
    def test_solves_exactly_in_its_order(self):
        e = clustered_spd()
        elimination = LevelElimination(e)
        b = np.random.default_rng(1).standard_normal((e.shape[0], 4))
        x = np.empty_like(b)
        x[elimination.order] = elimination.solve(b[elimination.order])
        np.testing.assert_allclose(x, np.linalg.solve(e.toarray(), b), rtol=1e-9, atol=1e-9)
        assert sorted(elimination.order) == list(range(e.shape[0]))
        assert len(elimination.levels) >= 2  # the sparse part is eliminated level by level

    def test_one_column_keeps_its_shape(self):
        e = clustered_spd(2)
        elimination = LevelElimination(e)
        b = np.random.default_rng(3).standard_normal(e.shape[0])
        x = elimination.solve(b[elimination.order])
        assert x.shape == b.shape
        np.testing.assert_allclose(x, np.linalg.solve(e.toarray(), b)[elimination.order], rtol=1e-9, atol=1e-9)

    def test_the_tail_is_inverted_per_component(self):
        e = clustered_spd()
        sizes = sorted(last - first for first, last, _ in LevelElimination(e).tail)
        assert sizes.count(30) == 2  # each clique alone, not one dense inverse over both
        assert LevelElimination(e).nbytes() < 8 * (e.shape[0] ** 2) / 4

    def test_a_dense_matrix_is_all_tail_and_a_single_row_all_levels(self):
        dense = spd_of_graph(np.ones((20, 20)) - np.eye(20))
        elimination = LevelElimination(dense, dense_up_to=0)
        assert not elimination.levels and [(first, last) for first, last, _ in elimination.tail] == [(0, 20)]
        single = LevelElimination(sp.csr_matrix(np.array([[2.0]])), dense_up_to=0)
        assert len(single.levels) == 1 and not single.tail
        np.testing.assert_allclose(single.solve(np.array([4.0])), [2.0])

    def test_a_small_matrix_is_inverted_whole(self):
        from scipy.sparse.csgraph import connected_components

        e = clustered_spd()
        whole = LevelElimination(e, dense_up_to=e.shape[0])
        assert not whole.levels and len(whole.tail) == connected_components(e, directed=False)[0]
        b = np.random.default_rng(5).standard_normal((e.shape[0], 2))
        np.testing.assert_allclose(whole.solve(b[whole.order]), np.linalg.solve(e.toarray(), b)[whole.order], rtol=1e-9)

    def test_independent_set_takes_no_two_neighbours(self):
        e = clustered_spd(4)
        chosen = independent_set(e, max_degree=6)
        pattern = e[chosen][:, chosen].toarray()
        np.fill_diagonal(pattern, 0.0)
        assert len(chosen) > 10 and not pattern.any()
        degrees = np.diff(e.indptr) - 1
        assert (degrees[chosen] <= 6).all()
