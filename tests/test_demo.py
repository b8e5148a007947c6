import json
from dataclasses import replace

from speechdistill.config import load_config
from speechdistill.run.demo import DemoConfig, run_demo


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(replace(load_config(DemoConfig, "quick", command="demo"), out=str(out)))
    report = json.loads((out / "report.json").read_text())
    models = [r["model"] for r in report["rows"]]
    assert {"teacher", "gendistiller", "distilhubert"} <= set(models)
    for row in report["rows"]:
        for key in ("wer", "cer", "rtf", "encoder_params", "macs_per_second"):
            assert row[key] >= 0, (row["model"], key)
        assert row["num_utterances"] == 12 and row["seeds"] == 1
    md = (out / "report.md").read_text()
    assert "| gendistiller |" in md and "Quick mode" in md and "1 seed(s)" in md
    # The evaluation is `speechdistill compare`: its files, plots and the fidelity of the teacher to itself.
    doc = json.loads((out / "compare" / "compare.json").read_text())
    assert doc["smoke"] and {r["task"] for r in doc["records"]} == {"asr", "fidelity", "cost"}
    assert (out / "compare" / "score_vs_macs.png").stat().st_size > 1000
    fid = {r["model"]: r["fidelity_cos"] for r in report["rows"]}
    assert abs(fid["teacher"] - 1.0) < 1e-3 and fid["gendistiller"] < 1.0
    assert (out / "wer_vs_cost.png").stat().st_size > 1000
    # students are smaller than the teacher they came from
    params = {r["model"]: r["encoder_params"] for r in report["rows"]}
    assert params["gendistiller"] < params["teacher"] and params["distilhubert"] < params["teacher"]
    assert summary["total_seconds"] > 0


def test_plot_labels_do_not_overlap_and_quick_runs_are_marked(tmp_path):
    import itertools

    from speechdistill.report.demo_report import _spread_labels, plot_wer_vs_cost

    ys = [0.50, 0.50, 0.52, 0.95, 0.97]
    placed = _spread_labels(ys, 0.075)
    assert all(0.0 <= y <= 1.0 for y in placed)
    assert all(abs(a - b) >= 0.075 - 1e-9 for a, b in itertools.combinations(placed, 2))
    rows = [{"model": m, "encoder_params": p, "macs_per_second": p * 300, "rtf": p / 1e8, "wer": w}
            for m, p, w in [("teacher", 2e6, 0.06), ("teacher (shipped CTC)", 2e6, 0.055), ("gendistiller", 5e5, 0.15)]]
    plot_wer_vs_cost(rows, tmp_path / "a.png", "t", note="SMOKE RUN")
    assert (tmp_path / "a.png").stat().st_size > 1000
