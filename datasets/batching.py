"""Batches as slices of a (shuffled) index array over in-memory tensors: no per-sample
`Dataset.__getitem__` and collate, which costs more than a small model's training step.

`block_batches` does the same for a split of a memory-mapped set larger than RAM (`Dataset.view`):
shuffled blocks of the file, then rows shuffled within a window of blocks, memory bounded."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from .core import SplitView


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
    so the ranks together cover each batch once. With shard="rows", every rank walks every batch and takes
    its contiguous share of it (shares differ by one row at most; a share may be empty when a batch has
    fewer rows than ranks), so step k of the ranks together is exactly batch k of one process with the same
    `batch_size` (data-parallel training with a fixed global batch). With world_size=1 both are the plain batches.
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


# ---------------------------------------------------------------------------------------------
# Batches read from a split view (memory-mapped cache) with bounded memory.

BLOCK_ROWS = 1 << 16          # rows of the file read at once (~10 MB at 39 int32 fields)
WINDOW_BLOCKS = 16            # blocks drawn at random and shuffled together (~1M rows of the file)


class _Rows:
    """Reads consecutive rows [lo, hi) of an array. A memory map of a whole .npy file is read with plain
    file reads into fresh buffers: the pages of a memory map that were read stay in the process's
    resident set until the kernel needs them back, so reading an epoch through the map would grow RSS
    to the file's size; a file read leaves them in the page cache, outside the process."""

    def __init__(self, array: np.ndarray):
        self.array = array
        self.file = None
        if (isinstance(array, np.memmap) and array.filename is not None and array.flags.c_contiguous
                and os.path.getsize(array.filename) == array.offset + array.nbytes):
            self.file = open(array.filename, "rb", buffering=0)
            self.row_bytes = array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))

    def read(self, lo: int, hi: int) -> np.ndarray:
        if self.file is None:
            return np.asarray(self.array[lo:hi])
        out = np.empty((hi - lo, *self.array.shape[1:]), dtype=self.array.dtype)
        view, done = memoryview(out).cast("B"), 0
        self.file.seek(self.array.offset + lo * self.row_bytes)
        while done < len(view):
            got = self.file.readinto(view[done:])
            if not got:
                raise OSError(f"{self.array.filename} ends before row {hi}")
            done += got
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _window_rows(index: np.ndarray, rows: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of `block_rows` consecutive rows of the file: where its rows start and end in `index`."""
    edges = np.arange(0, rows + block_rows, block_rows, dtype=np.int64)
    bounds = np.searchsorted(index, np.minimum(edges, rows))
    return bounds[:-1], bounds[1:]


def block_batches(view: SplitView, batch_size: int, shuffle: bool = False,
                  generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                  shard: str = "batches", block_rows: int = BLOCK_ROWS, window_blocks: int = WINDOW_BLOCKS
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (X rows, y rows) torch batches of at most `batch_size` rows of a split view (ids keep their
    stored dtype, int32 for every real set: torch's embeddings take it as it is), reading X and y in
    blocks so that memory stays bounded whatever the row count: about window_blocks × block_rows rows
    of the file in flight, ~160 MB at 39 int32 fields.

    Every row of the split comes exactly once per call. With `shuffle`, the blocks of the file (of
    `block_rows` consecutive rows, holding the split's rows among them) are taken in an order drawn from
    `generator`, `window_blocks` of them at a time, and the split's rows of those blocks are shuffled
    together with a second draw from `generator`: the same generator state gives the same batches.
    Every batch but the last has exactly `batch_size` rows (a window's last rows start the next batch).

    `rank`, `world_size` and `shard` split the batches between data-parallel processes exactly as
    `batches` does: "batches" gives rank r every world_size-th batch, "rows" every batch's r-th
    contiguous share. The batches are CPU tensors (a data source (`ctrbench.training.data_source`) moves them).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if block_rows < 1 or window_blocks < 1:
        raise ValueError(f"block_rows and window_blocks must be >= 1, got {block_rows} and {window_blocks}")
    if shard not in ("batches", "rows"):
        raise ValueError(f"shard must be 'batches' or 'rows', got {shard!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    index = np.asarray(view.index)
    if len(index) > 1 and not (index[1:] > index[:-1]).all():
        raise ValueError("a split view's index must be sorted and without repeats")
    starts, ends = _window_rows(index, int(view.X.shape[0]), block_rows)
    blocks = np.flatnonzero(ends > starts)
    if shuffle:
        blocks = blocks[torch.randperm(len(blocks), generator=generator).numpy()]
    X_rows, y_rows = _Rows(view.X), _Rows(view.y)

    def windows():
        """Each window's rows, shuffled, as (X (n, F), y (n,)) NumPy arrays."""
        for first in range(0, len(blocks), window_blocks):
            chosen = blocks[first:first + window_blocks]
            total = int((ends[chosen] - starts[chosen]).sum())
            X_out = np.empty((total, *view.X.shape[1:]), dtype=view.X.dtype)
            y_out = np.empty(total, dtype=view.y.dtype)
            # Scatter each block straight to its shuffled place: one window buffer, one block in flight.
            place = (torch.randperm(total, generator=generator).numpy() if shuffle
                     else np.arange(total))
            at = 0
            for b in chosen:
                rows = index[starts[b]:ends[b]]
                lo, hi = int(rows[0]), int(rows[-1]) + 1
                X_block, y_block = X_rows.read(lo, hi), y_rows.read(lo, hi)
                if hi - lo != len(rows):
                    X_block, y_block = X_block[rows - lo], y_block[rows - lo]
                target = place[at:at + len(rows)]
                X_out[target], y_out[target] = X_block, y_block
                at += len(rows)
            yield X_out, y_out

    def global_batches():
        """Exactly batch_size rows each (the last excepted), across window boundaries."""
        carry: list[tuple[np.ndarray, np.ndarray]] = []      # copies, so a finished window is freed
        carried = 0
        for X_w, y_w in windows():
            at = 0
            if carried:
                at = min(batch_size - carried, len(y_w))
                carry.append((X_w[:at].copy(), y_w[:at].copy()))
                carried += at
                if carried < batch_size:
                    continue
                yield np.concatenate([c[0] for c in carry]), np.concatenate([c[1] for c in carry])
                carry, carried = [], 0
            while at + batch_size <= len(y_w):
                yield X_w[at:at + batch_size], y_w[at:at + batch_size]
                at += batch_size
            if at < len(y_w):
                carry, carried = [(X_w[at:].copy(), y_w[at:].copy())], len(y_w) - at
        if carried:
            yield np.concatenate([c[0] for c in carry]), np.concatenate([c[1] for c in carry])

    try:
        for number, (X_b, y_b) in enumerate(global_batches()):
            if shard == "rows":
                size = len(y_b)
                X_b, y_b = (a[size * rank // world_size:size * (rank + 1) // world_size] for a in (X_b, y_b))
            elif number % world_size != rank:
                continue
            yield torch.from_numpy(X_b), torch.from_numpy(y_b)
    finally:
        X_rows.close()
        y_rows.close()
