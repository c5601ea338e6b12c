"""The dialogue format: markers, speech modes and the token budget."""

from __future__ import annotations

import pytest
from conftest import audio_media, image_media

from mmdialog.dialogue import Turn, build_model_input, with_markers
from mmdialog.errors import InputError
from mmdialog.settings import DialogueSettings, SpeechMode


def encode(model, history, mode=SpeechMode.both, budget=384, target=None):
    settings = DialogueSettings(max_input_tokens=budget)
    return build_model_input(history, model.tokenizer, settings, mode, model.soft_token_count, target=target)


def text_of(model, item):
    return model.tokenizer.decode(item.input_ids, skip_special_tokens=False)


def test_speech_modes_render_audio_differently(tiny_model):
    turn = Turn("user", "<audio>", [audio_media(tiny_model, transcript="is it red")])
    transcript = encode(tiny_model, [turn], SpeechMode.transcript)
    features = encode(tiny_model, [turn], SpeechMode.features)
    both = encode(tiny_model, [turn], SpeechMode.both)
    assert "is it red" in text_of(tiny_model, transcript) and not transcript.media
    assert "is it red" not in text_of(tiny_model, features) and len(features.media) == 1
    assert "<audio> is it red" in text_of(tiny_model, both) and len(both.media) == 1


def test_budget_drops_the_oldest_turns_first_and_counts_soft_tokens(tiny_model):
    history = [Turn("user", f"question number {i} about the picture") if i % 2 == 0
               else Turn("assistant", f"answer number {i}") for i in range(12)]
    history.append(Turn("user", "<image> and now?", [image_media(tiny_model)]))
    full = encode(tiny_model, history, budget=10_000)
    assert full.dropped_turns == 0
    tight = encode(tiny_model, history, budget=200)
    assert tight.dropped_turns > 0
    text = text_of(tiny_model, tight)
    # The newest turns survive, the oldest are gone.
    assert "and now?" in text and "answer number 11" in text
    assert "question number 0 " not in text
    cost = len(tight.input_ids) - 1 + tiny_model.soft_token_count(tight.media[0])
    assert cost <= 200
    # Soft tokens count: a budget that fits the text but not the image's tokens drops one more turn.
    text_only_cost = len(tight.input_ids)
    squeezed = encode(tiny_model, history, budget=text_only_cost + 1)
    assert squeezed.dropped_turns > tight.dropped_turns


def test_a_new_picture_starts_the_context_afresh_when_asked(tiny_model):
    history = [Turn("user", "<audio>", [audio_media(tiny_model, transcript="i am not a star")]),
               Turn("assistant", "no"),
               Turn("user", "<image> what color is the circle?", [image_media(tiny_model)]),
               Turn("assistant", "green"),
               Turn("user", "and the star?")]
    kept = build_model_input(history, tiny_model.tokenizer, DialogueSettings(context_from_latest_image=True),
                             SpeechMode.both, tiny_model.soft_token_count)
    text = text_of(tiny_model, kept)
    assert kept.dropped_turns == 2 and "not a star" not in text and len(kept.media) == 1
    assert "what color is the circle?" in text and "and the star?" in text
    # Off (the default), and with no picture at all, every turn stays.
    every = encode(tiny_model, history)
    assert every.dropped_turns == 0 and "not a star" in text_of(tiny_model, every)
    no_picture = [history[0], history[1], history[4]]
    assert build_model_input(no_picture, tiny_model.tokenizer, DialogueSettings(context_from_latest_image=True),
                             SpeechMode.both, tiny_model.soft_token_count).dropped_turns == 0


def test_single_overlong_turn_keeps_its_media_and_newest_words(tiny_model):
    turn = Turn("user", "<image> " + "word " * 500 + "final question", [image_media(tiny_model)])
    item = encode(tiny_model, [turn], budget=64)
    assert len(item.media) == 1
    assert text_of(tiny_model, item).rstrip("</s>").endswith("final question")
    assert len(item.input_ids) - 1 + tiny_model.soft_token_count(item.media[0]) <= 64


def test_labels_end_with_eos(tiny_model):
    item = encode(tiny_model, [Turn("user", "hi")], target="hello there")
    assert item.labels[-1] == tiny_model.tokenizer.eos_token_id
    assert tiny_model.tokenizer.decode(item.labels[:-1]) == "hello there"


def test_markers_must_match_media(tiny_model):
    with pytest.raises(InputError):
        encode(tiny_model, [Turn("user", "<image> <image>", [image_media(tiny_model)])])
    with pytest.raises(InputError):
        encode(tiny_model, [Turn("user", "no marker", [image_media(tiny_model)])])


def test_with_markers_adds_only_missing_markers(tiny_model):
    image = image_media(tiny_model)
    assert with_markers("what is this?", [image]) == "<image> what is this?"
    assert with_markers("<image> what is this?", [image]) == "<image> what is this?"
