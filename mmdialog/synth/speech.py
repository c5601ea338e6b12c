"""Spoken questions: each distinct question text said once per voice setting, then heard by Whisper tiny.en.

Voices are the bundled Piper voice at three speeds and espeak-ng voices at several speeds and pitches. Each
text gets VOICES_PER_TEXT settings (one Piper, the rest espeak-ng), chosen from a hash of the text, not of
the seed, so every world draws from one bounded catalogue and a cache filled by one seed serves all others.
TEST_VOICE is never heard in training. Every clip gets silence around it and white or pink noise at
15-30 dB SNR, drawn from the clip's own key, so a clip is the same wherever and whenever it is made.

A clip in the cache is `<key>.wav` (16 kHz mono 16-bit), `<key>.states.safetensors` (Whisper encoder
states of the file as the project loads it, key "states", float16) and `<key>.json` (text, voice,
transcript), written last, so an interrupted run never leaves a clip that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from encoders.audio_io import SAMPLE_RATE, load_audio, resample
from mmdialog.errors import ModelNotAvailableError
from mmdialog.synth.scenes import COLOURS, SHAPES, SIDES

if TYPE_CHECKING:  # loading Whisper's code costs seconds; a world without speech never needs it
    from encoders.speech import SpeechEncoder

# Part of every clip key: change it when the synthesis changes, so old cached clips are not reused.
# 2: transcripts made with VOCABULARY_PROMPT.
SYNTH_VERSION = 2
# Whisper's initial prompt for the world's clips, the one the demo recipe gives its speech encoder
# (speech.prompt): the world's colour, shape and side words, which tiny.en otherwise often mishears from
# espeak-ng voices (word error rate 0.24 without it, 0.18 with it, on 150 clips).
VOCABULARY_PROMPT = (f"Questions about a picture: what color is the {', '.join(SHAPES)}? Is there a "
                     f"{', '.join(COLOURS)} one on the {', '.join(SIDES[:-1])} or {SIDES[-1]}?")
VOICES_PER_TEXT = 3
SNR_DB = (15.0, 30.0)
LEAD_SILENCE_S, TAIL_SILENCE_S = (0.1, 0.4), (0.1, 0.3)
PEAK = (0.5, 0.9)


@dataclass(frozen=True)
class VoiceSetting:
    id: str
    engine: str  # "piper" | "espeak"
    voice: str  # the espeak-ng voice name (the Piper voice is always the bundled one)
    speed: float  # Piper's length scale (larger is slower) or espeak-ng words per minute
    pitch: int = 50  # espeak-ng only, 0-99


def _espeak(voice: str, speed: int, pitch: int) -> VoiceSetting:
    return VoiceSetting(f"espeak-{voice}-s{speed}-p{pitch}", "espeak", voice, speed, pitch)


PIPER_VOICES = tuple(VoiceSetting(f"piper-joe-x{scale}", "piper", "", scale) for scale in (0.85, 1.0, 1.2))
# Measured on 588 noisy clips: Whisper tiny.en gets one word in four wrong with these espeak-ng voices
# (WER 0.21-0.31) and almost none with Piper (0.05-0.07). A realistic mix: the model also gets the states.
ESPEAK_VOICES = (_espeak("en-gb", 140, 40), _espeak("en-us+m3", 130, 35), _espeak("en-us+f3", 140, 60),
                 _espeak("en-gb-x-rp", 150, 50))
TEST_VOICE = _espeak("en-us+f2", 160, 65)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()


def voices_for(text: str) -> tuple[VoiceSetting, ...]:
    """The training voices of one question text: one Piper speed and distinct espeak-ng voices."""
    rng = random.Random(_digest("voices", text))
    return (rng.choice(PIPER_VOICES), *rng.sample(ESPEAK_VOICES, VOICES_PER_TEXT - 1))


def clip_key(text: str, voice: VoiceSetting) -> str:
    return _digest(str(SYNTH_VERSION), voice.id, text)[:20]


@dataclass(frozen=True)
class Clip:
    path: str  # "audio/<key>.wav", relative to the world folder
    text: str  # what was said
    voice: str
    transcript: str  # what Whisper tiny.en heard
    seconds: float


class Speaker:
    """Says a text in a voice setting: 16 kHz float32 mono, before silence and noise are added."""

    def __init__(self) -> None:
        self._piper = None
        self._espeak = shutil.which("espeak-ng")

    def say(self, text: str, voice: VoiceSetting) -> np.ndarray:
        if voice.engine == "piper":
            return self._say_piper(text, voice.speed)
        if self._espeak is None:
            raise ModelNotAvailableError(["spoken questions need the espeak-ng program: apt-get install espeak-ng"])
        command = [self._espeak, "-v", voice.voice, "-s", str(int(voice.speed)), "-p", str(voice.pitch),
                   "--stdout", "--stdin"]  # the text on stdin: a question is never read as an option
        try:
            done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, timeout=60, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = (getattr(exc, "stderr", b"") or b"").decode("utf-8", "replace").strip()[:200]
            raise ModelNotAvailableError([f"espeak-ng failed for voice '{voice.voice}': {detail or exc}"]) from None
        samples, rate = sf.read(BytesIO(done.stdout), dtype="float32")
        return resample(samples, rate)

    def _say_piper(self, text: str, length_scale: float) -> np.ndarray:
        if self._piper is None:
            from decoders.tts.piper import PiperVoice, bundled_voice_paths

            self._piper = PiperVoice.load(*bundled_voice_paths())
            # onnxruntime's random ops cannot be seeded: without noise the voice says a text the same way
            # every time, so a world made from scratch is byte-identical to the last one.
            self._piper.noise_scale = self._piper.noise_w = 0.0
        return resample(self._piper.synthesize(text, length_scale=length_scale), self._piper.sample_rate)


def _pink(rng: np.random.Generator, n: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))  # power falls as 1/f
    return np.fft.irfft(spectrum, n)


def dress(speech: np.ndarray, key: str) -> np.ndarray:
    """Silence around the speech, a random level, and white or pink noise at a random SNR: all from `key`."""
    rng = np.random.default_rng(int(key, 16))
    speech = speech / max(float(np.abs(speech).max()), 1e-6) * rng.uniform(*PEAK)
    power = float(np.mean(speech**2))
    lead, tail = (int(rng.uniform(*bounds) * SAMPLE_RATE) for bounds in (LEAD_SILENCE_S, TAIL_SILENCE_S))
    clip = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    noise = _pink(rng, clip.size) if rng.random() < 0.5 else rng.standard_normal(clip.size)
    noise *= np.sqrt(power / 10 ** (rng.uniform(*SNR_DB) / 10) / max(float(np.mean(noise**2)), 1e-12))
    return np.clip(clip + noise, -1.0, 1.0).astype(np.float32)


def _transcriber() -> SpeechEncoder:
    from encoders.speech import SpeechEncoder
    from mmdialog.settings import SpeechSettings

    return SpeechEncoder.from_settings(SpeechSettings(name="bundled:tiny.en", prompt=VOCABULARY_PROMPT))


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Whisper on short clips in one torch thread. Measured on 2 busy shared cores: 0.16 s a clip with one
    thread, 2.2 s with two (the threads wait on each other while other processes hold the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ClipTimings:
    made: int = 0
    reused: int = 0
    synthesis_s: float = 0.0
    transcription_s: float = 0.0


def _make_clip(text: str, voice: VoiceSetting, cache: Path, speaker: Speaker, encoder: SpeechEncoder,
               timings: ClipTimings) -> None:
    key = clip_key(text, voice)
    started = time.perf_counter()
    sf.write(cache / f"{key}.wav", dress(speaker.say(text, voice), key), SAMPLE_RATE, subtype="PCM_16")
    timings.synthesis_s += time.perf_counter() - started
    started = time.perf_counter()
    samples = load_audio(cache / f"{key}.wav")  # the 16-bit file, exactly as training will read it
    states, transcript = encoder.encode(samples)
    # The metadata says which speech model and window made the states: training uses them only if they match.
    settings = encoder.settings
    # One metadata key holding sorted JSON: safetensors writes several keys in no fixed order, and the
    # world must be byte-identical from one run to the next.
    made_by = json.dumps({"speech_model": settings.name, "min_window_seconds": settings.min_window_seconds},
                         sort_keys=True)
    save_file({"states": states.to(torch.float16).contiguous()}, str(cache / f"{key}.states.safetensors"),
              metadata={"made_by": made_by})
    timings.transcription_s += time.perf_counter() - started
    record = {"text": text, "voice": voice.id, "transcript": transcript or "",
              "seconds": round(samples.size / SAMPLE_RATE, 3)}
    (cache / f"{key}.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    timings.made += 1


def make_clips(requests: Iterable[tuple[str, VoiceSetting]], audio_dir: Path, cache: Path | None = None,
               progress: bool = True) -> tuple[dict[tuple[str, str], Clip], ClipTimings]:
    """Every requested (text, voice) clip in `audio_dir`, made or taken from `cache` (default: `audio_dir`).

    Returns the clips by (text, voice id) and how long making the new ones took.
    """
    cache = Path(cache or audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(requests), key=lambda r: (r[0], r[1].id))
    missing = [(t, v) for t, v in wanted if not (cache / f"{clip_key(t, v)}.json").is_file()]
    timings = ClipTimings(reused=len(wanted) - len(missing))
    if missing:
        speaker, encoder = Speaker(), _transcriber()
        with _one_torch_thread():
            for text, voice in tqdm(missing, desc="spoken questions", unit="clip", disable=not progress):
                _make_clip(text, voice, cache, speaker, encoder, timings)
    clips = {}
    for text, voice in wanted:
        key = clip_key(text, voice)
        if cache.resolve() != audio_dir.resolve():
            for suffix in (".wav", ".states.safetensors", ".json"):
                if not (audio_dir / f"{key}{suffix}").is_file():
                    shutil.copyfile(cache / f"{key}{suffix}", audio_dir / f"{key}{suffix}")
        record = json.loads((cache / f"{key}.json").read_text(encoding="utf-8"))
        clips[(text, voice.id)] = Clip(f"{audio_dir.name}/{key}.wav", text, voice.id, record["transcript"],
                                       record["seconds"])
    return clips, timings


def clip_table(clips: Iterable[Clip]) -> dict[str, dict]:
    """Clips by path, for world.json: what each file says, in which voice, and what Whisper heard."""
    return {c.path: {k: v for k, v in asdict(c).items() if k != "path"} for c in sorted(clips, key=lambda c: c.path)}
