"""`mmdialog feedback export`: what people rated and corrected, as a supervised dataset and preference pairs.

A feedback folder (the app writes it) holds `feedback.jsonl` and `media/`. Each line is a dialogue in the
training data format (mmdialog/data/format.py) whose last turn is the assistant reply that was rated, plus

    "feedback": {"rating": "up" | "down" | null, "correction": "..." | null}

Export writes into the output folder:
- `supervised.jsonl`: the context with the correction as the reply, or with the given reply when it was
  up-voted. A reply voted down (or not rated) and not corrected teaches nothing here: it is dropped.
- `preferences.jsonl`: the context (ending with the user turn), `"chosen"` the correction and `"rejected"`
  the given reply, for every correction that differs from that reply (for `train.objective=dpo`).
- the media the two files use, hard-linked (copied across file systems) under the same relative paths,
  so the folder is self-contained and can be moved or shipped.

Bad lines (not JSON, media missing, a malformed `feedback`) are skipped and listed: feedback comes from many
sessions, and one broken upload must not cost the rest.
"""

from __future__ import annotations

import copy
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from mmdialog.data.format import DialogueRecord, load_records, parse_dialogue, write_dialogues
from mmdialog.errors import InputError

FEEDBACK_FILE = "feedback.jsonl"
SUPERVISED_FILE = "supervised.jsonl"
PREFERENCES_FILE = "preferences.jsonl"
RATINGS = ("up", "down", None)


@dataclass
class FeedbackRecord(DialogueRecord):
    """A rated dialogue: `turns[-1]` is the reply that was given; `lines` are the turns as written."""

    rating: str | None = None
    correction: str | None = None  # None when absent or blank
    lines: list[dict] = field(default_factory=list)

    @property
    def targets(self) -> int:
        return 1


def parse_feedback(raw: object, folder: Path, source: str, check_media: bool = True) -> FeedbackRecord:
    record = parse_dialogue(raw, folder, source, check_media)
    assert isinstance(raw, dict)  # parse_dialogue refuses anything else
    feedback = raw.get("feedback")
    if not isinstance(feedback, dict):
        raise ValueError("a feedback record needs a 'feedback' object with 'rating' and 'correction'")
    rating, correction = feedback.get("rating"), feedback.get("correction")
    if rating not in RATINGS:
        raise ValueError(f"feedback 'rating' must be \"up\", \"down\" or null, not {rating!r}")
    if correction is not None and not isinstance(correction, str):
        raise ValueError("feedback 'correction' must be a string or null")
    turns = record.turns
    if turns[-1].role != "assistant" or turns[-2].role != "user":
        raise ValueError("the rated reply must be the last turn, an assistant turn answering a user turn")
    return FeedbackRecord(record.id, turns, source, record.meta, rating=rating,
                          correction=(correction or "").strip() or None, lines=raw["turns"])


def training_records(record: FeedbackRecord) -> tuple[dict | None, dict | None]:
    """The record's supervised example and its preference pair; None where it gives none."""
    context, given = copy.deepcopy(record.lines[:-1]), record.turns[-1].text
    meta = {**record.meta, "feedback": record.rating, "corrected": record.correction is not None}
    target = record.correction or (given if record.rating == "up" else None)
    supervised = None
    if target is not None:
        supervised = {"id": record.id, "turns": [*context, {"role": "assistant", "text": target}], "meta": meta}
    preference = None
    if record.correction is not None and record.correction != given.strip():
        preference = {"id": record.id, "turns": context, "chosen": record.correction, "rejected": given,
                      "meta": meta}
    return supervised, preference


def link_or_copy(source: Path, destination: Path) -> None:
    """A hard link where the file system allows one (no second copy of every picture), else a copy."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        if os.path.samefile(source, destination):
            return
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


@dataclass
class ExportSummary:
    records: int = 0
    supervised: int = 0
    corrected: int = 0  # supervised examples whose reply is a correction
    preferences: int = 0
    dropped: int = 0
    media: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.records} feedback records: {self.supervised} supervised ({self.corrected} corrected, "
                f"{self.supervised - self.corrected} up-voted), {self.preferences} preference pairs, "
                f"{self.dropped} dropped (not up-voted, no correction), {len(self.problems)} bad ones skipped; "
                f"{self.media} media files")


def export_feedback(source: str | Path, out: str | Path) -> ExportSummary:
    """Write supervised.jsonl, preferences.jsonl and their media into `out` (see the module docstring)."""
    folder, out = Path(source).resolve(), Path(out).resolve()
    path = folder / FEEDBACK_FILE
    if not path.is_file():
        raise InputError(f"'{source}' holds no {FEEDBACK_FILE}: give the folder the app writes feedback into")
    if out == folder:
        raise InputError("the output folder must not be the feedback folder: give --out another folder")
    records, report = load_records(path, parse_feedback, skip_bad=True)
    summary = ExportSummary(records=len(records) + report.skipped, problems=report.problems)
    supervised, preferences, media = [], [], set()
    for record in records:
        example, pair = training_records(record)
        if example is not None:
            supervised.append(example)
            summary.corrected += record.correction is not None
        if pair is not None:
            preferences.append(pair)
        if example is None and pair is None:
            summary.dropped += 1
            continue
        media.update(p for turn in record.turns for p in [*turn.images, *(a.path for a in turn.audio)])
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(media):
        link_or_copy(item, out / item.relative_to(folder))
    write_dialogues(out / SUPERVISED_FILE, supervised)
    write_dialogues(out / PREFERENCES_FILE, preferences)
    summary.supervised, summary.preferences, summary.media = len(supervised), len(preferences), len(media)
    return summary
