"""Evaluation metrics and the `eval` / `train` commands end to end on the tiny preset."""

from __future__ import annotations

import json

import pytest
from data_factory import write_colour_dataset
from typer.testing import CliRunner

from mmdialog.cli import app
from mmdialog.config import load_config
from mmdialog.errors import ConfigError
from mmdialog.evaluation import Scored, groups_of, normalize_answer, report, summarize
from mmdialog.loading import load_model


def test_exact_match_ignores_case_and_punctuation():
    assert normalize_answer(" The Circle is RED. ") == "the circle is red"
    perfect = summarize([Scored("Red.", "red", 1.0, 2, {}), Scored("two", "two", 1.0, 2, {})])
    assert perfect["exact_match"] == 1.0 and perfect["rouge_l"] == 1.0
    half = summarize([Scored("blue", "red", 1.0, 2, {}), Scored("two", "two", 1.0, 2, {})])
    assert half["exact_match"] == 0.5 and abs(half["loss"] - 0.5) < 1e-9


def test_report_breaks_down_by_group():
    scored = [Scored("a", "a", 0.0, 1, {"modality": "image", "family": "colour"}),
              Scored("b", "c", 0.0, 1, {"modality": "text", "family": "greeting"})]
    result = report(scored)
    assert result["by_modality"]["image"]["exact_match"] == 1.0
    assert result["by_family"]["greeting"]["exact_match"] == 0.0


def test_held_out_slices_are_also_reported_per_input_form():
    meta = {"family": "shape", "form": "spoken+image", "unseen_phrasing": True, "unseen_voice": False}
    assert groups_of("audio+image", meta) == {
        "modality": "audio+image", "family": "shape", "form": "spoken+image", "family_by_form": "spoken+image/shape",
        "unseen_phrasing": "yes", "unseen_phrasing_by_form": "spoken+image/yes",
        "unseen_voice": "no", "unseen_voice_by_form": "spoken+image/no"}
    assert groups_of("text", {"unseen_combo": False}) == {"modality": "text", "unseen_combo": "no"}


@pytest.mark.slow
def test_train_then_eval_from_the_command_line(tmp_path):
    data = write_colour_dataset(tmp_path, dialogues=8)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", "tiny", f"train.data={data}", "train.max_steps=3",
                                  f"train.output_dir={tmp_path / 'run'}", "speech.mode=features"])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["eval", "--config", "tiny", f"checkpoint={tmp_path / 'run' / 'model'}",
                                 "--data", str(data), "--json", "--ablations"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert set(metrics) == {"normal", "image_zeroed", "speech_features_only", "chance_by_family"}
    assert metrics["normal"]["overall"]["examples"] > 0
    assert {"image", "audio+image"} <= set(metrics["normal"]["by_modality"])


def test_checkpoint_architecture_cannot_be_overridden(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "m")
    cfg = load_config("tiny", [f"checkpoint={tmp_path / 'm'}", "generation.max_new_tokens=2"])
    model = load_model(cfg, ["generation.max_new_tokens=2", "speech.mode=transcript"])
    assert model.config.generation.max_new_tokens == 2
    with pytest.raises(ConfigError, match="fixed by the checkpoint"):
        load_model(cfg, ["decoder.freeze=lora"])


def test_a_bad_command_line_is_one_error_line():
    result = CliRunner().invoke(app, ["eval", "--config", "tiny"])
    assert result.exit_code == 2
    assert "nothing to evaluate" in result.output
