from __future__ import annotations

import csv

import numpy as np
import pytest

from copyseek.cli import main
from copyseek.errors import CopyseekError
from copyseek.match.matcher import MatchOptions, match
from copyseek.match.variants import VariantOptions, match_with_variants
from copyseek.store.graphs import graph_path
from copyseek.store.index import Index
from tests.making import crop_copy, write_photos


@pytest.fixture
def indexed(tmp_path, tiny_onnx):
    """An index of 8 photos plus 2 versions (crops) each of the first two; a query copying photo 0."""
    refs = tmp_path / "refs"
    photos = write_photos(refs, 8)
    for n, source in enumerate(photos[:2]):
        for v, fraction in enumerate((0.85, 0.7)):
            crop_copy(source, refs / f"v{n}{v}.jpg", fraction=fraction, quality=80)
    queries = tmp_path / "queries"
    queries.mkdir()
    crop_copy(photos[0], queries / "q0.jpg", fraction=0.8, quality=70)
    options = {"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}
    with Index.create(tmp_path / "idx", options=options) as index:
        index.add(refs, progress=False)
    return tmp_path


def test_variants_are_the_other_versions_and_predictions_are_unchanged(indexed):
    with Index.open(indexed / "idx") as index:
        plain = match(index, indexed / "queries", MatchOptions(k=3), progress=False)
        result, variants = match_with_variants(index, indexed / "queries", MatchOptions(k=3), VariantOptions(n=3, k=3), progress=False)
    assert result.predictions == plain.predictions
    best = max(plain.predictions, key=lambda p: p.score).reference_id
    assert variants and all(v.reference_id == best and v.variant_id != best for v in variants)
    family = {"img0000", "v00", "v01"}
    assert best in family
    assert {v.variant_id for v in variants[:2]} == family - {best}
    scores = [v.score for v in variants]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_match_command_with_and_without_the_flag(indexed):
    out = indexed / "pred.csv"
    base = ["match", str(indexed / "queries"), "--index", str(indexed / "idx"), "--output", str(out), "--k", "3", "-q"]
    assert main(base) == 0
    plain = out.read_text()
    assert not (indexed / "pred.variants.csv").exists()
    assert main(base + ["--variants"]) == 0
    assert out.read_text() == plain
    with open(indexed / "pred.variants.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"query_id", "reference_id", "variant_id", "score"}


def test_the_graph_is_the_one_the_options_name(indexed):
    with Index.open(indexed / "idx") as index:
        for options in (VariantOptions(n=3, k=3), VariantOptions(n=3, k=3, symmetrize="mutual", gamma=3.0)):
            assert not graph_path(index, options.graph_params()).exists()
            match_with_variants(index, indexed / "queries", MatchOptions(k=3), options, progress=False)
            assert graph_path(index, options.graph_params()).exists()
    assert VariantOptions().graph_params().symmetrize == "union"


@pytest.mark.parametrize(
    "options", [{"n": 0}, {"min_score": 2.0}, {"alpha": 1.0}, {"seeds": 0}, {"symmetrize": "both"}, {"gamma": 0.0}]
)
def test_bad_options_are_refused(options):
    with pytest.raises(CopyseekError):
        VariantOptions(**options)
