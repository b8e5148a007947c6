"""STAT / magnitude pruning, the pruned-model format and the MAC model (tiny models, CPU, seconds)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from speechdistill.models.factory import base_config, tiny_encoder
from speechdistill.models.load import load_encoder
from speechdistill.models.pruned import PrunedEncoderConfig, PrunedEncoderModel, pruned_config_from
from speechdistill.models.teacher import Teacher
from speechdistill.prune.budget import (
    PruneError,
    count_encoder_macs,
    shape_macs_for_lengths,
    shape_of_model,
)
from speechdistill.prune.decompose import (
    FrameSketch,
    block_pivoted_qr,
    interpolation_matrix,
    lstsq_coefficients,
    pivoted_qr,
)
from speechdistill.prune.stat import PruneOptions, prune_model

LENGTHS = [16000, 12000, 9000, 16000]


def calib_batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(LENGTHS), 2):
        lens = torch.tensor(LENGTHS[i : i + 2])
        wav = torch.randn(2, int(lens.max()), generator=g) * 0.3
        wav[1, int(lens[1]) :] = 0
        out.append((wav, lens))
    return out


def max_diff(a, b) -> float:
    mask = a.frame_mask
    return max(float((x - y)[mask].abs().max().detach()) for x, y in zip(a.hidden_states, b.hidden_states))


def eval_batch():
    g = torch.Generator().manual_seed(123)
    lens = torch.tensor([12000, 7000])
    wav = torch.randn(2, 12000, generator=g) * 0.3
    wav[1, 7000:] = 0
    return wav, lens


# ---------------------------------------------------------------------------------------------
# Decompositions


def test_interpolative_decomposition_error_is_r22_norm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((60, 6)) @ rng.standard_normal((6, 20)) + 0.05 * rng.standard_normal((60, 20))
    qr = pivoted_qr(a)
    err = qr.errors()
    for k in (0, 1, 4, 6, 11, 19, 20):
        kept, t = interpolation_matrix(qr, k)
        assert list(kept) == sorted(kept) and len(kept) == k
        if k:
            assert np.allclose(t[:, kept], np.eye(k))  # kept columns reproduce themselves
        recon = np.linalg.norm(a - a[:, kept] @ t)
        r22 = np.linalg.norm(qr.r[k:, k:])
        assert recon == pytest.approx(r22, rel=1e-9, abs=1e-12)
        assert err[k] == pytest.approx(r22, rel=1e-9, abs=1e-12)
    assert np.all(np.diff(err) <= 1e-12) and err[-1] == 0


def test_block_pivoting_finds_duplicate_head_and_its_error_is_the_lstsq_residual():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 16))  # 4 "heads" of 4 columns
    a[:, 12:16] = a[:, 0:4]  # head 3 duplicates head 0
    bqr = block_pivoted_qr(a, 4)
    assert bqr.err[3] < 1e-9 and bqr.err[2] > 1.0
    for k in (1, 2, 3):
        kept = np.sort(bqr.order[:k])
        elim = np.setdiff1d(np.arange(4), kept)
        ck = np.concatenate([a[:, h * 4 : h * 4 + 4] for h in kept], axis=1)
        ce = np.concatenate([a[:, h * 4 : h * 4 + 4] for h in elim], axis=1)
        resid = np.linalg.norm(ce - ck @ lstsq_coefficients(ck, ce))
        assert resid == pytest.approx(bqr.err[k], rel=1e-8, abs=1e-9)


def test_frame_sketch_is_exact_then_keeps_linear_dependencies():
    rng = np.random.default_rng(2)
    basis = rng.standard_normal((5, 12)).astype(np.float32)
    rows = (rng.standard_normal((500, 5)).astype(np.float32) @ basis)
    exact = FrameSketch(12, rows=1000)
    exact.add(torch.from_numpy(rows))
    assert not exact.is_sketched and np.array_equal(exact.matrix(), rows)
    sk = FrameSketch(12, rows=64, seed=0)
    for chunk in np.array_split(rows, 7):
        sk.add(torch.from_numpy(chunk))
    m = sk.matrix()
    assert sk.is_sketched and m.shape == (64, 12) and sk.frames == 500
    assert sk.sum_sq == pytest.approx(float((rows.astype(np.float64) ** 2).sum()), rel=1e-5)
    # A sketch is a linear map of the frame axis: rank and column dependencies survive exactly.
    err = pivoted_qr(m.astype(np.float64)).errors()
    assert err[5] < 1e-4 * err[0] and err[4] > 1e-2 * err[0]


# ---------------------------------------------------------------------------------------------
# STAT on tiny models


def _duplicated_hubert():
    enc = tiny_encoder("hubert", num_layers=2, seed=3)
    with torch.no_grad():
        for layer in enc.model.encoder.layers:
            ff = layer.feed_forward
            ff.intermediate_dense.weight[32:] = ff.intermediate_dense.weight[:32]
            ff.intermediate_dense.bias[32:] = ff.intermediate_dense.bias[:32]
            attn = layer.attention  # 4 heads of 8: heads 2, 3 become copies of heads 0, 1
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[16:] = proj.weight[:16]
                proj.bias[16:] = proj.bias[:16]
    return enc


def test_duplicated_neurons_and_heads_are_pruned_without_changing_outputs():
    enc = _duplicated_hubert()
    shape0 = shape_of_model(enc.model)
    half = replace(shape0, num_heads=[2, 2], intermediate_sizes=[32, 32])
    target = shape_macs_for_lengths(half, LENGTHS).total / shape_macs_for_lengths(shape0, LENGTHS).total + 0.002
    pruned, report = prune_model(enc, calib_batches(), "stat", target)
    for layer in report["layers"]:
        assert layer["heads_after"] == 2 and 32 <= layer["neurons_after"] <= 34
    assert report["keep_macs_achieved"] <= target
    wav, lens = eval_batch()
    ref, out = enc.encode(wav, lens), pruned.encode(wav, lens)
    assert max_diff(ref, out) < 1e-5
    # Without the correction the same selection loses the eliminated copies' contributions.
    nocorr, _ = prune_model(enc, calib_batches(), "stat-nocorrect", target)
    assert max_diff(ref, nocorr.encode(wav, lens)) > 1e-2


def test_pruned_model_shapes_save_reload_teacher_and_config_roundtrip(tmp_path):
    enc = tiny_encoder("hubert", num_layers=3, seed=0)
    pruned, report = prune_model(enc, calib_batches(), "stat", 0.85, source_model="tiny")
    assert isinstance(pruned, PrunedEncoderModel)
    assert 0.83 <= report["keep_macs_achieved"] <= 0.85
    assert report["macs_after"] < report["macs_before"] and report["params_after"] < report["params_before"]
    assert {"wall_time_s", "peak_rss_mb", "calibration_time_s"} <= set(report)
    wav, lens = eval_batch()
    out = pruned.encode(wav, lens)
    ref = enc.encode(wav, lens)
    assert len(out.hidden_states) == pruned.num_output_layers + 1 == 4
    assert all(h.shape == r.shape for h, r in zip(out.hidden_states, ref.hidden_states))
    assert torch.equal(out.frame_lengths, ref.frame_lengths) and pruned.hidden_size == 32

    pruned.save_pretrained(tmp_path / "p")
    cfg = PrunedEncoderConfig.from_pretrained(tmp_path / "p")
    assert cfg.num_heads == pruned.config.num_heads == [layer["heads_after"] for layer in report["layers"]]
    assert cfg.kept_heads == pruned.config.kept_heads
    assert cfg.intermediate_sizes == [layer["neurons_after"] for layer in report["layers"]]
    assert cfg.base_model_type == "hubert" and cfg.prune_method == "stat" and cfg.source_model == "tiny"
    assert cfg.conv_kernel == enc.config.conv_kernel  # read through to the base config
    loaded = load_encoder(tmp_path / "p")
    assert isinstance(loaded, PrunedEncoderModel)
    assert max_diff(out, loaded.encode(wav, lens)) == 0.0
    teacher = Teacher(load_encoder(tmp_path / "p"))
    assert max_diff(out, teacher(wav, lens)) == 0.0 and teacher.num_layers == 3
    # MACs agree whether counted from the config or from the modules.
    assert count_encoder_macs(cfg, seconds=1.0).total == count_encoder_macs(loaded, seconds=1.0).total


@pytest.mark.parametrize("method", ["magnitude", "stat-nocorrect"])
def test_baselines_run_and_honour_the_budget(method):
    enc = tiny_encoder("hubert", num_layers=2, seed=1)
    if method == "magnitude":
        pruned, report = prune_model(enc, None, method, 0.88, calib_lengths=LENGTHS)
    else:
        pruned, report = prune_model(enc, calib_batches(), method, 0.88)
    assert 0.86 <= report["keep_macs_achieved"] <= 0.88
    wav, lens = eval_batch()
    out = pruned.encode(wav, lens)
    assert torch.isfinite(out.hidden_states[-1]).all()
    shape = shape_of_model(pruned)
    assert shape.num_heads == [layer["heads_after"] for layer in report["layers"]]


def test_prune_cnn_keeps_budget_and_group_norm_model_runs():
    enc = tiny_encoder("hubert", num_layers=2, seed=2)
    pruned, report = prune_model(enc, calib_batches(), "stat", 0.8, options=PruneOptions(prune_cnn=True))
    assert report["keep_macs_achieved"] <= 0.8
    assert report["conv_dims"][-1] == 16 and pruned.config.conv_dim == tuple(report["conv_dims"])
    wav, lens = eval_batch()
    assert torch.isfinite(pruned.encode(wav, lens).hidden_states[-1]).all()
    layer_norm_cnn = tiny_encoder("hubert", norm="layer", num_layers=2)
    with pytest.raises(PruneError, match="group-norm"):
        prune_model(layer_norm_cnn, calib_batches(), "stat", 0.8, options=PruneOptions(prune_cnn=True))


def test_prune_cnn_budget_search_is_never_worse_than_transformer_only_stat():
    from speechdistill.prune.stat import _last_state_error, _search_batches

    # CNN about a third of the MACs: the transformer-only floor is near 0.4.
    enc = tiny_encoder("hubert", num_layers=2, seed=2, conv_dim=12, hidden_size=48, intermediate_size=192)
    search_batches = _search_batches(calib_batches(), 4)
    refs = [enc.encode(w, n).hidden_states[-1] for w, n in search_batches]
    t_only, _ = prune_model(enc, calib_batches(), "stat", 0.6, options=PruneOptions(sketch_rows=0))
    _, rep1 = prune_model(enc, calib_batches(), "stat", 0.6, options=PruneOptions(prune_cnn=True, sketch_rows=0))
    search = rep1["cnn_budget_search"]
    assert rep1["keep_macs_achieved"] <= 0.6 + 1e-9 and search["search_utterances"] == 4
    tried = {c["cnn_fraction"]: c for c in search["candidates"] if c["reachable"]}
    # Keeping the whole CNN is a candidate, and it is transformer-only STAT exactly.
    err0 = _last_state_error(t_only.model, False, search_batches, refs)
    assert tried[1.0]["last_state_rel_error"] == pytest.approx(err0, rel=1e-6)
    assert search["chosen_last_state_rel_error"] <= err0 + 1e-12
    assert len(tried) >= 3  # several CNN/transformer splits were measured
    # Below what an unpruned CNN allows only CNN-pruning candidates remain, and one is chosen.
    with pytest.raises(PruneError, match="below what this model can reach"):
        prune_model(enc, calib_batches(), "stat", 0.35, options=PruneOptions(sketch_rows=0))
    _, rep2 = prune_model(enc, calib_batches(), "stat", 0.35, options=PruneOptions(prune_cnn=True, sketch_rows=0))
    assert rep2["cnn_budget_search"]["chosen_cnn_fraction"] < 1.0 and rep2["keep_macs_achieved"] <= 0.35 + 1e-9
    # The single global threshold is still available (and differs from the search here).
    _, rep3 = prune_model(enc, calib_batches(), "stat", 0.6,
                          options=PruneOptions(prune_cnn=True, sketch_rows=0, cnn_budget="global"))
    assert "cnn_budget_search" not in rep3


def test_wavlm_pruned_heads_index_the_shared_bias_by_original_head_id():
    enc = tiny_encoder("wavlm", num_layers=2, seed=4)
    stock = enc.model
    hd = 8
    # Layer 0 drops heads 1 and 3, which layer 1 keeps: layer 1 needs layer 0's bias for them.
    kept = [[0, 2], [1, 3]]
    cfg = pruned_config_from(stock.config, "wavlm", kept, [64, 64])
    model = PrunedEncoderModel(cfg).eval()
    sd = dict(stock.state_dict())
    reference = tiny_encoder("wavlm", num_layers=2, seed=4)
    for i, heads in enumerate(kept):
        p = f"encoder.layers.{i}.attention."
        cols = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads])
        for name in ("q_proj", "k_proj", "v_proj"):
            sd[p + name + ".weight"] = sd[p + name + ".weight"][cols]
            sd[p + name + ".bias"] = sd[p + name + ".bias"][cols]
        sd[p + "out_proj.weight"] = sd[p + "out_proj.weight"][:, cols]
        sd[p + "gru_rel_pos_const"] = sd[p + "gru_rel_pos_const"][:, heads]
        with torch.no_grad():  # the stock model with the dropped heads silenced computes the same thing
            dropped = [h for h in range(4) if h not in heads]
            for h in dropped:
                reference.model.encoder.layers[i].attention.out_proj.weight[:, h * hd : (h + 1) * hd] = 0
    model.model.load_state_dict(sd)
    wav, lens = eval_batch()
    assert max_diff(reference.encode(wav, lens), model.encode(wav, lens)) < 1e-5


def test_wavlm_prunes_heads_runs_and_keep_all_is_identity(tmp_path):
    enc = tiny_encoder("wavlm", num_layers=2, seed=5)
    wav, lens = eval_batch()
    ref = enc.encode(wav, lens)
    same, _ = prune_model(enc, calib_batches(), "stat", 1.0)
    assert same.config.num_heads == [4, 4] and max_diff(ref, same.encode(wav, lens)) < 1e-5
    pruned, report = prune_model(enc, calib_batches(), "stat", 0.85)
    assert sum(report["layers"][i]["heads_after"] for i in range(2)) < 8
    assert all(len(k) == n for k, n in zip(pruned.config.kept_heads, pruned.config.num_heads))
    out = pruned.encode(wav, lens)
    assert torch.isfinite(out.hidden_states[-1]).all()
    pruned.save_pretrained(tmp_path / "w")
    assert max_diff(out, load_encoder(tmp_path / "w").encode(wav, lens)) == 0.0


def test_pruning_a_pruned_model_composes_head_ids():
    enc = tiny_encoder("hubert", num_layers=4, seed=6)
    first, _ = prune_model(enc, calib_batches(), "stat", 0.9)
    second, report = prune_model(first, calib_batches(), "stat", 0.9)
    assert report["macs_before"] == pytest.approx(
        shape_macs_for_lengths(shape_of_model(first), LENGTHS).total
    )
    for k1, k2 in zip(first.config.kept_heads, second.config.kept_heads):
        assert set(k2) <= set(k1)
    for n1, n2 in zip(first.config.intermediate_sizes, second.config.intermediate_sizes):
        assert n2 <= n1
    wav, lens = eval_batch()
    assert torch.isfinite(second.encode(wav, lens).hidden_states[-1]).all()


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_bad_keep_macs_is_a_clear_error(bad):
    enc = tiny_encoder("hubert", num_layers=1)
    with pytest.raises(PruneError, match=r"keep_macs must be a fraction in \(0, 1\]"):
        prune_model(enc, None, "magnitude", bad, calib_lengths=LENGTHS)


def test_unreachable_budget_and_unsupported_inputs_are_clear_errors():
    enc = tiny_encoder("hubert", num_layers=1)
    with pytest.raises(PruneError, match="--prune-cnn"):
        prune_model(enc, None, "magnitude", 0.05, calib_lengths=LENGTHS)
    with pytest.raises(PruneError, match="not supported yet"):
        prune_model(torch.nn.Linear(2, 2), None, "magnitude", 0.5, calib_lengths=LENGTHS)
    from speechdistill.models.factory import tiny_config
    from speechdistill.models.gendistiller import GenDistillerConfig, GenDistillerModel, frontend_config_dict

    student = GenDistillerModel(GenDistillerConfig(
        frontend_config=frontend_config_dict(tiny_config()), teacher_hidden_size=32, teacher_num_layers=4,
        target_layers=[2, 4], decoder_hidden_size=32, decoder_heads=4, decoder_ffn_dim=64,
    ))
    with pytest.raises(PruneError, match="pruning GenDistillerModel is not supported yet"):
        prune_model(student, None, "magnitude", 0.5, calib_lengths=LENGTHS)
    with pytest.raises(PruneError, match="--sketch-rows 16 is smaller"):
        prune_model(enc, calib_batches(), "stat", 0.9, options=PruneOptions(sketch_rows=16))
    with pytest.raises(PruneError, match="unknown pruning method"):
        prune_model(enc, None, "random", 0.5, calib_lengths=LENGTHS)


# ---------------------------------------------------------------------------------------------
# MAC model and CLI


def test_count_encoder_macs_matches_reference_numbers_and_pruned_configs():
    cfg = base_config("hubert")
    m = count_encoder_macs(cfg, seconds=10.0)
    assert m.num_frames == 499
    assert m.cnn_total / 10 == pytest.approx(2.45e9, rel=0.02)  # HuBERT Base CNN: ~2.4 GMACs per second of audio
    assert m.transformer_total / 10 == pytest.approx(4.7e9, rel=0.02)
    assert 0.55 < m.ffn_total / m.transformer_total < 0.65  # FFN/attention about 60/40 at 10 s
    longer = count_encoder_macs(cfg, seconds=30.0)
    assert longer.attention_total / longer.transformer_total > m.attention_total / m.transformer_total
    by_frames = count_encoder_macs(cfg, num_frames=499)  # the shortest input giving 499 frames
    assert by_frames.transformer_total == m.transformer_total
    assert by_frames.total == pytest.approx(m.total, rel=1e-3)
    heads = [12] * 11 + [6]
    pcfg = pruned_config_from(cfg, "hubert", [list(range(12))] * 11 + [list(range(6))], [3072] * 11 + [1000])
    pm = count_encoder_macs(pcfg, seconds=10.0)
    assert pm.ffn[-1] == pytest.approx(m.ffn[-1] * 1000 / 3072)
    assert pm.attention[:-1] == m.attention[:-1] and pm.attention[-1] < m.attention[-1]
    assert len(heads) == len(pm.attention)
    with pytest.raises(ValueError, match="exactly one"):
        count_encoder_macs(cfg, seconds=1.0, num_frames=10)


def test_cli_prune_writes_model_and_report(tmp_path, tone_corpus):
    from speechdistill.cli.main import main

    src = tmp_path / "src"
    tiny_encoder("hubert", num_layers=2, seed=7).save_pretrained(src)
    out = tmp_path / "out"
    rc = main([
        "prune", "--method", "stat", "--model", str(src), "--calib", tone_corpus["dev"], "--keep-macs", "0.9",
        "--out", str(out), "--num-calib", "4", "--sketch-rows", "64",
    ])
    assert rc == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "stat" and report["calibration"]["utterances"] == 4
    assert report["calibration"]["sketched"] and report["keep_macs_achieved"] <= 0.9
    assert isinstance(load_encoder(out), PrunedEncoderModel)
    assert main(["prune", "--model", str(src), "--calib", tone_corpus["dev"], "--keep-macs", "0", "--out", str(out)]) == 2
    # An existing model is not overwritten silently.
    assert main([
        "prune", "--method", "magnitude", "--model", str(src), "--calib", tone_corpus["dev"], "--keep-macs", "0.9",
        "--out", str(out),
    ]) == 2
