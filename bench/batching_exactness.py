#!/usr/bin/env python
"""How much padded batching changes a group-norm encoder's hidden states: stock HF vs the toolkit.

  python bench/batching_exactness.py --model builtin:reference --manifest corpus/test.jsonl --out bench/out/batching

Each utterance is encoded alone (the reference), then in right-padded batches of --batch-size: by the stock
HF model (`model(wav, output_hidden_states=True)`, no attention mask, as HF advises for group-norm CNNs and as
s3prl's hf upstreams batch) and by the toolkit's `encode` (what the s3prl upstream, finetune-ctc and
evaluate use).  Reports the largest absolute difference over valid frames per hidden state.
Writes OUT/batching.json and OUT/batching.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:reference", help="encoder spec (load_encoder)")
    ap.add_argument("--manifest", required=True, help="utterances (JSONL)")
    ap.add_argument("--utterances", type=int, default=40, help="first N utterances")
    ap.add_argument("--batch-size", type=int, default=8, help="utterances per padded batch")
    ap.add_argument("--out", default="bench/out/batching", help="output folder")
    args = ap.parse_args()

    import torch

    from speechdistill.data.audio import load_audio
    from speechdistill.data.batch import pad_waveforms
    from speechdistill.data.manifest import read_manifest
    from speechdistill.models.encoder import hf_model_of
    from speechdistill.models.load import load_encoder
    from speechdistill.utils.io import atomic_write_json, atomic_write_text

    torch.set_num_threads(1)
    enc = load_encoder(args.model).eval()
    hf = hf_model_of(enc).eval()
    waves = [torch.as_tensor(load_audio(u.path)) for u in read_manifest(args.manifest)[: args.utterances]]
    worst: dict[str, list[float]] = {"stock_hf": [], "toolkit": []}
    with torch.no_grad():
        for i in range(0, len(waves), args.batch_size):
            group = waves[i : i + args.batch_size]
            wav, lengths = pad_waveforms(group)
            stock = hf(wav, output_hidden_states=True).hidden_states
            ours = enc.encode(wav, lengths).hidden_states
            for b, w in enumerate(group):
                alone = enc.encode(w[None], torch.tensor([len(w)])).hidden_states
                n = alone[0].shape[1]
                for name, states in (("stock_hf", stock), ("toolkit", ours)):
                    diffs = [float((states[k][b, :n] - alone[k][0]).abs().max()) for k in range(len(alone))]
                    cur = worst[name]
                    worst[name] = [max(a, d) for a, d in zip(cur, diffs)] if cur else diffs
    result = {"model": args.model, "manifest": args.manifest, "utterances": len(waves), "batch_size": args.batch_size,
              "max_abs_diff_per_hidden_state": worst, "feat_extract_norm": enc.config.feat_extract_norm}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "batching.json", result)
    lines = ["| batching | max abs difference vs. alone, per hidden state (0 = input to the first layer) | worst |", "|---|---|---|"]
    for name, diffs in worst.items():
        lines.append(f"| {name} | {', '.join(f'{d:.3g}' for d in diffs)} | {max(diffs):.3g} |")
    atomic_write_text(out / "batching.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
