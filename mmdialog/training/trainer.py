"""The training loop, on accelerate: the same code on one CPU, one GPU, DDP, FSDP or DeepSpeed.

Launch with `mmdialog train --config C` (one process) or `accelerate launch -m mmdialog.cli train ...`.
What is minimised is the objective's (`train.objective`): supervised, the cross-entropy per assistant token
over the whole global batch; dpo, the DPO loss per preference pair (mmdialog/training/dpo.py). Either way
each process sums its examples' losses and divides by the count of all processes together, so N processes
with batch B compute exactly what one process with batch N*B computes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mmdialog.data.dataset import DialogueDataset, collate
from mmdialog.data.format import DialogueRecord, LoadReport, load_dialogues
from mmdialog.data.noise import AudioSwap, ContextNoise, SentenceOnly, TokenNoise
from mmdialog.data.sampling import LengthSortedSampler, WeightedEpochSampler, example_weights
from mmdialog.device import configure_threads, cpu_has_native_bf16, precision_setting
from mmdialog.errors import ConfigError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import MmdialogConfig, Objective, TextMode, TrainSettings
from mmdialog.training import checkpoints
from mmdialog.training.checkpoints import TrainerState
from mmdialog.training.optim import build_optimizer, build_scheduler
from mmdialog.training.plot import plot_losses

logger = logging.getLogger(__name__)


def trains_on_cpu(config: MmdialogConfig) -> bool:
    return config.runtime.device == "cpu" or not torch.cuda.is_available()


def mixed_precision(setting: str, on_gpu: bool | None = None) -> str:
    """accelerate's mixed_precision for train.mixed_precision. auto: bf16 (fp16 where the GPU lacks it) on a
    GPU; on the CPU, bf16 only where the CPU computes it natively (a step in about two thirds of the fp32
    time), else fp32. An explicit bf16 is kept, with a warning where the CPU would emulate it."""
    setting = precision_setting(setting, "train.mixed_precision")
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    if setting == "auto":
        if on_gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "no"
    if setting == "bf16" and not on_gpu and not cpu_has_native_bf16():
        logger.warning("train.mixed_precision=bf16 on a CPU without native bf16 (AVX512-BF16 or AMX): autocast "
                       "emulates it, about 25 times slower than fp32; use auto or no")
    return "no" if setting == "fp32" else setting


def build_model(config: MmdialogConfig) -> MultimodalDialogueModel:
    tokenizer = config.decoder.tokenizer or ""
    if tokenizer.startswith("bpe:") and not config.train.init_from:
        # A decoder trained from scratch gets a tokenizer trained on the same data, saved beside the run.
        from mmdialog.data.tokenizer import tokenizer_for_training

        folder = Path(config.train.output_dir) / "tokenizer"
        files = [f for f in (config.train.data, config.train.eval_data) if f]
        tokenizer_for_training(tokenizer, files).save_pretrained(str(folder))
        config.decoder.tokenizer = str(folder)
    if config.train.init_from:
        # Architecture from the saved folder; what to train and how, from this config.
        overrides = [f"{c}.freeze={getattr(config, c).freeze.value}" for c in ("speech", "vision", "decoder")]
        return MultimodalDialogueModel.from_pretrained(config.train.init_from, overrides)
    return MultimodalDialogueModel.from_config(config)


def global_mean(summed: torch.Tensor, count: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """This process's `summed` losses divided by the `count` of all processes together."""
    global_count = accelerator.gather(count.detach().reshape(1)).sum().clamp(min=1)
    # DDP averages gradients over processes; multiplying back by their number makes the result the
    # global mean however the examples are spread over processes.
    return summed * accelerator.num_processes / global_count


def token_loss(model, batch, accelerator: Accelerator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss to backpropagate, this process's summed loss, its token count)."""
    core = accelerator.unwrap_model(model)
    logits = model(batch).logits
    labels = core.labels(batch)
    summed = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
    tokens = (labels != -100).sum()
    return global_mean(summed, tokens, accelerator), summed.detach(), tokens


class TrainingObjective(Protocol):
    """What a run reads and minimises. `loss` returns the loss to backpropagate and this process's sums of
    what is logged, with the number of examples (or tokens) they sum over as `count`; `metrics` turns
    sums gathered over steps or processes into the logged values, `loss` among them."""

    def load(self, path: str | Path, skip_bad: bool) -> tuple[Sequence[DialogueRecord], LoadReport]: ...

    def dataset(self, records: Sequence[DialogueRecord], model: MultimodalDialogueModel,
                speech_modes: Sequence = ()) -> Dataset: ...

    def loss(self, model, batch: list, accelerator: Accelerator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def metrics(self, sums: dict[str, float]) -> dict[str, float]: ...


class Supervised:
    """Cross-entropy of every assistant turn given its context (train.objective=sft)."""

    def load(self, path: str | Path, skip_bad: bool) -> tuple[Sequence[DialogueRecord], LoadReport]:
        return load_dialogues(path, skip_bad=skip_bad)

    def dataset(self, records: Sequence[DialogueRecord], model: MultimodalDialogueModel,
                speech_modes: Sequence = ()) -> Dataset:
        return DialogueDataset(records, model, speech_modes=speech_modes)

    def loss(self, model, batch: list, accelerator: Accelerator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, summed, tokens = token_loss(model, batch, accelerator)
        return loss, {"loss": summed, "count": tokens}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        loss = sums["loss"] / max(sums["count"], 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50))}


def build_objective(config: MmdialogConfig, model: MultimodalDialogueModel,
                    accelerator: Accelerator) -> TrainingObjective:
    if config.train.objective == Objective.dpo:
        from mmdialog.training.dpo import DirectPreference

        return DirectPreference.for_training(config, model, accelerator)
    return Supervised()


def _with_noise(config: MmdialogConfig, model: MultimodalDialogueModel, dataset: Dataset) -> Dataset:
    """The training set wrapped in the context noise the config asks for (mmdialog/data/noise.py)."""
    settings = config.train
    noisy = (settings.audio_swap, settings.token_noise, settings.sentence_only)
    if any(noisy) and settings.objective != Objective.sft:
        raise ConfigError("train.audio_swap, token_noise and sentence_only are for supervised training (objective sft)")
    if settings.audio_swap:
        dataset = AudioSwap(dataset, settings.audio_swap, settings.seed)  # type: ignore[arg-type]
    if settings.token_noise:
        dataset = TokenNoise(dataset, model.tokenizer, config.dialogue, settings.token_noise, settings.seed)
    if settings.sentence_only:
        if model.text_mode not in (TextMode.features, TextMode.both):
            raise ConfigError("train.sentence_only needs a text encoder (text.name) in text.mode features or both")
        dataset = SentenceOnly(dataset, model.text, settings.sentence_only, settings.seed)
    return dataset


def _weighted_sampler(settings: TrainSettings, dataset: DialogueDataset) -> WeightedEpochSampler | None:
    """train.sample_weights as a sampler over the examples, by their dialogue's meta; None without weights."""
    if not settings.sample_weights:
        return None
    metas = [dataset.meta(i) for i in range(len(dataset))]
    return WeightedEpochSampler(example_weights(metas, settings.sample_weight_key, settings.sample_weights),
                                settings.seed)


def _summed(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([value.detach().float().reshape(()) for value in stats.values()])


@dataclass
class TrainResult:
    steps: int
    final_train_loss: float | None
    best_eval_loss: float | None
    output_dir: Path
    data_report: LoadReport
    final_train_metrics: dict[str, float] = field(default_factory=dict)  # of the last logged window


class Trainer:
    def __init__(self, config: MmdialogConfig):
        self.config = config
        settings = config.train
        if not settings.data:
            raise ConfigError("training needs data: set train.data=PATH/TO/train.jsonl")
        self.output_dir = Path(settings.output_dir)
        # accelerate keeps one precision per process and refuses another one later: a second training in
        # the same process (a notebook, a test session) with another train.mixed_precision would fail. Its
        # distributed state (PartialState) stays as it is.
        AcceleratorState._reset_state(reset_partial_state=False)
        on_cpu = trains_on_cpu(config)
        self.accelerator = Accelerator(
            cpu=on_cpu,
            gradient_accumulation_steps=settings.gradient_accumulation,
            mixed_precision=mixed_precision(settings.mixed_precision, on_gpu=not on_cpu),
            log_with="tensorboard",
            project_dir=str(self.output_dir / "logs"),
            # Text-only batches leave the projectors unused: DDP must not wait for their gradients.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
            # Our schedule counts global optimizer steps; accelerate would otherwise step it once per process.
            step_scheduler_with_optimizer=False,
        )
        set_seed(settings.seed)
        configure_threads(config.runtime)
        model = build_model(config)
        self.objective = build_objective(config, model, self.accelerator)
        dialogues, self.data_report = self.objective.load(settings.data, settings.skip_bad)
        self.examples = examples = self.objective.dataset(dialogues, model, speech_modes=settings.speech_modes)
        sampler = _weighted_sampler(settings, examples)
        self.train_set = train_set = _with_noise(config, model, examples)
        # The loader's own generator: creating an iterator must not draw from the global RNG, or a resumed
        # run's dropout masks would differ from an uninterrupted run's.
        loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=sampler is None, sampler=sampler,
                            collate_fn=collate, num_workers=settings.num_workers,
                            generator=torch.Generator().manual_seed(settings.seed))
        self.eval_loader, self.eval_set = None, None
        if settings.eval_data:
            eval_dialogues, _ = self.objective.load(settings.eval_data, settings.skip_bad)
            self.eval_set = eval_set = self.objective.dataset(eval_dialogues, model)
            self.eval_loader = DataLoader(eval_set, collate_fn=collate, batch_size=settings.eval_batch_size,
                                          sampler=LengthSortedSampler(len(eval_set), eval_set.input_length))
        optimizer = build_optimizer(model, settings)
        micro_batches = math.ceil(len(train_set) / (settings.batch_size * self.accelerator.num_processes))
        self.steps_per_epoch = max(1, math.ceil(micro_batches / settings.gradient_accumulation))
        self.total_steps = settings.max_steps or settings.epochs * self.steps_per_epoch
        scheduler = build_scheduler(optimizer, settings, self.total_steps)
        prepared = self.accelerator.prepare(model, optimizer, loader, scheduler)
        self.model, self.optimizer, self.loader, self.scheduler = prepared
        if self.eval_loader is not None:
            self.eval_loader = self.accelerator.prepare(self.eval_loader)
        self.accelerator.register_save_state_pre_hook(self._only_trainable_weights)
        self.state = TrainerState()

    def _only_trainable_weights(self, models, weights, output_dir) -> None:
        """accelerate saves every weight; frozen ones are already on disk elsewhere (hub, config)."""
        trainable = {n for n, p in self.accelerator.unwrap_model(self.model).named_parameters() if p.requires_grad}
        for state in weights:
            for key in [k for k in state if k not in trainable]:
                del state[key]

    # ---- checkpoints ----------------------------------------------------------------------------------

    def resume(self) -> bool:
        """Load the newest complete checkpoint, if any; True when training continues from one."""
        found = checkpoints.complete_checkpoints(self.output_dir)
        if not found:
            return False
        self.accelerator.load_state(str(found[-1]), strict=False)
        self.state = TrainerState.load(found[-1])
        self.accelerator.print(f"resumed from {found[-1]} (step {self.state.step})")
        return True

    def save_checkpoint(self) -> None:
        staging = checkpoints.staging_folder(self.output_dir, self.state.step)
        self.accelerator.save_state(str(staging))
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(staging / "model")
            self.state.save(staging)
            checkpoints.publish(staging, self.output_dir, self.state.step)
            checkpoints.prune(self.output_dir, self.config.train.keep_last, self.state.best_step)
        self.accelerator.wait_for_everyone()

    # ---- evaluation -----------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The objective's metrics on eval_data (`loss` among them), over all processes."""
        self.model.eval()
        total, names = None, []
        for batch in self.eval_loader:
            with self.accelerator.autocast():
                _, stats = self.objective.loss(self.model, batch, self.accelerator)
            names, summed = list(stats), _summed(stats)
            total = summed if total is None else total + summed
        assert total is not None, "eval_data gave no batch"
        total = self.accelerator.reduce(total, reduction="sum")
        self.model.train()
        return self.objective.metrics(dict(zip(names, total.tolist(), strict=True)))

    def _after_evaluation(self, metrics: dict[str, float]) -> bool:
        """Track the best model; True when early stopping says to stop."""
        state, loss = self.state, metrics["loss"]
        state.eval_losses.append((state.step, loss))
        self.accelerator.log({f"eval/{name}": value for name, value in metrics.items()}, step=state.step)
        if state.best_eval_loss is None or loss < state.best_eval_loss:
            state.best_eval_loss, state.best_step = loss, state.step
            state.evaluations_without_improvement = 0
            if self.accelerator.is_main_process:
                self.accelerator.unwrap_model(self.model).save_pretrained(self.output_dir / "best")
            return False
        state.evaluations_without_improvement += 1
        patience = self.config.train.early_stopping_patience
        return patience > 0 and state.evaluations_without_improvement >= patience

    def _pretrain_vision(self) -> None:
        """Stage one, before any dialogue. Every process runs it with the same seed, so they agree."""
        from mmdialog.training.vision_pretraining import pretrain_vision

        vision = self.accelerator.unwrap_model(self.model).vision
        report = pretrain_vision(vision, self.config.train.vision_pretraining, self.config.train.seed)
        self.accelerator.log({f"vision_pretraining/{k}": v for k, v in report.items()}, step=0)
        self.accelerator.print("vision pretraining: " + ", ".join(f"{k} {v:.3f}" for k, v in report.items()))

    # ---- the loop -------------------------------------------------------------------------------------

    def train(self, resume: bool = False) -> TrainResult:
        resumed = self.resume() if resume else False
        settings, accelerator, state = self.config.train, self.accelerator, self.state
        accelerator.init_trackers("mmdialog", config={"total_steps": self.total_steps,
                                                      "batch_size": settings.batch_size})
        if settings.vision_pretraining.scenes and not resumed:
            self._pretrain_vision()
        # The tower's weights are final now (pretrained, resumed, or as built): a frozen one's features are
        # worked out once instead of at every step.
        for dataset in (self.examples, self.eval_set):
            if dataset is not None:
                dataset.cache_image_features()
        self.model.train()
        progress = tqdm(total=self.total_steps, initial=state.step, desc="training",
                        disable=not accelerator.is_local_main_process)
        window: dict[str, float] = {}
        last_metrics: dict[str, float] = {}
        stop = state.step >= self.total_steps
        while not stop:
            self.loader.set_epoch(state.epoch)
            noise = self.train_set
            while isinstance(noise, ContextNoise):  # the loader passes the epoch to its sampler only
                noise.set_epoch(state.epoch)
                noise = noise.base
            loader = (accelerator.skip_first_batches(self.loader, state.batches_in_epoch)
                      if state.batches_in_epoch else self.loader)
            for batch in loader:
                with accelerator.accumulate(self.model):
                    loss, stats = self.objective.loss(self.model, batch, accelerator)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and settings.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
                    self.optimizer.step()
                    if accelerator.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad()
                state.batches_in_epoch += 1
                for name, value in zip(stats, _summed(stats).tolist(), strict=True):
                    window[name] = window.get(name, 0.0) + value
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                progress.update(1)
                if state.step % settings.log_every == 0 or state.step == self.total_steps:
                    last_metrics = self.objective.metrics(window)
                    state.train_losses.append((state.step, last_metrics["loss"]))
                    accelerator.log({**{f"train/{name}": value for name, value in last_metrics.items()},
                                     "train/lr": self.scheduler.get_last_lr()[0]}, step=state.step)
                    progress.set_postfix({name: f"{value:.4f}" for name, value in last_metrics.items()
                                          if name in ("loss", "accuracy")})
                    window = {}
                # The last step is always evaluated: "best" must be able to be the model training ended with.
                if self.eval_loader is not None and (state.step % settings.eval_every == 0
                                                     or state.step >= self.total_steps):
                    stop = self._after_evaluation(self.evaluate())
                if state.step % settings.save_every == 0 or state.step >= self.total_steps or stop:
                    self.save_checkpoint()
                if state.step >= self.total_steps or stop:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batches_in_epoch = 0
        progress.close()
        return self._finish(last_metrics)

    def _finish(self, last_metrics: dict[str, float]) -> TrainResult:
        accelerator, state = self.accelerator, self.state
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            accelerator.unwrap_model(self.model).save_pretrained(self.output_dir / "model")
            plot_losses(state.train_losses, state.eval_losses, self.output_dir / "loss.png")
        accelerator.end_training()
        final = state.train_losses[-1][1] if state.train_losses else None
        return TrainResult(state.step, final, state.best_eval_loss, self.output_dir, self.data_report, last_metrics)
