"""Voice activity detection: Silero VAD, the model file that the `silero-vad` wheel ships, run with onnxruntime.

The package itself is not imported: importing it sets torch to one thread for the whole process, which would
slow every model here. Its ONNX file is read from where the wheel installed it, and run frame by frame:
32 ms frames (512 samples at 16 kHz), each with the last 64 samples of the frame before as context and the
recurrent state carried over, exactly as the package's own wrapper does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mmdialog.errors import ModelNotAvailableError

SAMPLE_RATE = 16_000
FRAME = 512  # samples per decision: 32 ms
_CONTEXT = 64


def silero_model_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx" if spec else None
    if path is None or not path.is_file():
        raise ModelNotAvailableError(["the voice activity detector is not installed: pip install silero-vad"])
    return path


class SileroVAD:
    """Speech probability of each 32 ms frame of a 16 kHz stream; one instance per stream (it has state)."""

    def __init__(self):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.inter_op_num_threads = options.intra_op_num_threads = 1  # 32 ms frames: threads only cost
        self.session = onnxruntime.InferenceSession(str(silero_model_path()), options,
                                                    providers=["CPUExecutionProvider"])
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)

    def __call__(self, frame: np.ndarray) -> float:
        """The probability that `frame` (FRAME float32 samples at 16 kHz) holds speech."""
        x = np.concatenate([self._context, frame.reshape(1, FRAME).astype(np.float32)], axis=1)
        probability, self._state = self.session.run(
            None, {"input": x, "state": self._state, "sr": np.array(SAMPLE_RATE, dtype=np.int64)})
        self._context = x[:, -_CONTEXT:]
        return float(probability.reshape(-1)[0])
