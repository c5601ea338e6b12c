"""Soak: many conversations, one after another, in one server process, as a kiosk's day goes.

Each conversation shows a new picture, asks by voice and by typing for a few turns, then ends: most are
reset, some abandoned until they expire. Resident memory must not keep growing after warm-up (at most 10%),
and the upload folder must not grow: every ended conversation's files are gone.
`pytest tests/test_soak.py --soak-turns 500` runs the full soak; CI runs a shorter one.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import psutil
import pytest
import soundfile as sf
from gradio_client import Client, handle_file
from test_app import TIMEOUT, demo_pipeline, serving

import app.api
from app.files import AppFiles
from mmdialog.synth.render import draw, placed

pytestmark = pytest.mark.slow

COLOURS = ("yellow", "blue", "green", "orange", "purple")
TYPED = ("what color is the circle?", "what do you see?", "is there a star?", "where is the circle?")
TURNS_PER_CONVERSATION = 5
ABANDON_EVERY = 4  # every 4th conversation is left to expire instead of being reset
IDLE_SECONDS = 2.0


def folder_size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def resident_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def test_soak(request, tmp_path, monkeypatch) -> None:
    total_turns = request.config.getoption("--soak-turns")
    monkeypatch.setattr(app.api, "API_IDLE_SECONDS", IDLE_SECONDS)
    monkeypatch.setattr(AppFiles, "fresh_upload_seconds", 1.0)
    pipeline = demo_pipeline()
    voice = pipeline.speech_out
    spoken = tmp_path / "question.wav"
    sf.write(spoken, voice.speak_all("what color is the circle?"), voice.sample_rate)
    uploads = tmp_path / "uploads"
    warm_up = max(25, total_turns // 5)
    done, conversations, errors = 0, 0, []
    memory, files_after_end = {}, []
    with serving(pipeline, uploads) as (url, _):
        client = Client(url, verbose=False, download_files=False)
        baseline_files = folder_size(uploads)
        while done < total_turns:
            colour, other = COLOURS[conversations % 5], COLOURS[(conversations + 2) % 5]
            picture = draw(tmp_path / f"picture-{conversations}.png", placed(colour, "circle", conversations % 3),
                           placed(other, "star", (conversations + 1) % 3))
            session_id = ""
            for t in range(TURNS_PER_CONVERSATION):
                image = handle_file(str(picture)) if t == 0 else None
                audio = handle_file(str(spoken)) if t == 1 else None
                text = "" if t == 1 else TYPED[(conversations + t) % len(TYPED)]
                result = client.submit(text, image, audio, session_id, api_name="/turn").result(timeout=TIMEOUT)
                session_id, error = result[4], result[5]
                if error:
                    errors.append(f"conversation {conversations}, turn {t}: {error}")
                done += 1
                if done == warm_up:
                    memory["after warm-up"] = resident_mb()
            if conversations % ABANDON_EVERY != ABANDON_EVERY - 1:
                client.predict(session_id, api_name="/reset")
            conversations += 1
            files_after_end.append(folder_size(uploads)[0])
        time.sleep(IDLE_SECONDS + 0.5)
        client.predict("", api_name="/reset")  # any call expires the abandoned ones
        memory["at the end"] = resident_mb()
        final_files = folder_size(uploads)
    growth = memory["at the end"] / memory["after warm-up"] - 1
    print(f"{done} turns in {conversations} conversations; resident memory {memory} MB, growth {growth:.1%}; "
          f"upload folder files after each conversation: max {max(files_after_end)}, "
          f"at the end {final_files[0]} ({final_files[1]} bytes; {baseline_files[0]} at the start)")
    assert errors == []
    assert growth <= 0.10
    # Abandoned conversations hold their files until they expire, so a few are on disk at any moment.
    assert max(files_after_end) <= baseline_files[0] + 3 * TURNS_PER_CONVERSATION * 2
    assert final_files[0] <= baseline_files[0] + 1, "files of ended conversations were left behind"
