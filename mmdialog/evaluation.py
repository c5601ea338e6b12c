"""`mmdialog eval`: loss, perplexity, BLEU / chrF, ROUGE-L and exact match, broken down by group.

Groups: which media an example's context had (text / image / audio / image+audio) and, when the data
tags its dialogues with `meta` (the synthetic world does), by task family and input form.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass

import sacrebleu
import torch
import torch.nn.functional as F
from rouge_score import rouge_scorer

from mmdialog.data.dataset import DialogueDataset

_PUNCTUATION = re.compile(r"[^\w\s']")


def normalize_answer(text: str) -> str:
    """Exact match ignores case, punctuation and spacing: "Red." matches "red"."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


@dataclass
class Scored:
    prediction: str
    reference: str
    loss_sum: float
    tokens: int
    groups: dict[str, str]


def groups_of(modality: str, meta: dict) -> dict[str, str]:
    """The tables an example is counted in: its modality, and its family, form and held-out slices if tagged."""
    groups = {"modality": modality}
    for key in ("family", "form"):
        if key in meta:
            groups[key] = str(meta[key])
    for key in ("unseen_combo", "unseen_phrasing", "unseen_voice"):
        if key in meta:
            groups[key] = "yes" if meta[key] else "no"
    if "form" in meta:  # a slice over all forms means little: typed and spoken answers differ by 10-20 points
        for key in ("family", "unseen_combo", "unseen_phrasing", "unseen_voice"):
            if key in groups:
                groups[f"{key}_by_form"] = f"{meta['form']}/{groups[key]}"
    return groups


@torch.inference_mode()
def score_dataset(model, dataset: DialogueDataset, batch_size: int = 16, limit: int | None = None,
                  **generation) -> list[Scored]:
    """Per-example loss (summed over target tokens) and greedy prediction."""
    model.eval()
    count = len(dataset) if limit is None else min(limit, len(dataset))
    scored = []
    for start in range(0, count, batch_size):
        indices = list(range(start, min(start + batch_size, count)))
        batch = [dataset[i] for i in indices]
        # One pass through the encoders serves both the loss and the generated reply.
        embeds, mask = model.embed(batch)
        labels = model.labels(batch)
        logits = model.decoder(embeds, mask, labels=labels).logits.float()
        losses = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none").sum(1)
        predictions = model.decoder.generate(embeds, mask, **model.generation_options(**generation))
        for row, index in enumerate(indices):
            scored.append(Scored(predictions[row], dataset.target_text(index), losses[row].item(),
                                 int((labels[row] != -100).sum()),
                                 groups_of(dataset.modalities(index), dataset.meta(index))))
    return scored


def summarize(scored: list[Scored]) -> dict:
    """Metrics over a list of scored examples (all of them, or one group's)."""
    if not scored:
        return {"examples": 0}
    predictions = [s.prediction for s in scored]
    references = [s.reference for s in scored]
    tokens = sum(s.tokens for s in scored)
    loss = sum(s.loss_sum for s in scored) / max(tokens, 1)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True))
    exact = sum(normalize_answer(p) == normalize_answer(r) for p, r in zip(predictions, references, strict=True))
    return {
        "examples": len(scored),
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "exact_match": exact / len(scored),
        "bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
        "rouge_l": rouge / len(scored),
    }


def report(scored: list[Scored]) -> dict:
    """Overall metrics plus one table per grouping key (by modality, by family, by form, ...)."""
    by_key: dict[str, dict[str, list[Scored]]] = defaultdict(lambda: defaultdict(list))
    for item in scored:
        for key, value in item.groups.items():
            by_key[key][value].append(item)
    result = {"overall": summarize(scored)}
    for key, groups in sorted(by_key.items()):
        result[f"by_{key}"] = {value: summarize(items) for value, items in sorted(groups.items())}
    return result


def most_frequent_answer_rate(scored: list[Scored], key: str = "family") -> dict[str, float]:
    """Chance per group: how often the most frequent reference answer occurs."""
    answers: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in scored:
        if key in item.groups:
            answers[item.groups[key]][normalize_answer(item.reference)] += 1
    return {group: max(counts.values()) / sum(counts.values()) for group, counts in answers.items()}
