"""End of speech to the first sound of the answer, hands-free, on a preset (default: the demo).

Questions in the Piper voice are fed to a HandsFreeConversation as a microphone would deliver them: 250 ms
chunks in real time, with room noise. Measured per turn: from the moment the last speech sample was
captured to the first audio piece of the answer, which includes waiting for the end-of-turn pause
(turn_taking.end_of_turn_ms). Prints each turn and the median.

    python scripts/hands-free-latency.py [--config C] [--turns 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from encoders.audio_io import resample
from encoders.vad import SAMPLE_RATE
from mmdialog.hands_free import HandsFreeConversation
from mmdialog.pipeline import DialoguePipeline
from mmdialog.synth.render import draw, placed

QUESTIONS = ("what color is the circle?", "what do you see?", "is there a star?", "where is the circle?",
             "how many objects are there?")
CHUNK = SAMPLE_RATE // 4


def last_loud_sample(audio: np.ndarray) -> int:
    """Where the speech really ends: the end of the last 10 ms above -45 dBFS (the voice adds some silence)."""
    windows = audio[: len(audio) // 160 * 160].reshape(-1, 160)
    loud = np.flatnonzero(20 * np.log10(np.sqrt(np.mean(windows**2, axis=1)) + 1e-10) > -45)
    return int((loud[-1] + 1) * 160)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--turns", type=int, default=10)
    args = parser.parse_args()
    pipeline = DialoguePipeline.from_config(args.config)
    voice = pipeline.speech_out
    rng = np.random.default_rng(0)
    conversation = HandsFreeConversation(pipeline)
    conversation.image = draw(Path(tempfile.mkdtemp()) / "scene.png", placed("green", "circle", 0),
                              placed("purple", "star", 2))
    print(f"end of turn after {pipeline.config.turn_taking.end_of_turn_ms} ms of silence")
    latencies = []
    for index in range(args.turns):
        speech = resample(voice.speak_all(QUESTIONS[index % len(QUESTIONS)]), voice.sample_rate, SAMPLE_RATE)
        stream = np.concatenate([np.zeros(SAMPLE_RATE // 2), speech, np.zeros(2 * SAMPLE_RATE)]).astype(np.float32)
        stream += rng.normal(0, 10 ** (-55 / 20), len(stream)).astype(np.float32)
        speech_end = SAMPLE_RATE // 2 + last_loud_sample(speech)
        started, turn = time.monotonic(), None
        for offset in range(0, len(stream), CHUNK):  # a microphone: each chunk arrives once it is recorded
            time.sleep(max(0.0, started + (offset + CHUNK) / SAMPLE_RATE - time.monotonic()))
            turn = next((e for e in conversation.listen(stream[offset:offset + CHUNK]) if e.kind == "turn"), None)
            if turn is not None:
                break
        assert turn is not None, "no turn detected"
        end_of_speech, detected = started + speech_end / SAMPLE_RATE, time.monotonic()
        for event in conversation.respond(turn):
            if event.kind == "audio":
                latencies.append((time.monotonic() - end_of_speech) * 1000)
                conversation.interrupt()  # the next question at once (the rest is not needed here)
                break
        print(f"turn {index + 1}: {latencies[-1]:.0f} ms (turn detected after {(detected - end_of_speech) * 1000:.0f}"
              f" ms, answered {(time.monotonic() - detected) * 1000:.0f} ms later)")
    print(f"median end of speech -> first audio: {statistics.median(latencies):.0f} ms over {len(latencies)} turns")


if __name__ == "__main__":
    main()
