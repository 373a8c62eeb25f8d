"""Features to local ids, vectorised over one block of rows.

Per field, local ids are laid out as:
  numeric      0 missing, 1..11 small values floor(v) in -8..2, 12 + floor(ln(v)^2) for v > 2
               (the Criteo winners' bucketing), clipped at LOG_BUCKETS.
  categorical  vocab: 0 missing, 1 out-of-vocabulary (rarer than min_count in the training split,
               or unseen), 2.. kept values, most frequent first.
               hash:  0 missing, 1..hash_buckets = hash of the value (no OOV needed).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .core import FieldCodebook
from .tabular_formats import TRANSFORMS, Encoding, TableSpec

SMALL_MIN, SMALL_MAX = -8, 2
SMALL_BUCKETS = SMALL_MAX - SMALL_MIN + 1          # 11
LOG_BUCKETS = 400                                  # floor(ln(v)^2) < 400  <=>  v < e^20 ~ 4.9e8
NUMERIC_DIM = 1 + SMALL_BUCKETS + LOG_BUCKETS
HASH_KEY = "ctrbench-hash-01"                      # 16 bytes: pandas' siphash key, fixed for stable ids
MISSING_HASH = np.uint64(0)                        # sentinel for a missing categorical value in pass 1


def numeric_local_ids(values: np.ndarray) -> np.ndarray:
    """float64 (n,) with NaN for missing -> int64 (n,) local ids (see module doc)."""
    ids = np.zeros(len(values), dtype=np.int64)
    present = ~np.isnan(values)
    small = present & (values <= SMALL_MAX)
    large = present & (values > SMALL_MAX)
    ids[small] = 1 + (np.clip(np.floor(values[small]), SMALL_MIN, SMALL_MAX) - SMALL_MIN).astype(np.int64)
    log_bucket = np.floor(np.log(values[large]) ** 2).astype(np.int64)
    ids[large] = 1 + SMALL_BUCKETS + np.minimum(log_bucket, LOG_BUCKETS - 1)
    return ids


def numeric_codebook() -> FieldCodebook:
    labels = ["<missing>", f"<={SMALL_MIN}"] + [str(v) for v in range(SMALL_MIN + 1, SMALL_MAX + 1)]
    for b in range(LOG_BUCKETS):
        lo, hi = np.exp(np.sqrt(b)), np.exp(np.sqrt(b + 1))
        labels.append(f"ln^2={b} [{max(lo, SMALL_MAX):.4g}, {hi:.4g})" if b < LOG_BUCKETS - 1 else f"ln^2>={b}")
    return FieldCodebook(labels)


def _hash_values(uniques: pa.Array) -> np.ndarray:
    """64-bit hashes (uint64) of distinct string values; never MISSING_HASH."""
    import pandas as pd  # its hash only; imported here, since pandas takes ~0.5 s that --help should not pay
    unique_hashes = pd.util.hash_array(uniques.to_numpy(zero_copy_only=False), hash_key=HASH_KEY,
                                       categorize=False)
    unique_hashes[unique_hashes == MISSING_HASH] = 1          # keep 0 free for "missing"
    return unique_hashes


def _dictionary_positions(column: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(positions (n,) into the block's distinct values, -1 for nulls; the distinct values (an Arrow
    string array); their 64-bit hashes). Only distinct values become Python strings."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    uniques = column.dictionary
    indices = column.indices
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    return indices.to_numpy(), uniques, _hash_values(uniques)


def hash_strings(column: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """64-bit hashes (n,) uint64 of a string column, MISSING_HASH for nulls, plus the block's distinct
    values (an Arrow string array) and their hashes. Only distinct values become Python strings."""
    positions, uniques, unique_hashes = _dictionary_positions(column)
    table = np.append(unique_hashes, MISSING_HASH)            # position -1 -> the last entry
    return table[positions], uniques, unique_hashes


def _categorical_column(batch: pa.RecordBatch, spec: TableSpec, name: str) -> pa.Array:
    column = batch.column(name)
    if name in spec.transforms:
        column = TRANSFORMS[spec.transforms[name]](column)
    return column


def encode_block(batch: pa.RecordBatch, spec: TableSpec, encoding: Encoding, offsets: np.ndarray,
                 dtype=np.int64) -> np.ndarray:
    """Hash mode: (n, F) block of final global ids (numeric buckets, then hash buckets) in `dtype`."""
    n = batch.num_rows
    numeric_fields = len(spec.numeric)
    out = np.empty((n, numeric_fields + len(spec.categorical)), dtype=dtype)
    for f, name in enumerate(spec.numeric):
        out[:, f] = numeric_local_ids(batch.column(name).to_numpy(zero_copy_only=False)) + offsets[f]
    buckets = np.uint64(encoding.hash_buckets)
    for k, name in enumerate(spec.categorical):
        positions, _, unique_hashes = _dictionary_positions(_categorical_column(batch, spec, name))
        f = numeric_fields + k
        table = np.empty(len(unique_hashes) + 1, dtype=np.int64)   # position -1 -> the last entry (missing)
        table[:-1] = (unique_hashes % buckets).astype(np.int64) + (1 + offsets[f])
        table[-1] = offsets[f]
        out[:, f] = table[positions]
    return out


def encode_block_codes(batch: pa.RecordBatch, spec: TableSpec) -> tuple[np.ndarray, list[np.ndarray],
                                                                         list[pa.Array]]:
    """Vocab mode, pass 1: (n, F) int32 block of numeric local ids, then per categorical field 0 for
    missing or 1 + the value's position in the block's distinct values; plus per categorical field the
    distinct values' 64-bit hashes and strings."""
    n = batch.num_rows
    numeric_fields = len(spec.numeric)
    out = np.empty((n, numeric_fields + len(spec.categorical)), dtype=np.int32)
    for f, name in enumerate(spec.numeric):
        out[:, f] = numeric_local_ids(batch.column(name).to_numpy(zero_copy_only=False))
    hashes, strings = [], []
    for k, name in enumerate(spec.categorical):
        positions, uniques, unique_hashes = _dictionary_positions(_categorical_column(batch, spec, name))
        np.add(positions, 1, out=out[:, numeric_fields + k], casting="unsafe")
        hashes.append(unique_hashes)
        strings.append(uniques if uniques.type == pa.string() else uniques.cast(pa.string()))
    return out, hashes, strings
