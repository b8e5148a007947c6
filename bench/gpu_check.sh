#!/usr/bin/env bash
# Issue 17's GPU measurements as one short script (about 10 min on one H100/H200; GPU time is scarce).
# Needs a CUDA build of torch and this package's dependencies (pip install -e .; flash-attn optional).
#   bash bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: bench/out/gpu
# 1. the GPU's own tests of the fast path (FlexAttention compiled on CUDA equals the dense mask);
# 2. distillation step throughput, s3prl-style vs optimised (+ torch.compile), both students,
#    24 x 15.625 s, audio-s/s, phases, peak memory, MFU (bench/distill_throughput.py --preset gpu);
# 3. GenDistiller's 2-D attention memory at 30 s, dense vs per-step vs FlexAttention, batch 8.
set -euo pipefail
OUT=${1:-bench/out/gpu}
mkdir -p "$OUT"
python - <<'PY'
import torch
from speechdistill.models.block_attention import flex_grid_attention, steps_attention
from speechdistill.models.attention2d import dense_grid_mask
from speechdistill.models.frames import frame_mask
import torch.nn.functional as F
print(torch.__version__, torch.cuda.get_device_name())
g = torch.Generator(device="cuda").manual_seed(0)
B, H, S, T, d = 2, 12, 3, 300, 64
q, k, v = (torch.randn(B, H, S, T, d, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
for lengths in ([300, 300], [300, 211]):
    valid = frame_mask(torch.tensor(lengths, device="cuda"), T)
    for kind in ("full", "previous"):
        m = dense_grid_mask(kind, 0, S, 0, S, valid)
        ref = F.scaled_dot_product_attention(*(t.reshape(B, H, S * T, d) for t in (q, k, v)), attn_mask=m).view(B, H, S, T, d)
        for name, out in (("steps", steps_attention(q, k, v, kind, 0, 0, valid)),
                          ("flex", flex_grid_attention(q, k, v, kind, 0, 0, valid))):
            err = float((out.float() - ref.float()).abs().max())
            print(f"{kind} {name} lengths={lengths}: max abs error vs dense {err:.2e}")
            assert err < 3e-2, (kind, name, err)
PY
python bench/distill_throughput.py --preset gpu --out "$OUT/distill_throughput"
python bench/grid_attention_memory.py --device cuda --batch 8 --impls dense,steps,flex --out "$OUT/grid_attention_memory"
