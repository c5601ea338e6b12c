"""The data format: every kind of bad data is reported with file and line; LLaVA conversion."""

from __future__ import annotations

import json

import pytest
from data_factory import write_colour_dataset

from mmdialog.data.format import DataError, load_dialogues
from mmdialog.data.llava import convert_llava


@pytest.fixture()
def data_dir(tmp_path):
    write_colour_dataset(tmp_path, dialogues=3, seed=0)
    (tmp_path / "images" / "broken.png").write_bytes(b"this is not a png")
    (tmp_path / "audio" / "broken.wav").write_bytes(b"RIFF....garbage")
    return tmp_path


GOOD = {"turns": [{"role": "user", "text": "<image> what colour?", "images": ["images/red.png"]},
                  {"role": "assistant", "text": "red"}]}
BAD = {
    "missing media file": ({"turns": [{"role": "user", "text": "<image> hi", "images": ["images/nope.png"]},
                                      {"role": "assistant", "text": "x"}]}, "does not exist"),
    "unreadable image": ({"turns": [{"role": "user", "text": "<image> hi", "images": ["images/broken.png"]},
                                    {"role": "assistant", "text": "x"}]}, "not an image"),
    "unreadable audio": ({"turns": [{"role": "user", "text": "<audio>", "audio": ["audio/broken.wav"]},
                                    {"role": "assistant", "text": "x"}]}, "audio"),
    "empty dialogue": ({"turns": []}, "empty"),
    "path escaping the folder": ({"turns": [{"role": "user", "text": "<image>", "images": ["../../etc/passwd"]},
                                            {"role": "assistant", "text": "x"}]}, "outside the data folder"),
    "absolute path": ({"turns": [{"role": "user", "text": "<image>", "images": ["/etc/hostname"]},
                                 {"role": "assistant", "text": "x"}]}, "outside the data folder"),
    "no assistant turn": ({"turns": [{"role": "user", "text": "hello"}]}, "no assistant turn"),
    "bad role": ({"turns": [{"role": "robot", "text": "hello"}, {"role": "assistant", "text": "x"}]}, "role"),
    "more markers than media": ({"turns": [{"role": "user", "text": "<image> <image>", "images": ["images/red.png"]},
                                           {"role": "assistant", "text": "x"}]}, "markers"),
}


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")


@pytest.mark.parametrize("kind", list(BAD))
def test_each_kind_of_bad_data_is_reported_with_file_and_line(data_dir, kind):
    record, words = BAD[kind]
    path = data_dir / "mixed.jsonl"
    write_lines(path, [GOOD, record, GOOD])
    with pytest.raises(DataError) as error:
        load_dialogues(path)
    assert error.value.problems == [error.value.problems[0]] and error.value.problems[0].startswith("mixed.jsonl:2: ")
    assert words in error.value.problems[0]
    dialogues, report = load_dialogues(path, skip_bad=True)
    assert len(dialogues) == 2 and report.skipped == 1


def test_invalid_json_and_all_problems_listed(data_dir):
    path = data_dir / "broken.jsonl"
    write_lines(path, [GOOD, "{not json", GOOD, BAD["empty dialogue"][0]])
    with pytest.raises(DataError) as error:
        load_dialogues(path)
    problems = error.value.problems
    assert [p.split(": ")[0] for p in problems] == ["broken.jsonl:2", "broken.jsonl:4"]
    assert "not valid JSON" in problems[0]


def test_every_assistant_turn_is_a_target(data_dir):
    dialogues, report = load_dialogues(data_dir / "train.jsonl")
    expected = sum(sum(1 for i, t in enumerate(d.turns) if t.role == "assistant" and i > 0) for d in dialogues)
    assert report.targets == expected > len(dialogues)


def test_llava_conversion(data_dir):
    llava = [{"id": "1", "image": "red.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Are you sure?"}, {"from": "gpt", "value": "Yes."}]}]
    source = data_dir / "llava.json"
    source.write_text(json.dumps(llava))
    assert convert_llava(source, data_dir / "llava.jsonl", image_folder="images") == 1
    dialogues, report = load_dialogues(data_dir / "llava.jsonl")
    turns = dialogues[0].turns
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[0].images[0].name == "red.png" and turns[0].text == "<image> What colour is it?"
    assert report.targets == 2
