"""Generated files in real layouts, for measuring the data path at any size without downloading.

`write_criteo_tsv(path, rows)`: Criteo Kaggle's train.txt layout (tabs, no header, label + 13 integers
+ 26 categoricals of 8 hex digits, ~245 bytes a row). The same seed and row count give the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

CATEGORY_CARDINALITY = [1000, 500, 2_000_000, 800_000, 300, 20, 12_000, 600, 3, 90_000]   # field k: [k % 10]
HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
CRITEO_NAMES = ["label"] + [f"I{k}" for k in range(1, 14)] + [f"C{k}" for k in range(1, 27)]


def _hex8(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    """uint32 values -> 8-digit lowercase hex strings, null where `missing`."""
    nibbles = np.stack([(values >> np.uint32(4 * (7 - i))) & np.uint32(15) for i in range(8)], axis=1)
    chars = np.ascontiguousarray(HEX_DIGITS[nibbles])                      # (n, 8) uint8
    offsets = np.arange(0, 8 * (len(values) + 1), 8, dtype=np.int32)
    strings = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(chars))
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), strings)


def write_criteo_tsv(path: Path, rows: int, seed: int = 0, chunk: int = 500_000,
                     progress: Callable[[int], None] | None = None) -> Path:
    """A Criteo-layout TSV at `path` (see `write_criteo_rows`); returns `path`."""
    with open(path, "wb") as out:
        write_criteo_rows(out, rows, seed, chunk, progress)
    return Path(path)


def write_criteo_rows(out: BinaryIO, rows: int, seed: int = 0, chunk: int = 500_000,
                      progress: Callable[[int], None] | None = None) -> None:
    """Write Criteo-layout TSV rows to a binary stream: label (25% positive), 13 integers (log-normal,
    30% missing; I2 reaches -1) and 26 categoricals (Zipf(1.3) over per-field cardinalities from 3 to
    2M, hashed to 8 hex digits; 2% missing, 40% in fields 4, 11, 18, 25). Same seed and rows, same
    bytes. `progress(n)` is called with the rows of each chunk written. The label is drawn apart from
    the features: a model learns nothing from this file (AUC ~0.5); it measures the data path."""
    rng = np.random.default_rng(seed)
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        columns = [pa.array(rng.random(n) < 0.25).cast(pa.int8())]
        for k in range(13):
            values = np.floor(rng.lognormal(1.5, 2.0, n)).astype(np.int64) - (k == 1)
            columns.append(pa.array(values, mask=rng.random(n) < 0.3))
        for k in range(26):
            card = CATEGORY_CARDINALITY[k % 10]
            ids = (rng.zipf(1.3, n) % card).astype(np.uint64) * np.uint64(2654435761) % np.uint64(2**32)
            missing = rng.random(n) < (0.4 if k % 7 == 3 else 0.02)
            columns.append(_hex8(ids.astype(np.uint32), missing))
        sink = pa.BufferOutputStream()
        pcsv.write_csv(pa.table(columns, names=CRITEO_NAMES), sink, options)
        out.write(sink.getvalue())
        if progress is not None:
            progress(n)


__all__ = ["write_criteo_tsv", "write_criteo_rows", "CATEGORY_CARDINALITY"]
