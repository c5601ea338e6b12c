"""Drawing training examples with weights by a tag in their dialogue's `meta` (train.sample_weights), and
evaluation examples by length.

A data set whose groups differ in difficulty (the demo world's task families: naming a colour is learned in a
few hundred steps, describing a whole scene in reading order takes thousands) spends most of a fixed step
budget on what is already learned when every example is equally likely. Weighting the groups moves steps to
the hard ones without changing the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import Sampler

from mmdialog.errors import ConfigError


def example_weights(metas: Sequence[Mapping], key: str, weights: Mapping[str, float]) -> list[float]:
    """One weight per example: `weights[meta[key]]`, 1.0 for values (or examples without `key`) not listed."""
    if any(w < 0 for w in weights.values()):
        raise ConfigError("train.sample_weights must not be negative")
    seen = {str(meta.get(key)) for meta in metas}
    unknown = sorted(set(weights) - seen)
    if unknown:
        raise ConfigError(f"train.sample_weights names {unknown}, which no training dialogue has as meta "
                          f"'{key}' (it has: {sorted(seen)})")
    out = [float(weights.get(str(meta.get(key)), 1.0)) for meta in metas]
    if not any(out):
        raise ConfigError("train.sample_weights leaves every training example with weight 0")
    return out


class WeightedEpochSampler(Sampler[int]):
    """`len(weights)` indices per epoch, drawn with replacement in proportion to the weights.

    The draw depends on (seed, epoch) alone, like the loader's own shuffling: a resumed run sees the batches an
    uninterrupted one would have. The trainer's loader calls set_epoch.
    """

    def __init__(self, weights: Sequence[float], seed: int = 0):
        self.weights = torch.tensor(weights, dtype=torch.double)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.weights)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.multinomial(self.weights, len(self.weights), replacement=True, generator=generator).tolist()


class LengthSortedSampler(Sampler[int]):
    """Every index once, shortest example first: for evaluation, whose sums do not depend on the order, and
    whose batches then carry little padding (random batches of the demo world are about half padding). The
    lengths are asked for when the first iteration starts, not when the sampler is made (the trainer caches
    image features in between), and only then: an evaluation set does not change between evaluations."""

    def __init__(self, count: int, length_of: Callable[[int], int]):
        self.count = count
        self.length_of = length_of
        self._order: list[int] | None = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        if self._order is None:
            self._order = sorted(range(self.count), key=self.length_of)
        yield from self._order
