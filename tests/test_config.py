"""Config loading: presets, YAML files, overrides, and one clear line for every mistake."""

from __future__ import annotations

import pytest
import torch

from mmdialog.config import config_from_dict, config_to_dict, load_config, preset_names
from mmdialog.errors import ConfigError, ModelNotAvailableError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import Freeze, SpeechMode


def test_presets_are_found_and_typed():
    assert {"tiny", "base"} <= set(preset_names())
    cfg = load_config("tiny")
    assert cfg.speech.mode == SpeechMode.both
    assert cfg.decoder.freeze == Freeze.full


def test_overrides_are_applied_and_typed():
    cfg = load_config("tiny", ["speech.mode=features", "generation.max_new_tokens=5", "decoder.freeze=lora"])
    assert cfg.speech.mode == SpeechMode.features
    assert cfg.generation.max_new_tokens == 5
    assert cfg.decoder.freeze == Freeze.lora


@pytest.mark.parametrize(
    ("overrides", "must_say"),
    [
        (["decoder.frezee=lora"], ["decoder.frezee", "freeze"]),
        (["speech.mode=loud"], ["speech.mode", "transcript", "features", "both"]),
        (["generation.max_new_tokens=many"], ["generation.max_new_tokens"]),
        (["nonsense"], ["key.sub=value"]),
    ],
)
def test_bad_overrides_give_one_clear_line(overrides, must_say):
    with pytest.raises(ConfigError) as error:
        load_config("tiny", overrides)
    message = str(error.value)
    assert "\n" not in message
    for words in must_say:
        assert words in message


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config("no-such-preset")


def test_yaml_file_with_bad_key_and_relative_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("vision:\n  nmae: x\n")
    with pytest.raises(ConfigError, match="vision.nmae"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("decoder:\n  name: ./my-decoder\n")
    assert load_config(good).decoder.name == str((tmp_path / "my-decoder").resolve())


def test_config_round_trips_through_a_dict():
    cfg = load_config("tiny", ["speech.mode=transcript"])
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_loading_base_offline_names_every_missing_model():
    cfg = load_config("base")
    with pytest.raises(ModelNotAvailableError) as error:
        MultimodalDialogueModel.from_config(cfg)
    problems = error.value.problems
    text = "\n".join(problems)
    assert len(problems) == 3, text
    for name in ("'base'", "openai/clip-vit-base-patch32", "google/flan-t5-base"):
        assert name in text
    assert all(p.count("\n") == 0 and "not available" in p for p in problems)


@pytest.mark.parametrize("recipe", ["train/projector_alignment", "train/projector_lora", "train/full_finetune"])
def test_training_recipes_extend_the_base_preset(recipe):
    cfg = load_config(recipe)
    assert cfg.decoder.name == "google/flan-t5-base"
    assert cfg.train.output_dir.startswith("runs/")


def test_extends_layers_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "parent.yaml").write_text("extends: tiny\ngeneration: {max_new_tokens: 3}\ncheckpoint: ./ckpt\n")
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../parent.yaml\ngeneration: {num_beams: 2}\n")
    cfg = load_config(tmp_path / "sub" / "child.yaml")
    assert cfg.name == "tiny" and cfg.generation.max_new_tokens == 3 and cfg.generation.num_beams == 2
    assert cfg.checkpoint == str((tmp_path / "ckpt").resolve())
    (tmp_path / "loop.yaml").write_text("extends: ./loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")


def test_a_bare_no_for_a_precision_means_no():
    """YAML reads `no` as false; a precision setting must not take that for an unknown value (on a GPU, runtime
    would then fall back to bf16)."""
    from mmdialog.device import autocast_dtype
    from mmdialog.training.trainer import mixed_precision

    cfg = load_config("tiny", ["train.mixed_precision=no", "runtime.precision=no"])
    assert mixed_precision(cfg.train.mixed_precision) == "no"
    assert autocast_dtype(cfg.runtime, torch.device("cuda")) is None
    assert mixed_precision("bf16") == "bf16" and mixed_precision("fp32") == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision: 'half' is not a precision"):
        mixed_precision("half")


def test_auto_precision_avoids_emulated_bf16_on_the_cpu(monkeypatch, caplog):
    """Where the CPU has no bf16 instructions, autocast emulates bf16 about 25 times slower than fp32."""
    from mmdialog.training import trainer

    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: False)
    assert trainer.mixed_precision("auto", on_gpu=False) == "no"
    assert trainer.mixed_precision("bf16", on_gpu=False) == "bf16"
    assert "without native bf16" in caplog.text
    monkeypatch.setattr(trainer, "cpu_has_native_bf16", lambda: True)
    assert trainer.mixed_precision("auto", on_gpu=False) == "bf16"
