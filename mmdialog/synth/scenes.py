"""The scene world: its vocabulary and scenes drawn from a seeded RNG.

A scene holds 1-4 coloured shapes on a layout of 3 columns (left / middle / right) and 2 rows. Questions only
ever ask about columns, so a position answer is never ambiguous; an object alone in its column may sit at any
height. Everything the renderer needs (exact centre, radius, jittered colour, background) is drawn here, so
rendering is a pure function of the scene and the scene description alone re-derives every answer.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

RGB = tuple[int, int, int]
Combo = tuple[str, str]  # (colour, shape)

# Saturated colours, each with one channel <= 70, so none can be mistaken for the pale backgrounds below.
COLOURS: dict[str, RGB] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (40, 80, 215),
    "yellow": (235, 200, 25),
    "purple": (135, 55, 175),
    "orange": (240, 125, 20),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = ("small", "large")
SIDES = ("left", "middle", "right")
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}
ALL_COMBOS: tuple[Combo, ...] = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)

# More crowded scenes make counting and uniqueness questions harder; one-object scenes stay as easy anchors.
OBJECT_COUNT_WEIGHTS = {1: 0.15, 2: 0.25, 3: 0.30, 4: 0.30}
RADIUS = {"small": 0.085, "large": 0.13}  # fractions of the image side
# Jitter bounds keep a large object inside its column (half a column is 0.167 of the side) and two stacked
# objects apart, so no object ever touches another.
RADIUS_JITTER = 0.08
X_JITTER = 0.025
ROW_Y = (0.25, 0.75)
ROW_JITTER = 0.03
COLOUR_JITTER = 12
# Backgrounds are pale, nearly grey tints: every channel >= 215 and little spread between channels.
TINT_LOW, TINT_HIGH, TINT_SPREAD = 215, 250, 25
BACKGROUND_KINDS = ("solid", "gradient", "noise")


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    column: int  # index into SIDES
    x: float  # centre, fractions of the image side
    y: float
    radius: float
    rgb: RGB  # the drawn colour: the named colour with a little jitter

    @property
    def combo(self) -> Combo:
        return self.colour, self.shape

    @property
    def side(self) -> str:
        return SIDES[self.column]


@dataclass(frozen=True)
class Background:
    kind: str  # one of BACKGROUND_KINDS
    first: RGB
    second: RGB  # the gradient's far end (unused by the other kinds)
    direction: str  # "horizontal" | "vertical" | "diagonal", for gradients
    noise_std: float  # for "noise" backgrounds, in 0-255 units
    noise_seed: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: Background

    def with_shape(self, shape: str) -> list[SceneObject]:
        return [o for o in self.objects if o.shape == shape]

    def with_colour(self, colour: str) -> list[SceneObject]:
        return [o for o in self.objects if o.colour == colour]

    def in_column(self, side: str) -> list[SceneObject]:
        return [o for o in self.objects if o.side == side]

    def unique_by_shape(self) -> list[SceneObject]:
        """Objects whose shape no other object has: 'the circle' names exactly one of them."""
        counts = Counter(o.shape for o in self.objects)
        return [o for o in self.objects if counts[o.shape] == 1]

    def unique_by_colour(self) -> list[SceneObject]:
        counts = Counter(o.colour for o in self.objects)
        return [o for o in self.objects if counts[o.colour] == 1]

    def unique_by_combo(self) -> list[SceneObject]:
        counts = Counter(o.combo for o in self.objects)
        return [o for o in self.objects if counts[o.combo] == 1]

    def alone_in_column(self) -> list[SceneObject]:
        """Objects that are the only one in their column: 'what is on the left?' has one answer."""
        counts = Counter(o.column for o in self.objects)
        return [o for o in self.objects if counts[o.column] == 1]

    def combos(self) -> set[Combo]:
        return {o.combo for o in self.objects}

    def describe(self) -> dict:
        """A JSON-ready description: enough to re-derive every answer and to check the picture."""
        return {"objects": [asdict(o) for o in self.objects], "background": asdict(self.background)}


def pick_held_out(rng: random.Random, count: int = 4) -> list[Combo]:
    """`count` combos with distinct colours and distinct shapes: every colour and every shape is still
    seen in training with other partners, so the held-out pairing is the only new thing at test time."""
    return sorted(zip(rng.sample(list(COLOURS), count), rng.sample(SHAPES, count), strict=True))


def _tint(rng: random.Random) -> RGB:
    base = rng.randint(TINT_LOW + TINT_SPREAD, TINT_HIGH)
    return tuple(base - rng.randint(0, TINT_SPREAD) for _ in range(3))  # type: ignore[return-value]


def _background(rng: random.Random) -> Background:
    return Background(
        kind=rng.choice(BACKGROUND_KINDS),
        first=_tint(rng),
        second=_tint(rng),
        direction=rng.choice(("horizontal", "vertical", "diagonal")),
        noise_std=round(rng.uniform(3.0, 8.0), 2),
        noise_seed=rng.getrandbits(32),
    )


def _jittered(rgb: RGB, rng: random.Random) -> RGB:
    return tuple(min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in rgb)  # type: ignore


def sample_scene(rng: random.Random, combos: Sequence[Combo], include: Combo | None = None) -> Scene:
    """A scene whose objects use only `combos`, plus `include` (a held-out combo) as one object if given."""
    count = rng.choices(list(OBJECT_COUNT_WEIGHTS), weights=list(OBJECT_COUNT_WEIGHTS.values()))[0]
    chosen = [rng.choice(combos) for _ in range(count)]
    if include is not None:
        chosen[rng.randrange(count)] = include
    cells = rng.sample([(column, row) for column in range(len(SIDES)) for row in range(len(ROW_Y))], count)
    per_column = Counter(column for column, _ in cells)
    objects = []
    for (colour, shape), (column, row) in zip(chosen, cells, strict=True):
        size = rng.choice(SIZES)
        radius = RADIUS[size] * (1 + rng.uniform(-RADIUS_JITTER, RADIUS_JITTER))
        if per_column[column] == 1:  # alone in its column: any height that keeps it inside the picture
            y = rng.uniform(radius + 0.04, 1 - radius - 0.04)
        else:
            y = ROW_Y[row] + rng.uniform(-ROW_JITTER, ROW_JITTER)
        x = (column + 0.5) / len(SIDES) + rng.uniform(-X_JITTER, X_JITTER)
        rgb = _jittered(COLOURS[colour], rng)
        objects.append(SceneObject(colour, shape, size, column, round(x, 4), round(y, 4), round(radius, 4), rgb))
    # Left to right, top to bottom: a stable order for the description file.
    objects.sort(key=lambda o: (o.column, o.y))
    return Scene(tuple(objects), _background(rng))
