"""Hostile and unusual inputs, made on the fly (no committed binaries): what kiosks and public pages get sent.

Each case is one turn's inputs and what must come of it:
- `answer`: valid but unusual input (CMYK, 16-bit, 8 kHz, stereo 48 kHz, animated, very large): a normal
  reply, the same as for the ordinary version of the same picture or question;
- `refuse`: invalid input: a one-line "Sorry: ..." message and an error, the conversation untouched;
- `cope`: either is fine (noise may or may not be heard as words), as long as nothing breaks.
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from encoders.audio_io import resample

QUESTION = "what color is the circle?"


@dataclass
class Case:
    name: str
    expect: str  # answer | refuse | cope
    text: str | None = None
    image: str | None = None
    audio: str | None = None
    words: list[str] = field(default_factory=list)  # a refusal's message must contain these
    spoken: bool = False  # an `answer` to compare with the ordinary spoken question's

    def inputs(self) -> dict:
        return {"text": self.text, "image": self.image, "audio": self.audio}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 100_000) -> Path:
    """A few hundred bytes claiming side x side pixels: a decoder that believes it allocates tens of GB."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = zlib.compress(b"\x00" * (1 + 3 * side) * 4, 9)  # four rows; the rest of the image never comes
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
                     + _png_chunk(b"IEND", b""))
    return path


def _huge_photo(scene: Image.Image, path: Path, side: int = 20_000) -> Path:
    scene.resize((side, side), Image.Resampling.NEAREST).save(path, format="JPEG", quality=80)
    return path


def _animated_gif(scene: Image.Image, path: Path) -> Path:
    other = Image.new("RGB", scene.size, (20, 20, 20))
    scene.save(path, format="GIF", save_all=True, append_images=[other, scene], duration=200, loop=0)
    return path


def _sixteen_bit_png(scene_path: Path, path: Path) -> Path:
    """48-bit RGB (16 bits a channel), as scanners and editors write; Pillow cannot write it, ffmpeg can."""
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(scene_path), "-pix_fmt", "rgb48be", str(path)],
                   check=True)
    return path


def _audio_cases(folder: Path, speech: tuple[int, np.ndarray]) -> list[Case]:
    rate, samples = speech
    mono16k = resample(samples.astype(np.float32), rate, 16_000)
    sf.write(folder / "question.wav", mono16k, 16_000, subtype="PCM_16")
    whole = (folder / "question.wav").read_bytes()
    (folder / "cut.wav").write_bytes(whole[: len(whole) * 3 // 4])  # an upload interrupted near the end
    stereo48k = resample(mono16k, 16_000, 48_000)
    sf.write(folder / "stereo-48k.wav", np.stack([stereo48k, 0.8 * stereo48k], axis=1), 48_000)
    sf.write(folder / "phone-8k.wav", resample(mono16k, 16_000, 8_000), 8_000, subtype="PCM_16")
    sf.write(folder / "ten-minutes.wav", np.full(16_000 * 600, 0.05, dtype=np.float32), 16_000, subtype="PCM_16")
    sf.write(folder / "silence.wav", np.zeros(16_000 * 3, dtype=np.float32), 16_000)
    noise = np.clip(np.random.default_rng(0).normal(0, 2.0, 16_000 * 3), -1, 1).astype(np.float32)
    sf.write(folder / "clipped-noise.wav", noise, 16_000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "random.wav").write_bytes(np.random.default_rng(1).bytes(30_000))
    (folder / "notes.mp3").write_text("shopping list: eggs, milk, a red circle\n" * 50)
    audio = {name: str(folder / name) for name in ("question.wav", "cut.wav", "stereo-48k.wav", "phone-8k.wav",
                                                  "ten-minutes.wav", "silence.wav", "clipped-noise.wav",
                                                  "empty.wav", "random.wav", "notes.mp3")}
    return [
        Case("spoken question, truncated WAV", "answer", audio=audio["cut.wav"], spoken=True),
        Case("stereo 48 kHz", "answer", audio=audio["stereo-48k.wav"], spoken=True),
        Case("8 kHz", "answer", audio=audio["phone-8k.wav"], spoken=True),
        Case("10-minute recording", "refuse", audio=audio["ten-minutes.wav"], words=["600 s", "limit"]),
        Case("pure silence", "answer", audio=audio["silence.wav"], words=["didn't catch"]),
        Case("clipped noise", "cope", audio=audio["clipped-noise.wav"]),
        Case("empty file", "refuse", audio=audio["empty.wav"], words=["empty"]),
        Case("random bytes named .wav", "refuse", audio=audio["random.wav"], words=["not an audio file"]),
        Case("text file named .mp3", "refuse", audio=audio["notes.mp3"], words=["not an audio file"]),
    ]


def _image_cases(folder: Path, scene_path: Path) -> list[Case]:
    scene = Image.open(scene_path).convert("RGB")
    paths = {
        "cmyk": folder / "cmyk.jpg", "huge": folder / "huge.jpg", "one": folder / "one-pixel.png",
        "bomb": folder / "bomb.png", "random": folder / "random.png",
    }
    scene.convert("CMYK").save(paths["cmyk"], format="JPEG", quality=95)
    _huge_photo(scene, paths["huge"])
    Image.new("RGB", (1, 1), (200, 30, 30)).save(paths["one"])
    bomb_png(paths["bomb"])
    paths["random"].write_bytes(np.random.default_rng(2).bytes(20_000))
    sixteen = _sixteen_bit_png(scene_path, folder / "sixteen-bit.png")
    gif = _animated_gif(scene, folder / "animated.gif")
    return [
        Case("CMYK JPEG", "answer", QUESTION, str(paths["cmyk"])),
        Case("16-bit PNG", "answer", QUESTION, str(sixteen)),
        Case("animated GIF", "answer", QUESTION, str(gif)),
        Case("20,000 x 20,000 photo", "answer", QUESTION, str(paths["huge"])),
        Case("1-pixel image", "cope", QUESTION, str(paths["one"])),
        Case("decompression-bomb PNG", "refuse", QUESTION, str(paths["bomb"]), words=["too many pixels"]),
        Case("random bytes named .png", "refuse", QUESTION, str(paths["random"]), words=["not an image"]),
    ]


def build_corpus(folder: Path, scene_path: Path, speech: tuple[int, np.ndarray]) -> list[Case]:
    """Every case, its files written under `folder`. `scene_path` is a picture whose QUESTION has a known
    answer; `speech` is QUESTION spoken, as (sample rate, samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        *_image_cases(folder, scene_path),
        *_audio_cases(folder, speech),
        Case("100,000-character message", "refuse", "x" * 100_000, words=["too long", "100,000"]),
        Case("control characters and right-to-left marks", "answer",
             "what\x00 color\x1b is\u202e the\u2066 circle?\u200f\x7f", str(scene_path)),
    ]


def ordinary_spoken_question(folder: Path) -> str:
    """The spoken question at 16 kHz, as recorded: the reference for the unusual audio formats."""
    return str(folder / "question.wav")
