"""Batches as slices of a (shuffled) index array over in-memory tensors: no per-sample
`Dataset.__getitem__` and collate, which costs more than a small model's training step."""
from __future__ import annotations

from typing import Iterator

import torch


def batches(X: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = False,
            generator: torch.Generator | None = None,
            rank: int = 0, world_size: int = 1,
            shard: str = "batches") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (X[idx], y[idx]) batches of at most `batch_size` rows.

    With `shuffle`, one permutation per call drawn from `generator` (so a seeded generator gives the
    same order on every rank). The permutation is drawn on the generator's device (the CPU without
    one) and moved to the data's device once per call: a seeded CPU generator gives the same order
    whether the data lives on the CPU or a GPU, and each batch is gathered where the data is.

    With `world_size` > 1 and shard="batches", rank r takes every world_size-th batch of that order,
    so the ranks together cover each batch once. With shard="rows", every rank walks every batch and takes its contiguous share of it (shares differ by
    one row at most; a share may be empty when a batch has fewer rows than ranks), so step k of the
    ranks together is exactly batch k of one process with the same `batch_size` (data-parallel
    training with a fixed global batch). With world_size=1 both are the plain batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shard not in ("batches", "rows"):
        raise ValueError(f"shard must be 'batches' or 'rows', got {shard!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    rows = X.shape[0]
    order = None
    if shuffle:
        drawn_on = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(rows, generator=generator, device=drawn_on).to(X.device)
    for number, start in enumerate(range(0, rows, batch_size)):
        stop = min(start + batch_size, rows)
        if shard == "rows":
            size = stop - start
            start, stop = start + size * rank // world_size, start + size * (rank + 1) // world_size
        elif number % world_size != rank:
            continue
        if order is not None:
            index = order[start:stop]
            yield X.index_select(0, index), y.index_select(0, index)
        else:
            yield X[start:stop], y[start:stop]
