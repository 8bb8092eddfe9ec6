from __future__ import annotations

import csv

import numpy as np

import pytest

pytest.importorskip("torch")

from copyseek.cli import main  # noqa: E402
from copyseek.errors import CopyseekError  # noqa: E402
from copyseek.store.index import Index  # noqa: E402
from tests.making import crop_copy, write_photos  # noqa: E402


@pytest.fixture
def case(tmp_path, tiny_onnx):
    """References 0..5; for reference 0: 3 verified copies, 3 right reports (copies), 3 wrong reports
    (copies of other photos)."""
    photos = write_photos(tmp_path / "refs", 6)
    queries = tmp_path / "queries"
    queries.mkdir()
    verified, reports = [], []
    for n, fraction in enumerate((0.9, 0.8, 0.75, 0.85, 0.7, 0.95)):
        crop_copy(photos[0], queries / f"c{n}.jpg", fraction=fraction, quality=70)
        (verified if n < 3 else reports).append((f"c{n}", "img0000"))
    for n in range(3):
        crop_copy(photos[3 + n], queries / f"w{n}.jpg", fraction=0.8, quality=70)
        reports.append((f"w{n}", "img0000"))
    for name, pairs in (("verified.csv", verified), ("reports.csv", reports)):
        (tmp_path / name).write_text("query_id,reference_id\n" + "".join(f"{q},{r}\n" for q, r in pairs))
    with Index.create(tmp_path / "idx", options={"global": {"model": f"onnx:{tiny_onnx}", "resize": "square:64"}}) as index:
        index.add(tmp_path / "refs", progress=False)
    return tmp_path


def test_triage_puts_wrong_reports_first(case):
    out = case / "queue.csv"
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "reports.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(out),
                 "--epochs", "60", "-q"])
    assert code == 0
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    relevance = [float(r["relevance"]) for r in rows]
    assert relevance == sorted(relevance)
    wrong_first = [r["query_id"].startswith("w") for r in rows[:3]]
    assert sum(wrong_first) >= 2


def test_triage_refuses_unknown_references(case, capsys):
    (case / "bad.csv").write_text("query_id,reference_id\nc0,NOPE\n")
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "bad.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(case / "q.csv"), "-q"])
    assert code == 2 and "not in the index" in capsys.readouterr().err


def queue(case, *options):
    out = case / "queue.csv"
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "reports.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(out),
                 "--epochs", "60", "-q", *options])
    assert code == 0
    with open(out) as handle:
        return {r["query_id"]: float(r["relevance"]) for r in csv.DictReader(handle)}


def test_context_references_push_reports_of_other_references_down(case):
    """The wrong reports are copies of references 3-5; with every other reference's clean image in the
    graph as a negative, each of them ranks below every right report."""
    plain, context = queue(case, "--context-references", "0"), queue(case, "--context-references", "5")
    assert set(context) == set(plain) == {"c3", "c4", "c5", "w0", "w1", "w2"}
    wrong, right = [context[q] for q in ("w0", "w1", "w2")], [context[q] for q in ("c3", "c4", "c5")]
    assert max(wrong) < min(right)
    drop = lambda scores: np.mean([scores[q] for q in ("c3", "c4", "c5")]) - np.mean([scores[q] for q in ("w0", "w1", "w2")])  # noqa: E731
    assert drop(context) > drop(plain) + 0.2  # measured: 0.74 against 0.04


def test_negative_context_references_are_refused(case, capsys):
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "reports.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(case / "q.csv"),
                 "--context-references", "-1", "-q"])
    assert code == 2 and "context_references" in capsys.readouterr().err


def test_cli_help_states_the_defaults():
    import inspect

    import copyseek.learn.cli
    from copyseek.graph.gcn import CONTEXT_REFERENCES, NEIGHBOURS, GCNParams

    source = inspect.getsource(copyseek.learn.cli.add_triage_parser)
    assert f'"default {CONTEXT_REFERENCES})"' in source
    assert f'(default {NEIGHBOURS})"' in source
    assert GCNParams().k == NEIGHBOURS and GCNParams().context_references == CONTEXT_REFERENCES


def test_k_reaches_the_gcn(case, monkeypatch):
    """--k and --context-references are passed to the GCN; left out, GCNParams' defaults hold."""
    import copyseek.learn.triage
    from copyseek.graph.gcn import GCNParams

    seen = []
    real = copyseek.learn.triage.gcn_relevance
    monkeypatch.setattr(copyseek.learn.triage, "gcn_relevance", lambda *a, **kw: seen.append(a[3]) or real(*a, **kw))
    queue(case, "--k", "3", "--context-references", "2")
    queue(case)
    assert (seen[0].k, seen[0].context_references) == (3, 2)
    assert (seen[-1].k, seen[-1].context_references) == (GCNParams().k, GCNParams().context_references)


def test_bad_k_is_refused(case, capsys):
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "reports.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(case / "q.csv"),
                 "--k", "0", "-q"])
    assert code == 2 and "k, hidden and epochs" in capsys.readouterr().err


def test_collection_relevance_puts_reports_of_other_references_last(case):
    """One multi-class GCN over reference 0 and its 5 context references (all of the index): the
    wrong reports are copies of references 3-5, so each scores below every right report."""
    scores = queue(case, "--relevance", "collection")
    assert set(scores) == {"c3", "c4", "c5", "w0", "w1", "w2"}
    assert max(scores[q] for q in ("w0", "w1", "w2")) < min(scores[q] for q in ("c3", "c4", "c5"))
    assert all(0 <= s <= 1 for s in scores.values())


def test_collection_relevance_calls_one_gcn_over_every_class(case, monkeypatch):
    """--relevance collection trains one network, over the reported reference and its context
    references, and no per-reference GCN."""
    import copyseek.learn.triage

    calls = []
    real = copyseek.learn.triage.collection_relevance
    monkeypatch.setattr(copyseek.learn.triage, "collection_relevance", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    monkeypatch.setattr(copyseek.learn.triage, "gcn_relevance", lambda *a, **kw: pytest.fail("per-reference GCN called"))
    queue(case, "--relevance", "collection", "--context-references", "2")
    (x, clean_nodes, clean_classes, noisy_nodes, noisy_classes, _), = calls
    assert len(set(clean_classes)) == 3 and set(noisy_classes) == {"img0000"}
    assert len(x) == 3 + 3 + 6 and len(clean_nodes) == 3 + 3 and len(noisy_nodes) == 6  # refs, verified, reports


def test_collection_relevance_needs_two_references(case, capsys):
    code = main(["triage", "--verified", str(case / "verified.csv"), "--reports", str(case / "reports.csv"),
                 "--index", str(case / "idx"), "--queries", str(case / "queries"), "--output", str(case / "q.csv"),
                 "--relevance", "collection", "--context-references", "0", "-q"])
    assert code == 2 and "at least two references" in capsys.readouterr().err


def test_triage_refuses_an_unknown_relevance(case):
    import argparse

    from copyseek.learn.cli import add_triage_parser
    from copyseek.learn.triage import RELEVANCES, triage

    parser = argparse.ArgumentParser()
    add_triage_parser(parser.add_subparsers())
    triage_parser = parser._subparsers._group_actions[0].choices["triage"]
    offered = next(a.choices for a in triage_parser._actions if a.dest == "relevance")
    assert tuple(offered) == RELEVANCES  # the CLI offers every library choice
    with Index.open(case / "idx") as index, pytest.raises(CopyseekError, match="unknown relevance"):
        triage(index, set(), {("c3", "img0000")}, case / "queries", relevance="lp", progress=False)
