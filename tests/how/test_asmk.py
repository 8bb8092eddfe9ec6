import numpy as np
import pytest

from copyseek.errors import CopyseekError
from copyseek.how.asmk import AsmkParams, AsmkSearcher, Codebook, pack_words


def unit(rng, n, dim=16):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def codebook():
    return Codebook.fit(unit(np.random.default_rng(0), 400), 8, seed=0)


def images(codebook, rng, n_images, n_desc=30):
    descs = [unit(rng, n_desc) for _ in range(n_images)]
    features = []
    for d in descs:
        words, bits = codebook.aggregate(d, codebook.assign(d))
        features.append({"words": words, "bits": bits})
    return descs, features


def loop_similarity(codebook, a, b, params=AsmkParams()):
    """ASMK by its definition, one word at a time (the vectorised searcher must agree)."""
    def agg(d, m):
        out = {}
        for i, row in enumerate(codebook.assign(d, m)):
            for w in row:
                out[w] = out.get(w, 0) + d[i] - codebook.centroids[w]
        return {w: r > 0 for w, r in out.items()}

    qa, rb = agg(a, params.query_assignments), agg(b, 1)
    total = 0.0
    for w, bits in qa.items():
        if w in rb:
            u = 1 - 2 * np.count_nonzero(bits != rb[w]) / codebook.dim
            total += u ** params.alpha if u >= params.tau else 0.0
    return total / np.sqrt(len(qa)) / np.sqrt(len(rb))


class TestCodebook:
    def test_assign_returns_nearest_words_first(self, codebook):
        x = unit(np.random.default_rng(1), 20)
        ids = codebook.assign(x, 3)
        distances = ((x[:, None] - codebook.centroids[None]) ** 2).sum(-1)
        assert ids.shape == (20, 3)
        assert np.array_equal(ids[:, 0], distances.argmin(1))
        assert np.all(np.take_along_axis(distances, ids, 1)[:, :-1] <= np.take_along_axis(distances, ids, 1)[:, 1:])

    def test_aggregate_packs_signs_of_summed_residuals(self, codebook):
        x = unit(np.random.default_rng(2), 10)
        ids = codebook.assign(x)
        words, bits = codebook.aggregate(x, ids)
        assert np.array_equal(words, np.unique(ids)) and bits.shape == (len(words), 2)
        w = words[0]
        residual = (x[ids[:, 0] == w] - codebook.centroids[w]).sum(0)
        assert np.array_equal(np.unpackbits(bits[0]).astype(bool), residual > 0)

    def test_save_load_round_trip_and_refusals(self, codebook, tmp_path):
        codebook.save(tmp_path / "c.npz")
        assert Codebook.load(tmp_path / "c.npz").fingerprint() == codebook.fingerprint()
        with pytest.raises(CopyseekError, match="multiple of 8"):
            Codebook(np.zeros((4, 12)))
        with pytest.raises(CopyseekError, match="at least as many"):
            Codebook.fit(unit(np.random.default_rng(0), 5), 8)
        with pytest.raises(CopyseekError, match="do not fit"):
            codebook.assign(np.zeros((3, 8), np.float32))


class TestSearcher:
    def test_scores_equal_the_kernel_by_definition(self, codebook):
        rng = np.random.default_rng(3)
        refs, features = images(codebook, rng, 6)
        searcher = AsmkSearcher(codebook.size, codebook.dim)
        searcher.add(pack_words(features, codebook.size, codebook.dim))
        query = refs[2][:20] + 0.05 * unit(rng, 20)
        words, bits = codebook.aggregate(query, codebook.assign(query, 5))
        scores = searcher.scores(words, bits)
        expected = [loop_similarity(codebook, query, r) for r in refs]
        assert np.allclose(scores, expected, atol=1e-5)
        (found,) = searcher.search([{"words": words, "bits": bits}], k=3)
        assert np.array_equal(found.rows, np.argsort(-scores, kind="stable")[:3]) and np.all(np.diff(found.scores) <= 0)

    @pytest.mark.parametrize("split", [[6], [1, 5], [2, 2, 2], [0, 3, 3]])
    def test_any_split_into_chunks_gives_the_same_result(self, codebook, split):
        rng = np.random.default_rng(4)
        refs, features = images(codebook, rng, 6)
        query = {"words": features[4]["words"], "bits": features[4]["bits"]}
        whole = AsmkSearcher(codebook.size, codebook.dim)
        whole.add(pack_words(features, codebook.size, codebook.dim))
        parts = AsmkSearcher(codebook.size, codebook.dim)
        bounds = np.cumsum([0] + split)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            parts.add(pack_words(features[lo:hi], codebook.size, codebook.dim))
            parts.search([query], 1)  # searching between adds rebuilds the inverted file
        assert parts.ntotal == 6 and parts.nbytes() == whole.nbytes()
        a, b = whole.search([query], 6)[0], parts.search([query], 6)[0]
        assert np.array_equal(a.rows, b.rows) and np.allclose(a.scores, b.scores)
        assert a.rows[0] == 4

    def test_empty_searcher_and_foreign_chunks(self, codebook):
        searcher = AsmkSearcher(codebook.size, codebook.dim)
        query = {"words": np.array([1]), "bits": np.zeros((1, 2), np.uint8)}
        assert searcher.ntotal == 0 and len(searcher.search([query], 5)[0].rows) == 0
        with pytest.raises(CopyseekError, match="lacks arrays"):
            searcher.add({"codes": np.zeros((1, 16), np.uint8)})
        with pytest.raises(CopyseekError, match="does not fit"):
            searcher.add({"words": np.array([9]), "bits": np.zeros((1, 2), np.uint8), "counts": np.array([1])})
        with pytest.raises(CopyseekError, match="inconsistent"):
            searcher.add({"words": np.array([1, 2]), "bits": np.zeros((2, 2), np.uint8), "counts": np.array([1])})

    def test_mirrored_query_takes_the_better_score(self, codebook):
        rng = np.random.default_rng(5)
        _, features = images(codebook, rng, 4)
        searcher = AsmkSearcher(codebook.size, codebook.dim)
        searcher.add(pack_words(features, codebook.size, codebook.dim))
        stranger = {"words": np.array([0]), "bits": np.zeros((1, 2), np.uint8)}
        query = {**stranger, "words_mirrored": features[3]["words"], "bits_mirrored": features[3]["bits"]}
        assert searcher.search([query], 1)[0].rows[0] == 3
        either = np.maximum(searcher.scores(stranger["words"], stranger["bits"]),
                            searcher.scores(features[3]["words"], features[3]["bits"]))
        assert np.allclose(searcher.query_scores(query), either) and either[3] > either[[0, 1, 2]].max()

    def test_params_refuse_bad_values(self):
        for bad in ({"alpha": 0}, {"tau": 1.0}, {"query_assignments": 0}):
            with pytest.raises(CopyseekError):
                AsmkParams(**bad)


def test_assign_is_safe_from_many_threads_at_first_use(monkeypatch):
    """The branch extracts images in threads that share one codebook; the first assignments race to
    build its index. A slow `add` widens the window in which an unpublished index would be seen empty."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import faiss

    real = faiss.IndexFlatL2

    class SlowToFill:
        def __init__(self, dim):
            self.inner = real(dim)

        def add(self, x):
            time.sleep(0.05)
            self.inner.add(x)

        def search(self, x, k):
            return self.inner.search(x, k)

    monkeypatch.setattr(faiss, "IndexFlatL2", SlowToFill)
    rng = np.random.default_rng(0)
    codebook = Codebook(rng.normal(size=(16, 8)).astype(np.float32))
    start = threading.Barrier(4)

    def assign(seed):
        start.wait()
        return codebook.assign(np.random.default_rng(seed).normal(size=(20, 8)).astype(np.float32), 2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(assign, range(4)))
    assert all(((r >= 0) & (r < 16)).all() for r in results)
