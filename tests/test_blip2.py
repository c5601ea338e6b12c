"""BLIP-2 imported as an mmdialog model (mmdialog/blip2.py) computes what transformers' BLIP-2 computes.

A tiny random Blip2ForConditionalGeneration with a T5 language model, a T5 (Unigram) tokenizer and a BLIP image
processor are built from transformers' classes and saved as a local checkpoint folder: nothing is downloaded.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_image
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    T5Config,
    T5Tokenizer,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from mmdialog.blip2 import QFormerProjector, import_blip2
from mmdialog.config import load_config
from mmdialog.dialogue import Media, Turn, build_model_input
from mmdialog.errors import ConfigError, ModelNotAvailableError
from mmdialog.loading import load_model
from mmdialog.model import MultimodalDialogueModel
from mmdialog.pipeline import DialoguePipeline
from mmdialog.settings import FusionLayout, ProjectorKind, SpeechMode

TOLERANCE = 1e-5
NEW_TOKENS = 6
# (question, answer to score, image colour): two lengths, so the batch is padded.
EXAMPLES = [("what is it?", "a red circle", (220, 30, 40)), ("what colour is this picture?", "blue", (20, 40, 230))]


def tiny_t5_tokenizer() -> T5Tokenizer:
    """T5's real tokenizer pipeline (Unigram, whitespace split, metaspace) over a vocabulary of a few words."""
    words = ["Question:", "Answer:", "what", "is", "it?", "the", "a", "red", "blue", "circle", "colour", "this",
             "picture"]
    chars = "abcdefghijklmnopqrstuvwxyzQA.,:?!'"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(f"\u2581{w}", -1.0) for w in words] + [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    """A BLIP-2 checkpoint folder laid out as on the hub: model, tokenizer with <image>, image processor."""
    folder = tmp_path_factory.mktemp("tiny-blip2-flan-t5")
    tokenizer = tiny_t5_tokenizer()
    processor = Blip2Processor(BlipImageProcessorPil(size={"height": 32, "width": 32}), tokenizer, num_query_tokens=4)
    config = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8).to_dict(),
        qformer_config=Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, encoder_hidden_size=32, vocab_size=64).to_dict(),
        # Room beyond the tokenizer, as in FLAN-T5 (32128 rows for 32100 pieces): <audio> is added on import.
        text_config=T5Config(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16,
                             vocab_size=len(tokenizer) + 8, pad_token_id=0, eos_token_id=1,
                             decoder_start_token_id=0).to_dict(),
        num_query_tokens=4, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():
        # transformers' initialisation (std 0.02, zero queries) leaves the output blind to the image and the
        # prompt; weights of a trained model's scale make every difference in the inputs show.
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def base_config():
    """The tiny preset's random speech encoder around the BLIP-2 parts, prompts written as BLIP-2's."""
    config = load_config("tiny", ["speech.mode=transcript"])
    config.dialogue.user_prefix, config.dialogue.assistant_prefix = "Question:", "Answer:"
    return config


@pytest.fixture(scope="module")
def imported(blip2_folder) -> MultimodalDialogueModel:
    return import_blip2(str(blip2_folder), base_config()).eval()


def model_inputs(model: MultimodalDialogueModel):
    items = []
    for question, answer, colour in EXAMPLES:
        media = Media("image", pixel_values=model.vision.preprocess([make_image(colour)])[0])
        cfg = model.config
        items.append(build_model_input([Turn("user", f"<image> {question}", [media])], model.tokenizer,
                                       cfg.dialogue, cfg.speech.mode, model.soft_token_count, target=answer))
    return items


@pytest.fixture(scope="module")
def reference(blip2_folder, imported):
    """transformers' BLIP-2 on the same images and prompts, through its own processor."""
    hf = Blip2ForConditionalGeneration.from_pretrained(blip2_folder, dtype=torch.float32).eval()
    processor = Blip2Processor.from_pretrained(blip2_folder)
    prompts = [f"Question: {question}" for question, _, _ in EXAMPLES]
    batch = processor(images=[make_image(c) for _, _, c in EXAMPLES], text=prompts, padding=True,
                      return_tensors="pt")
    items = model_inputs(imported)
    labels = imported.labels(items)
    with torch.no_grad():
        logits = hf(**batch, labels=labels).logits
        tokens = hf.generate(**batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
    return {"batch": batch, "logits": logits, "tokens": tokens, "items": items, "processor": processor}


def assert_matches_transformers(model: MultimodalDialogueModel, reference) -> float:
    items = reference["items"]
    with torch.no_grad():
        logits = model(items).logits
        embeds, mask = model.embed(items)
        tokens = model.decoder.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                              max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    difference = (logits - reference["logits"]).abs().max().item()
    assert difference <= TOLERANCE, difference
    assert torch.equal(tokens, reference["tokens"])
    # The project's own generate path gives the same words as BLIP-2's.
    expected = model.generate(items, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    decoded = reference["processor"].batch_decode(reference["tokens"], skip_special_tokens=True)
    assert expected == [text.strip() for text in decoded]
    return difference


def test_import_takes_every_part_from_the_checkpoint(imported, reference):
    assert isinstance(imported.fusion.projectors["image"], QFormerProjector)
    assert imported.fusion.modality_embeddings is None
    cfg = imported.config
    assert cfg.fusion.layout == FusionLayout.blip2 and cfg.fusion.image.kind == ProjectorKind.qformer
    # Same pixels, and the processor's layout: the query tokens' placeholders first, then the prompt.
    batch, items = reference["batch"], reference["items"]
    for row, item in enumerate(items):
        assert torch.equal(imported.vision.preprocess([make_image(EXAMPLES[row][2])])[0], batch["pixel_values"][row])
        image_id = imported.decoder.image_token_id
        ours = [image_id] * 4 + [t for t in item.input_ids if t != image_id]
        assert batch["input_ids"][row, : len(ours)].tolist() == ours


def test_logits_and_greedy_tokens_equal_transformers(imported, reference):
    print(f"max abs logit difference: {assert_matches_transformers(imported, reference):.3g}")


def test_qformer_keeps_fp32_under_autocast(imported):
    features = torch.randn(2, 17, 32)
    projector = imported.fusion.projectors["image"]
    with torch.no_grad():
        plain = projector(features)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = projector(features)
    assert autocast.dtype == torch.float32 and torch.equal(plain, autocast)


def test_save_and_reload_through_the_checkpoint_loader(imported, reference, tmp_path):
    """What `chat --config` with a `checkpoint:` does (load_model), and the plain from_pretrained."""
    imported.save_pretrained(tmp_path / "saved")
    files = {p.name for p in (tmp_path / "saved").iterdir()}
    # The frozen vision tower is referenced by the checkpoint's name, never copied.
    assert {"config.json", "fusion.safetensors", "tokenizer"} <= files and "vision.safetensors" not in files
    config = base_config()
    config.checkpoint = str(tmp_path / "saved")
    reloaded = load_model(config).eval()
    assert_matches_transformers(reloaded, reference)
    # A trained Q-Former comes back from the model folder, not from the BLIP-2 checkpoint it started from.
    with torch.no_grad():
        reloaded.fusion.projectors["image"].language_projection.weight.add_(0.05)
        trained = reloaded(reference["items"]).logits
    reloaded.save_pretrained(tmp_path / "trained")
    again = MultimodalDialogueModel.from_pretrained(tmp_path / "trained").eval()
    with torch.no_grad():
        assert torch.equal(again(reference["items"]).logits, trained)


def test_imported_model_answers_through_the_pipeline(imported):
    pipeline = DialoguePipeline(imported, None, imported.config)
    session = pipeline.new_session()
    reply = pipeline.respond(session, text="what is it?", image=make_image((220, 30, 40)))
    assert reply.error is None
    assert reply.text == imported.generate(model_inputs(imported)[:1])[0]
    assert len(session.history) == 2


def test_blip2_preset_loads_without_downloading():
    cfg = load_config("blip2")
    assert cfg.vision.name == cfg.decoder.name == "Salesforce/blip2-flan-t5-xl"
    assert cfg.fusion.image.kind == ProjectorKind.qformer and cfg.fusion.layout == FusionLayout.blip2
    assert cfg.speech.mode == SpeechMode.transcript and cfg.runtime.precision == "bf16"


def test_hub_only_blip2_offline_is_one_sentence_naming_it():
    with pytest.raises(ModelNotAvailableError) as error:
        import_blip2("Salesforce/blip2-flan-t5-xl", base_config())
    assert len(error.value.problems) == 1
    problem = error.value.problems[0]
    assert "Salesforce/blip2-flan-t5-xl" in problem and "not available" in problem and "\n" not in problem


@pytest.mark.parametrize(("overrides", "must_say"), [
    (["fusion.image.kind=qformer"], "vision.name and decoder.name"),
    (["fusion.audio.kind=qformer"], "BLIP-2 checkpoint"),
])
def test_a_qformer_without_its_checkpoint_is_a_clear_config_error(overrides, must_say):
    with pytest.raises(ConfigError, match=must_say) as error:
        MultimodalDialogueModel.from_config(load_config("tiny", overrides))
    assert "\n" not in str(error.value)


def test_a_checkpoint_that_is_not_blip2_with_t5_is_named(tmp_path):
    T5Config(d_model=8, num_layers=1, num_heads=1, d_kv=8, d_ff=8).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="is t5, not BLIP-2 with a T5 language model"):
        import_blip2(str(tmp_path), base_config())


def test_imported_model_answers_through_the_cli_and_the_app(imported, tmp_path):
    """The same commands and app as every other preset: a YAML with the saved model as `checkpoint`."""
    import subprocess
    import sys

    from gradio_client import Client
    from test_app import serving, turn

    imported.save_pretrained(tmp_path / "model")
    make_image((30, 60, 220)).save(tmp_path / "blue.png")
    (tmp_path / "blip2-tiny.yaml").write_text(
        "extends: tiny\ncheckpoint: ./model\nspeech: {mode: transcript}\ntts: {backend: none}\n"
        "dialogue: {user_prefix: 'Question:', assistant_prefix: 'Answer:'}\n")
    expected = DialoguePipeline(imported, None, imported.config).respond(
        DialoguePipeline(imported, None, imported.config).new_session(), text="what is it?",
        image=tmp_path / "blue.png").text
    done = subprocess.run([sys.executable, "-m", "mmdialog.cli", "chat", "--config", str(tmp_path / "blip2-tiny.yaml"),
                           "--text", "what is it?", "--image", str(tmp_path / "blue.png"), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["reply"] == expected
    pipeline = DialoguePipeline.from_config(tmp_path / "blip2-tiny.yaml")
    with serving(pipeline, tmp_path / "uploads") as (url, _):
        reply, _, _, _, _, error = turn(Client(url, verbose=False), "what is it?", tmp_path / "blue.png")
    assert (reply, error) == (expected, "")


def test_the_pretrained_q_former_trains_at_the_full_rate_and_a_new_projector_at_its_own(imported):
    from mmdialog.settings import TrainSettings
    from mmdialog.training.optim import parameter_groups

    settings = TrainSettings(lr_projector=1e-3, lr_full=1e-5)
    rate_of = {id(p): group["lr"] for group in parameter_groups(imported, settings) for p in group["params"]}
    qformer, speech = imported.fusion.projectors["image"], imported.fusion.projectors["audio"]
    assert {rate_of[id(p)] for p in qformer.parameters() if p.requires_grad} == {1e-5}
    assert {rate_of[id(p)] for p in speech.parameters()} == {1e-3}
