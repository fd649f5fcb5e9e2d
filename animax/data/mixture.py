"""Several random-access sources mixed with weights, as one random-access source.

AniMer draws training examples from Animal3D, CtrlAni3D and 2D sets with per-dataset
weights. Here the mixture is a fixed table, so grain's sampler can shuffle, shard and
checkpoint it like any source: slot i reads record `record[i]` of source `choice[i]`.
The length is the smallest for which every source is read whole at least once: source k
fills round(w_k * length) >= len_k slots (w normalised), first with all its records in
order, then with seeded random permutations of them. So no record is dropped, smaller
sources repeat, and a single source is read as it is (an evaluation pass stays in order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class MixtureSource:
    """Random access over `sources` mixed by `weights`; records come back as
    `(source index, record)` pairs."""

    def __init__(self, sources: Sequence, weights: Sequence[float], seed: int = 0):
        weights = np.asarray(weights, np.float64)
        if len(weights) != len(sources) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"need one non-negative weight per source, not all 0; got {weights}")
        lengths = [len(s) for s in sources]
        weights = weights / weights.sum()
        length = max(math.ceil(n / w) for n, w in zip(lengths, weights) if w > 0)
        counts = _apportion(length, weights)
        rng = np.random.default_rng(seed)
        self.sources = list(sources)
        self.choice = np.repeat(np.arange(len(sources)), counts)
        self.record = np.concatenate([_cycle(rng, n, c) for n, c in zip(lengths, counts)])

    def __len__(self) -> int:
        return len(self.choice)

    def __getitem__(self, index):
        k = self.choice[index]
        return int(k), self.sources[k][int(self.record[index])]

    def __repr__(self):
        return f"MixtureSource({len(self)} slots over {len(self.sources)} sources)"


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to `total`, proportional to weights (largest remainders)."""
    exact = total * weights
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[:total - counts.sum()]] += 1
    return counts


def _cycle(rng, num_records: int, count: int) -> np.ndarray:
    """`count` (>= num_records, or 0) record indices: range(num_records) in order, then
    random permutations of it."""
    if count == 0:
        return np.zeros(0, np.int64)
    if num_records == 0:
        raise ValueError("a source with a positive weight has no records")
    repeats = -(-count // num_records)
    passes = [np.arange(num_records)] + [rng.permutation(num_records) for _ in range(repeats - 1)]
    return np.concatenate(passes)[:count]
