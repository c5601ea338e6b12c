"""The models a config needs, and where it names each one: what `mmdialog download` fetches and
`mmdialog bundle` copies.

With a `checkpoint`, the model folder's own config.json names the speech, vision and decoder models (it wins
over the YAML's sections, see mmdialog/loading.py), so those are read from there; the voice always comes
from the YAML.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from mmdialog.settings import MmdialogConfig, TTSBackend

CONFIG, CHECKPOINT = "config", "checkpoint"  # the two documents that name models: the YAML, the model folder's

# How the loaders call each part in their error sentences (encoders/, decoders/).
WHAT = {"checkpoint": "model checkpoint", "speech": "speech model", "vision": "vision encoder",
        "text": "text encoder", "decoder": "decoder", "tokenizer": "tokenizer", "voice": "voice",
        "voice_config": "Coqui model config", "voice_checkpoint": "Coqui model checkpoint"}

# The settings that name a model of the speech / vision / text / decoder part, by role.
_MODEL_KEYS = (("speech", "speech.name"), ("vision", "vision.name"), ("text", "text.name"),
               ("decoder", "decoder.name"), ("tokenizer", "decoder.tokenizer"))


class Kind(str, enum.Enum):
    """Where a model's files come from, which decides how they are fetched and found."""

    local = "local"  # a file or folder named by path
    checkpoint = "checkpoint"  # a saved model folder (config.json + safetensors)
    bundled = "bundled"  # weights inside an installed Python package ("bundled:...")
    whisper = "whisper"  # an openai-whisper name, cached in ~/.cache/whisper
    hub = "hub"  # a Hugging Face hub name, cached by huggingface_hub
    coqui = "coqui"  # a released Coqui TTS model, cached by Coqui's model manager


@dataclass
class ModelRef:
    """One model: its name as written, and every (document, dotted key) that names it."""

    roles: list[str]
    name: str
    kind: Kind
    keys: list[tuple[str, str]] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.roles[0]

    @property
    def what(self) -> str:
        return " and ".join(WHAT[role] for role in self.roles)

    @property
    def label(self) -> str:
        """The name without the folders of the machine it was found on (for files that travel)."""
        return Path(self.name).name if self.kind in (Kind.local, Kind.checkpoint) else self.name

    def describe(self) -> str:
        return f"{self.what} '{self.name}'"


def looks_local(name: str) -> bool:
    """The loaders' rule (encoders/hub.py): a path is absolute, starts with . or ~, or exists; else a hub name."""
    return name.startswith((".", "~", "/")) or Path(name).expanduser().exists()


def _speech_kind(name: str) -> Kind:
    if name.startswith("bundled:"):
        return Kind.bundled
    return Kind.local if looks_local(name) else Kind.whisper


def _inside(name: str, folder: Path | None) -> bool:
    """Whether a path lies inside the checkpoint folder (its tokenizer): it travels with the folder."""
    return folder is not None and looks_local(name) and Path(name).expanduser().resolve().is_relative_to(folder)


def _model_refs(model_cfg: MmdialogConfig, document: str, checkpoint: Path | None) -> list[ModelRef]:
    refs = []
    for role, key in _MODEL_KEYS:
        section, setting = key.split(".")
        name = getattr(getattr(model_cfg, section), setting)
        if not name or (role == "tokenizer" and name == "byt5") or _inside(name, checkpoint):
            continue  # built from a config, a byte tokenizer that needs no files, or part of the checkpoint
        if role == "speech":
            kind = _speech_kind(name)
        elif role == "text" and name.startswith("bundled:"):
            kind = Kind.bundled
        else:
            kind = Kind.local if looks_local(name) else Kind.hub
        refs.append(ModelRef([role], name, kind, [(document, key)]))
    return refs


def _voice_refs(cfg: MmdialogConfig) -> list[ModelRef]:
    tts = cfg.tts
    if tts.backend == TTSBackend.none:
        return []
    if tts.backend == TTSBackend.coqui and (tts.model_config or tts.model_checkpoint):
        return [ModelRef([role], path, Kind.local, [(CONFIG, key)])
                for role, key, path in (("voice_config", "tts.model_config", tts.model_config),
                                        ("voice_checkpoint", "tts.model_checkpoint", tts.model_checkpoint)) if path]
    if not tts.voice:
        return []  # the TTS factory says what is missing when the voice is built
    if tts.backend == TTSBackend.coqui:
        kind = Kind.local if looks_local(tts.voice) else Kind.coqui
    else:
        kind = Kind.bundled if tts.voice.startswith("bundled:") else Kind.local
    return [ModelRef(["voice"], tts.voice, kind, [(CONFIG, "tts.voice")])]


def _merged(refs: list[ModelRef]) -> list[ModelRef]:
    """One entry per model: BLIP-2's vision tower and decoder are one hub checkpoint, fetched and copied once."""
    merged: dict[tuple[Kind, str], ModelRef] = {}
    for ref in refs:
        same = merged.get((ref.kind, ref.name))
        if same is None:
            merged[(ref.kind, ref.name)] = ref
        else:
            same.roles.extend(ref.roles)
            same.keys.extend(ref.keys)
    return list(merged.values())


def required_models(cfg: MmdialogConfig) -> list[ModelRef]:
    """Every model `cfg` loads, in the order the pipeline loads them (checkpoint, speech, vision, text, decoder,
    voice)."""
    from mmdialog.checkpoint import checkpoint_config

    if not cfg.checkpoint:
        return _merged([*_model_refs(cfg, CONFIG, None), *_voice_refs(cfg)])
    folder = Path(cfg.checkpoint).expanduser().resolve()
    own = ModelRef(["checkpoint"], cfg.checkpoint, Kind.checkpoint, [(CONFIG, "checkpoint")])
    return _merged([own, *_model_refs(checkpoint_config(folder), CHECKPOINT, folder), *_voice_refs(cfg)])
