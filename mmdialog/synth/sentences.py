"""Full-sentence answers for the synthetic world's questions: "what colour is the circle?" -> "The circle is red.".

The world answers in single words (its exact-match convention, questions.py); this is the other style, for
preference tuning (scripts/preference-style-demo.py). Every sentence holds the world's answer verbatim (kiosk
sentences: capitalised, "i" as "I", a full stop). A question's kind and slots are read back from its wording
(templates.py), so a sentence can be made for any typed question of any split, follow-ups included.
"""

from __future__ import annotations

import re
from functools import cache

from mmdialog.synth.scenes import ALL_COMBOS, COLOURS, NUMBER_WORDS, PLURALS, SHAPES, SIDES
from mmdialog.synth.templates import KIOSK_ANSWERS, KIOSK_QUESTIONS, QUESTIONS, SIDE_PHRASES, with_articles

_SLOT_VALUES = {"colour": list(COLOURS), "shape": list(SHAPES), "shapes": list(PLURALS.values()),
                "at_side": list(SIDE_PHRASES.values())}
_SLOT = re.compile(r"\{(\w+)\}")
_OBJECTS = [with_articles(f"a {colour} {shape}") for colour, shape in ALL_COMBOS]  # as questions.describe
# The answers each kind can have (None: any, checked by pattern); a reply is in the style when it is exactly
# the sentence of one of them.
_ANSWERS: dict[str, list[str] | None] = {
    "colour_of_shape": list(COLOURS), "it_colour": list(COLOURS),
    "other_shape": list(COLOURS) + list(SIDES),  # "and the star?" after "what colour..." or "where is..."
    "shape_of_colour": list(SHAPES), "other_colour": list(SHAPES),
    "count_objects": list(NUMBER_WORDS), "count_shape": list(NUMBER_WORDS),
    "where_shape": list(SIDES), "where_combo": list(SIDES),
    "on_side": _OBJECTS, "other_side": _OBJECTS,
    "exists_combo": ["yes", "no"], "exists_shape": ["yes", "no"], "other_exists": ["yes", "no"],
    "describe_scene": None,
}
_DESCRIBED = re.compile(r"I see (.+)\.")


@cache
def _question_patterns() -> list[tuple[str, re.Pattern]]:
    """(kind, pattern with a named group per slot) for every phrasing, seen and held out, of every kind."""
    patterns = []
    for kind, phrasings in {**QUESTIONS, **KIOSK_QUESTIONS}.items():
        for template in (*phrasings.seen, phrasings.held_out):
            pieces = _SLOT.split(template)  # literal, slot, literal, slot, ...
            regex = "".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>{'|'.join(_SLOT_VALUES[piece])})"
                            for i, piece in enumerate(pieces))
            patterns.append((kind, re.compile(regex)))
    return patterns


def parse_question(text: str) -> tuple[str, dict[str, str]] | None:
    """The kind and slots of a question as the world words it (media markers ignored); None if not one."""
    text = re.sub(r"<image>|<audio>", " ", text)
    # fill() writes "an" before a vowel; the templates say "a".
    text = re.sub(r"\ban ", "a ", " ".join(text.split()))
    for kind, pattern in _question_patterns():
        match = pattern.fullmatch(text)
        if match:
            slots = match.groupdict()
            if "shapes" in slots:  # "how many circles": the sentence may need the singular
                slots["shape"] = next(s for s, plural in PLURALS.items() if plural == slots["shapes"])
            return kind, slots
    return None


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def sentence(kind: str, slots: dict[str, str], answer: str) -> str:
    """The answer as a full sentence that contains it verbatim."""
    shape, colour, at_side = slots.get("shape", ""), slots.get("colour", ""), slots.get("at_side", "")
    thing = " ".join(word for word in (colour, shape) if word)  # "red circle", or "circle"
    if kind in KIOSK_ANSWERS:
        return _capitalised(re.sub(r"\bi\b", "I", answer)) + "."
    if kind in ("colour_of_shape", "other_shape"):
        text = f"The {shape} is {SIDE_PHRASES.get(answer, answer)}."
    elif kind == "it_colour":
        text = f"It is {answer}."
    elif kind == "shape_of_colour":
        text = f"The {colour} object is a {answer}."
    elif kind == "other_colour":
        text = f"The {colour} one is a {answer}."
    elif kind == "count_objects":
        text = "There is one object." if answer == "one" else f"There are {answer} objects."
    elif kind == "count_shape":
        text = f"There is one {shape}." if answer == "one" else f"There are {answer} {PLURALS[shape]}."
    elif kind in ("where_shape", "where_combo"):
        text = f"The {thing} is {SIDE_PHRASES[answer]}."
    elif kind in ("on_side", "other_side"):
        text = f"{_capitalised(at_side)} there is {answer}."
    elif kind in ("exists_combo", "exists_shape", "other_exists"):
        text = f"Yes, there is a {thing}." if answer == "yes" else f"No, there is no {thing}."
    elif kind == "describe_scene":
        text = f"I see {answer}."
    else:
        raise ValueError(f"no sentence for question kind '{kind}'")
    return with_articles(text)


def read_answer(kind: str, slots: dict[str, str], reply: str) -> str | None:
    """The answer a reply gives in the sentence style of `kind`; None when the reply is not in that style."""
    reply = reply.strip()
    if kind == "describe_scene":
        match = _DESCRIBED.fullmatch(reply)
        return match.group(1) if match else None
    candidates = list(KIOSK_ANSWERS.values()) if kind in KIOSK_ANSWERS else _ANSWERS[kind] or []
    return next((answer for answer in candidates if sentence(kind, slots, answer) == reply), None)
