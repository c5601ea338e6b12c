"""The training data format: JSONL, one dialogue per line, media by path relative to the data folder.

    {"id": "scene-17",
     "turns": [
       {"role": "user", "text": "<image> what colour is the circle?", "images": ["images/17.png"]},
       {"role": "assistant", "text": "red"},
       {"role": "user", "text": "<audio>", "audio": [{"path": "audio/q3.wav", "transcript": "and the square?"}]},
       {"role": "assistant", "text": "blue"}]}

`images` and `audio` list a turn's media in the order of its `<image>` / `<audio>` markers (a turn whose
text has no marker gets them in front). An audio item is a path or {"path", "transcript"}: a cached
transcript saves running Whisper on it at training time. Every assistant turn is a training target
with all earlier turns as its context. Top-level keys other than `id`, `turns` and `meta` are ignored, so
feedback records (`"feedback": {"rating": ..., "correction": ...}`, mmdialog/feedback/) read as dialogues.

Preference pairs (for `train.objective=dpo`) are the same, except that `turns` end with the user turn both
replies answer, and two top-level keys hold the replies: `"chosen": "The circle is red.", "rejected": "red"`.

Validation reads every line before training starts and names the file and line of each problem.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import soundfile as sf

from decoders.seq2seq import AUDIO_TOKEN, IMAGE_TOKEN
from encoders.image_io import load_image
from mmdialog.dialogue import MARKER
from mmdialog.errors import InputError


@dataclass
class AudioRef:
    path: Path
    transcript: str | None = None


@dataclass
class TurnRecord:
    role: str
    text: str
    images: list[Path] = field(default_factory=list)
    audio: list[AudioRef] = field(default_factory=list)


@dataclass
class DialogueRecord:
    id: str
    turns: list[TurnRecord]
    source: str  # "file:line", for messages
    meta: dict = field(default_factory=dict)  # free-form tags (task family, input form, ...) for evaluation

    @property
    def targets(self) -> int:
        """Training examples this record gives: its assistant turns after the first turn."""
        return sum(1 for i, t in enumerate(self.turns) if t.role == "assistant" and i > 0)


@dataclass
class PreferenceRecord(DialogueRecord):
    """A context (ending with a user turn) and two replies to it, the better one `chosen`."""

    chosen: str = ""
    rejected: str = ""

    @property
    def targets(self) -> int:
        return 1


Record = TypeVar("Record", bound=DialogueRecord)


class DataError(InputError):
    """Bad training data: every problem found, each as 'file:line: what is wrong'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        super().__init__("\n".join(shown))


@dataclass
class LoadReport:
    dialogues: int = 0
    skipped: int = 0
    targets: int = 0
    problems: list[str] = field(default_factory=list)


def _inside(folder: Path, relative: str) -> Path:
    """The media path resolved inside the data folder; absolute paths and '..' escapes are refused."""
    if not isinstance(relative, str) or not relative:
        raise ValueError("a media path must be a non-empty string")
    candidate = (folder / relative).resolve()
    if Path(relative).is_absolute() or not candidate.is_relative_to(folder):
        raise ValueError(f"media path '{relative}' points outside the data folder")
    return candidate


def _check_media(path: Path, check: Callable[[Path], None]) -> None:
    """`check(path)`, once per version of the file: a data set names the same picture or clip in many
    dialogues (the demo world: 41,000 image references to 6,000 files), and decoding each again costs minutes."""
    stat = path.stat()
    _checked_once(str(path), stat.st_mtime_ns, stat.st_size, check)


@functools.lru_cache(maxsize=65536)
def _checked_once(path: str, mtime_ns: int, size: int, check: Callable[[Path], None]) -> None:
    check(Path(path))  # raises for a bad file; lru_cache keeps only results, so a bad file is checked again


def _check_image(path: Path) -> None:
    try:
        load_image(path)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _check_audio(path: Path) -> None:
    try:
        info = sf.info(str(path))
    except Exception:
        # Formats soundfile cannot read (webm, m4a) are decoded by ffmpeg later: check they decode now.
        from encoders.audio_io import load_audio

        try:
            load_audio(path)
            return
        except InputError as exc:
            raise ValueError(str(exc)) from None
    if info.frames == 0:
        raise ValueError(f"audio file '{path.name}' is empty")


def _parse_turn(raw: object, folder: Path, check_media: bool) -> TurnRecord:
    if not isinstance(raw, dict):
        raise ValueError("each turn must be an object with 'role' and 'text'")
    role, text = raw.get("role"), raw.get("text", "")
    if role not in ("user", "assistant"):
        raise ValueError(f"turn role must be 'user' or 'assistant', not {role!r}")
    if not isinstance(text, str):
        raise ValueError("turn 'text' must be a string")
    images = [_inside(folder, p) for p in raw.get("images", [])]
    audio = []
    for item in raw.get("audio", []):
        item = {"path": item} if isinstance(item, str) else item
        if not isinstance(item, dict):
            raise ValueError("an audio item must be a path or {\"path\": ..., \"transcript\": ...}")
        audio.append(AudioRef(_inside(folder, item.get("path", "")), item.get("transcript")))
    markers = MARKER.findall(text)
    for token, count, kind in ((IMAGE_TOKEN, len(images), "images"), (AUDIO_TOKEN, len(audio), "audio")):
        if markers.count(token) > count:
            raise ValueError(f"the text has {markers.count(token)} {token} markers but {count} {kind}")
    if role == "assistant" and (images or audio):
        raise ValueError("assistant turns cannot carry media")
    if check_media:
        for path in images:
            if not path.is_file():
                raise ValueError(f"image '{path.relative_to(folder)}' does not exist")
            _check_media(path, _check_image)
        for ref in audio:
            if not ref.path.is_file():
                raise ValueError(f"audio '{ref.path.relative_to(folder)}' does not exist")
            _check_media(ref.path, _check_audio)
    return TurnRecord(role, text, images, audio)


def _parse_turns(raw: object, folder: Path, check_media: bool) -> tuple[dict, list[TurnRecord], dict]:
    """The line as an object, its parsed turns and its `meta`."""
    if not isinstance(raw, dict):
        raise ValueError("a line must be a JSON object with 'turns'")
    turns_raw = raw.get("turns")
    if not isinstance(turns_raw, list) or not turns_raw:
        raise ValueError("the dialogue is empty (no 'turns')")
    meta = raw.get("meta", {})
    return raw, [_parse_turn(t, folder, check_media) for t in turns_raw], meta if isinstance(meta, dict) else {}


def parse_dialogue(raw: object, folder: Path, source: str, check_media: bool = True) -> DialogueRecord:
    data, turns, meta = _parse_turns(raw, folder, check_media)
    if not any(t.role == "assistant" for t in turns[1:]):
        if "chosen" in data:
            raise ValueError("this is a preference pair, not a dialogue: train on it with train.objective=dpo")
        raise ValueError("the dialogue has no assistant turn after a user turn (nothing to learn)")
    return DialogueRecord(str(data.get("id", source)), turns, source, meta)


def parse_preference(raw: object, folder: Path, source: str, check_media: bool = True) -> PreferenceRecord:
    data, turns, meta = _parse_turns(raw, folder, check_media)
    if turns[-1].role != "user":
        raise ValueError("a preference pair's turns must end with the user turn that 'chosen' and 'rejected' answer"
                         + (" (this looks like a dialogue: train on it with train.objective=sft)"
                            if "chosen" not in data else ""))
    chosen, rejected = data.get("chosen"), data.get("rejected")
    if not (isinstance(chosen, str) and chosen.strip() and isinstance(rejected, str) and rejected.strip()):
        raise ValueError("a preference pair needs 'chosen' and 'rejected' replies (non-empty strings)")
    if chosen == rejected:
        raise ValueError("'chosen' and 'rejected' are the same reply: there is nothing to prefer")
    return PreferenceRecord(str(data.get("id", source)), turns, source, meta, chosen=chosen, rejected=rejected)


def load_dialogues(path: str | Path, skip_bad: bool = False, check_media: bool = True
                   ) -> tuple[list[DialogueRecord], LoadReport]:
    """Read and validate a JSONL file. Bad lines raise DataError listing all of them, or with
    `skip_bad` are skipped and counted in the report."""
    return load_records(path, parse_dialogue, skip_bad, check_media)


def load_preferences(path: str | Path, skip_bad: bool = False, check_media: bool = True
                     ) -> tuple[list[PreferenceRecord], LoadReport]:
    """Read and validate a JSONL file of preference pairs, as `load_dialogues` does dialogues."""
    return load_records(path, parse_preference, skip_bad, check_media)


def load_records(path: str | Path, parse: Callable[[object, Path, str, bool], Record], skip_bad: bool = False,
                 check_media: bool = True) -> tuple[list[Record], LoadReport]:
    """Every line of a JSONL file through `parse(raw, folder, "file:line", check_media)`, which raises
    ValueError with what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DataError([f"{path}: the data file does not exist"])
    folder = path.parent.resolve()
    dialogues, report = [], LoadReport()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            source = f"{path.name}:{number}"
            try:
                record = parse(json.loads(line), folder, source, check_media)
            except json.JSONDecodeError as exc:
                report.problems.append(f"{source}: not valid JSON ({exc.msg})")
                continue
            except ValueError as exc:
                report.problems.append(f"{source}: {exc}")
                continue
            dialogues.append(record)
            report.targets += record.targets
    report.dialogues = len(dialogues)
    if report.problems and not skip_bad:
        raise DataError(report.problems)
    report.skipped = len(report.problems)
    if not dialogues:
        raise DataError([f"{path}: no usable dialogue"] + report.problems[:5])
    return dialogues, report


def without_transcripts(dialogues: list[DialogueRecord]) -> list[DialogueRecord]:
    """The dialogues with every clip's stored transcript dropped: each clip is then heard by the model's own
    Whisper with the config's speech settings, as `chat` and `serve` hear a question."""
    return [replace(d, turns=[replace(t, audio=[AudioRef(a.path) for a in t.audio]) for t in d.turns])
            for d in dialogues]


def write_dialogues(path: str | Path, dialogues: list[dict]) -> None:
    """Write dialogues (plain dicts in the format above) as JSONL."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for dialogue in dialogues:
            handle.write(json.dumps(dialogue, ensure_ascii=False) + "\n")
