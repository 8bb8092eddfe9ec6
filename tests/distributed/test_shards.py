import shutil

import numpy as np
import pytest

from copyseek.describe.base import Candidates
from copyseek.distributed.shards import Shards, ShardedSearcher, merge_candidates, merge_top, split_chunks
from copyseek.errors import CopyseekError
from copyseek.match.matcher import MatchOptions, match
from copyseek.store.index import Index, MaskedSearcher
from copyseek.store.manifest import ChunkRecord
from tests.making import crop_copy, write_photos


def test_split_chunks_keeps_order_and_every_chunk_in_balanced_runs():
    counts = [5, 9, 1, 7, 7, 3, 8, 2]
    chunks, row = [], 0
    for i, n in enumerate(counts):
        chunks.append(ChunkRecord(i, row, n, None, None))
        row += n + 1  # rows may have gaps
    for shards in (1, 2, 3, 8, 20):
        runs = split_chunks(chunks, shards)
        assert [c for run in runs for c in run] == chunks and len(runs) <= shards
        sizes = [sum(c.count for c in run) for run in runs]
        assert max(sizes) - min(sizes) <= 2 * max(counts) or shards == 1


def test_merging_is_a_sort_by_score_then_row_over_all_shards():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, 40).astype(np.float32)  # many ties
    parts = []
    for start in (0, 15, 30):
        rows = np.arange(start, min(start + 15, 40))
        order = np.lexsort((rows, -scores[rows]))[:6]
        parts.append(Candidates(rows[order], scores[rows][order], {"inliers": rows[order] * 2}))
    merged = merge_candidates(parts, 6)
    expected = np.lexsort((np.arange(40), -scores))[:6]
    assert merged.rows.tolist() == expected.tolist()
    assert merged.extra["inliers"].tolist() == (expected * 2).tolist()
    sims, rows = merge_top([(p.scores[None], p.rows[None]) for p in parts] + [(np.full((1, 2), -np.inf), np.full((1, 2), -1))], 8)
    assert rows[0].tolist() == np.lexsort((np.arange(40), -scores))[:8].tolist()


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_onnx):
    """An index of 40 references in chunks of 6, with exact ties (the same photo under three ids)
    and two removed references; and a folder of queries (copies and the references themselves)."""
    root = tmp_path_factory.mktemp("sharded")
    photos = write_photos(root / "refs", 37, seed=8, size=(96, 72))
    for i in range(3):
        shutil.copy(photos[4], root / "refs" / f"twin{i}.jpg")
    queries = root / "queries"
    queries.mkdir()
    for path in photos[::5] + [photos[4]]:
        crop_copy(path, queries / f"q_{path.stem}.jpg")
    shutil.copy(photos[4], queries / "same.jpg")
    with Index.create(root / "idx", "global", {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}) as index:
        index.add(root / "refs", commit_every=6, batch_size=3, progress=False)
        index.remove(["twin1", "img0010"])
    return root


def everything(index: Index, queries) -> tuple:
    searcher = index.searchers()["global"]
    twin = searcher.reconstruct(np.array([4]))
    vectors = np.concatenate([np.eye(5, twin.shape[1], dtype=np.float32) + 0.1, twin])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    found = match(index, queries, MatchOptions(k=40, candidates=40, workers=0), progress=False).predictions
    return found, searcher.search_vectors(vectors, 12), searcher.reconstruct(np.arange(searcher.ntotal))


@pytest.mark.parametrize("backend, count", [("local", 3), ("local", 40), ("process", 2)])
def test_a_sharded_index_answers_exactly_as_the_whole_one_ties_and_removals_included(collection, backend, count):
    with Index.open(collection / "idx") as index:
        whole = everything(index, collection / "queries")
        with Shards(count, backend) as shards:
            index.use_searcher_source(shards)
            searcher = index.searchers()["global"]
            assert isinstance(searcher, MaskedSearcher) and isinstance(searcher.searcher, ShardedSearcher)
            assert shards.shards == min(count, 7)
            split = everything(index, collection / "queries")
    assert split[0] == whole[0]
    assert [p.reference_id for p in whole[0] if p.query_id == "same"][:3] == ["img0004", "twin0", "twin2"]
    assert not {"twin1", "img0010"} & {p.reference_id for p in split[0]}
    for a, b in zip(split[1], whole[1]):
        assert np.array_equal(a, b)
    assert np.array_equal(split[2], whole[2])


@pytest.mark.xdist_group("ray")
def test_shards_in_ray_actors_answer_as_the_whole_index(collection, ray_address):
    with Index.open(collection / "idx") as index:
        whole = everything(index, collection / "queries")
        with Shards(2, "ray", ray_address) as shards:
            index.use_searcher_source(shards)
            split = everything(index, collection / "queries")
    assert split[0] == whole[0]
    assert np.array_equal(split[2], whole[2])


def test_a_sharded_reader_takes_new_chunks_on_refresh(tmp_path, tiny_onnx):
    folder = tmp_path / "refs"
    write_photos(folder, 12, seed=9, size=(96, 72))
    options = {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}
    with Index.create(tmp_path / "idx", "global", options) as writer, Index.open(tmp_path / "idx") as reader, Shards(2, "local") as shards:
        writer.add(folder, commit_every=4, progress=False)
        reader.use_searcher_source(shards)
        assert reader.searchers()["global"].ntotal == 12
        write_photos(tmp_path / "more", 5, seed=10, size=(96, 72), prefix="new")
        writer.add(tmp_path / "more", commit_every=4, progress=False)
        assert reader.refresh()
        sharded = reader.searchers()["global"]
        assert sharded.ntotal == 17 and len(reader.ids) == 17
        whole = writer.searchers()["global"]
        vectors = whole.reconstruct(np.arange(17))
        assert np.array_equal(sharded.reconstruct(np.arange(17)), vectors)
        assert np.array_equal(sharded.search_vectors(vectors, 17)[1], whole.search_vectors(vectors, 17)[1])


def test_only_exactly_shardable_branches_are_split_and_bad_settings_are_refused(tmp_path):
    write_photos(tmp_path / "refs", 6, seed=11, size=(96, 72))
    with Index.create(tmp_path / "idx", "pdq") as index, Shards(2, "local") as shards:
        index.add(tmp_path / "refs", commit_every=2, progress=False)
        index.use_searcher_source(shards)
        assert not isinstance(index.searchers()["pdq"], ShardedSearcher) and shards.shards == 0
    with pytest.raises(CopyseekError, match="unknown shard backend 'gpu'"):
        Shards(2, "gpu")
