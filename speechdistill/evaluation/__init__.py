"""``speechdistill compare``: a mini-SUPERB over any set of encoders (driver: ``run.compare``).

Frozen encoders, learnable softmax layer weights and the same head budget for every encoder; tasks
ASR (CTC, WER/CER), keyword spotting and speaker identification (utterance-level heads, accuracy),
layer fidelity to a teacher (cosine, L1) and cost (params, MACs, CPU RTF, peak memory); N seeds per
cell, mean and 95 % bootstrap CIs, paired bootstrap differences against a reference row.

Modules: ``suite`` (configs), ``encoders`` (model specs, ONNX files), ``features`` (cached layer
stacks), ``heads`` and ``methods`` (heads trained on the one engine), ``tasks`` (one cell of the
table), ``statistics``, ``cost``, ``plots``, ``report``, ``protocol`` (the whole suite, resumable).
"""
