"""Direct Preference Optimization (Rafailov et al., 2023) for the fused Seq2Seq model: `train.objective=dpo`.

For a context x with a chosen reply c and a rejected one r, the policy (the model being trained) and a frozen
reference score each reply by the sum of its tokens' log-probabilities given x (the decoder's encoder reads
x once per reply, the decoder is teacher-forced on the reply). With beta = `train.dpo_beta`:

    reward(y) = beta * (log p_policy(y | x) - log p_reference(y | x))
    loss      = -log sigmoid(reward(c) - reward(r))

The reference defaults to a frozen copy of the model the run starts from (`train.init_from`, or the model the
config builds), made before the first step, so a resumed run compares with the same reference; or it is
the model folder `train.reference`. Everything else is the supervised trainer's: freezing and LoRA, optimizer
groups, accelerate (mixed precision, DDP), checkpoints and resume.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from mmdialog.data.dataset import PreferenceDataset, PreferencePair
from mmdialog.data.format import LoadReport, PreferenceRecord, load_preferences
from mmdialog.errors import ConfigError
from mmdialog.model import MultimodalDialogueModel
from mmdialog.settings import MmdialogConfig
from mmdialog.training.trainer import global_mean

_LOCKS = (type(threading.Lock()), type(threading.RLock()))


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of each row's label-token log-probabilities (-100 labels are padding): shape (rows,)."""
    return -F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none").sum(1)


def disable_dropout(model: nn.Module) -> None:
    """The reward is a log-ratio against a reference that runs without dropout: dropout in the policy would
    add noise to the very quantity being optimized (and the margin would not start at zero)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):  # T5's attention keeps its rate as a float
            module.dropout = 0.0


def frozen_copy(model: MultimodalDialogueModel, share_frozen: bool) -> MultimodalDialogueModel:
    """A frozen deep copy of `model`. With `share_frozen` the copy shares the weights that do not train
    (frozen encoders, a LoRA-adapted decoder's base): they can never differ, so copying them only costs
    memory. FSDP and DeepSpeed re-shard the policy's weights in place, so there every weight is copied."""
    memo: dict[int, object] = {id(model.tokenizer): model.tokenizer}
    # Locks cannot be copied; the reference never runs what they guard (Whisper's transcript decoding).
    memo.update({id(v): v for m in model.modules() for v in vars(m).values() if isinstance(v, _LOCKS)})
    if share_frozen:
        memo.update({id(p): p for p in model.parameters() if not p.requires_grad})
    reference = copy.deepcopy(model, memo)
    reference.requires_grad_(False)
    return reference.eval()


def load_reference(path: str, model: MultimodalDialogueModel) -> MultimodalDialogueModel:
    reference = MultimodalDialogueModel.from_pretrained(path).requires_grad_(False).eval()
    # Both models score the same token ids: they must read them with the same tokenizer.
    if reference.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ConfigError(f"train.reference '{path}' has another tokenizer than the model being trained; "
                          "use a model folder of the same lineage (or leave train.reference empty)")
    return reference


class DirectPreference:
    """The DPO objective; reads preference pairs (mmdialog/data/format.py)."""

    def __init__(self, reference: MultimodalDialogueModel, beta: float, sft_weight: float = 0.0):
        self.reference = reference
        self.beta = beta
        self.sft_weight = sft_weight

    @classmethod
    def for_training(cls, config: MmdialogConfig, model: MultimodalDialogueModel,
                     accelerator: Accelerator) -> DirectPreference:
        settings = config.train
        if settings.vision_pretraining.scenes:
            raise ConfigError("train.objective=dpo tunes a model that already answers: train it first with "
                              "train.vision_pretraining (objective sft), then start DPO from it (train.init_from)")
        for noise in ("token_noise", "sentence_only"):
            if getattr(settings, noise):
                raise ConfigError(f"train.{noise} is for supervised training (objective sft): a preference pair's "
                                  "two replies must share one context")
        if settings.dpo_beta <= 0:
            raise ConfigError(f"train.dpo_beta must be above 0, not {settings.dpo_beta}")
        disable_dropout(model)
        if settings.reference:
            reference = load_reference(settings.reference, model)
        else:
            resharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
            reference = frozen_copy(model, share_frozen=not resharded)
        return cls(reference.to(accelerator.device), settings.dpo_beta, settings.dpo_sft_weight)

    def load(self, path: str | Path, skip_bad: bool) -> tuple[Sequence[PreferenceRecord], LoadReport]:
        return load_preferences(path, skip_bad=skip_bad)

    def dataset(self, records: Sequence[PreferenceRecord], model: MultimodalDialogueModel,
                speech_modes: Sequence = ()) -> PreferenceDataset:
        return PreferenceDataset(records, model, speech_modes=speech_modes)

    def loss(self, model, batch: list[PreferencePair], accelerator: Accelerator
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # Chosen rows first, then rejected: one forward pass through the policy (through DDP's wrapper,
        # so gradients synchronise) and one through the reference.
        items = [pair.chosen for pair in batch] + [pair.rejected for pair in batch]
        pairs = len(batch)
        labels = accelerator.unwrap_model(model).labels(items)
        policy = sequence_logprobs(model(items).logits, labels)
        with torch.no_grad(), accelerator.autocast():
            reference = sequence_logprobs(self.reference(items).logits, labels)
        rewards = self.beta * (policy - reference)
        chosen_reward, rejected_reward = rewards[:pairs], rewards[pairs:]
        margin = chosen_reward - rejected_reward
        losses = -F.logsigmoid(margin)
        chosen_nll = -policy[:pairs] / (labels[:pairs] != -100).sum(1).clamp(min=1)
        total = losses + self.sft_weight * chosen_nll if self.sft_weight else losses
        count = torch.tensor(pairs, device=losses.device)
        stats = {"loss": losses.sum(), "margin": margin.sum(), "accuracy": (margin > 0).sum(),
                 "chosen_reward": chosen_reward.sum(), "rejected_reward": rejected_reward.sum(),
                 "chosen_nll": chosen_nll.sum(), "count": count}
        return global_mean(total.sum(), count, accelerator), {k: v.detach() for k, v in stats.items()}

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Means per pair: `loss` (the DPO loss, without the SFT term), reward `margin` and `accuracy`
        (share of pairs whose chosen reply out-rewards the rejected one), the two rewards, and the chosen
        reply's per-token NLL."""
        count = max(sums["count"], 1)
        return {name: value / count for name, value in sums.items() if name != "count"}
