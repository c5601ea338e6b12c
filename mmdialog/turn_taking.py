"""When has the person finished speaking, and are they interrupting? `TurnDetector`, fed with audio frames.

Independent of any front end: the Gradio page feeds it the microphone's stream, a test feeds it synthesized
audio. Each 32 ms frame gets a speech probability from the voice activity detector (encoders/vad.py):

- speech starts at the first voiced frame, but counts only once `min_speech_ms` of it has come (coughs,
  clicks and 100 ms blips never make a turn), and is announced then (`speech_start`);
- the turn ends after `end_of_turn_ms` without speech (`turn`, with its audio: a short pause inside a
  sentence does not split it);
- while the assistant is speaking, its own voice comes back through the microphone: only speech that is
  louder (`barge_in_dbfs`) and clearly voiced (`barge_in_threshold`) for `barge_in_ms` counts, and it is
  announced as `barge_in`: the front end stops playback, and the speech goes on into the next turn.

Times are seconds from the start of the stream, counted in samples (not wall-clock), so they are exact.
The detector's probability rises a little after a soft onset (an "s") and falls a little before a soft end,
so the boundaries are then moved over the neighbouring frames that are still clearly above the room's noise
floor (tracked on the frames without speech).
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from encoders.audio_io import resample, to_mono_float
from encoders.vad import FRAME, SAMPLE_RATE, SileroVAD
from mmdialog.settings import TurnTakingSettings

FRAME_MS = 1000 * FRAME / SAMPLE_RATE
_TAIL_FRAMES = 3  # a little silence after the last voiced frame, so the last word is not clipped
_ABOVE_FLOOR_DB = 12.0  # a frame this far above the noise floor is still part of the speech at its edges
_MAX_EDGE_FRAMES = 6  # and a boundary moves at most this far (about 200 ms)


@dataclass
class TurnEvent:
    kind: Literal["speech_start", "barge_in", "turn"]
    start: float  # seconds: the first voiced frame
    end: float | None = None  # seconds: the end of the last voiced frame (turn only)
    audio: np.ndarray | None = None  # the turn's speech, 16 kHz mono float32 (turn only)


@dataclass
class _Candidate:
    onset: int  # frame index of the first voiced frame
    frames: list[np.ndarray] = field(default_factory=list)
    loud: list[bool] = field(default_factory=list)  # per frame: clearly above the noise floor
    voiced: int = 0
    last_voiced: int = 0
    silent: int = 0  # voiceless frames since the last voiced one
    announced: bool = False


def frame_dbfs(frame: np.ndarray) -> float:
    return float(20 * np.log10(max(np.sqrt(np.mean(frame.astype(np.float64) ** 2)), 1e-10)))


class TurnDetector:
    def __init__(self, settings: TurnTakingSettings | None = None, max_turn_seconds: float = 60.0,
                 vad: SileroVAD | None = None):
        self.settings = settings or TurnTakingSettings()
        self.max_turn_frames = int(max_turn_seconds * 1000 / FRAME_MS)
        self.vad = vad or SileroVAD()
        # Set by the front end while the reply is playing; a barge-in clears it.
        self.assistant_speaking = False
        self._pending = np.zeros(0, dtype=np.float32)
        self._frame_index = 0
        self._before: deque[tuple[np.ndarray, bool]] = deque(
            maxlen=max(1, round(self.settings.pre_roll_ms / FRAME_MS)))
        self._candidate: _Candidate | None = None
        self._floor_db: float | None = None  # the room's noise level, from frames without speech

    @property
    def in_speech(self) -> bool:
        """True once speech has been announced and its turn has not ended yet."""
        return self._candidate is not None and self._candidate.announced

    def feed(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[TurnEvent]:
        """Take the next piece of the stream (any length, any rate, int or float PCM, mono or (n, channels));
        returns what it completed, in order."""
        if np.size(audio) == 0:
            return []
        samples = to_mono_float(audio)  # int16 PCM from a browser, floats from a file, mono or not
        if sample_rate != SAMPLE_RATE:
            samples = resample(samples, sample_rate, SAMPLE_RATE)
        self._pending = np.concatenate([self._pending, samples])
        whole = len(self._pending) // FRAME * FRAME
        frames, self._pending = self._pending[:whole].reshape(-1, FRAME), self._pending[whole:]
        return [event for frame in frames for event in self._frame(frame)]

    def _is_voiced(self, frame: np.ndarray, level: float) -> bool:
        probability = self.vad(frame)
        if self.assistant_speaking:
            s = self.settings
            return probability >= s.barge_in_threshold and level >= s.barge_in_dbfs
        return probability >= self.settings.threshold

    def _track_floor(self, level: float) -> None:
        """Down at once, up slowly: a noise floor that a word's tail cannot drag up."""
        floor = self._floor_db
        self._floor_db = level if floor is None or level < floor else floor + 0.05 * (level - floor)

    def _frame(self, frame: np.ndarray) -> list[TurnEvent]:
        index = self._frame_index
        self._frame_index += 1
        level = frame_dbfs(frame)
        voiced = self._is_voiced(frame, level)
        loud = self._floor_db is not None and level >= self._floor_db + _ABOVE_FLOOR_DB
        candidate = self._candidate
        if candidate is None:
            if not voiced:
                self._track_floor(level)
                self._before.append((frame, loud))
                return []
            before = list(self._before)
            onset = index - min(_trailing_true([was_loud for _, was_loud in before]), _MAX_EDGE_FRAMES)
            candidate = self._candidate = _Candidate(onset=onset, frames=[f for f, _ in before],
                                                     loud=[was_loud for _, was_loud in before])
            self._before.clear()
        candidate.frames.append(frame)
        candidate.loud.append(loud)
        if voiced:
            candidate.voiced, candidate.last_voiced, candidate.silent = candidate.voiced + 1, index, 0
        else:
            candidate.silent += 1
        events = []
        s = self.settings
        needed_ms = s.barge_in_ms if self.assistant_speaking else s.min_speech_ms
        if not candidate.announced and candidate.voiced * FRAME_MS >= needed_ms:
            candidate.announced = True
            events.append(TurnEvent("barge_in" if self.assistant_speaking else "speech_start",
                                    start=self._seconds(candidate.onset)))
            self.assistant_speaking = False
        if candidate.silent * FRAME_MS >= s.end_of_turn_ms or len(candidate.frames) >= self.max_turn_frames:
            self._candidate = None
            if candidate.announced:
                events.append(self._turn(candidate))
        return events

    def _turn(self, candidate: _Candidate) -> TurnEvent:
        # The end is where the sound stops: forward over loud frames after the last voiced one (a soft tail),
        # or back over quiet frames the detector still called voice (its probability lags the sound).
        voiced_end = len(candidate.loud) - candidate.silent  # frames up to the last voiced one
        forward = min(_leading_true(candidate.loud[voiced_end:]), _MAX_EDGE_FRAMES)
        back = 0 if forward else min(_trailing_true([not x for x in candidate.loud[:voiced_end]]), _MAX_EDGE_FRAMES)
        end = candidate.last_voiced + 1 + forward - back
        keep = voiced_end + min(candidate.silent, _TAIL_FRAMES + forward)
        return TurnEvent("turn", start=self._seconds(candidate.onset), end=self._seconds(end),
                         audio=np.concatenate(candidate.frames[:keep]))

    @staticmethod
    def _seconds(frame_index: int) -> float:
        return frame_index * FRAME / SAMPLE_RATE


def _leading_true(flags: list[bool]) -> int:
    return sum(1 for _ in itertools.takewhile(bool, flags))


def _trailing_true(flags: list[bool]) -> int:
    return _leading_true(flags[::-1])
