import dataclasses

import pytest
import yaml

from speechdistill.config import (
    ConfigError,
    from_dict,
    list_recipes,
    load_config,
    load_yaml_dict,
    parse_overrides,
    recipe_text,
)
from speechdistill.run.distill import DistillConfig


def test_overrides_are_typed():
    cfg = load_config(DistillConfig, "tiny_cpu", ["optim.lr=3e-4", "distilhubert.targets=[1,3]", "train.steps=7"])
    assert cfg.optim.lr == 3e-4 and cfg.distilhubert.targets == [1, 3] and cfg.train.steps == 7


def test_unknown_key_and_wrong_type_are_errors():
    with pytest.raises(ConfigError, match="unknown config key.*optim.lrr"):
        load_config(DistillConfig, "tiny_cpu", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        load_config(DistillConfig, "tiny_cpu", ["train.steps=abc"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(DistillConfig, "tiny_cpu", ["method=magic"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="no distill recipe named"):
        load_config(DistillConfig, "no_such_recipe", command="distill")


@pytest.mark.parametrize("command,name", list_recipes())
def test_every_shipped_recipe_loads_and_says_how_to_launch(command, name):
    from speechdistill.cli.job import JOBS
    from speechdistill.cli.main import build_parser

    build_parser()
    assert command in JOBS, f"recipes/{command}/ belongs to no job command"
    text = recipe_text(name, command)[1]
    assert "Launch" in text and "speechdistill" in text, f"{command}/{name}: header must show its launch command"
    # Keys and types only: required paths (model, manifests) are the user's; test_recipes runs each one.
    cfg = from_dict(JOBS[command].config_cls, load_yaml_dict(name, command), validate=False)
    yaml.safe_dump(dataclasses.asdict(cfg))


def test_distilhubert_recipe_has_s3prl_defaults():
    cfg = load_config(DistillConfig, "distilhubert_hubert_base")
    assert cfg.method == "distilhubert"
    assert cfg.distilhubert.targets == [4, 8, 12] and cfg.distilhubert.student_layers == 2
    assert cfg.optim.lr == 2e-4 and cfg.optim.betas == [0.9, 0.98] and cfg.optim.eps == 1e-6
    assert cfg.train.steps == 200_000 and cfg.data.max_batch_size == 24
    assert cfg.data.crop_seconds == pytest.approx(250_000 / 16000)
    assert cfg.optim.grad_clip == 5.0 and cfg.optim.warmup_ratio == 0.07
