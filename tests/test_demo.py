"""The offline demo: the shipped model answers about a picture it never saw, and its recipe is reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from mmdialog.cli import app
from mmdialog.config import load_config
from mmdialog.data.dataset import DialogueDataset
from mmdialog.data.format import load_dialogues, write_dialogues
from mmdialog.evaluation import report, score_dataset
from mmdialog.model import MultimodalDialogueModel
from mmdialog.synth import generate_world
from mmdialog.synth.render import draw, placed
from mmdialog.synth.speech import PIPER_VOICES, Speaker
from mmdialog.training.trainer import Trainer

pytestmark = pytest.mark.real_weights


@pytest.fixture(scope="module")
def demo_pipeline():
    from mmdialog.pipeline import DialoguePipeline

    return DialoguePipeline.from_config(None, ["tts.backend=none"])


def test_chat_answers_about_a_picture_with_no_config(tmp_path: Path) -> None:
    image = draw(tmp_path / "scene.png", placed("yellow", "circle", 0), placed("blue", "star", 2))
    result = subprocess.run(
        [sys.executable, "-m", "mmdialog.cli", "chat", "--text", "what color is the circle?", "--image", str(image),
         "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["reply"] == "yellow"
    assert Path(answer["audio_path"]).is_file() and answer["timings_ms"]["ttfa"] > 0


def test_a_follow_up_refers_to_the_first_turns_picture(demo_pipeline, tmp_path: Path) -> None:
    image = draw(tmp_path / "scene.png", placed("green", "circle", 1), placed("orange", "cross", 2))
    session = demo_pipeline.new_session()
    assert demo_pipeline.respond(session, text="is there a circle?", image=image).text == "yes"
    assert demo_pipeline.respond(session, text="what colour is it?").text == "green"
    other = demo_pipeline.new_session()
    described = demo_pipeline.respond(other, text="what do you see?", image=image).text
    # Both objects and nothing else. Their order (left to right) is the describe family's weak point, which
    # `mmdialog eval` measures (exact match 0.90 typed on the test split); here it depends on the drawing.
    assert sorted(described.split(" and ")) == ["a green circle", "an orange cross"], described


def test_parallel_sessions_never_see_each_others_picture(demo_pipeline, tmp_path: Path) -> None:
    pictures = {"purple": draw(tmp_path / "a.png", placed("purple", "star", 0)),
                "yellow": draw(tmp_path / "b.png", placed("yellow", "star", 2))}
    answers: dict[str, list[str]] = {colour: [] for colour in pictures}

    def converse(colour: str) -> None:
        session = demo_pipeline.new_session()
        demo_pipeline.respond(session, text="hello", image=pictures[colour])
        for _ in range(3):
            answers[colour].append(demo_pipeline.respond(session, text="what color is the star?").text)

    threads = [threading.Thread(target=converse, args=(colour,)) for colour in pictures]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {colour: [colour] * 3 for colour in pictures}


def test_eval_hear_listens_to_a_clip_instead_of_its_stored_transcript(tmp_path: Path) -> None:
    draw(tmp_path / "scene.png", placed("red", "square", 0), placed("blue", "circle", 2))
    sf.write(tmp_path / "question.wav", Speaker().say("what color is the circle?", PIPER_VOICES[1]), 16000)
    wrong = "what color is the square?"
    write_dialogues(tmp_path / "test.jsonl", [{"id": "heard", "turns": [
        {"role": "user", "text": "<image> <audio>", "images": ["scene.png"],
         "audio": [{"path": "question.wav", "transcript": wrong}]},
        {"role": "assistant", "text": "blue"}]}])

    def exact_match(*flags: str) -> float:
        # Transcript only: the answer then depends on nothing but the words the model was given.
        result = CliRunner().invoke(app, ["eval", "speech.mode=transcript", "--data", str(tmp_path), "--json", *flags])
        assert result.exit_code == 0, result.output
        return json.loads(result.output.strip().splitlines()[-1])["normal"]["overall"]["exact_match"]

    assert exact_match() == 0.0  # the stored transcript asks about the red square
    assert exact_match("--hear") == 1.0


@pytest.mark.slow
def test_a_reduced_recipe_retrains_from_scratch(tmp_path: Path) -> None:
    """configs/train/demo.yaml, smaller (fewer scenes and steps, typed questions only): floors on test accuracy."""
    world = tmp_path / "world"
    generate_world(world, seed=11, scenes_train=1500, scenes_valid=50, scenes_test=200, spoken=False,
                   progress=False)
    cfg = load_config("train/demo", [
        f"train.data={world}/train.jsonl", f"train.output_dir={tmp_path}/run", f"train.max_steps={REDUCED_STEPS}",
        f"train.vision_pretraining.scenes={world}/scenes.jsonl", "train.vision_pretraining.steps=300",
        "train.eval_every=100000", "train.save_every=100000", "train.speech_modes=[]",
    ])
    Trainer(cfg).train()
    model = MultimodalDialogueModel.from_pretrained(tmp_path / "run" / "model").eval()
    dialogues, _ = load_dialogues(world / "test.jsonl")
    scores = report(score_dataset(model, DialogueDataset(dialogues, model)))
    forms = scores["by_form"]
    print("reduced recipe:", {form: round(v["exact_match"], 3) for form, v in forms.items()},
          {k: round(v["yes"]["exact_match"], 3) for k, v in scores.items() if k.startswith("by_unseen") and "yes" in v})
    assert forms["typed+image"]["exact_match"] >= FLOOR_TYPED_IMAGE, scores
    assert forms["typed"]["exact_match"] >= FLOOR_TYPED, scores


# Measured: 0.75 and 0.91 in about 4 minutes on 2 cores with bf16 autocast and the recipe's sample weights
# (0.77 and 0.93 without them; the test split holds unseen colour-shape pairs and phrasings, 0.66 and 0.76 on
# those); 0.76 and 0.92 in 7.5 minutes in fp32 on a CPU without native bf16 (unseen 0.69 and 0.75); chance
# for the image families is about 0.25, and the full recipe reaches 0.96 on the same kind of split. 500 steps
# gave 0.60.
REDUCED_STEPS = 1200
FLOOR_TYPED_IMAGE = 0.65
FLOOR_TYPED = 0.85


def test_info_shows_the_shipped_checkpoint_s_components() -> None:
    result = subprocess.run([sys.executable, "-m", "mmdialog.cli", "info", "--json"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    components = json.loads(result.stdout.strip().splitlines()[-1])["components"]
    assert components["vision"]["parameters"] > 0 and components["fusion"]["trainable"] > 0
