"""Weighted example drawing (train.sample_weights) and clips swapped under their transcript (train.audio_swap)."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import build_tiny
from data_factory import write_colour_dataset

from mmdialog.data.dataset import DialogueDataset
from mmdialog.data.format import load_dialogues
from mmdialog.data.noise import AudioSwap
from mmdialog.data.sampling import LengthSortedSampler, WeightedEpochSampler, example_weights
from mmdialog.errors import ConfigError
from mmdialog.settings import SpeechMode


def test_examples_are_drawn_in_proportion_to_their_family_weight():
    metas = [{"family": "describe"}] * 100 + [{"family": "colour"}] * 100 + [{}] * 100
    weights = example_weights(metas, "family", {"describe": 3.0, "colour": 0.0})
    sampler = WeightedEpochSampler(weights, seed=1)
    drawn: Counter[str] = Counter()
    for epoch in range(20):
        sampler.set_epoch(epoch)
        drawn.update(metas[i].get("family", "none") for i in sampler)
    assert drawn["colour"] == 0
    assert 2.6 < drawn["describe"] / drawn["none"] < 3.4  # 3 : 1, within sampling noise of 6000 draws
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(4)
    assert list(sampler) != first
    sampler.set_epoch(3)
    assert list(sampler) == first  # an epoch's draw depends on (seed, epoch) alone: resuming repeats it


def test_evaluation_order_is_shortest_first():
    lengths = [5, 1, 4, 1, 9]
    assert [lengths[i] for i in LengthSortedSampler(len(lengths), lengths.__getitem__)] == [1, 1, 4, 5, 9]


def test_weights_for_values_no_example_has_are_a_clear_error():
    metas = [{"family": "colour"}]
    with pytest.raises(ConfigError, match="descibe"):
        example_weights(metas, "family", {"descibe": 2.0})
    with pytest.raises(ConfigError, match="every training example"):
        example_weights(metas, "family", {"colour": 0.0})
    with pytest.raises(ConfigError, match="negative"):
        example_weights(metas, "family", {"colour": -1.0})


def test_audio_swap_changes_clips_only_where_a_transcript_comes_with_them(tmp_path):
    model = build_tiny()
    dialogues, _ = load_dialogues(write_colour_dataset(tmp_path, dialogues=24, seed=0))
    base = DialogueDataset(dialogues, model, speech_modes=[SpeechMode.both, SpeechMode.features])
    assert len(base.audio_refs()) == 2  # the low and the high tone
    spoken = [i for i in range(len(base)) if "audio" in base.modalities(i)]
    swapped = AudioSwap(base, 1.0, seed=0)
    changed = {mode: 0 for mode in SpeechMode}
    for index in spoken:
        before = [m for m in base[index].media if m.kind == "audio"]
        after = [m for m in swapped[index].media if m.kind == "audio"]
        changed[base.speech_mode(index)] += sum(a is not b for a, b in zip(before, after, strict=True))
        assert swapped[index].labels == base[index].labels and swapped[index].input_ids == base[index].input_ids
    assert changed[SpeechMode.features] == 0  # no transcript to follow: a swap would only be a wrong label
    assert changed[SpeechMode.both] > 0  # drawn among both clips, about half the swaps land on another one
    assert AudioSwap(base, 0.0)[spoken[0]] == base[spoken[0]]
