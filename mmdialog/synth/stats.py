"""Counts over a split and the chance level of each task family (the bar a model has to beat)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from mmdialog.data.format import DialogueRecord

Dialogue = dict | DialogueRecord  # a JSONL line as written, or as `load_dialogues` reads it


def _meta_and_answers(dialogue: Dialogue) -> tuple[dict, list[str]]:
    if isinstance(dialogue, DialogueRecord):
        return dialogue.meta, [t.text for t in dialogue.turns if t.role == "assistant"]
    return dialogue.get("meta", {}), [t["text"] for t in dialogue["turns"] if t["role"] == "assistant"]


def family_chance(dialogues: Iterable[Dialogue]) -> dict[str, float]:
    """Per family, the share of its answers that the most frequent answer takes: the exact-match accuracy of
    always giving that answer. Every assistant turn counts (a follow-up's first answer too), as in training.
    Dialogues without a meta family are counted under "unknown"."""
    answers: dict[str, Counter] = defaultdict(Counter)
    for dialogue in dialogues:
        meta, replies = _meta_and_answers(dialogue)
        answers[meta.get("family", "unknown")].update(replies)
    return {family: round(max(c.values()) / sum(c.values()), 4) for family, c in sorted(answers.items())}


def split_summary(dialogues: list[dict]) -> dict:
    """Dialogue and target counts by family, input form and held-out tag, plus the chance levels."""
    metas = [d["meta"] for d in dialogues]
    return {
        "dialogues": len(dialogues),
        "targets": sum(1 for d in dialogues for t in d["turns"] if t["role"] == "assistant"),
        "families": dict(sorted(Counter(m["family"] for m in metas).items())),
        "forms": dict(sorted(Counter(m["form"] for m in metas).items())),
        "unseen_combo": sum(m["unseen_combo"] for m in metas),
        "unseen_phrasing": sum(m["unseen_phrasing"] for m in metas),
        "unseen_voice": sum(m["unseen_voice"] for m in metas),
        "chance": family_chance(dialogues),
    }
