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
    md = (out / "report.md").read_text()
    assert "| gendistiller |" in md and "Quick mode" in md
    assert (out / "wer_vs_params.png").stat().st_size > 1000
    # students are smaller than the teacher they came from
    params = {r["model"]: r["encoder_params"] for r in report["rows"]}
    assert params["gendistiller"] < params["teacher"] and params["distilhubert"] < params["teacher"]
    assert summary["total_seconds"] > 0
