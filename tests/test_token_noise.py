"""train.token_noise: random word pieces in the training context, never in the markers, prefixes or labels."""

from __future__ import annotations

import pytest
from conftest import build_tiny, image_media

from mmdialog.data.noise import TokenNoise
from mmdialog.dialogue import IMAGE_TOKEN, Turn, build_model_input, with_markers


@pytest.fixture(scope="module")
def model():
    return build_tiny()


def example(model, text: str = "what colour is the big round thing on the left of the picture?"):
    media = [image_media(model)]
    history = [Turn("user", with_markers(text, media), media)]
    return build_model_input(history, model.tokenizer, model.config.dialogue, model.config.speech.mode,
                             model.soft_token_count, target="red")


def test_no_noise_changes_nothing_and_full_noise_spares_the_dialogue_s_shape(model) -> None:
    item = example(model)
    assert TokenNoise([item], model.tokenizer, model.config.dialogue, 0.0)[0] == item
    noisy = TokenNoise([item], model.tokenizer, model.config.dialogue, 1.0)
    changed = noisy[0]
    assert changed.labels == item.labels and changed.media == item.media
    assert changed.input_ids != item.input_ids
    kept = [t for t in item.input_ids if t in noisy.protected]
    assert [t for t in changed.input_ids if t in noisy.protected] == kept  # markers, prefix, EOS, in order
    assert model.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in kept and item.input_ids[-1] in kept
    assert all(t in noisy.protected or t in noisy.vocabulary.tolist() or t in item.input_ids
               for t in changed.input_ids)


def test_about_the_asked_share_of_pieces_changes(model) -> None:
    item = example(model)
    noisy = TokenNoise([item], model.tokenizer, model.config.dialogue, 0.2)
    free = [i for i, t in enumerate(item.input_ids) if t not in noisy.protected]
    assert noisy[0] == noisy[0]  # the same epoch and index: the same noise
    unchanged = 0
    for epoch in range(400):
        noisy.set_epoch(epoch)
        unchanged += noisy[0].input_ids == item.input_ids
    # P(no change) = 0.8 ** free pieces (ignoring a replacement by the same piece).
    expected = 0.8 ** len(free) * 400
    assert abs(unchanged - expected) < 4 * expected ** 0.5 + 2, (unchanged, expected)
