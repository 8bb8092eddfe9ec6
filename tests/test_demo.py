from copyseek.demo import run_demo


def test_demo_runs_end_to_end_and_finds_copies(tmp_path, capsys):
    metrics = run_demo(str(tmp_path / "demo"), progress=False)
    out = capsys.readouterr().out
    assert "muAP" in out and "best-scored matches" in out
    assert metrics["micro_ap"] > 0.6
    assert (tmp_path / "demo" / "predictions.csv").exists()
