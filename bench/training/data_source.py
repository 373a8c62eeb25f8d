"""A split as the training loop sees it: rows it can batch, label, cut and check, wherever they live.

Two kinds, one interface, so that training asks "tensors or a memory-mapped file?" here and nowhere else:

* `TensorData`: (X (rows, F) int ids, y (rows,) float labels) tensors already on their device;
  batches are gathered where they are.
* `StreamedData`: a `SplitView` of a memory-mapped set; batches are read in bounded blocks
  (`block_batches`) and moved to the model's device one at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ctrbench.datasets.batching import batches, block_batches
from ctrbench.datasets.core import SplitView


@dataclass(frozen=True)
class TensorData:
    X: torch.Tensor                     # (rows, F) ids
    y: torch.Tensor | None = None       # (rows,) labels; None where only predictions are wanted

    def __len__(self) -> int:
        return len(self.X)

    def device(self, model_device: torch.device) -> torch.device:
        """Where work on these rows happens: the tensors' own device (the caller put them there)."""
        return self.X.device

    def batches(self, batch_size: int, device: torch.device, shuffle: bool = False,
                generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                shard: str = "batches"):
        """(xb, yb) pairs; without labels yb holds X's first column, unused (prediction)."""
        y = self.X[:, 0] if self.y is None else self.y
        return batches(self.X, y, batch_size, shuffle, generator, rank, world_size, shard)

    def labels(self) -> np.ndarray:
        return self.y.cpu().numpy()

    def head(self, rows: int) -> TensorData:
        return self.rows(0, rows)

    def rows(self, lo: int, hi: int) -> TensorData:
        return TensorData(self.X[lo:hi], None if self.y is None else self.y[lo:hi])

    def check_values(self, fields) -> None:
        fields.check_values(self.X)


@dataclass(frozen=True)
class StreamedData:
    view: SplitView
    # block_batches' block_rows and window_blocks; {}: its defaults.
    block_options: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.view)

    def device(self, model_device: torch.device) -> torch.device:
        """The model's device: each batch is moved there as it is read."""
        return model_device

    def batches(self, batch_size: int, device: torch.device, shuffle: bool = False,
                generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1,
                shard: str = "batches"):
        non_blocking = device.type == "cuda"     # from pageable memory torch stages the copy: no pinning needed
        return ((xb.to(device, non_blocking=non_blocking), yb.to(device, non_blocking=non_blocking))
                for xb, yb in block_batches(self.view, batch_size, shuffle, generator, rank, world_size, shard,
                                            **self.block_options))

    def labels(self) -> np.ndarray:
        return self.view.labels()

    def head(self, rows: int) -> StreamedData:
        return self.rows(0, rows)

    def rows(self, lo: int, hi: int) -> StreamedData:
        """Rows lo..hi of the split in index order, still by index."""
        return StreamedData(SplitView(self.view.X, self.view.y, self.view.index[lo:hi]), self.block_options)

    def check_values(self, fields, block_rows: int = 1 << 20) -> None:
        """`fields.check_values` block by block, the rows counted in the split."""
        start = 0
        for xb, _ in block_batches(self.view, block_rows):
            try:
                fields.check_values(xb)
            except ValueError as error:
                raise ValueError(f"{error} (rows counted from the split's row {start})") from None
            start += len(xb)


DataSource = TensorData | StreamedData


def data_source(data) -> DataSource:
    """`data` as a DataSource: one already, a SplitView, an (X, y) pair of tensors, or a tensor X alone."""
    if isinstance(data, (TensorData, StreamedData)):
        return data
    if isinstance(data, SplitView):
        return StreamedData(data)
    if isinstance(data, torch.Tensor):
        return TensorData(data)
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        if isinstance(X, SplitView):
            return StreamedData(X)
        return TensorData(X, y)
    raise TypeError(f"expected a DataSource, a SplitView or (X, y) tensors, got {type(data).__name__}")
