"""An exported ONNX CTC model (``export --with-ctc-head``, fp32 or int8) behind the calls ``evaluate`` makes.

What ships is the ``.onnx`` file with ``vocab.json`` beside it; scoring that file (not the PyTorch model it
came from) is what tells whether int8 cost accuracy (``asr.evaluate.evaluate_model`` takes a ``.onnx`` path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from speechdistill.export.onnx_io import load_onnx_session, read_onnx_metadata
from speechdistill.models.errors import ModelLoadError


class OnnxCTCModel:
    """``model(wav [B, S], lengths [B]) -> (log_probs [B, T, V] float32, frame_lengths [B])`` on onnxruntime."""

    def __init__(self, path: str | Path, threads: int = 0):
        from speechdistill.asr.vocab import CharVocab, VocabError

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)  # also checks the file exists and parses
        self.session = load_onnx_session(self.path, threads)
        outputs = [o.name for o in self.session.get_outputs()]
        if not outputs or outputs[0] != "log_probs":
            raise ModelLoadError(
                f"{self.path}: an encoder export (outputs {', '.join(outputs)}), not a CTC model; export the CTC "
                "model directory with `speechdistill export --model DIR --with-ctc-head` to evaluate it"
            )
        try:
            self.vocab = CharVocab.load(self.path.parent)
        except VocabError as e:
            raise ModelLoadError(f"{self.path}: the CTC vocabulary must sit beside the ONNX file: {e}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.encoder_source = self.metadata.get("source", "")
        self.threads = threads

    def __call__(self, wav: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {
            self.input_names[0]: wav.detach().cpu().numpy().astype(np.float32, copy=False),
            self.input_names[1]: lengths.detach().cpu().numpy().astype(np.int64, copy=False),
        }
        log_probs, frame_lengths = self.session.run(None, feeds)[:2]
        return torch.from_numpy(log_probs), torch.from_numpy(frame_lengths)

    # The CTCModel calls evaluate_model makes (onnxruntime runs on the CPU only).
    def to(self, device) -> OnnxCTCModel:
        if torch.device(device).type != "cpu":
            raise ModelLoadError(f"{self.path}: ONNX models are evaluated on the CPU (onnxruntime), not {device}")
        return self

    def eval(self) -> OnnxCTCModel:
        return self

    def num_parameters(self) -> dict[str, int]:
        """Weights stored in the file (int8 weights count as one each); the file does not separate encoder and head."""
        import onnx

        model = onnx.load(str(self.path), load_external_data=False)
        total = int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
        return {"encoder": total, "head": 0, "total": total}

    @property
    def file_mb(self) -> float:
        return self.path.stat().st_size / 1e6
