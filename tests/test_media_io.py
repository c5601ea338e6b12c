"""load_audio / load_image on what people really upload; every input is made here, nothing binary is committed.

Audio: one 1.5 s speech clip (espeak-ng, or a tone without it) converted by ffmpeg into the formats browsers,
phones and editors produce. Images: made with Pillow in every mode and container that needs special care.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from encoders.audio_io import load_audio
from encoders.image_io import load_image
from mmdialog.errors import InputError

RATE = 16_000
SECONDS = 1.5
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="the ffmpeg program is not installed")


def assert_clear(error: pytest.ExceptionInfo[InputError], *words: str, folder: Path | None = None) -> None:
    """One readable sentence that names the problem, and no server path in it."""
    message = str(error.value)
    assert message and "\n" not in message and "Traceback" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    if folder is not None:
        assert str(folder) not in message, message


# ----------------------------------------------------------------------------------------------- audio


def ffmpeg(target: Path, *args: str) -> Path:
    """Run ffmpeg with `args` (inputs and options); webm is streamed to a pipe, as a browser's MediaRecorder does."""
    streamed = target.suffix == ".webm"
    command = [FFMPEG, "-nostdin", "-loglevel", "error", "-y", *args, "pipe:1" if streamed else str(target)]
    result = subprocess.run(command, capture_output=True, check=True)
    if streamed:
        target.write_bytes(result.stdout)
    return target


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The reference clip, made without the code under test: a 16 kHz float32 WAV of exactly 1.5 s."""
    path = tmp_path_factory.mktemp("speech") / "reference.wav"
    if shutil.which("espeak-ng") and FFMPEG:
        spoken = path.with_name("espeak.wav")  # 22.05 kHz, about 1.3 s
        subprocess.run(["espeak-ng", "-w", str(spoken), "is there a red circle"], check=True, capture_output=True)
        ffmpeg(path, "-i", str(spoken), "-af", f"apad=whole_dur={SECONDS}", "-t", str(SECONDS), "-ar", str(RATE),
               "-c:a", "pcm_f32le")
    else:  # a gliding tone that swells and fades
        t = np.arange(int(SECONDS * RATE)) / RATE
        sf.write(path, 0.3 * np.sin(2 * np.pi * (220 + 300 * t) * t) * np.sin(np.pi * t / SECONDS), RATE, "FLOAT")
    samples, _ = sf.read(path, dtype="float32")
    assert len(samples) == SECONDS * RATE and np.abs(samples).max() > 0.05
    return path, samples


def similarity(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 1600) -> float:
    """Correlation after the best shift of up to 100 ms (lossy codecs add encoder delay)."""
    n = len(reference) + len(decoded)
    xcorr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(reference, n)), n)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]  # a negative index reads a negative lag from the end
    lag = int(lags[np.argmax(xcorr[lags])])
    a, b = (decoded[lag:], reference) if lag >= 0 else (decoded, reference[-lag:])
    m = min(len(a), len(b))
    return float(np.corrcoef(a[:m], b[:m])[0, 1])


def assert_like_reference(samples: np.ndarray, reference: np.ndarray, lossless: bool = True) -> None:
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / RATE - SECONDS) <= 0.06, len(samples) / RATE
    assert similarity(reference, samples) > (0.9 if lossless else 0.8)
    loudness = np.sqrt(np.mean(samples**2) / np.mean(reference**2))
    assert 0.5 < loudness < 2.0  # nothing rescaled by a wrong integer range


AUDIO_FORMATS = {  # name: (suffix, ffmpeg arguments, lossless)
    "wav-16bit": ("wav", ["-c:a", "pcm_s16le"], True),
    "wav-float32": ("wav", ["-c:a", "pcm_f32le"], True),
    "wav-8khz": ("wav", ["-ar", "8000", "-c:a", "pcm_s16le"], True),
    "wav-stereo-48khz": ("wav", ["-ar", "48000", "-ac", "2", "-c:a", "pcm_s16le"], True),
    "flac": ("flac", ["-c:a", "flac"], True),
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-b:a", "64k"], False),
    "ogg-vorbis": ("ogg", ["-c:a", "libvorbis"], False),
    "ogg-opus": ("ogg", ["-c:a", "libopus"], False),
    # Written live like a browser's MediaRecorder: 48 kHz opus, no duration, no cues.
    "webm-opus": ("webm", ["-ar", "48000", "-ac", "2", "-c:a", "libopus", "-f", "webm"], False),
    "m4a-aac": ("m4a", ["-c:a", "aac", "-b:a", "96k"], False),
}


@needs_ffmpeg
@pytest.mark.parametrize("name", AUDIO_FORMATS)
def test_audio_formats_load_as_16khz_mono(name: str, speech, tmp_path: Path) -> None:
    suffix, args, lossless = AUDIO_FORMATS[name]
    reference_path, reference = speech
    try:
        path = ffmpeg(tmp_path / f"clip.{suffix}", "-i", str(reference_path), *args)
    except subprocess.CalledProcessError:
        pytest.skip(f"this ffmpeg cannot write {name}")
    assert_like_reference(load_audio(path), reference, lossless)
    assert_like_reference(load_audio(str(path)), reference, lossless)
    if name in ("wav-16bit", "webm-opus", "m4a-aac"):  # bytes go through the same decoders
        assert_like_reference(load_audio(path.read_bytes()), reference, lossless)


@needs_ffmpeg
def test_long_m4a_with_index_at_the_end(tmp_path: Path) -> None:
    # Phones and ffmpeg put the mp4 index (moov) after the data; past a few MB ffmpeg cannot reach it
    # through a pipe, only in a file it can seek in. 35 s of 48 kHz stereo ALAC is about 7 MB.
    noise = "anoisesrc=d=35:r=48000:a=0.3"
    path = ffmpeg(tmp_path / "memo.m4a", "-f", "lavfi", "-i", noise, "-ac", "2", "-c:a", "alac")
    data = path.read_bytes()
    assert len(data) > 6_000_000 and data.find(b"moov") > data.find(b"mdat")
    for source in (path, data):
        assert abs(len(load_audio(source)) / RATE - 35) < 0.06


def test_array_inputs(speech) -> None:
    _, reference = speech
    assert_like_reference(load_audio(reference), reference)  # a bare array is taken to be 16 kHz
    as_int16 = (reference * 32767).astype(np.int16)
    assert_like_reference(load_audio((RATE, as_int16)), reference)  # what gr.Audio(type="numpy") gives
    at_48k = np.repeat(reference, 3)  # a crude 48 kHz version, good enough for these checks
    stereo = np.stack([at_48k, at_48k], axis=1)
    assert_like_reference(load_audio((48_000, stereo)), reference)  # (n, channels)
    assert_like_reference(load_audio((48_000, stereo.T.copy())), reference)  # (channels, n)
    assert len(load_audio(reference, sample_rate=8000)) == len(reference) // 2
    odd = np.interp(np.arange(int(SECONDS * 44_099)) * RATE / 44_099, np.arange(len(reference)), reference)
    assert_like_reference(load_audio((44_099, odd.astype(np.float32))), reference)  # an odd rate, resampled quickly


def test_truncated_wav(speech, tmp_path: Path) -> None:
    # Decision: a WAV cut off mid-data (an interrupted upload) loads as far as it goes; one with a header
    # and no samples at all is an InputError.
    _, reference = speech
    sf.write(tmp_path / "whole.wav", reference, RATE, subtype="PCM_16")
    data = (tmp_path / "whole.wav").read_bytes()
    start = data.index(b"data") + 8  # where the samples begin
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: start + 2 * 12_000 + 1])  # 12000 samples and half of the next one
    for samples in (load_audio(cut), load_audio(cut.read_bytes())):
        assert len(samples) == 12_000 and similarity(reference[:12_000], samples) > 0.99
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(data[:start])
    with pytest.raises(InputError) as error:
        load_audio(header_only)
    assert_clear(error, "header.wav", folder=tmp_path)


@pytest.mark.parametrize(
    "source, words",
    [
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), ["nan"]),
        (np.zeros(0, dtype=np.float32), ["empty"]),
        (np.zeros((2, 3, 4)), ["shape"]),
        (np.array(["a", "b"]), ["numbers"]),
        ((RATE,), ["sample_rate, samples"]),
        (("fast", np.zeros(10)), ["sample rate"]),
        ((-5, np.zeros(10)), ["sample rate"]),
        ((10**9, np.zeros(10)), ["sample rate"]),
        (b"", ["empty"]),
        (object(), ["object", "not supported"]),
        ([0.1, 0.2], ["list", "not supported"]),
    ],
    ids=["nan", "empty", "3-d", "strings", "short-tuple", "text-rate", "negative-rate", "absurd-rate", "no-bytes",
         "object", "list"],
)
def test_bad_audio_values(source, words: list[str]) -> None:
    with pytest.raises(InputError) as error:
        load_audio(source)
    assert_clear(error, *words)


# ----------------------------------------------------------------------------------------------- images

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def two_halves(left=RED, right=BLUE, size=(64, 48), mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def assert_colour(image: Image.Image, xy: tuple[int, int], expected, tolerance: int = 40) -> None:
    assert image.mode == "RGB"
    assert all(abs(a - b) <= tolerance for a, b in zip(image.getpixel(xy), expected, strict=True)), image.getpixel(xy)


def assert_halves(image: Image.Image, left, right, tolerance: int = 40) -> None:
    assert image.size == (64, 48)
    assert_colour(image, (8, 24), left, tolerance)
    assert_colour(image, (56, 24), right, tolerance)


def saved(image: Image.Image, tmp_path: Path, name: str, **options) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_image_formats(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"picture.{fmt.lower()}"
    two_halves().save(path, fmt)
    for source in (path, str(path), path.read_bytes()):
        assert_halves(load_image(source), RED, BLUE)


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in (RED, GREEN, BLUE)]
    path = saved(frames[0], tmp_path, "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(path).n_frames == 3
    assert_colour(load_image(path), (10, 5), RED, tolerance=0)


def test_colour_modes(tmp_path: Path) -> None:
    cmyk = saved(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), tmp_path, "cmyk.jpg", quality=95)
    assert Image.open(cmyk).mode == "CMYK"
    assert_colour(load_image(cmyk), (10, 5), RED)
    rgba = two_halves(left=(255, 0, 0, 0), right=(0, 255, 0, 255), mode="RGBA")  # left fully transparent
    assert_halves(load_image(saved(rgba, tmp_path, "rgba.png")), WHITE, GREEN, tolerance=0)
    la = two_halves(left=(100, 0), right=(100, 255), mode="LA")
    assert_halves(load_image(saved(la, tmp_path, "la.png")), WHITE, (100, 100, 100), tolerance=0)
    palette = two_halves(left=0, right=1, mode="P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, saved as transparent; 1 blue
    assert_halves(load_image(saved(palette, tmp_path, "palette.png", transparency=0)), WHITE, BLUE, tolerance=0)
    assert_colour(load_image(saved(Image.new("L", (5, 5), 77), tmp_path, "grey.png")), (2, 2), (77, 77, 77), 0)
    assert load_image(saved(Image.new("RGB", (1, 1), GREEN), tmp_path, "dot.png")).size == (1, 1)


def test_sixteen_bit_png_keeps_its_grey_levels(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256), (16, 1)).astype(np.uint16)
    path = saved(Image.fromarray(ramp), tmp_path, "depth.png")
    assert Image.open(path).mode == "I;16"
    row = np.asarray(load_image(path))[8, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 2
    assert np.all(np.diff(row) >= 0) and np.mean(row >= 250) < 0.05  # a ramp, not saturated to white


def test_exif_rotation_makes_the_picture_upright(tmp_path: Path) -> None:
    stored = Image.new("RGB", (60, 40), BLUE)  # landscape as stored by the sensor
    stored.paste(RED, (0, 0, 12, 12))  # its top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: the viewer turns it 90 degrees clockwise
    image = load_image(saved(stored, tmp_path, "phone.jpg", exif=exif, quality=95))
    assert image.size == (40, 60)
    assert_colour(image, (40 - 6, 6), RED)  # the stored top-left is now the top-right
    assert_colour(image, (6, 6), BLUE)


def test_big_photo_is_downscaled_and_bomb_refused(tmp_path: Path) -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))
    photo = saved(noise.resize((9000, 6000), Image.Resampling.BILINEAR), tmp_path, "photo.jpg", quality=80)
    image = load_image(photo)
    assert image.size == (2048, 1365)
    assert load_image(photo, max_side=512).size == (512, 341)

    png = bytearray(saved(Image.new("P", (1, 1)), tmp_path, "tiny.png").read_bytes())
    png[16:24] = (30_000).to_bytes(4, "big") * 2  # IHDR width and height
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    (tmp_path / "bomb.png").write_bytes(png)
    for source in (tmp_path / "bomb.png", bytes(png)):
        with pytest.raises(InputError) as error:
            load_image(source)
        assert_clear(error, "decompression bomb", folder=tmp_path)


def test_image_arrays_and_pil_images() -> None:
    assert_colour(load_image(np.full((4, 6, 3), 200, dtype=np.uint8)), (0, 0), (200, 200, 200), 0)
    assert_colour(load_image(np.full((4, 6, 3), 0.5)), (0, 0), (128, 128, 128), 1)  # floats in 0..1
    assert_colour(load_image(np.full((4, 6), 200)), (0, 0), (200, 200, 200), 0)  # int64 holding 8-bit values
    assert_colour(load_image(np.full((4, 6), 1000, dtype=np.uint16)), (0, 0), (4, 4, 4), 1)  # dark stays dark
    assert_colour(load_image(Image.new("RGBA", (3, 3), (0, 0, 0, 0))), (1, 1), WHITE, 0)
    for bad, word in [(np.zeros((4, 6, 5)), "shape"), (np.full((2, 2), np.nan), "nan"), (object(), "object")]:
        with pytest.raises(InputError) as error:
            load_image(bad)
        assert_clear(error, word)


# ----------------------------------------------------------------------------------------------- bad files

BAD_FILES = [  # loader, file name, content (None: no such file), words the message must contain
    (load_audio, "empty.wav", b"", ["empty.wav", "empty"]),
    (load_audio, "noise.wav", np.random.default_rng(0).bytes(20_000), ["noise.wav", "not an audio file"]),
    (load_audio, "notes.mp3", b"shopping list: eggs, milk, a red circle\n" * 40, ["notes.mp3", "not an audio file"]),
    (load_audio, "half-header.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ", ["half-header.wav"]),
    (load_audio, "gone.ogg", None, ["gone.ogg", "does not exist"]),
    (load_image, "noise.png", np.random.default_rng(1).bytes(5_000), ["noise.png", "not an image"]),
    (load_image, "empty.jpg", b"", ["empty.jpg", "empty"]),
    (load_image, "cut.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", ["cut.png", "not an image"]),
    (load_image, "figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", ["figure.eps", "not an image"]),
    (load_image, "gone.png", None, ["gone.png", "does not exist"]),
]


@needs_ffmpeg  # without it, unreadable audio is reported as needing ffmpeg
@pytest.mark.parametrize("load, name, content, words", BAD_FILES, ids=[case[1] for case in BAD_FILES])
def test_bad_files(load, name: str, content: bytes | None, words: list[str], tmp_path: Path) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as error:
        load(path)
    assert_clear(error, *words, folder=tmp_path)  # the file's name, never the server's folders
    if content:
        with pytest.raises(InputError):
            load(content)
