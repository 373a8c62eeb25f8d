"""Batches as slices of a (shuffled) index array over in-memory tensors: no per-sample
`Dataset.__getitem__` and collate, which costs more than a small model's training step."""
from __future__ import annotations

from typing import Iterator

import torch


def batches(X: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None,
            rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (X[idx], y[idx]) batches of at most `batch_size` rows.

    With `shuffle`, one permutation per call drawn from `generator` (so a seeded generator gives the
    same order on every rank). With `world_size` > 1, rank r takes every world_size-th batch of that
    order, so the ranks together cover each batch once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = X.shape[0]
    if shuffle:
        order = torch.randperm(rows, generator=generator)
        for number, start in enumerate(range(0, rows, batch_size)):
            if number % world_size == rank:
                index = order[start:start + batch_size]
                yield X.index_select(0, index), y.index_select(0, index)
    else:
        for number, start in enumerate(range(0, rows, batch_size)):
            if number % world_size == rank:
                yield X[start:start + batch_size], y[start:start + batch_size]
