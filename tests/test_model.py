"""The fused model on the `tiny` preset: every modality combination, freezing policies, save/load, generation."""

from __future__ import annotations

import pytest
import torch
from conftest import audio_media, build_tiny, fit, image_media

from mmdialog.dialogue import Turn, build_model_input
from mmdialog.model import MultimodalDialogueModel


def sample(model, text="what is it?", image=False, audio=False, target="a red circle", color=(255, 0, 0)):
    media = []
    if image:
        media.append(image_media(model, color))
        text = "<image> " + text
    if audio:
        media.append(audio_media(model))
        text = text + " <audio>"
    turn = Turn("user", text, media)
    cfg = model.config
    return build_model_input([turn], model.tokenizer, cfg.dialogue, cfg.speech.mode, model.soft_token_count,
                             target=target)


COMBINATIONS = {
    "text": [dict()],
    "text+image": [dict(image=True)],
    "text+audio": [dict(audio=True)],
    "all three": [dict(image=True, audio=True)],
    "mixed batch": [dict(), dict(image=True), dict(audio=True), dict(image=True, audio=True)],
}


@pytest.mark.parametrize("combo", list(COMBINATIONS))
def test_forward_backward_every_modality_combination(combo):
    model = build_tiny().train()
    inputs = [sample(model, **kw) for kw in COMBINATIONS[combo]]
    loss = model(inputs).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.decoder.model.lm_head.weight.grad.abs().sum() > 0
    if any(kw.get("image") for kw in COMBINATIONS[combo]):
        assert model.fusion.projectors["image"].queries.grad.abs().sum() > 0
    if any(kw.get("audio") for kw in COMBINATIONS[combo]):
        assert model.fusion.projectors["audio"].mlp.net[0].weight.grad.abs().sum() > 0


def test_soft_tokens_sit_where_the_markers_are():
    model = build_tiny().eval()
    item = sample(model, image=True, audio=True)
    embeds, mask = model.embed([item])
    n_image = model.soft_token_count(item.media[0])
    n_audio = model.soft_token_count(item.media[1])
    # Every marker became its soft tokens; all other ids became one embedding each.
    assert embeds.shape[1] == len(item.input_ids) - 2 + n_image + n_audio
    assert mask.sum() == embeds.shape[1]
    # The image's soft tokens come right after "user:" and depend on the image.
    other = sample(model, image=True, audio=True, color=(0, 0, 255))
    prefix = len(model.tokenizer("user: ", add_special_tokens=False)["input_ids"])
    a, b = model.embed([item])[0][0], model.embed([other])[0][0]
    assert not torch.allclose(a[prefix : prefix + n_image], b[prefix : prefix + n_image])
    assert torch.allclose(a[:prefix], b[:prefix])


POLICIES = {
    "projectors only": ["speech.freeze=frozen", "vision.freeze=frozen", "decoder.freeze=frozen"],
    "decoder lora": ["speech.freeze=frozen", "vision.freeze=frozen", "decoder.freeze=lora"],
    "decoder full": ["speech.freeze=frozen", "vision.freeze=frozen", "decoder.freeze=full"],
    "all lora": ["speech.freeze=lora", "vision.freeze=lora", "decoder.freeze=lora"],
    "encoders full": ["speech.freeze=full", "vision.freeze=full", "decoder.freeze=frozen"],
}


def expected_trainable(model: MultimodalDialogueModel, name: str, policy: str) -> bool:
    if name.startswith("fusion."):
        return True
    if name.startswith("speech.whisper.decoder."):
        return False
    component = {"speech": "speech", "vision": "vision", "decoder": "decoder"}[name.split(".")[0]]
    freeze = getattr(model.config, component).freeze.value
    if freeze == "frozen":
        return False
    if freeze == "lora":
        return "lora_" in name
    return True


@pytest.mark.parametrize("policy", list(POLICIES))
def test_gradients_reach_exactly_the_trainable_parameters(policy):
    model = build_tiny(*POLICIES[policy]).train()
    unreached = {"vision.tower." + n for n, p in model.vision.tower.named_parameters()
                 if not p.requires_grad} if model.config.vision.freeze.value == "full" else set()
    with torch.no_grad():  # LoRA's B starts at zero, which zeroes A's gradient; nudge it to see the flow
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.01)
    inputs = [sample(model, image=True, audio=True), sample(model, image=True, audio=True, color=(0, 255, 0))]
    model(inputs).loss.backward()
    for name, param in model.named_parameters():
        should_train = expected_trainable(model, name, policy) and name not in unreached
        assert param.requires_grad == should_train, name
        got_grad = param.grad is not None and param.grad.abs().sum() > 0
        assert got_grad == should_train, f"{name}: gradient {'missing' if should_train else 'leaked'}"
    # Only pooling heads / final norms may be unreachable, never a whole layer.
    assert all("post_layernorm" in n or "head" in n or "pooler" in n for n in unreached)


def test_save_and_load_give_identical_logits(tmp_path):
    model = build_tiny("decoder.freeze=lora", "vision.freeze=full").eval()
    with torch.no_grad():  # make the LoRA weights non-trivial so their round trip is tested
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.05)
    inputs = [sample(model, image=True, audio=True)]
    before = model(inputs).logits
    model.save_pretrained(tmp_path / "ckpt")
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert "config.json" in files and "fusion.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    loaded = MultimodalDialogueModel.from_pretrained(tmp_path / "ckpt")
    after = loaded(inputs).logits
    assert torch.equal(before, after)
    assert loaded.generate(inputs) == model.generate(inputs)


def test_generation_greedy_beam_and_stream():
    model = build_tiny().eval()
    inputs = [sample(model, image=True), sample(model, audio=True)]
    greedy = model.generate(inputs)
    beam = model.generate(inputs, num_beams=3)
    assert len(greedy) == len(beam) == 2
    assert all(isinstance(text, str) for text in greedy + beam)
    assert model.generate(inputs) == greedy  # greedy decoding is deterministic
    streamed = "".join(model.stream(inputs[0])).strip()
    assert streamed == greedy[0]


def test_training_a_few_steps_fits_a_target():
    """The fused stack can learn: a handful of steps drives the loss on a fixed pair down."""
    model = build_tiny().train()
    inputs = [sample(model, image=True, target="red"), sample(model, image=True, color=(0, 0, 255), target="blue")]
    first, last = fit(model, inputs, steps=40)
    assert last < first * 0.3


def test_image_position_embeddings_tell_identical_patches_apart(tmp_path):
    from mmdialog.errors import ConfigError
    from mmdialog.fusion import build_projector
    from mmdialog.settings import ProjectorSettings

    model = build_tiny("fusion.image.kind=mlp", "fusion.image.position_embeddings=true")
    patches = model.vision.num_patches
    same = torch.ones(patches, model.vision.hidden_size)
    tokens = model.fusion("image", same)
    assert tokens.shape[0] == patches and not torch.allclose(tokens[0], tokens[1])
    with pytest.raises(ConfigError, match="built for"):
        model.fusion("image", same[:-1])
    model.save_pretrained(tmp_path / "saved")
    reloaded = MultimodalDialogueModel.from_pretrained(tmp_path / "saved")
    assert torch.equal(reloaded.fusion("image", same), tokens)
    with pytest.raises(ConfigError, match="mlp image projector only"):
        build_projector(ProjectorSettings(kind="framestack", position_embeddings=True), 8, 8)
