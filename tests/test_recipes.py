"""Every shipped recipe runs one step of its job on tiny data.

Each command gets the overrides that make its recipes tiny (a tiny teacher or model, the tone corpus,
one step); everything else comes from the recipe itself, so a recipe whose keys or values no longer fit
its config, or whose job breaks, fails here.
"""

import pytest
from conftest import make_compare_corpus, make_labelled_recordings

from speechdistill.asr.ctc_model import CTCHeadConfig, CTCModel
from speechdistill.asr.vocab import CharVocab
from speechdistill.cli.main import main
from speechdistill.config import list_recipes
from speechdistill.data.manifest import read_manifest
from speechdistill.models.factory import tiny_encoder


@pytest.fixture(scope="module")
def models(tmp_path_factory, tone_corpus):
    root = tmp_path_factory.mktemp("models")
    tiny_encoder("hubert", num_layers=4, seed=1).save_pretrained(root / "encoder")
    texts = [u.text for u in read_manifest(tone_corpus["train"])]
    CTCModel(tiny_encoder("hubert", num_layers=2, seed=2), CharVocab.build(texts),
             CTCHeadConfig(head="linear", layer_select="last")) \
        .save_pretrained(root / "ctc")
    corpus = make_compare_corpus(root / "corpus")
    assert main(["data", "labelled-folder", "--root", make_labelled_recordings(root / "fsdd"), "--out",
                 str(root / "labelled"), "--text-map", "digits"]) == 0
    return {"encoder": str(root / "encoder"), "ctc": str(root / "ctc"), "corpus": corpus,
            "labelled": str(root / "labelled")}


def tiny_overrides(command: str, name: str, out, corpus, models, units) -> list[str]:
    data = [f"data.train_manifest={corpus['train']}", f"data.dev_manifest={corpus['dev']}", "data.num_workers=0",
            "data.max_batch_seconds=8", "data.max_dev_batches=1"]
    train = ["train.steps=1", "train.val_every=0", "train.save_every=0", "train.progress=false"]
    if command == "distill":
        teacher = "tiny:wavlm" if "wavlm" in name else "tiny:hubert"
        # WID / unit methods: tiny widths, masks at target on step 1, the tone corpus' unit labels.
        wid = ["wid.hidden_size=16", "wid.intermediate_size=32", "wid.num_attention_heads=0", "wid.w_step=1",
               "wid.mask_updates=1", "wid.attention_updates=1", "wid.layers=[]", "wid_kd.targets=[2,4]",
               "masked_units.num_layers=2", "masked_units.hidden_size=16", "masked_units.num_attention_heads=2",
               "masked_units.intermediate_size=32", "masked_prediction.final_dim=8",
               f"masked_prediction.labels={units['train']}", f"masked_prediction.dev_labels={units['dev']}"]
        # Edge recipes thin the teacher's front end: widths that fit the tiny teacher (CNN 16, hidden 32).
        edge = ["frontend.conv_channels=8", "frontend.pos_conv_groups=32", "frontend.pos_conv_kernel=8",
                "frontend.num_calib=4"] if "edge" in name else []
        stages = (["curriculum.stages=[{student_layer: 1, teacher_layer: 1, steps: 1}]", "train.steps=2"]
                  if "curriculum" in name else [])
        return [f"teacher={teacher}", f"out_dir={out}", "distilhubert.targets=[2,4]", "gendistiller.targets=[2,4]",
                "gendistiller.decoder_heads=4", "gendistiller.decoder_ffn_dim=32", "data.crop_seconds=0.5", *wid,
                *data, *train, *stages, *edge]
    if command == "units":
        return ["teacher=tiny:hubert", "layer=2", "k=4", f"manifest={corpus['dev']}", f"out={out}", "fit_n_init=1",
                "fit_max_frames=2000", "progress=false", "device=cpu", "num_workers=0"]
    if command == "finetune-ctc":
        from speechdistill.config import load_yaml_dict

        recipe_upstream = load_yaml_dict(name, command).get("ctc", {}).get("upstream", "")
        # Recipes that train from scratch keep their random upstream (one step of it is cheap).
        upstream = [] if recipe_upstream.startswith("random:") else [f"ctc.upstream={models['encoder']}"]
        return [*upstream, f"out_dir={out}", *data, *train]
    if command == "prune":
        return [f"model={models['encoder']}", f"calib={corpus['dev']}", f"out={out}", "num_calib=4", "sketch_rows=0",
                "keep_macs=0.95"]
    if command == "export":
        model = models["ctc"] if "ctc" in name else models["encoder"]
        return [f"model={model}", f"out={out}", "parity.lengths_s=[0.7,1.3]", "parity.threads=1",
                f"parity.manifest={corpus['dev']}", "parity.max_utterances=2", "parity.wer_utterances=4"]
    if command == "evaluate":
        return [f"model={models['ctc']}", f"manifest={corpus['dev']}", f"out={out}", "threads=1"]
    if command == "demo":
        return [f"out={out}", "hours=0.02", "distill_steps=1", "ctc_steps=1"]
    if command == "compare":
        return [f"out={out}", f"models=[teacher={models['encoder']},student={models['ctc']}]",
                f"data.corpus={models['corpus']}", f"data.labelled={models['labelled']}",
                f"data.real_audio={corpus['dev']}", "seeds=1", "asr.max_steps=2", "asr.val_every=1",
                "utterance.max_steps=2", "utterance.val_every=1", "cost.seconds=1.0", "cost.repeats=1",
                "cost.isolate=false", "stats.bootstrap=100"]
    if command == "study":
        tiny = ("{preset: base, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32, "
                "conv_dim: [16, 16, 16, 16, 16, 16, 16], num_conv_pos_embeddings: 8, num_conv_pos_embedding_groups: 4}")
        return [f"out={out}", f"corpus={models['corpus']}", f"sizes=[{{name: a, config: {tiny}}}]",
                "training.shared_config={}", "budget.kind=flops", "budget.value=1e9", "training.train.progress=false",
                "training.data.max_batch_seconds=8", "training.data.num_workers=0", "distill.data.num_workers=0",
                "sweep.stat_keep_macs=[0.6]", "sweep.stat_prune_cnn=[true]",
                "sweep.magnitude_keep_macs=[]", "sweep.int8=false", "sweep.num_calib=4", f"distill.student={tiny}",
                "distill.train.steps=1", "distill.data.crop_seconds=0.5", "evaluate.seeds=1",
                "evaluate.asr.max_steps=2", "evaluate.asr.val_every=1", "evaluate.cost.seconds=1.0",
                "evaluate.cost.repeats=1", "evaluate.cost.isolate=false", "evaluate.stats.bootstrap=100"]
    raise AssertionError(f"no tiny overrides for {command} recipes: add them here so {command}/{name} is run")


@pytest.mark.parametrize("command,name", list_recipes())
def test_every_shipped_recipe_runs_one_step(command, name, tmp_path, tone_corpus, models, tone_units):
    argv = [command, name, *tiny_overrides(command, name, tmp_path / "out", tone_corpus, models, tone_units)]
    assert main(argv) == 0, f"speechdistill {' '.join(argv)}"
