import numpy as np
import pytest
from PIL import Image

from copyseek.describe.global_branch import VectorSearcher, auto_factory
from copyseek.describe.preprocess import Preprocess
from copyseek.registry import make_branch
from copyseek.errors import CopyseekError


def test_flip_average_describes_an_image_and_its_mirror_alike(tiny_onnx):
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    mirror = np.ascontiguousarray(image[:, ::-1])
    plain = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    flipped = make_branch("global", {"model": f"onnx:{tiny_onnx}", "flip_average": True})
    a, b = plain.embed([image, mirror])
    assert not np.allclose(a, b, atol=1e-3)  # the tiny model sees left and right apart
    a, b = flipped.embed([image, mirror])
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(flipped.embed([image]), axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(flipped.embed([image], flip_average=False), plain.embed([image]), atol=1e-6)


def test_flip_average_is_part_of_the_spec_only_when_on(tiny_onnx):
    plain = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    flipped = make_branch("global", {"model": f"onnx:{tiny_onnx}", "flip_average": True})
    assert "flip_average" not in plain.spec()  # indexes made before the option keep their spec
    assert flipped.spec() == {**plain.spec(), "flip_average": True}


def test_several_views_average_the_models_vectors_at_each_resizing(tiny_onnx):
    image = np.random.default_rng(1).integers(0, 256, (60, 100, 3), dtype=np.uint8)
    branch = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": "square:32+short:48"})
    assert branch.views == (Preprocess("square", 32), Preprocess("short", 48))
    assert branch.decode_side == 48
    square = branch.model.embed(np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR))[None])
    short = branch.model.embed(np.asarray(Image.fromarray(image).resize((80, 48), Image.BILINEAR))[None])
    assert not np.allclose(square, short, atol=1e-3)  # the two views differ, so the test can fail
    expected = (square + short) / np.linalg.norm(square + short)
    np.testing.assert_allclose(branch.embed([image]), expected, atol=1e-5)
    np.testing.assert_allclose(branch.embed([image], views=(Preprocess("square", 32),)), square, atol=1e-5)


def test_views_are_named_in_the_spec_and_one_view_keeps_the_old_spec(tiny_onnx):
    default = make_branch("global", {"model": f"onnx:{tiny_onnx}"})
    same = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": str(default.model.preprocess)})
    two = make_branch("global", {"model": f"onnx:{tiny_onnx}", "resize": "square:32+short:48"})
    assert default.spec() == same.spec() == default.model.spec() | {"factory": "auto"}
    assert two.spec()["preprocess"] == "square:32+short:48"


def test_bad_view_lists_are_clear_errors():
    assert Preprocess.parse_views("short:288") == (Preprocess("short", 288),)
    with pytest.raises(CopyseekError, match="same resizing twice"):
        Preprocess.parse_views("square:256+square:256")
    with pytest.raises(CopyseekError, match="square:224\\+short:256"):
        Preprocess.parse_views("square:256+wide")


@pytest.mark.parametrize(
    ("references", "dim", "expected"),
    [
        (0, 512, "Flat"),
        (49_999, 512, "Flat"),
        (50_000, 512, "IVF256,PQ128x4fs"),
        (1_000_000, 512, "IVF1024,PQ128x4fs"),
        (1_000_000, 1024, "IVF1024,PQ256x4fs"),
        (3_999_999, 512, "IVF2048,PQ128x4fs"),
        (100_000_000, 512, "IVF32768_HNSW32,PQ128x4fs"),
        (1_000_000, 100, "Flat"),  # no PQ split of a dimension that 8 does not divide
    ],
)
def test_auto_factory_grows_with_the_collection(references, dim, expected):
    assert auto_factory(references, dim) == expected


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, dim))[rng.integers(0, 64, n)] + rng.normal(scale=0.6, size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_auto_is_exact_for_small_collections_and_compressed_past_the_threshold(monkeypatch):
    from copyseek.describe import global_branch

    vectors = clustered(2000, 32, 0)
    copies = vectors[:40] + np.random.default_rng(1).normal(scale=0.02, size=(40, 32)).astype(np.float32)
    small = VectorSearcher(32)
    small.add({"vectors": vectors})
    assert small.structure == "Flat" and small.search_parameters() == {}
    # a cheap stand-in for the IVF + PQ structure (whose k-means take seconds even here)
    monkeypatch.setattr(global_branch, "auto_factory", lambda n, dim: "Flat" if n < 1000 else "IVF64,SQ8")
    monkeypatch.setattr(global_branch, "TRAIN_MAX", 10)
    monkeypatch.setattr(global_branch, "TRAIN_MIN", 500)  # trains on 640 vectors evenly spaced by row
    results = []
    for splits in ([2000], [7, 1500, 2000]):
        searcher = VectorSearcher(32)
        for lo, hi in zip([0, *splits], splits):
            searcher.add({"vectors": vectors[lo:hi]})
        assert searcher.structure == "IVF64,SQ8" and searcher.search_parameters() == {"nprobe": 32}  # half the lists
        assert len(searcher._training_sample()) == 640
        assert searcher.nbytes() < vectors.nbytes / 2
        results.append(searcher.search_vectors(copies, 3))
    for sims, rows in results[1:]:  # the same references train the same index, whatever the chunks
        np.testing.assert_array_equal(rows, results[0][1])
        np.testing.assert_allclose(sims, results[0][0], rtol=1e-5)
    assert (results[0][1][:, 0] == np.arange(40)).mean() >= 0.9


def test_auto_chooses_once_and_later_references_join_that_structure(monkeypatch):
    from copyseek.describe import global_branch

    monkeypatch.setattr(global_branch, "EXACT_BELOW", 1000)
    vectors = clustered(1500, 32, 2)
    searcher = VectorSearcher(32)
    searcher.add({"vectors": vectors[:900]})
    assert searcher.structure == "Flat"
    searcher.add({"vectors": vectors[900:]})
    assert searcher.structure == "Flat" and searcher.ntotal == 1500
    assert searcher.search_vectors(vectors[1400:1401], 1)[1][0, 0] == 1400
    with pytest.raises(CopyseekError, match="'Flat' has no search-time parameter 'nprobe'"):
        searcher.set_search_parameters(nprobe=4)


def test_an_index_built_when_the_default_was_flat_stays_flat(tiny_onnx):
    from copyseek.registry import options_from_spec

    old = {**make_branch("global", {"model": f"onnx:{tiny_onnx}", "factory": "Flat"}).spec()}
    reopened = make_branch("global", {**options_from_spec("global", old), "model": f"onnx:{tiny_onnx}"})
    assert reopened.spec() == old and reopened.new_searcher().factory == "Flat"
    assert make_branch("global", {"model": f"onnx:{tiny_onnx}"}).spec()["factory"] == "auto"


def test_a_saved_searcher_loads_with_its_structure_and_defaults(tmp_path, monkeypatch):
    from copyseek.describe import global_branch

    monkeypatch.setattr(global_branch, "auto_factory", lambda n, dim: "Flat" if n < 100 else "IVF4,SQ8")
    vectors = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    auto = VectorSearcher(8)
    auto.add({"vectors": vectors})
    assert auto.save(tmp_path / "ivf.bin")
    loaded = VectorSearcher(8)
    assert loaded.load(tmp_path / "ivf.bin")
    assert loaded.structure == "IVF4,SQ8" and loaded.search_parameters() == auto.search_parameters() == {"nprobe": 8}
    np.testing.assert_array_equal(loaded.search_vectors(vectors[:5], 2)[1], auto.search_vectors(vectors[:5], 2)[1])
    assert not VectorSearcher(16).load(tmp_path / "ivf.bin")  # another dimension
    (tmp_path / "junk.bin").write_bytes(b"not a faiss index")
    assert not VectorSearcher(8).load(tmp_path / "junk.bin")
    exact = VectorSearcher(8, "Flat")
    exact.add({"vectors": vectors})
    assert not exact.save(tmp_path / "flat.bin") and not (tmp_path / "flat.bin").exists()


def test_one_query_scanned_by_several_threads_finds_the_same_references():
    import faiss

    vectors = np.random.default_rng(3).standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    searcher = VectorSearcher(32, "IVF16,PQ8x4fs")
    searcher.add({"vectors": vectors})
    assert searcher.search_parameters() == {"nprobe": 8, "threads": 1}
    single = [searcher.search_vectors(q[None], 5) for q in vectors[:20]]
    searcher.set_search_parameters(threads=2)
    threads_before = faiss.omp_get_max_threads()
    for q, (sims, rows) in zip(vectors[:20], single):
        found_sims, found_rows = searcher.search_vectors(q[None], 5)
        np.testing.assert_array_equal(found_rows, rows)
        np.testing.assert_allclose(found_sims, sims, rtol=1e-5)
    assert faiss.omp_get_max_threads() == threads_before  # the process's setting is restored
    exact = VectorSearcher(32, "IVF16,Flat")
    exact.add({"vectors": vectors})
    with pytest.raises(CopyseekError, match="no search-time parameter 'threads'"):
        exact.set_search_parameters(threads=2)
