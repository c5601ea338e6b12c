"""Training on the tiny preset: it learns, resumes exactly, freezes what it should."""

from __future__ import annotations

import pytest
import torch
from data_factory import write_colour_dataset

from mmdialog.config import load_config
from mmdialog.model import MultimodalDialogueModel
from mmdialog.training.trainer import Trainer


def tiny_training_config(tmp_path, data, *overrides, out="run"):
    return load_config("tiny", [
        f"train.data={data}", f"train.output_dir={tmp_path / out}", "train.batch_size=4",
        "train.lr_projector=5e-3", "train.lr_full=5e-3", "train.log_every=2", "train.save_every=1000",
        "speech.mode=features",
        # fp32 everywhere: equivalence checks compare runs exactly; auto picks bf16 on CPUs with native bf16.
        "train.mixed_precision=no", *overrides,
    ])


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("colours")
    train = write_colour_dataset(folder, dialogues=24, seed=0)
    valid = write_colour_dataset(folder, dialogues=9, seed=1, name="valid.jsonl")
    return train, valid


@pytest.mark.slow
def test_training_lowers_validation_loss_and_the_model_reloads(tmp_path, colour_data):
    train, valid = colour_data
    cfg = tiny_training_config(tmp_path, train, f"train.eval_data={valid}", "train.max_steps=200",
                               "train.eval_every=25", "train.warmup_steps=10")
    trainer = Trainer(cfg)
    before = trainer.evaluate()["loss"]
    result = trainer.train()
    after = result.best_eval_loss
    print(f"validation loss {before:.3f} -> {after:.3f}")
    assert after < before * 0.5
    out = result.output_dir
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "best" / "config.json").is_file() and (out / "model" / "config.json").is_file()
    assert any((out / "logs").rglob("events.out.tfevents*"))
    reloaded = MultimodalDialogueModel.from_pretrained(out / "best")
    dataset_item = trainer.eval_loader.dataset[0]
    assert reloaded.generate([dataset_item])[0] == dataset_item_target(trainer, 0)


def dataset_item_target(trainer, index):
    return trainer.eval_loader.dataset.target_text(index)


def final_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
@pytest.mark.parametrize("noise", ["0", "0.3"])
def test_resume_is_exact(tmp_path, colour_data, noise):
    train, _ = colour_data
    # Straight: 12 steps. Interrupted: 6 steps (saving a checkpoint), then resume to 12. With token noise, the
    # resumed run must draw the same noise as the straight one.
    steps = ("train.max_steps=12", f"train.token_noise={noise}")
    straight = Trainer(tiny_training_config(tmp_path, train, *steps, out="straight"))
    straight_result = straight.train()
    first = Trainer(tiny_training_config(tmp_path, train, *steps, "train.save_every=6", out="interrupted"))
    first.total_steps = 6  # stop half-way, as a kill after the checkpoint would
    first.train()
    second = Trainer(tiny_training_config(tmp_path, train, *steps, "train.save_every=6", out="interrupted"))
    resumed = second.train(resume=True)
    assert resumed.steps == 12
    assert abs(resumed.final_train_loss - straight_result.final_train_loss) < 1e-5
    a = final_weights(straight.accelerator.unwrap_model(straight.model))
    b = final_weights(second.accelerator.unwrap_model(second.model))
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


@pytest.mark.slow
def test_frozen_components_stay_bit_identical(tmp_path, colour_data):
    train, _ = colour_data
    cfg = tiny_training_config(tmp_path, train, "train.max_steps=5", "decoder.freeze=lora", "train.lr_lora=1e-2")
    trainer = Trainer(cfg)
    model = trainer.accelerator.unwrap_model(trainer.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed, "training changed nothing"
    assert changed <= trainable
    assert all(n.startswith("fusion.") or "lora_" in n for n in changed)
    # The speech encoder saw no audio in features mode? It did; and still must not change.
    assert not any(n.startswith(("speech.", "vision.")) for n in changed)


def test_parameter_groups_carry_their_own_learning_rates(tmp_path, colour_data):
    from mmdialog.training.optim import parameter_groups

    train, _ = colour_data
    cfg = tiny_training_config(tmp_path, train, "decoder.freeze=lora", "vision.freeze=full",
                               "train.lr_projector=1e-3", "train.lr_lora=2e-4", "train.lr_full=5e-5")
    model = MultimodalDialogueModel.from_config(cfg)
    groups = {g["name"]: g for g in parameter_groups(model, cfg.train)}
    assert groups["projector"]["lr"] == 1e-3 and groups["lora"]["lr"] == 2e-4 and groups["full"]["lr"] == 5e-5
    assert groups["full/no-decay"]["weight_decay"] == 0.0 and groups["full"]["weight_decay"] > 0
    grouped = sum(len(g["params"]) for g in groups.values())
    assert grouped == sum(1 for p in model.parameters() if p.requires_grad)
