"""How questions are worded: several phrasings per question kind, one of them held out for the test split.

Held-out phrasings use wordings that no seen image question uses ("how about", "where can i find", "tell me",
"... in the picture"), so a test question in a held-out phrasing is new as a sentence, not only as a new
combination of familiar words.

Slots: {colour}, {shape}, {shapes} (plural), {at_side} ("on the left", "in the middle", "on the right").
"a" before a vowel becomes "an" after filling ("an orange star").
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Phrasings:
    seen: tuple[str, ...]
    held_out: str

    def pick(self, rng: random.Random, held_out: bool) -> str:
        return self.held_out if held_out else rng.choice(self.seen)


# Image questions; the key is the question kind, which also decides how the answer is derived (questions.py).
QUESTIONS: dict[str, Phrasings] = {
    "colour_of_shape": Phrasings(
        ("what color is the {shape}?", "what colour is the {shape}?", "which color is the {shape}?"),
        "tell me the color of the {shape}"),
    "shape_of_colour": Phrasings(
        ("what shape is the {colour} object?", "what shape is the {colour} one?", "which shape is {colour}?"),
        "tell me the shape of the {colour} object"),
    "count_objects": Phrasings(
        ("how many objects are there?", "how many shapes are there?", "how many things do you see?"),
        "count the objects in the picture"),
    "count_shape": Phrasings(
        ("how many {shapes} are there?", "how many {shapes} do you see?", "how many {shapes} can you see?"),
        "count the {shapes} in the picture"),
    "where_shape": Phrasings(
        ("where is the {shape}?", "where's the {shape}?", "which side is the {shape} on?"),
        "where can i find the {shape}?"),
    "where_combo": Phrasings(
        ("where is the {colour} {shape}?", "where's the {colour} {shape}?"),
        "where can i find the {colour} {shape}?"),
    "on_side": Phrasings(
        ("what is {at_side}?", "what's {at_side}?", "which object is {at_side}?"),
        "tell me what is {at_side}"),
    "exists_combo": Phrasings(
        ("is there a {colour} {shape}?", "do you see a {colour} {shape}?", "can you see a {colour} {shape}?"),
        "is a {colour} {shape} in the picture?"),
    "exists_shape": Phrasings(
        ("is there a {shape}?", "do you see a {shape}?", "can you see a {shape}?"),
        "is a {shape} in the picture?"),
    "describe_scene": Phrasings(("what do you see?", "what can you see?", "describe the image"),
                                "tell me what is in the picture"),
    # Follow-ups: they only make sense after an earlier turn ("it" is the object that turn was about).
    "it_colour": Phrasings(("what color is it?", "what colour is it?", "and its color?"), "how about its color?"),
    "other_shape": Phrasings(("and the {shape}?", "what about the {shape}?"), "how about the {shape}?"),
    "other_colour": Phrasings(("and the {colour} one?", "what about the {colour} one?"), "how about the {colour} one?"),
    "other_exists": Phrasings(("and a {shape}?", "what about a {shape}?"), "how about a {shape}?"),
    "other_side": Phrasings(("and the one {at_side}?", "what about the one {at_side}?"),
                            "how about the one {at_side}?"),
}

# Questions about the kiosk itself: answered the same whatever the picture, typed without one.
KIOSK_ANSWERS: dict[str, str] = {
    "greeting": "hello how can i help you",
    "closing": "we close at six in the evening",
    "opening": "we open at nine in the morning",
    "toilets": "the toilets are on the ground floor next to the lift",
    "identity": "i am the kiosk assistant and i can tell you about pictures",
    "thanks": "you are welcome",
    "goodbye": "goodbye and have a nice day",
}
KIOSK_QUESTIONS: dict[str, Phrasings] = {
    "greeting": Phrasings(("hello", "hi", "good morning"), "hey there"),
    "closing": Phrasings(("when do you close?", "what time do you close?", "until when are you open?"),
                         "when is closing time?"),
    "opening": Phrasings(("when do you open?", "what time do you open?", "from when are you open?"),
                         "when is opening time?"),
    "toilets": Phrasings(("where are the toilets?", "where is the restroom?", "where is the bathroom?"),
                         "is there a bathroom here?"),
    "identity": Phrasings(("who are you?", "what are you?", "what can you do?"), "what is this kiosk?"),
    "thanks": Phrasings(("thank you", "thanks", "thanks a lot"), "many thanks"),
    "goodbye": Phrasings(("goodbye", "bye", "see you"), "bye bye"),
}

SIDE_PHRASES = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def with_articles(text: str) -> str:
    return _ARTICLE.sub("an ", text)


def fill(template: str, slots: dict[str, str]) -> str:
    """The template with its slots filled (extra slots are ignored) and articles fixed."""
    return with_articles(template.format(**slots))
