"""Cheaper student front ends (issue 19): thin CNN, cheaper positional conv, lower frame rate.

Shapes stay stock HF where HubertConfig can express them, the data-driven initialisation reproduces the
teacher where the shape allows, the frame-rate-reduced encoder never reads padding, and every new front
end exports to ONNX with parity on unseen lengths and padded batches.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechdistill.config import ConfigError
from speechdistill.export.onnx_export import FP32_NAME, OnnxExportOptions, export_onnx
from speechdistill.export.onnx_io import load_onnx_session
from speechdistill.export.onnx_speed import SpeedOptions
from speechdistill.export.parity import ParityOptions
from speechdistill.methods.distilhubert import DistilHuBERTConfig, build_student
from speechdistill.methods.frontend import FrontEnd
from speechdistill.models.edge_frontend import FrontEndConfig, ReducedRateEncoder, upsample_frames
from speechdistill.models.encoder import hf_encode
from speechdistill.models.factory import tiny_teacher
from speechdistill.models.load import load_encoder

FAST = ParityOptions(lengths_s=(0.7, 1.3), threads=1)
NO_SPEED = SpeedOptions(enabled=False)


@pytest.fixture(scope="module")
def teacher():
    # conv_dim 16, hidden 32, positional conv 16 taps x 4 groups, 4 layers.
    return tiny_teacher("hubert", num_layers=4, seed=5)


def _student(teacher, manifest, feat_proj_layer_norm=True, **fe):
    # The edge recipes keep the feature LayerNorm (see recipes/distill/edge_*.yaml).
    cfg = FrontEndConfig(calib_manifest=manifest, num_calib=8, **fe)
    front = FrontEnd(cfg, teacher)
    dh = DistilHuBERTConfig(student_layers=2, targets=[2, 4], feat_proj_layer_norm=feat_proj_layer_norm)
    student, _ = build_student(teacher, dh, front)
    return student.encoder.eval(), front


def _padded(lengths, seed=7):
    g = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        wav[i, :n] = 0.1 * torch.randn(n, generator=g)
    return wav, torch.tensor(lengths)


def _x0_cosine(student, teacher, manifest) -> float:
    from speechdistill.prune.calib import load_calibration_audio

    num = den = 0.0
    with torch.no_grad():
        for w in load_calibration_audio(manifest, 6, None, seed=3):
            x = torch.from_numpy(w)[None]
            s = student.encode(x).hidden_states[0][0]
            t = teacher(x).hidden_states[0][0]
            num += float(torch.nn.functional.cosine_similarity(s, t, dim=-1).sum())
            den += s.shape[0]
    return num / den


def test_full_width_id_and_same_shape_fit_reproduce_the_teacher(teacher, tone_corpus):
    # Keeping every channel and refitting the projection, and fitting a positional conv of the teacher's own
    # shape by least squares, must give back the teacher's front end: the machinery is exact where it can be.
    student, front = _student(teacher, tone_corpus["train"], conv_channels=16, pos_conv_kernel=16, pos_conv_groups=4)
    rep = front.report
    assert rep.conv_channels == [16] * 7 and max(rep.conv_rel_errors) == 0.0
    assert rep.projection_rel_residual < 1e-3 and rep.pos_conv_rel_residual < 5e-3  # ridge-regularised
    assert rep.x0_cosine > 0.9999
    assert _x0_cosine(student, teacher, tone_corpus["dev"]) > 0.9999


def test_thin_cnn_by_interpolative_decomposition_beats_random_init(teacher, tone_corpus):
    id_student, front = _student(teacher, tone_corpus["train"], conv_channels=6)
    rnd_student, _ = _student(teacher, tone_corpus["train"], conv_channels=6, conv_init="random")
    assert front.report.conv_channels == [6] * 7
    assert all(0 < e < 1 for e in front.report.conv_rel_errors)
    cos_id = _x0_cosine(id_student, teacher, tone_corpus["dev"])
    cos_rnd = _x0_cosine(rnd_student, teacher, tone_corpus["dev"])
    assert cos_id > 0.4 and cos_id > cos_rnd + 0.3, (cos_id, cos_rnd)  # random tiny teacher: little redundancy
    # The edge shape is stock HuBERT: conv_dim per layer and positional-conv groups are config keys.
    cfg = id_student.model.config
    assert list(cfg.conv_dim) == [6] * 7


def test_depthwise_fit_beats_restricting_the_teacher_weights(teacher, tone_corpus):
    fit, f1 = _student(teacher, tone_corpus["train"], pos_conv_groups=32, pos_conv_kernel=8)
    res, f2 = _student(teacher, tone_corpus["train"], pos_conv_groups=32, pos_conv_kernel=8, pos_conv_init="restrict")
    assert f1.report.pos_conv_init == "fit" and f2.report.pos_conv_init == "restrict"
    conv = fit.model.encoder.pos_conv_embed.conv
    assert conv.groups == 32 and conv.kernel_size == (8,)
    assert _x0_cosine(fit, teacher, tone_corpus["dev"]) > _x0_cosine(res, teacher, tone_corpus["dev"])


def test_edge_student_saves_as_stock_hubert(teacher, tone_corpus, tmp_path):
    from transformers import HubertModel

    student, _ = _student(teacher, tone_corpus["train"], conv_channels=8, pos_conv_groups=32, pos_conv_kernel=8)
    student.save_pretrained(tmp_path / "s")
    stock = HubertModel.from_pretrained(str(tmp_path / "s")).eval()
    wav = 0.1 * torch.randn(1, 12000)
    with torch.no_grad():
        ours = student.encode(wav).last_hidden_state
        theirs = stock(wav).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_upsampling_never_reads_padding():
    x = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    lengths, out_lengths = torch.tensor([4, 2]), torch.tensor([9, 5])
    rep = upsample_frames(x, lengths, out_lengths, 9, 2, "repeat")[..., 0]
    assert rep[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 3]  # the odd last frame reuses the last body frame
    assert rep[1].tolist() == [4, 4, 5, 5, 5, 0, 0, 0, 0]  # never frame 6/7 (padding); padded output zero
    lin = upsample_frames(x, lengths, out_lengths, 9, 2, "linear")[..., 0]
    assert lin[0].tolist() == pytest.approx([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3, 3])
    assert lin[1, :5].tolist() == pytest.approx([4, 4.25, 4.75, 5, 5]) and lin[1, 5:].abs().sum() == 0


def test_reduced_rate_student_frames_padding_and_reload(teacher, tone_corpus, tmp_path):
    student, front = _student(teacher, tone_corpus["train"], conv_channels=8, pos_conv_groups=32,
                              pos_conv_kernel=8, frame_rate_reduction=2)
    assert isinstance(student, ReducedRateEncoder)
    assert student.model.config.conv_stride[-1] == 4 and front.report.x0_cosine > 0.5
    lengths = [4000, 16000, 16321, 9999]
    wav, lens = _padded(lengths)
    with torch.no_grad():
        out = student.encode(wav, lens)
        ref = teacher(wav, lens)
        body = hf_encode(student.model, wav, lens)
    assert out.frame_lengths.tolist() == ref.frame_lengths.tolist()  # the teacher's 50 Hz frames
    assert body.frame_lengths.tolist() == [int(n) // 2 for n in ref.frame_lengths]  # a 25 Hz body
    with torch.no_grad():
        for b, n in enumerate(lengths):
            alone = student.encode(wav[b : b + 1, :n])
            for h, h1 in zip(out.hidden_states, alone.hidden_states):
                assert torch.allclose(h[b, : out.frame_lengths[b]], h1[0], atol=1e-5)
    student.save_pretrained(tmp_path / "rr")
    again = load_encoder(tmp_path / "rr").eval()
    with torch.no_grad():
        assert torch.equal(again.encode(wav, lens).hidden_states[-1], out.hidden_states[-1])


@pytest.mark.parametrize("rate", [1, 2])
def test_every_new_front_end_exports_with_parity(teacher, tone_corpus, tmp_path, rate):
    student, _ = _student(teacher, tone_corpus["train"], conv_channels=8, pos_conv_groups=32, pos_conv_kernel=8,
                          frame_rate_reduction=rate)
    src = tmp_path / "s"
    student.save_pretrained(src)
    out = tmp_path / "onnx"
    res = export_onnx(src, out, OnnxExportOptions(outputs="all", parity=FAST, speed=NO_SPEED))
    assert res.passed and res.parity["fp32"].max_rel_err < 1e-4
    assert {c.name for c in res.parity["fp32"].cases} >= {"random-0.7s", "random-padded-batch"}
    # Independently of the parity code: a padded batch of lengths the trace never saw, row by row.
    lengths = [6400, 30000, 17777]
    wav, lens = _padded(lengths, seed=3)
    sess = load_onnx_session(out / FP32_NAME, threads=1)
    hs, fl = (torch.from_numpy(a) for a in sess.run(None, {"waveform": wav.numpy(), "lengths": lens.numpy()}))
    with torch.no_grad():
        for b, n in enumerate(lengths):
            ref = torch.stack(student.encode(wav[b : b + 1, :n]).hidden_states, 1)[0]
            assert fl[b] == ref.shape[1]
            err = (hs[b, :, : fl[b]] - ref).abs().max() / ref.abs().max()
            assert err < 1e-4


def test_gendistiller_takes_a_thin_front_end_and_refuses_a_lower_rate(teacher, tone_corpus, tmp_path):
    from speechdistill.methods.gendistiller import GenDistillerMethod, GenDistillerMethodConfig

    cfg = GenDistillerMethodConfig(targets=[2, 4], decoder_heads=4, decoder_ffn_dim=32, dropout=0.0)
    method = GenDistillerMethod(teacher, cfg)
    method.front_end = FrontEnd(FrontEndConfig(conv_channels=8, pos_conv_groups=32, calib_manifest=tone_corpus["train"],
                                               num_calib=4), teacher)
    trainer = method.build_model()
    student = trainer.student
    assert list(student.frontend.config.conv_dim) == [8] * 7
    student.save_pretrained(tmp_path / "gd")
    again = load_encoder(tmp_path / "gd").eval()
    wav = 0.1 * torch.randn(1, 9000)
    with torch.no_grad():
        assert torch.allclose(again.encode(wav).hidden_states[-1], student.eval().encode(wav).hidden_states[-1], atol=1e-6)
    method.front_end = FrontEnd(FrontEndConfig(frame_rate_reduction=2), teacher)
    with pytest.raises(ConfigError, match="not supported for GenDistiller"):
        method.build_model()


def test_front_end_config_errors(teacher):
    with pytest.raises(ValueError, match="does not divide the hidden size"):
        FrontEnd(FrontEndConfig(pos_conv_groups=5), teacher)
    with pytest.raises(ValueError, match=">= 1"):
        FrontEndConfig(frame_rate_reduction=0).validate()
    with pytest.raises(ConfigError, match="calibration audio"):
        FrontEnd(FrontEndConfig(conv_channels=8), teacher).apply(
            build_student(teacher, DistilHuBERTConfig(student_layers=1, targets=[4]))[0].encoder.model
        )
    assert not np.any([FrontEndConfig().changes_front_end])
    # A lower frame rate alone restrides the teacher's last conv layer: no calibration audio needed.
    rate_only = FrontEnd(FrontEndConfig(frame_rate_reduction=2), teacher)
    student = build_student(teacher, DistilHuBERTConfig(student_layers=1, targets=[4]), rate_only)[0].encoder
    assert student.model.feature_extractor.conv_layers[-1].conv.kernel_size == (4,)
