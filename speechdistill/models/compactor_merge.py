"""Merge a compactor model (``models.compactor``) into a stock, narrower HF model.

For every wrapped linear ``W' = R[kept_out, :] · W · L[:, kept_in]`` and ``b' = (R · b)[kept_out]``;
LayerNorm parameters, the mask embedding and the positional conv are index-selected (the conv per
group, its weight norm re-expressed so that g · v / |v| is the merged weight).  The result is a
``HubertModel`` / ``WavLMModel`` / ``Wav2Vec2Model`` whose config has the new ``hidden_size``,
``num_attention_heads`` and ``intermediate_size``: ``transformers.AutoModel.from_pretrained`` loads it
and every command of this project takes it as an encoder.

A stock config has one head count and one FFN width for all layers, attention inner width equal to
``hidden_size``, and (WavLM) a gated position bias that reads the residual stream in per-head chunks;
masks that do not fit are refused with the reason (``methods.wid_masks`` only produces fitting ones).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from speechdistill.models.compactor import CompactorEncoder, CompactorError
from speechdistill.models.encoder import HFEncoder
from speechdistill.models.hf import model_class


def merged_shape(enc: CompactorEncoder) -> dict[str, int]:
    """hidden_size, num_attention_heads, head_dim, intermediate_size of the merged model (or an error)."""
    m = enc.masks
    cfg = enc.config
    heads, head_dim = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    hidden = int(m.residual.sum())
    groups = enc.pos_conv_groups
    per_group = m.residual.view(groups, -1).sum(1)
    if hidden == 0 or bool((per_group != per_group[0]).any()):
        raise CompactorError(
            f"residual mask keeps {per_group.tolist()} dims in the {groups} positional-conv groups: a stock "
            "grouped conv needs the same number in every group"
        )
    ffn = m.ffn.sum(1)
    if bool((ffn != ffn[0]).any()) or int(ffn[0]) == 0:
        raise CompactorError(f"FFN widths differ between layers ({ffn.tolist()}): a stock config has one width")
    kept_heads, dims = set(), set()
    for i in range(enc.num_output_layers):
        per_head = m.attention[i].view(heads, head_dim).sum(1)
        live = per_head[per_head > 0]
        kept_heads.add(int(live.numel()))
        dims.update(live.tolist())
    if len(kept_heads) != 1 or len(dims) != 1:
        raise CompactorError(
            "every layer must keep the same number of heads with the same number of dims each for a stock "
            f"config (kept heads per layer {sorted(kept_heads)}, dims per head {sorted(dims)})"
        )
    new_heads, new_dim = kept_heads.pop(), int(dims.pop())
    if new_heads * new_dim != hidden:
        raise CompactorError(
            f"attention keeps {new_heads} heads x {new_dim} dims = {new_heads * new_dim} but the residual "
            f"stream keeps {hidden}: a stock config needs them equal"
        )
    if enc.family == "wavlm":
        if new_heads != heads:
            raise CompactorError("WavLM: heads cannot be removed (its gated position bias reads the residual "
                                 "stream in per-head chunks); use the dim attention strategy")
        chunks = m.residual.view(heads, -1)
        if bool((chunks != chunks[0]).any()):
            raise CompactorError("WavLM: the residual mask must keep the same offsets in every head chunk")
    return {"hidden_size": hidden, "num_attention_heads": new_heads, "head_dim": new_dim,
            "intermediate_size": int(ffn[0])}


@torch.no_grad()
def merge_compactors(enc: CompactorEncoder) -> HFEncoder:
    """The stock HF encoder computing what ``enc`` computes under ``enc.masks.applied()`` (on kept dims)."""
    shape = merged_shape(enc)
    src = enc.model
    cfg = copy.deepcopy(src.config)
    old_head_dim = cfg.hidden_size // cfg.num_attention_heads
    cfg.hidden_size = shape["hidden_size"]
    cfg.num_attention_heads = shape["num_attention_heads"]
    cfg.intermediate_size = shape["intermediate_size"]
    cfg.num_hidden_layers = enc.num_output_layers
    dev = enc.masks.residual.device
    dst = model_class(enc.family)(cfg).to(dev).eval()
    m = enc.masks
    r = m.residual.nonzero().squeeze(1)

    with m.applied():
        dst.feature_extractor.load_state_dict(src.feature_extractor.state_dict())
        fp_src, fp_dst = src.feature_projection, dst.feature_projection
        if hasattr(fp_src, "layer_norm") and hasattr(fp_dst, "layer_norm"):
            fp_dst.layer_norm.load_state_dict(fp_src.layer_norm.state_dict())
        _set_linear(fp_dst.projection, fp_src.projection, r, None)
        if hasattr(src, "masked_spec_embed") and hasattr(dst, "masked_spec_embed"):
            dst.masked_spec_embed.copy_(src.masked_spec_embed[r])
        _merge_pos_conv(dst.encoder.pos_conv_embed.conv, src.encoder.pos_conv_embed, m.residual)
        _set_norm(dst.encoder.layer_norm, src.encoder.layer_norm, r)
        # HF scales attention scores by head_dim ** -0.5 of the *new* heads: fold the teacher's scale in.
        q_scale = math.sqrt(shape["head_dim"] / old_head_dim)
        for i, (s_layer, d_layer) in enumerate(zip(src.encoder.layers, dst.encoder.layers)):
            a = m.attention[i].nonzero().squeeze(1)
            f = m.ffn[i].nonzero().squeeze(1)
            sa, da = s_layer.attention, d_layer.attention
            _set_linear(da.q_proj, sa.q_proj, a, r, scale=q_scale)
            _set_linear(da.k_proj, sa.k_proj, a, r)
            _set_linear(da.v_proj, sa.v_proj, a, r)
            _set_linear(da.out_proj, sa.out_proj, r, a)
            _set_linear(d_layer.feed_forward.intermediate_dense, s_layer.feed_forward.intermediate_dense, f, r)
            _set_linear(d_layer.feed_forward.output_dense, s_layer.feed_forward.output_dense, r, f)
            _set_norm(d_layer.layer_norm, s_layer.layer_norm, r)
            _set_norm(d_layer.final_layer_norm, s_layer.final_layer_norm, r)
            if enc.family == "wavlm":
                _merge_wavlm_gate(da, sa, m.residual)
    return HFEncoder(dst, normalize=enc.normalize, batched_cnn=enc.batched_cnn)


def _set_linear(dst: nn.Linear, src, rows: torch.Tensor, cols: torch.Tensor | None, scale: float = 1.0) -> None:
    w = src.weight[rows]
    if cols is not None:
        w = w[:, cols]
    if tuple(w.shape) != tuple(dst.weight.shape):
        raise CompactorError(f"merged weight {tuple(w.shape)} does not fit {tuple(dst.weight.shape)}")
    dst.weight.copy_(w * scale)
    if dst.bias is not None:
        dst.bias.copy_(src.bias[rows] * scale)


def _set_norm(dst: nn.LayerNorm, src, keep: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[keep])
    dst.bias.copy_(src.bias[keep])
    dst.eps = src.eps


def _merge_pos_conv(dst_conv: nn.Conv1d, src, residual: torch.Tensor) -> None:
    w, b = src.effective()  # hard-masked: [C, C/G, K]
    groups = dst_conv.groups
    keep = residual.view(groups, -1)
    n = keep.shape[1]
    blocks = []
    for g in range(groups):
        idx = keep[g].nonzero().squeeze(1)
        blocks.append(w[g * n + idx][:, idx])
    w_new = torch.cat(blocks, 0)
    b_new = b[residual]
    dst_conv.bias.copy_(b_new)
    param = getattr(dst_conv, "parametrizations", None)
    if param is not None and hasattr(param, "weight"):
        # weight_norm(dim=2): weight = g * v / |v|, norms over dims 0 and 1 for each kernel tap.
        param.weight.original0.copy_(w_new.norm(dim=(0, 1), keepdim=True))
        param.weight.original1.copy_(w_new)
    elif hasattr(dst_conv, "weight_g"):
        dst_conv.weight_g.copy_(w_new.norm(dim=(0, 1), keepdim=True))
        dst_conv.weight_v.copy_(w_new)
    else:
        dst_conv.weight.copy_(w_new)


def _merge_wavlm_gate(dst_attn: nn.Module, src_attn: nn.Module, residual: torch.Tensor) -> None:
    # The gate of head h reads residual dims [h*c, (h+1)*c); the merged chunk holds the kept offsets.
    offsets = residual.view(src_attn.num_heads, -1)[0].nonzero().squeeze(1)
    dst_attn.gru_rel_pos_linear.weight.copy_(src_attn.gru_rel_pos_linear.weight[:, offsets])
    dst_attn.gru_rel_pos_linear.bias.copy_(src_attn.gru_rel_pos_linear.bias)
    dst_attn.gru_rel_pos_const.copy_(src_attn.gru_rel_pos_const)
    if hasattr(src_attn, "rel_attn_embed") and hasattr(dst_attn, "rel_attn_embed"):
        dst_attn.rel_attn_embed.weight.copy_(src_attn.rel_attn_embed.weight)
