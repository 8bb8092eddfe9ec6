import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from copyseek.attack.mismatch import AttackParams
from copyseek.attack.report import (
    AttackRun, PipelineVerdicts, ReportParams, attack_table, draw_pairs, fit_side, jpeg, make_adversarials, margin_table, robustness_table, shrink,
)
from copyseek.errors import CopyseekError


@pytest.fixture
def bench(tmp_path, pictures):
    """A benchmark-shaped folder: 4 references, 4 queries of which 3 copies, 5 hold-out photos."""
    target, carrier = pictures
    for folder in ("references", "queries", "photos"):
        (tmp_path / folder).mkdir()
    for i in range(4):
        Image.fromarray(np.roll(target, 7 * i, axis=1)).save(tmp_path / "references" / f"R{i}.png")
        Image.fromarray(np.roll(target, 7 * i + 2, axis=1)).save(tmp_path / "queries" / f"Q{i}.png")
    for i in range(5):
        Image.fromarray(np.roll(carrier, 5 * i, axis=0)).save(tmp_path / "photos" / f"p{i}.png")
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nQ0,R0\nQ1,R1\nQ2,R2\nQ3,\n")
    (tmp_path / "holdout.txt").write_text("".join(f"{tmp_path / 'photos' / f'p{i}.png'}\n" for i in range(5)))
    return tmp_path


def test_pairs_are_copies_and_holdout_photos_drawn_by_the_seed(bench):
    pairs = draw_pairs(bench, 3, seed=0)
    assert sorted(p.target.stem for p in pairs) == ["Q0", "Q1", "Q2"]  # never the distractor Q3
    assert all(p.reference == "R" + p.target.stem[1:] for p in pairs)
    assert len({p.carrier for p in pairs}) == 3 and all(p.carrier.parent.name == "photos" for p in pairs)
    assert draw_pairs(bench, 3, seed=0) == pairs and draw_pairs(bench, 3, seed=1) != pairs
    with pytest.raises(CopyseekError, match="cannot draw 4 pairs"):
        draw_pairs(bench, 4, seed=0)


def test_adversarial_images_and_variants_are_written_once(bench, tiny_model):
    pairs = draw_pairs(bench, 2, seed=0)
    params = ReportParams(pairs=2, max_side=40, pipelines=())
    attack = AttackParams(loss="global", sizes=(32,), steps=2, budget=0.0)
    run = make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False)
    assert set(run.sets) == {"carrier", "target", "adversarial", "adversarial+jpeg75", "adversarial+x0.5"}
    adversarial = np.asarray(Image.open(run.sets["adversarial"][pairs[0].pid]))
    assert max(adversarial.shape[:2]) == 40
    assert np.asarray(Image.open(run.sets["adversarial+x0.5"][pairs[0].pid])).shape[:2] == tuple(round(n / 2) for n in adversarial.shape[:2])
    assert len(run.ssim_carrier) == 2 and all(0 < s <= 1 for s in run.ssim_carrier)
    assert 0 < run.cpu_seconds_per_pair < 60 and run.seconds_per_pair > 0  # CPU time is kept beside wall time
    stamp = run.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns
    again = make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False)
    assert again.cpu_seconds_per_pair == run.cpu_seconds_per_pair
    assert again.ssim_carrier == run.ssim_carrier and run.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns == stamp
    # a record written before a parameter existed still matches while that parameter has its default
    record_path = bench / "run" / "pairs" / f"{pairs[0].pid}.json"
    record = json.loads(record_path.read_text())
    del record["settings"]["attack"]["budget"]
    record_path.write_text(json.dumps(record))
    make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False)
    assert run.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns == stamp
    budgeted = AttackParams(loss="global", sizes=(32,), steps=2, budget=0.1)
    make_adversarials(tiny_model, pairs, budgeted, params, bench / "run", progress=False)
    assert run.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns != stamp  # not its default: attacked anew
    stamp = run.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns
    changed = make_adversarials(tiny_model, pairs, AttackParams(loss="global", sizes=(32,), steps=3), params, bench / "run", progress=False)
    assert changed.sets["adversarial"][pairs[0].pid].stat().st_mtime_ns != stamp  # other settings: attacked anew


def test_variants(pictures):
    _, carrier = pictures
    assert max(fit_side(carrier, 20).shape[:2]) == 20 and fit_side(carrier, 100).shape == carrier.shape
    assert jpeg(carrier, 30).shape == carrier.shape and not np.array_equal(jpeg(carrier, 30), carrier)
    assert shrink(carrier, 0.5).shape == (24, 28, 3)


def test_attack_table_cells():
    views = {"m square:160 (attacked)": ("m", "square:160")}
    row = {"rank1": 0.8, "top10": 0.9, "cosine": 0.95, "decided": 0.6, "rank1 decided": 1.0, "rank1 tied": 0.5,
           "rank1 adversarial+jpeg75": 0.6, "rank1 adversarial+x0.5": 0.4}
    run = AttackRun(Path("."), {}, ssim_carrier=[0.9, 0.92], ssim_target=[0.1, 0.2], seconds_per_pair=2.0)
    table = attack_table({"budget": {"m square:160 (attacked)": row}}, {"budget": run}, views).splitlines()
    assert table[2] == "| budget | 2.0 | 0.910 (min 0.90) | 0.150 | 0.80 / 0.90 / 0.95 / 0.60, 0.40 |"


def test_margin_table():
    views = {"m square:160 (attacked)": ("m", "square:160")}
    rows = {"budget": {"m square:160 (attacked)": {"decided": 0.6, "rank1 decided": 1.0, "rank1 tied": 0.25}}}
    table = margin_table(rows, views).splitlines()
    assert table[0] == "| attack | m square:160 (attacked): decided targets / rank-1 on them / rank-1 on near ties |"
    assert table[2] == "| budget | 0.60 / 1.00 / 0.25 |"


def test_robustness_table():
    verdicts = [PipelineVerdicts("sscd", 0.5, 0.33, {"carrier": 0.0, "adversarial": 0.4}, {"carrier": 0.1, "adversarial": 0.5}),
                PipelineVerdicts("local", None, 0.0, {"carrier": 0.0, "adversarial": 0.0}, {"carrier": 0.0, "adversarial": 0.0})]
    table = robustness_table(verdicts).splitlines()
    assert table[0] == "| pipeline | threshold (P90) | recall@P90 | carrier | adversarial |"
    assert table[2] == "| sscd | 0.500 | 0.330 | 0.00 (0.10) | 0.40 (0.50) |"
    assert table[3].startswith("| local | none |")


@pytest.mark.parametrize("values, message", [({"pairs": 0}, "pairs"), ({"jpeg": 100}, "JPEG"), ({"shrink": 1.5}, "shrink")])
def test_report_params_are_checked(values, message):
    with pytest.raises(CopyseekError, match=message):
        ReportParams(**values)



def test_shards_share_the_work_and_a_full_run_finds_it_done(bench, tiny_model):
    pairs = draw_pairs(bench, 3, seed=0)
    params = ReportParams(pairs=3, max_side=40, pipelines=())
    attack = AttackParams(loss="global", sizes=(32,), steps=2)
    make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False, shard=(1, 2))
    assert [p.pid for p in pairs if (bench / "run" / "pairs" / f"{p.pid}.json").exists()] == [pairs[1].pid]
    so_far = make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False, shard=(-1, 1))
    assert so_far.finished == [pairs[1].pid] and len(so_far.ssim_carrier) == 1  # what a cut-short report tabulates
    make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False, shard=(0, 2))
    stamps = [path.stat().st_mtime_ns for path in (bench / "run" / "adversarial").iterdir()]
    run = make_adversarials(tiny_model, pairs, attack, params, bench / "run", progress=False)
    assert len(run.ssim_carrier) == 3
    assert [path.stat().st_mtime_ns for path in (bench / "run" / "adversarial").iterdir()] == stamps
