"""Task families: for one scene, every question (or short exchange) that has exactly one right answer.

Answers follow one exact-match convention: lower case, ASCII, single spaces, no punctuation; counts as
number words ("zero" ... "four"); positions as the column ("left" / "middle" / "right"); an object as
"a <colour> <shape>" ("an orange star"); a whole scene as its objects in reading order (columns left to right,
top to bottom within one), the last joined by "and"; "yes" / "no"; the kiosk's fixed sentences
(templates.KIOSK_ANSWERS).

Uniqueness rules: "the circle" is only asked about when exactly one circle is in the scene, "the red object"
when exactly one object is red, "the red circle" when exactly one red circle is, "what is on the left?" when
exactly one object is in the left column. Counts and yes/no questions are always well defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import permutations

from mmdialog.synth.scenes import ALL_COMBOS, NUMBER_WORDS, PLURALS, SHAPES, Combo, Scene, SceneObject
from mmdialog.synth.templates import KIOSK_ANSWERS, SIDE_PHRASES, with_articles


@dataclass(frozen=True)
class Question:
    kind: str  # a key of templates.QUESTIONS or templates.KIOSK_QUESTIONS: how it is worded
    slots: tuple[tuple[str, str], ...]
    answer: str


@dataclass(frozen=True)
class Candidate:
    """One dialogue's questions and answers, before wording: a single question or a question and a follow-up."""

    family: str
    kind: str  # the question kind, or the follow-up pattern ("where_then_colour")
    questions: tuple[Question, ...]
    # The colour-shape pairs the dialogue names, or whose object it asks about ("what color is the star?" is
    # about the star's pair); counting and shape-only existence questions are about no pair.
    combos: frozenset[Combo]

    @property
    def answer(self) -> str:
        """The final answer: the one the dialogue is about (the first turn of a follow-up only sets it up)."""
        return self.questions[-1].answer


def _question(kind: str, answer: str, shape: str = "", colour: str = "", side: str = "") -> Question:
    slots = {"shape": shape, "shapes": PLURALS.get(shape, ""), "colour": colour,
             "at_side": SIDE_PHRASES.get(side, "")}
    return Question(kind, tuple((k, v) for k, v in slots.items() if v), answer)


def describe(item: SceneObject) -> str:
    return with_articles(f"a {item.colour} {item.shape}")


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


# One question each; the families and follow-ups below combine them.
def colour_of(o: SceneObject) -> Question:
    return _question("colour_of_shape", o.colour, shape=o.shape)


def shape_of(o: SceneObject) -> Question:
    return _question("shape_of_colour", o.shape, colour=o.colour)


def where_shape(o: SceneObject) -> Question:
    return _question("where_shape", o.side, shape=o.shape)


def on_side(o: SceneObject) -> Question:
    return _question("on_side", describe(o), side=o.side)


def exists_shape(scene: Scene, shape: str, kind: str = "exists_shape") -> Question:
    return _question(kind, _yes_no(bool(scene.with_shape(shape))), shape=shape)


def _it_colour(o: SceneObject) -> Question:
    return _question("it_colour", o.colour)


def _single(family: str, question: Question, about: Iterable[SceneObject] = ()) -> Candidate:
    return Candidate(family, question.kind, (question,), frozenset(o.combo for o in about))


def colour_family(scene: Scene) -> list[Candidate]:
    return [_single("colour", colour_of(o), [o]) for o in scene.unique_by_shape()]


def shape_family(scene: Scene) -> list[Candidate]:
    return [_single("shape", shape_of(o), [o]) for o in scene.unique_by_colour()]


def count_family(scene: Scene) -> list[Candidate]:
    total = _single("count", _question("count_objects", NUMBER_WORDS[len(scene.objects)]))
    per_shape = [
        _single("count", _question("count_shape", NUMBER_WORDS[len(scene.with_shape(s))], shape=s))
        for s in SHAPES
    ]
    return [total, *per_shape]


def position_family(scene: Scene) -> list[Candidate]:
    where_combo = [
        _single("position", _question("where_combo", o.side, shape=o.shape, colour=o.colour), [o])
        for o in scene.unique_by_combo()
    ]
    return [
        *(_single("position", where_shape(o), [o]) for o in scene.unique_by_shape()),
        *where_combo,
        *(_single("position", on_side(o), [o]) for o in scene.alone_in_column()),
    ]


def existence_family(scene: Scene) -> list[Candidate]:
    colours, shapes = {o.colour for o in scene.objects}, {o.shape for o in scene.objects}
    # "No" questions name a colour or a shape that is in the picture (a red square beside a red circle):
    # an absent pair that shares nothing with the scene would be answerable from a glance at the colours.
    combos = [c for c in ALL_COMBOS if c in scene.combos() or c[0] in colours or c[1] in shapes]
    by_combo = [
        Candidate("existence", "exists_combo",
                  (_question("exists_combo", _yes_no(c in scene.combos()), shape=c[1], colour=c[0]),),
                  frozenset([c]))
        for c in combos
    ]
    return [*by_combo, *(_single("existence", exists_shape(scene, s)) for s in SHAPES)]


def describe_family(scene: Scene) -> list[Candidate]:
    """"What do you see?": every object, in reading order. The one question whose answer names all of them,
    it is also the densest lesson about the picture a training example can give."""
    named = [describe(o) for o in sorted(scene.objects, key=lambda o: (o.column, o.y))]
    answer = named[0] if len(named) == 1 else " ".join(named[:-1]) + " and " + named[-1]
    return [_single("describe", _question("describe_scene", answer), scene.objects)]


def _follow(kind: str, first: Question, second: Question, about: Iterable[SceneObject]) -> Candidate:
    return Candidate("followup", kind, (first, second), frozenset(o.combo for o in about))


def followup_family(scene: Scene) -> list[Candidate]:
    """Two-turn exchanges whose second question only makes sense with the first ("it", "and the star?")."""
    by_shape, by_colour, alone = scene.unique_by_shape(), scene.unique_by_colour(), scene.alone_in_column()
    absent = [s for s in SHAPES if not scene.with_shape(s)]
    it_colour = [
        *(_follow("exist_then_colour", exists_shape(scene, o.shape), _it_colour(o), [o]) for o in by_shape),
        *(_follow("where_then_colour", where_shape(o), _it_colour(o), [o]) for o in by_shape),
    ]
    other_exists = [
        _follow("exist_then_other", exists_shape(scene, s), exists_shape(scene, s2, "other_exists"), [])
        for s in absent for s2 in SHAPES if s2 != s
    ]
    pairs = [
        *(_follow("colour_then_other", colour_of(a), _question("other_shape", b.colour, shape=b.shape), [a, b])
          for a, b in permutations(by_shape, 2)),
        *(_follow("where_then_other", where_shape(a), _question("other_shape", b.side, shape=b.shape), [a, b])
          for a, b in permutations(by_shape, 2)),
        *(_follow("shape_then_other", shape_of(a), _question("other_colour", b.shape, colour=b.colour), [a, b])
          for a, b in permutations(by_colour, 2)),
        *(_follow("side_then_side", on_side(a), _question("other_side", describe(b), side=b.side), [a, b])
          for a, b in permutations(alone, 2)),
    ]
    return [*it_colour, *other_exists, *pairs]


FAMILIES: dict[str, Callable[[Scene], list[Candidate]]] = {
    "colour": colour_family,
    "shape": shape_family,
    "count": count_family,
    "position": position_family,
    "existence": existence_family,
    "followup": followup_family,
    "describe": describe_family,
}


def kiosk_question(intent: str) -> Question:
    return Question(intent, (), KIOSK_ANSWERS[intent])
