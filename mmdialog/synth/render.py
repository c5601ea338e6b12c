"""Draw a scene as an RGB picture: a pale background, then each object as an anti-aliased filled shape."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmdialog.synth.scenes import COLOURS, RADIUS, Background, Scene, SceneObject

MIN_SIZE, MAX_SIZE = 96, 128
# Shapes are drawn at 4x and box-filtered down: smooth edges without the colour fringes of resampling the
# whole picture (the background and its noise stay at full resolution).
SUPERSAMPLE = 4
STAR_INNER = 0.45  # inner radius of the five-pointed star, relative to the outer one
CROSS_ARM = 0.3  # half the width of the cross's arms


def _unit_polygon(shape: str) -> list[tuple[float, float]] | None:
    """The shape's outline for radius 1 around (0, 0), y pointing down; None for the circle."""
    if shape == "circle":
        return None
    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "diamond":  # narrower than a square turned 45 degrees, so the two never look alike
        return [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)]
    if shape == "triangle":  # pointing up, moved down a little so it looks centred
        return [(math.cos(a), math.sin(a) + 0.15) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        return [
            ((1.0 if k % 2 == 0 else STAR_INNER) * math.cos(-math.pi / 2 + k * math.pi / 5),
             (1.0 if k % 2 == 0 else STAR_INNER) * math.sin(-math.pi / 2 + k * math.pi / 5))
            for k in range(10)
        ]
    if shape == "cross":
        a = CROSS_ARM
        return [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a),
                (-a, -a)]
    raise ValueError(f"unknown shape '{shape}'")


def _background(background: Background, size: int) -> np.ndarray:
    first = np.asarray(background.first, dtype=np.float32)
    if background.kind == "solid":
        pixels = np.broadcast_to(first, (size, size, 3)).copy()
    elif background.kind == "gradient":
        ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
        t = {
            "horizontal": np.broadcast_to(ramp[None, :], (size, size)),
            "vertical": np.broadcast_to(ramp[:, None], (size, size)),
            "diagonal": (ramp[None, :] + ramp[:, None]) / 2,
        }[background.direction]
        second = np.asarray(background.second, dtype=np.float32)
        pixels = first + t[..., None] * (second - first)
    elif background.kind == "noise":
        noise = np.random.default_rng(background.noise_seed).normal(0.0, background.noise_std, (size, size, 3))
        pixels = first + noise.astype(np.float32)
    else:
        raise ValueError(f"unknown background kind '{background.kind}'")
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _mask(item: SceneObject, size: int) -> Image.Image:
    big = size * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = item.x * big, item.y * big, item.radius * big
    outline = _unit_polygon(item.shape)
    if outline is None:
        draw.ellipse((cx - 0.9 * r, cy - 0.9 * r, cx + 0.9 * r, cy + 0.9 * r), fill=255)
    else:
        draw.polygon([(cx + px * r, cy + py * r) for px, py in outline], fill=255)
    return mask.resize((size, size), Image.Resampling.BOX)


def check_image_size(size: int) -> None:
    # Below 96 px a small star is a blob; above 128 px the demo vision tower only pays more for nothing.
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"image size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}")


def render_scene(scene: Scene, size: int = 112) -> Image.Image:
    """The scene as a `size` x `size` RGB image."""
    check_image_size(size)
    image = Image.fromarray(_background(scene.background, size), "RGB")
    for item in scene.objects:
        image.paste(item.rgb, (0, 0, size, size), _mask(item, size))
    return image


PLAIN = Background("solid", (236, 236, 240), (236, 236, 240), "vertical", 0.0, 0)
COLUMN_X = (0.17, 0.5, 0.83)


def placed(colour: str, shape: str, column: int, y: float = 0.5, size: str = "large") -> SceneObject:
    """An object of the world's vocabulary at the centre of its column (0 left, 1 middle, 2 right)."""
    return SceneObject(colour, shape, size, column, COLUMN_X[column], y, RADIUS[size], COLOURS[colour])


def draw(path: Path, *objects: SceneObject, background: Background = PLAIN) -> Path:
    """A new picture in the world's style, saved as PNG: what a demo, a test or a benchmark shows the model."""
    render_scene(Scene(tuple(objects), background)).save(path, format="PNG")
    return path
