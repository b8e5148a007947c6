"""Export a CTC model as a stock transformers ``*ForCTC`` directory that
``pipeline("automatic-speech-recognition", model=DIR)`` and ``Wav2Vec2Processor`` use as they are.

Pipeline-ready CTC models: a **linear head on the last hidden state** (no projection, no state
normalisation) over a **stock HF encoder** (HuBERT, WavLM, wav2vec 2.0, a DistilHuBERT student) —
train one with ``speechdistill finetune-ctc hf_ctc`` (``--head linear --layer-select last``).  That is
exactly ``HubertForCTC`` & co.: final hidden state -> dropout -> ``lm_head``.  The SUPERB heads
(learnable weighted sum of layers, BiLSTM) and project encoders (GenDistiller, pruned) have no stock
transformers class; they stay ``CTCModel`` directories (``evaluate``, ONNX export) and this export
refuses them with that reason.

Written files: ``config.json`` + ``model.safetensors`` (the ``*ForCTC`` model, ``pad_token_id`` = the
CTC blank), ``preprocessor_config.json`` (16 kHz, the encoder's normalisation), ``vocab.json`` +
``tokenizer_config.json`` + ``special_tokens_map.json`` (``Wav2Vec2CTCTokenizer`` with ``|`` as word
delimiter and no ``<s>``/``</s>``, which HF would otherwise add), ``export_info.json`` and
``parity.json``.  The directory is re-loaded with ``AutoModelForCTC`` and its log-probabilities are
compared with the ``CTCModel``'s on the parity inputs, one utterance at a time as the pipeline runs
them; a failing export is not kept.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from speechdistill import SAMPLE_RATE
from speechdistill.export.onnx_graph import reference_runner
from speechdistill.export.parity import (
    ParityError,
    ParityOptions,
    build_inputs,
    fp32_report,
    parity_options_dict,
    reference_outputs,
    write_parity_json,
)
from speechdistill.export.source import (
    ExportResult,
    export_metadata,
    load_export_source,
    remove_stale_exports,
)
from speechdistill.models.encoder import HFEncoder, hf_model_of
from speechdistill.models.errors import ModelLoadError
from speechdistill.models.frames import config_output_lengths
from speechdistill.models.hf import family_of
from speechdistill.utils.io import atomic_write_json

log = logging.getLogger(__name__)

INFO_FILE = "export_info.json"
FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "tokenizer_config.json",
         "special_tokens_map.json", "added_tokens.json", "processor_config.json", "tokenizer.json", INFO_FILE)
PIPELINE_READY = ("a linear head on the last hidden state of a stock HF encoder (train it with "
                  "`speechdistill finetune-ctc hf_ctc`, i.e. --head linear --layer-select last)")


def _for_ctc_class(family: str):
    from transformers import HubertForCTC, Wav2Vec2ForCTC, WavLMForCTC

    return {"hubert": HubertForCTC, "wavlm": WavLMForCTC, "wav2vec2": Wav2Vec2ForCTC}[family]


def check_pipeline_ready(ctc: nn.Module) -> None:
    """Raise ModelLoadError naming what keeps ``ctc`` from being a stock ``*ForCTC`` model."""
    cfg = ctc.head_config
    problems = []
    if not isinstance(ctc.encoder, HFEncoder):
        problems.append(f"its encoder is a {type(ctc.encoder).__name__}, which has no stock transformers class")
    if cfg.head != "linear":
        problems.append(f"its head is {cfg.head!r} (transformers' *ForCTC has a linear head only)")
    if cfg.layer_select != "last":
        problems.append(f"it reads layer_select={cfg.layer_select!r} (*ForCTC reads the last hidden state)")
    if cfg.proj_dim:
        problems.append(f"it has a projection (proj_dim={cfg.proj_dim})")
    if cfg.normalize_states:
        problems.append("it layer-normalises the hidden states (normalize_states=true)")
    if problems:
        raise ModelLoadError(
            "--format hf-ctc needs " + PIPELINE_READY + "; this CTC model does not fit: " + "; ".join(problems)
            + ". Other CTC models export with --format onnx --with-ctc-head or stay CTCModel directories."
        )


def to_for_ctc(ctc: nn.Module) -> nn.Module:
    """The stock ``*ForCTC`` model with the CTC model's encoder and head weights."""
    check_pipeline_ready(ctc)
    base = hf_model_of(ctc.encoder)
    family = family_of(base.config)
    config = base.config.__class__.from_dict({
        **base.config.to_dict(),
        "vocab_size": len(ctc.vocab), "pad_token_id": ctc.vocab.blank_id, "bos_token_id": None,
        "eos_token_id": None, "layerdrop": 0.0, "ctc_zero_infinity": True, "final_dropout": ctc.head_config.dropout,
        "architectures": [_for_ctc_class(family).__name__],
    })
    model = _for_ctc_class(family)(config)
    getattr(model, model.base_model_prefix).load_state_dict(base.state_dict())
    model.lm_head.load_state_dict(ctc.output.state_dict())
    return model.eval()


def save_processor(out_dir: Path, vocab_dir: Path, normalize: bool, layer_norm_cnn: bool) -> None:
    """Tokenizer + feature extractor files (``Wav2Vec2Processor``)."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    from speechdistill.asr.vocab import BLANK, UNK, VOCAB_FILE, WORD_DELIMITER

    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_dir / VOCAB_FILE), unk_token=UNK, pad_token=BLANK, word_delimiter_token=WORD_DELIMITER,
        bos_token=None, eos_token=None, do_lower_case=False,
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=normalize,
        # Group-norm CNNs must not get an attention mask on padded input (HF's own advice).
        return_attention_mask=layer_norm_cnn,
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(str(out_dir))


def _for_ctc_runner(model: nn.Module, extractor):
    """Log-probs of the stock model after the saved feature extractor (which normalises the waveform
    if the encoder wants that), one utterance at a time as the pipeline runs them, padded back."""

    def features(w: torch.Tensor) -> torch.Tensor:
        return extractor(w.numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values

    @torch.no_grad()
    def run(wav: torch.Tensor, lengths: torch.Tensor):
        outs = [model(features(wav[b, : int(n)])).logits[0].float().log_softmax(-1) for b, n in enumerate(lengths)]
        frame_lengths = config_output_lengths(model.config, lengths).long()
        padded = torch.zeros(len(outs), max(o.shape[0] for o in outs), outs[0].shape[-1])
        for b, o in enumerate(outs):
            padded[b, : o.shape[0]] = o
        return padded, frame_lengths

    return run


def export_hf_ctc(model: str | Path, out_dir: str | Path, parity: ParityOptions | None = None) -> ExportResult:
    """Write the ``*ForCTC`` directory, re-load it with ``AutoModelForCTC``, compare; raises ParityError
    (after writing ``parity.json``) and keeps nothing when they disagree."""
    from transformers import AutoFeatureExtractor, AutoModelForCTC

    parity = parity or ParityOptions()
    source = load_export_source(model, with_ctc_head=True)
    for_ctc = to_for_ctc(source.ctc)
    out_dir = Path(out_dir)
    meta = export_metadata(source, None, 0, "fp32")
    meta.pop("opset")
    meta.update({"format": "hf-ctc", "outputs": "logits (CTC, blank = pad_token_id)",
                 "loads_with": f"transformers.AutoModelForCTC / pipeline('automatic-speech-recognition') "
                               f"({type(for_ctc).__name__})"})
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        staged = tmp / "model"
        for_ctc.save_pretrained(str(staged))
        save_processor(staged, source.path, source.encoder.normalize,
                       for_ctc.config.feat_extract_norm == "layer")
        reloaded = AutoModelForCTC.from_pretrained(str(staged)).eval()
        inputs = build_inputs(parity)
        refs = reference_outputs(reference_runner(source, None), inputs)
        extractor = AutoFeatureExtractor.from_pretrained(str(staged))
        report = fp32_report("hf-ctc", refs, _for_ctc_runner(reloaded, extractor), inputs, 1, parity)
        if not report.passed:
            write_parity_json(out_dir, meta, {"hf-ctc": report}, parity_options_dict(parity))
            remove_stale_exports(out_dir, FILES)
            raise ParityError(f"refusing to write {out_dir}: the stock *ForCTC model differs: {report.message}")
        atomic_write_json(staged / INFO_FILE, meta)
        files = []
        for child in sorted(staged.iterdir()):
            target = out_dir / child.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(child), target)
            files.append(target)
        files.append(write_parity_json(out_dir, meta, {"hf-ctc": report}, parity_options_dict(parity)))
        return ExportResult(out_dir, files, meta, {"hf-ctc": report})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
