"""Streaming .npy files: append row blocks without knowing the row count up front, read them back in
blocks with plain file reads (not memory maps), so preprocessing memory stays flat as files grow."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

HEADER_BYTES = 128   # fixed, so the real shape can be written over the placeholder at the end
MAGIC = b"\x93NUMPY\x01\x00"


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body_len = HEADER_BYTES - len(MAGIC) - 2
    text = text.ljust(body_len - 1) + "\n"
    if len(text) != body_len:
        raise ValueError(f"npy header too long for shape {shape}")
    return MAGIC + body_len.to_bytes(2, "little") + text.encode("latin1")


class NpyAppender:
    """Write a C-order .npy of shape (rows, *row_shape) block by block; `close` fixes the row count."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...] = ()):
        self.path, self.dtype, self.row_shape, self.rows = Path(path), np.dtype(dtype), tuple(row_shape), 0
        self.file = open(self.path, "wb")
        self.file.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"block rows of shape {block.shape[1:]} do not match {self.row_shape}")
        self.file.write(memoryview(block).cast("B"))
        self.rows += block.shape[0]

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_header(self.dtype, (self.rows, *self.row_shape)))
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.file.close()


def read_header(path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """(dtype, shape, data offset) of an .npy file written by NpyAppender or np.save (version 1)."""
    with open(path, "rb") as file:
        version = np.lib.format.read_magic(file)
        shape, fortran, dtype = (np.lib.format.read_array_header_1_0(file) if version == (1, 0)
                                 else np.lib.format.read_array_header_2_0(file))
        return dtype, shape, file.tell()


def iter_sized_blocks(path: Path, sizes) -> Iterator[np.ndarray]:
    """Yield consecutive blocks of an .npy file of the given row counts (e.g. as they were appended)."""
    dtype, shape, offset = read_header(path)
    row_items = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    with open(path, "rb") as file:
        file.seek(offset)
        for n in sizes:
            block = np.fromfile(file, dtype=dtype, count=int(n) * row_items)
            if len(block) != int(n) * row_items:
                raise ValueError(f"{path} ends before the blocks it was written with")
            yield block.reshape((int(n), *shape[1:]))


__all__ = ["NpyAppender", "iter_sized_blocks", "read_header"]
