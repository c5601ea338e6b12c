"""Runs every scenario through our pipeline and the naive cascade, interleaved in one process, and sums up.

Interleaving (ours, naive, ours, naive, ...) spreads the machine's noise over both sides alike, so their
ratio means something even on a shared machine. Reported per scenario and side: median and p90 of every
stage and of time to first audio (TTFA), decoder tokens per second; then naive / ours for each median.
"""

from __future__ import annotations

import re
import resource
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmdialog.benchmark.naive import NaiveCascade
from mmdialog.benchmark.scenarios import Scenario, build_scenarios
from mmdialog.pipeline import DialoguePipeline

SIDES = ("ours", "naive")


class FixedSentenceVoice:
    """Says one fixed sentence whatever it is given: the text of random weights is not worth speaking, but the
    time the voice takes must still be part of every turn."""

    SENTENCE = "The yellow circle is on the left, next to a blue star."

    def __init__(self, voice):
        self.voice = voice
        self.sample_rate = voice.sample_rate

    def speak(self, text: str):
        yield from self.voice.speak(self.SENTENCE)

    def speak_all(self, text: str):
        return self.voice.speak_all(self.SENTENCE)


def non_word_token_ids(tokenizer) -> list[int]:
    """Every token that does not decode to plain letters and spaces. Suppressed when replies are forced, so
    random weights write a speakable line: no empty text from special tokens, no sentence breaks."""
    word = re.compile(r"[A-Za-z ]+")
    suppressed = []
    for index in range(len(tokenizer)):
        try:
            text = tokenizer.decode([index], skip_special_tokens=True)
        except ValueError:  # byte tokenizers cannot decode ids past their bytes
            text = ""
        if not word.fullmatch(text):
            suppressed.append(index)
    return suppressed


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": percentile(values, 90), "n": len(values)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _ours(pipeline: DialoguePipeline, scenario: Scenario, **generation) -> list[tuple[str, dict[str, float]]]:
    session = pipeline.new_session()
    turns = []
    for turn in scenario.turns:
        reply = pipeline.respond(session, text=turn.text or None, image=turn.image, audio=turn.audio, **generation)
        if reply.error is not None:  # a failed turn's timings stop where it failed: they must not join the medians
            raise RuntimeError(f"a turn of scenario {scenario.name} failed ({reply.error}); see the log above")
        turns.append((reply.text, reply.timings_ms))
    return turns


def _naive(pipeline: DialoguePipeline, scenario: Scenario, **generation) -> list[tuple[str, dict[str, float]]]:
    cascade = NaiveCascade(pipeline)
    return [cascade.respond(text=t.text, image=t.image, audio=t.audio, **generation) for t in scenario.turns]


def _tokens_per_second(pipeline: DialoguePipeline, reply: str, timings: dict[str, float]) -> float | None:
    tokens = len(pipeline.model.tokenizer(reply, add_special_tokens=False)["input_ids"]) + 1  # and EOS
    seconds = timings.get("generation", 0.0) / 1000.0
    return tokens / seconds if seconds > 0 else None


def _scenario_report(pipeline: DialoguePipeline, runs: dict[str, list[list[tuple[str, dict]]]]) -> dict:
    report: dict = {}
    for side in SIDES:
        stages: dict[str, list[float]] = defaultdict(list)
        by_turn: dict[int, list[float]] = defaultdict(list)  # TTFA against the turns of history
        later_vision: list[float] = []  # vision time in the turns after the first
        speeds = []
        for turns in runs[side]:
            for index, (reply, timings) in enumerate(turns):
                for stage, value in timings.items():
                    stages[stage].append(value)
                if "ttfa" in timings and "first_audio_chunk" in timings:
                    # What is left when the voice's own time for the first sentence is taken away.
                    stages["ttfa_minus_first_synthesis"].append(timings["ttfa"] - timings["first_audio_chunk"])
                by_turn[index].append(timings.get("ttfa", timings["total"]))
                if index > 0:
                    later_vision.append(timings.get("vision_encode", 0.0))
                speed = _tokens_per_second(pipeline, reply, timings)
                if speed is not None:
                    speeds.append(speed)
        report[side] = {
            "stages_ms": {stage: summary(values) for stage, values in sorted(stages.items())},
            "tokens_per_second": summary(speeds) if speeds else None,
            "replies": sorted({reply for turns in runs[side] for reply, _ in turns}),
        }
        if later_vision:
            report[side]["vision_ms_after_first_turn"] = summary(later_vision)
            report[side]["ttfa_by_turn_ms"] = [summary(by_turn[i]) for i in sorted(by_turn)]
    ours, naive = report["ours"]["stages_ms"], report["naive"]["stages_ms"]
    report["ratio_naive_over_ours"] = {
        stage: naive[stage]["median"] / ours[stage]["median"]
        for stage in sorted(set(ours) & set(naive)) if ours[stage]["median"] > 0
    }
    return report


def concurrency_sweep(pipeline: DialoguePipeline, scenario: Scenario, levels: tuple[int, ...],
                      turns_each: int, **generation) -> list[dict]:
    """`n` sessions in parallel threads, each asking the scenario `turns_each` times: throughput and p90 TTFA."""
    def converse(ttfa: list[float], lock: threading.Lock) -> None:
        for _ in range(turns_each):
            for _, timings in _ours(pipeline, scenario, **generation):
                with lock:
                    ttfa.append(timings.get("ttfa", timings["total"]))

    results = []
    for sessions in levels:
        ttfa: list[float] = []
        lock = threading.Lock()
        threads = [threading.Thread(target=converse, args=(ttfa, lock)) for _ in range(sessions)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        results.append({"sessions": sessions, "turns": len(ttfa), "turns_per_second": len(ttfa) / elapsed,
                        "ttfa_ms": summary(ttfa)})
    return results


def run_benchmark(pipeline: DialoguePipeline, workdir: Path, repeats: int = 5,
                  concurrency: tuple[int, ...] = (1, 2, 4, 8), concurrency_turns: int = 3,
                  only: set[str] | None = None, forced_tokens: int | None = None) -> dict:
    """`forced_tokens`: every reply exactly that many tokens long (for random weights, which never stop)."""
    generation = {}
    if forced_tokens:
        generation = {"min_new_tokens": forced_tokens, "max_new_tokens": forced_tokens,
                      "suppress_tokens": non_word_token_ids(pipeline.model.tokenizer)}
    scenarios = [s for s in build_scenarios(pipeline, workdir) if not only or s.name in only]
    _ours(pipeline, scenarios[0], **generation)  # warm-up: first calls pay for lazy initialisation
    _naive(pipeline, scenarios[0], **generation)
    runs: dict[str, dict[str, list]] = {s.name: {side: [] for side in SIDES} for s in scenarios}
    for _ in range(repeats):
        for scenario in scenarios:
            runs[scenario.name]["ours"].append(_ours(pipeline, scenario, **generation))
            runs[scenario.name]["naive"].append(_naive(pipeline, scenario, **generation))
    by_scenario = {s.name: {"audio_seconds": s.audio_seconds, "turns": len(s.turns),
                            **_scenario_report(pipeline, runs[s.name])} for s in scenarios}
    pictured = next((s for s in scenarios if s.name == "typed+image"), scenarios[0])
    return {
        "config": pipeline.config.name,
        "repeats": repeats,
        "scenarios": by_scenario,
        "forced_tokens": forced_tokens,
        "concurrency": (concurrency_sweep(pipeline, pictured, concurrency, concurrency_turns, **generation)
                        if concurrency else []),
        "peak_rss_mb": peak_rss_mb(),
    }
