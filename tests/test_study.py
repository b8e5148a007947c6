"""``speechdistill study``: resume recomputes nothing finished, the Pareto front, clear errors."""

import math

import pytest
from conftest import make_compare_corpus

from speechdistill.cli.main import main
from speechdistill.config import ConfigError, load_config
from speechdistill.errors import BadInputError
from speechdistill.evaluation.tasks import SuiteInterrupted
from speechdistill.run.study import StudyConfig, StudyInterrupted, _Maker, plan_steps, run_study
from speechdistill.study.frontier import Point, equal_cost_answers, front_owners, pareto_front

TINY = [
    ("sizes=[{name: s, config: {hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}},"
    " {name: l, config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}}]"),
    ("training.shared_config={preset: base, conv_dim: [16, 16, 16, 16, 16, 16, 16], num_conv_pos_embeddings: 8,"
    " num_conv_pos_embedding_groups: 4}"),
    "budget.value=3e9", "training.train.progress=false", "training.data.max_batch_seconds=8",
    "sweep.stat_keep_macs=[0.6]", "sweep.stat_prune_cnn=[true]", "sweep.magnitude_keep_macs=[]",
    "sweep.int8_after=[]", "sweep.num_calib=4",
    ("distill.student={preset: base, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,"
    " intermediate_size: 32, conv_dim: [16, 16, 16, 16, 16, 16, 16], num_conv_pos_embeddings: 8,"
    " num_conv_pos_embedding_groups: 4}"),
    "distill.train.steps=1", "distill.train.progress=false", "distill.data.crop_seconds=0.5",
    "evaluate.seeds=1", "evaluate.asr.max_steps=2", "evaluate.asr.val_every=1", "evaluate.cost.seconds=1.0",
    "evaluate.cost.repeats=1", "evaluate.stats.bootstrap=100",
]


def tiny_config(corpus, out, *more) -> StudyConfig:
    return load_config(StudyConfig, "smoke", [f"corpus={corpus}", f"out={out}", *TINY, *more], command="study")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_compare_corpus(tmp_path_factory.mktemp("study_corpus"))


class Counting:
    """The real model makers, counting calls per step; optionally stops the study at call N."""

    def __init__(self, cfg, stop_at: int = 0):
        from speechdistill.run.study import _manifests

        self.real = _Maker(cfg, _manifests(cfg))
        self.calls: list[str] = []
        self.stop_at = stop_at

    def __call__(self, step, parent_spec, resume):
        if self.stop_at and len(self.calls) + 1 == self.stop_at:
            raise StudyInterrupted(f"test stop before {step.name}")
        self.calls.append(step.name)
        return self.real(step, parent_spec, resume)


def test_interrupted_study_recomputes_no_finished_model_or_cell(corpus, tmp_path):
    cfg = tiny_config(corpus, tmp_path / "study")
    names = [s.name for s in plan_steps(cfg)]
    assert names == ["s", "s_statcnn60", "s_int8", "s_distill", "l", "l_statcnn60", "l_int8", "l_distill"]

    # 1. Stopped before the 4th model: three models are finished.
    first = Counting(cfg, stop_at=4)
    with pytest.raises(StudyInterrupted):
        run_study(cfg, make=first)
    assert first.calls == names[:3]

    # 2. The rest of the models; the comparison is stopped after its 3rd new cell.
    second, cells = Counting(cfg), []

    def stop_third(cell):
        cells.append(cell.key)
        if len(cells) == 3:
            raise SuiteInterrupted(cell.key)

    with pytest.raises(StudyInterrupted):
        run_study(cfg, make=second, on_cell=stop_third)
    assert second.calls == names[3:]

    # 3. Only the missing cells.
    third, more = Counting(cfg), []
    doc = run_study(cfg, make=third, on_cell=lambda c: more.append(c.key))
    assert third.calls == []
    assert more and not set(more) & set(cells)
    assert doc["models_made"] == 0 and doc["models_reused"] == len(names)
    assert {p.name for p in doc["points"]} == set(names)
    # The same FLOP budget for both sizes: each stops within one batch past it (the engine's audio budget).
    for size in ("s", "l"):
        info = doc["steps"][size]["info"]
        assert 3e9 <= info["train_flops"] <= 3e9 + 6 * info["macs_per_second"] * 8, info
    assert doc["steps"]["s"]["info"]["steps"] > doc["steps"]["l"]["info"]["steps"]
    for f in ("study.json", "study.md", "study_vs_macs.png", "study_vs_rtf.png", "study_state.json"):
        assert (tmp_path / "study" / f).is_file(), f

    # 4. Everything finished: nothing at all is recomputed.
    fourth, again = Counting(cfg), []
    run_study(cfg, make=fourth, on_cell=lambda c: again.append(c.key))
    assert fourth.calls == [] and again == []

    # A changed sweep setting remakes only the steps it touches (and their children).
    fifth = Counting(cfg)
    run_study(tiny_config(corpus, tmp_path / "study", "sweep.stat_keep_macs=[0.7]"), make=fifth, on_cell=lambda c: None)
    assert fifth.calls == ["s_statcnn70", "l_statcnn70"]


def _p(name, macs, wer, rtf=None, size="s", compression="stat"):
    return Point(name, size, compression, 1.0, macs, rtf, None, wer, wer, wer)


def test_pareto_front_on_a_hand_example():
    pts = [_p("a", 1, 0.5, rtf=0.3), _p("b", 2, 0.4, rtf=0.1), _p("c", 3, 0.45), _p("d", 2, 0.6, rtf=0.05),
           _p("e", 4, 0.1), _p("f", 4, 0.1), _p("g", 5, 0.1)]
    # c is beaten by b (cheaper and better), d by b (same cost, better), g by e (same score, cheaper);
    # the tied e and f both stay.
    assert [p.name for p in pareto_front(pts, "macs")] == ["a", "b", "e", "f"]
    # Points without a measured RTF are left out of the RTF front; higher-is-better flips the score.
    assert [p.name for p in pareto_front(pts, "rtf")] == ["d", "b"]
    assert [p.name for p in pareto_front(pts, "macs", higher_is_better=True)] == ["a", "d"]
    # Where the front changes trained size: a and b from s, e and f from l.
    mixed = [_p("a", 1, 0.5), _p("b", 2, 0.4), _p("e", 4, 0.1, size="l"), _p("f", 5, 0.05, size="l")]
    assert front_owners(pareto_front(mixed, "macs"), "macs") == [("s", 1, 2), ("l", 4, 5)]
    with pytest.raises(BadInputError, match="x: non-finite"):
        pareto_front([*pts, _p("x", 1, math.nan)], "macs")
    with pytest.raises(BadInputError, match="unknown cost"):
        pareto_front(pts, "bytes")


def test_equal_cost_answer_picks_the_best_larger_row_within_the_smaller_size_macs():
    pts = [_p("s", 10, 0.30, size="s", compression="none"), _p("l", 40, 0.10, size="l", compression="none"),
           _p("l_stat25", 10.4, 0.20, size="l"), _p("l_stat50", 20, 0.15, size="l"), _p("s_stat50", 5, 0.5)]
    diffs = {("l_stat25", "s"): {"mean": -0.1, "ci_low": -0.15, "ci_high": -0.05, "verdict": "better",
                                 "claim_rule": "holds"}}
    small, large = equal_cost_answers(pts, ["s", "l"], diffs, tolerance=0.05)
    assert small["rival"] == "l_stat25" and small["verdict"] == "better" and small["diff_low"] == -0.15
    assert "rival" not in large  # nothing larger than the largest size


@pytest.mark.parametrize("override,message", [
    ("sizes=[{name: a, config: {}}, {name: a, config: {}}]", "appear twice"),
    ("sizes=[{name: 'a b', config: {}}]", "use letters"),
    ("sizes=[]", "at least one size"),
    ("sweep.stat_keep_macs=[1.5]", r"sweep.stat_keep_macs=\[1.5\]"),
    ("sweep.int8_after=[int4]", "unknown famil"),
    ("budget.value=0", "budget.value=0"),
    ("evaluate.score_task=cost", "must name an asr task"),
])
def test_bad_config_is_refused_with_the_key(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_config(StudyConfig, "smoke", [f"corpus={tmp_path}", f"out={tmp_path / 'o'}", override], command="study")


def test_cli_refuses_a_corpus_without_manifests(tmp_path, caplog):
    assert main(["study", "smoke", "--corpus", str(tmp_path), "--out", str(tmp_path / "o")]) != 0
    assert f"{tmp_path / 'train.jsonl'}" in caplog.text
    assert not (tmp_path / "o").exists()


def test_wall_time_budget_ends_training_as_finished(corpus, tmp_path):
    """train.max_train_seconds (the study's seconds budget): training stops early but finishes normally
    (final validation, model, summary), long before train.steps."""
    import json

    from speechdistill.data.dataset import DataConfig
    from speechdistill.methods.ctc import CTCConfig
    from speechdistill.run.finetune import FinetuneConfig, run_finetune
    from speechdistill.train.engine import TrainConfig

    cfg = FinetuneConfig(
        out_dir=str(tmp_path / "run"), ctc=CTCConfig(upstream="random:hubert", upstream_config={"preset": "tiny"}),
        data=DataConfig(train_manifest=f"{corpus}/train.jsonl", dev_manifest=f"{corpus}/dev.jsonl",
                        max_batch_seconds=4),
        train=TrainConfig(steps=100_000, max_train_seconds=1.0, progress=False, log_with="none"),
    )
    res = run_finetune(cfg)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert not res.interrupted and (tmp_path / "run" / "model").is_dir()
    assert summary["budget_spent"] and 1.0 <= summary["loop_seconds"] < 30 and 0 < res.step < 100_000
