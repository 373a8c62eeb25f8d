"""Delimited files (criteo, avazu, movielens, any csv) streamed through pyarrow, encoded to global ids,
cached as .npy keyed by the source files and the options.

Per field, local ids are laid out as:
  numeric      0 missing, 1..11 small values floor(v) in -8..2, 12 + floor(ln(v)^2) for v > 2
               (the Criteo winners' bucketing), clipped at LOG_BUCKETS.
  categorical  vocab: 0 missing, 1 out-of-vocabulary (rarer than min_count in the training split,
               or unseen), 2.. kept values, most frequent first.
               hash:  0 missing, 1..hash_buckets = hash of the value (no OOV needed).
Preprocessing is one streaming pass (hash) or, for vocab, one streaming pass over the file that writes
per block each categorical value's index into the block's distinct values (int32), the 64-bit hashes of
those distinct values and their strings, then two cheap passes over that: count the training rows'
values (np.bincount per block, merged by hash), and map every block's distinct values to ids through a
lookup table. Each pass holds one block of rows in memory at a time.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .core import (
    BadInputError,
    Dataset,
    FieldCodebook,
    field_offsets,
    id_dtype,
    make_splits,
    missing_files_error,
    resolve_cache_dir,
)
from .npyio import NpyAppender, iter_sized_blocks, read_header

CACHE_FORMAT = 2                                   # 2: X in id_dtype (int32), meta records dtype
SMALL_MIN, SMALL_MAX = -8, 2
SMALL_BUCKETS = SMALL_MAX - SMALL_MIN + 1          # 11
LOG_BUCKETS = 400                                  # floor(ln(v)^2) < 400  <=>  v < e^20 ~ 4.9e8
NUMERIC_DIM = 1 + SMALL_BUCKETS + LOG_BUCKETS
HASH_KEY = "ctrbench-hash-01"                      # 16 bytes: pandas' siphash key, fixed for stable ids
MISSING_HASH = np.uint64(0)                        # sentinel for a missing categorical value in pass 1

CRITEO_COLUMNS = ["label"] + [f"I{k}" for k in range(1, 14)] + [f"C{k}" for k in range(1, 27)]
AVAZU_CATEGORICAL = ["hour", "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id",
                     "app_domain", "app_category", "device_id", "device_ip", "device_model", "device_type",
                     "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"]
MOVIELENS_COLUMNS = ["user_id", "movie_id", "rating", "timestamp", "title", "genres", "gender", "age",
                     "occupation", "zip"]


@dataclass
class TableSpec:
    """How to read one delimited layout: which column is the label and which are features."""
    name: str
    label: str
    numeric: list[str]
    categorical: list[str]
    column_names: list[str] | None = None     # for files without a header row
    delimiter: str = ","
    label_threshold: float | None = None      # None: label must be 0/1 or -1/+1; else label >= threshold -> 1
    transforms: dict[str, str] = field(default_factory=dict)   # column -> name in TRANSFORMS


def _hour_of_day(column: pa.Array) -> pa.Array:
    """Avazu's hour is YYMMDDHH; the date alone never recurs in a test period, the hour of day does."""
    return pc.utf8_slice_codeunits(column, 6, 8)


def _first_of_list(column: pa.Array) -> pa.Array:
    """MovieLens genres are `A|B|C`; one feature per field, so the first genre stands for the film."""
    return pc.list_element(pc.split_pattern(column, "|"), 0)


TRANSFORMS: dict[str, Callable[[pa.Array], pa.Array]] = {"hour_of_day": _hour_of_day, "first_of_list": _first_of_list}


def criteo_spec(first_line: str) -> TableSpec:
    """The 200-row sample has a header and commas; Kaggle's train.txt has neither (tabs)."""
    has_header = first_line.split("\t" if "\t" in first_line else ",")[0].strip() == "label"
    return TableSpec(name="criteo", label="label", numeric=CRITEO_COLUMNS[1:14], categorical=CRITEO_COLUMNS[14:],
                     column_names=None if has_header else CRITEO_COLUMNS,
                     delimiter="\t" if "\t" in first_line else ",")


def avazu_spec(first_line: str) -> TableSpec:
    return TableSpec(name="avazu", label="click", numeric=[], categorical=list(AVAZU_CATEGORICAL),
                     transforms={"hour": "hour_of_day"})


def movielens_spec(first_line: str) -> TableSpec:
    return TableSpec(name="movielens", label="rating", numeric=[],
                     categorical=["user_id", "movie_id", "genres", "gender", "age", "occupation", "zip"],
                     label_threshold=4.0, transforms={"genres": "first_of_list"})


# ---------------------------------------------------------------------------------------------
# Encoding pieces, each vectorised over one block of rows.

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


# ---------------------------------------------------------------------------------------------
# Reading, with bad-line policy.

def _find_first_bad_line(path: Path, spec: TableSpec, has_header: bool, expected_columns: int,
                         start_line: int = 1) -> tuple[int, str] | None:
    """Slow line-by-line check, run only after the fast reader failed: (line, problem) of the first bad
    line at or after `start_line` (the lines before it are skipped by counting newlines, at disk speed)."""
    return next(iter(_bad_lines(path, spec, has_header, expected_columns, start_line)), None)


def _skip_lines(stream, count: int, chunk: int = 1 << 22) -> int:
    """Move `stream` (a seekable binary file) past `count` more lines; returns how many it passed."""
    passed = 0
    while passed < count:
        data = stream.read(chunk)
        if not data:
            break
        newlines = data.count(b"\n")
        if passed + newlines < count:
            passed += newlines
            continue
        position = int(np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)[count - passed - 1])
        stream.seek(position + 1 - len(data), 1)
        passed = count
    return passed


def _bad_lines(path: Path, spec: TableSpec, has_header: bool, expected_columns: int, start_line: int = 1):
    """Yield (1-based line, problem) for every line at or after `start_line` the fast reader would reject."""
    names = None
    with _open_lines(path) as stream:
        first = 1
        if start_line > 1:
            if has_header:
                header = stream.readline()
                names = next(csv.reader([header.decode("utf-8", errors="replace").rstrip("\r\n")],
                                        delimiter=spec.delimiter))
                first = 2
            else:
                names = spec.column_names
            first += _skip_lines(stream, start_line - first)
        for number, raw in enumerate(stream, start=first):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield number, f"bytes that are not UTF-8 ({raw[error.start:error.start + 4]!r})"
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            cells = next(csv.reader([text], delimiter=spec.delimiter))
            if names is None:
                names = cells if has_header else spec.column_names
                if has_header:
                    continue
            elif has_header and number == 1:
                continue
            if len(cells) != expected_columns:
                truncated = " (truncated last line?)" if not raw.endswith(b"\n") else ""
                yield number, f"expected {expected_columns} columns, got {len(cells)}{truncated}"
                continue
            row = dict(zip(names, cells))
            problem = _label_problem(row[spec.label], spec) or next(
                (f"column {c!r}: {row[c]!r} is not a number" for c in spec.numeric if not _is_number(row[c])), None)
            if problem:
                yield number, problem


def _is_number(text: str) -> bool:
    if text == "":
        return True   # missing
    try:
        float(text)
        return True
    except ValueError:
        return False


def _label_problem(text: str, spec: TableSpec) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return f"label {text!r} is not a number"
    if spec.label_threshold is None and value not in (0.0, 1.0, -1.0):
        return f"label {text!r} is not 0/1 or -1/+1"
    return None


def _open_binary(path: Path):
    """Arrow stream over the decompressed bytes (.gz/.bz2 detected by extension), for the fast reader."""
    return pa.input_stream(str(path), compression="detect")


def _open_lines(path: Path):
    """Python binary file over the decompressed bytes, for the line-by-line checks."""
    suffix = Path(path).suffix
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def _labels_to_binary(values: np.ndarray, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """(y float32 0/1, valid mask) from float labels with NaN for missing."""
    if spec.label_threshold is not None:
        valid = ~np.isnan(values)
        return (values >= spec.label_threshold).astype(np.float32), valid
    valid = (values == 0) | (values == 1) | (values == -1)
    return (values == 1).astype(np.float32), valid


@dataclass
class Encoding:
    """The options that change the arrays (recorded in Dataset.options and in the cache key)."""
    categorical: str = "vocab"          # "vocab" or "hash"
    min_count: int = 10                 # vocab: values rarer than this in the training split -> OOV id
    hash_buckets: int = 100_000         # hash: buckets per categorical field
    on_bad_lines: str = "error"         # "error" (BadInputError with file and line) or "skip" (counted)
    block_size: int = 4 << 20           # bytes per pyarrow block; the reader buffers ~40 of them ahead


class TableReader:
    """Streams one file as blocks of (y, features) with the bad-line policy applied."""

    def __init__(self, path: Path, spec: TableSpec, encoding: Encoding):
        self.path, self.spec, self.encoding = Path(path), spec, encoding
        self.skipped = 0
        self.has_header = spec.column_names is None
        self.expected_columns = None
        self.rows_passed = 0        # rows of the blocks already yielded, bad ones included

    def record_batches(self, source: Path):
        skip = self.encoding.on_bad_lines == "skip"

        def on_invalid_row(row) -> str:
            if skip:
                self.skipped += 1
                return "skip"
            return "error"

        spec = self.spec
        wanted = [spec.label, *spec.numeric, *spec.categorical]
        # "skip" reads the numbers as text and converts them per block (_numbers), so a value that is
        # not a number drops its row there instead of failing the whole read: the same speed.
        number = pa.string() if skip else pa.float64()
        types = {spec.label: number, **{c: number for c in spec.numeric},
                 **{c: pa.string() for c in spec.categorical}}
        read = pcsv.ReadOptions(column_names=spec.column_names, block_size=self.encoding.block_size)
        parse = pcsv.ParseOptions(delimiter=spec.delimiter, invalid_row_handler=on_invalid_row)
        convert = pcsv.ConvertOptions(column_types=types, include_columns=wanted, null_values=[""],
                                      strings_can_be_null=True, quoted_strings_can_be_null=True)
        return pcsv.open_csv(_open_binary(source), read_options=read, parse_options=parse, convert_options=convert)

    def _count_columns(self) -> int:
        if self.spec.column_names is not None:
            return len(self.spec.column_names)
        with _open_lines(self.path) as stream:
            first = stream.readline().decode("utf-8", errors="replace").rstrip("\r\n")
        return len(next(csv.reader([first], delimiter=self.spec.delimiter)))

    def blocks(self):
        """Yield (y float32 (n,), RecordBatch of the feature columns) per block.

        Errors from the fast reader carry no line number, so with on_bad_lines="error" a slow line scan
        finds the first bad line, starting at the first line of the block that failed (every earlier
        line is skipped by counting newlines). With "skip", rows with too many or too few columns,
        a label or a number that does not parse are dropped and counted block by block; any other
        error (bytes that are not UTF-8) propagates as pa.ArrowInvalid and the caller reads a cleaned
        copy instead."""
        self.expected_columns = self._count_columns()
        try:
            yield from self._blocks_from(self.path)
        except pa.ArrowInvalid as error:
            if self.encoding.on_bad_lines == "skip":
                raise
            # Lines >= rows: blank lines and quoted line breaks only push the bad line further down.
            start = self.rows_passed + int(self.has_header) + 1
            found = _find_first_bad_line(self.path, self.spec, self.has_header, self.expected_columns, start)
            if found is None and start > 1:
                found = _find_first_bad_line(self.path, self.spec, self.has_header, self.expected_columns)
            if found:
                raise BadInputError(self.path, *found) from None
            raise BadInputError(self.path, None, f"could not be parsed: {error}") from None

    def _blocks_from(self, source: Path):
        try:
            reader = self.record_batches(source)
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error) or "empty" in str(error).lower():
                raise BadInputError(self.path, None, "empty file: no rows") from None
            raise
        skip = self.encoding.on_bad_lines == "skip"
        for batch in reader:
            if skip:
                batch, labels, valid = _numbers(batch, self.spec)
            else:
                labels = batch.column(self.spec.label).to_numpy(zero_copy_only=False)
            y, valid_labels = _labels_to_binary(labels, self.spec)
            valid = valid_labels if not skip else valid & valid_labels
            if not valid.all():
                if not skip:
                    raise pa.ArrowInvalid("bad label")   # located by the line scanner
                self.skipped += int((~valid).sum())
                batch, y = batch.filter(pa.array(valid)), y[valid]
            self.rows_passed += len(valid)
            yield y, batch


_PLAIN_NUMBER = r"^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?$"


def _to_float(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A text column -> (float64 column, per-row bool: parsed or missing). Vectorised; only a column
    holding a value that does not parse is converted value by value (one block, at most)."""
    try:
        return pc.cast(column, pa.float64()), np.ones(len(column), dtype=bool)
    except pa.ArrowInvalid:
        pass
    plain = pc.fill_null(pc.match_substring_regex(column, _PLAIN_NUMBER), True).to_numpy(zero_copy_only=False)
    ok = plain.copy()
    for i in np.flatnonzero(~plain):
        try:
            pc.cast(column.slice(int(i), 1), pa.float64())
            ok[i] = True
        except pa.ArrowInvalid:
            pass
    cleaned = pc.if_else(pa.array(ok), column, pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.float64()), ok


def _numbers(batch: pa.RecordBatch, spec: TableSpec) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Skip mode: the label and numeric columns arrive as text; convert them to float64. Returns the
    batch with converted columns, the labels (float64 NumPy, NaN missing) and the rows where every
    number parsed."""
    valid = np.ones(batch.num_rows, dtype=bool)
    columns, names = [], batch.schema.names
    for name, column in zip(names, batch.columns):
        if name == spec.label or name in spec.numeric:
            column, ok = _to_float(column)
            valid &= ok
        columns.append(column)
    batch = pa.record_batch(columns, names=names)
    return batch, batch.column(spec.label).to_numpy(zero_copy_only=False), valid


def _clean_copy(path: Path, spec: TableSpec, has_header: bool, expected_columns: int, target: Path) -> int:
    """Copy `path` without the lines the policy skips; returns how many were dropped."""
    bad = {number for number, _ in _bad_lines(path, spec, has_header, expected_columns)}
    with _open_lines(path) as stream, open(target, "wb") as out:
        for number, raw in enumerate(stream, start=1):
            if number not in bad:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    return len(bad)


# ---------------------------------------------------------------------------------------------
# Preprocess into a cache folder.

def _categorical_column(batch: pa.RecordBatch, spec: TableSpec, name: str) -> pa.Array:
    column = batch.column(name)
    if name in spec.transforms:
        column = TRANSFORMS[spec.transforms[name]](column)
    return column


def _encode_block(batch: pa.RecordBatch, spec: TableSpec, encoding: Encoding, offsets: np.ndarray,
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


@dataclass
class _BlockLog:
    """What the vocab first pass wrote per block, so later passes can read the same blocks back."""
    rows: list[int] = field(default_factory=list)
    distinct: list[np.ndarray] = field(default_factory=list)    # per block: distinct values per column


def _encode_block_codes(batch: pa.RecordBatch, spec: TableSpec) -> tuple[np.ndarray, list[np.ndarray],
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


class _HashCounter:
    """Sums (64-bit hash, count) pairs; merges when the pending pairs outgrow the merged ones, so memory
    stays proportional to the distinct values, not to the rows."""

    def __init__(self):
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending = self.merged = 0

    def add(self, hashes: np.ndarray, counts: np.ndarray) -> None:
        self.parts.append((hashes, counts))
        self.pending += len(hashes)
        if self.pending > max(1 << 20, 2 * self.merged):
            self._merge()

    def _merge(self) -> None:
        values = np.concatenate([p[0] for p in self.parts]) if self.parts else np.zeros(0, np.uint64)
        counts = np.concatenate([p[1] for p in self.parts]) if self.parts else np.zeros(0, np.int64)
        distinct, inverse = np.unique(values, return_inverse=True)
        summed = np.bincount(inverse, weights=counts, minlength=len(distinct)).astype(np.int64)
        self.parts = [(distinct, summed)]
        self.pending = self.merged = len(distinct)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct hashes sorted, counts)."""
        self._merge()
        return self.parts[0]


def _count_training_values(codes: Path, hashes: Path, log: _BlockLog, train_mask: np.ndarray,
                           numeric_fields: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per categorical column: (distinct 64-bit hashes, counts) over training rows, missing excluded."""
    columns = len(log.distinct[0]) if log.distinct else 0
    counters = [_HashCounter() for _ in range(columns)]
    start = 0
    for block, block_hashes, distinct in zip(iter_sized_blocks(codes, log.rows),
                                             iter_sized_blocks(hashes, [d.sum() for d in log.distinct]),
                                             log.distinct):
        rows = block[train_mask[start:start + len(block)], numeric_fields:].T   # (columns, training rows)
        start += len(block)
        bounds = np.concatenate([[0], np.cumsum(distinct)])
        for k in range(columns):
            counts = np.bincount(rows[k], minlength=int(distinct[k]) + 1)[1:]
            seen = np.flatnonzero(counts)
            counters[k].add(block_hashes[bounds[k]:bounds[k + 1]][seen], counts[seen])
    return [c.result() for c in counters]


def _vocabulary(distinct: np.ndarray, counts: np.ndarray, min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """Kept hashes sorted (for searchsorted) and their local ids (2.. by descending count, ties by hash)."""
    kept = counts >= min_count
    hashes, kept_counts = distinct[kept], counts[kept]
    by_frequency = np.lexsort((hashes, -kept_counts))
    local = np.empty(len(hashes), dtype=np.int64)
    local[by_frequency] = 2 + np.arange(len(hashes))
    return hashes, local   # hashes already sorted: np.unique returned them sorted


def _map_blocks(codes: Path, hashes: Path, strings: Path, log: _BlockLog, vocabularies, offsets: np.ndarray,
                numeric_fields: int, x_path: Path, dtype=np.int64) -> list[list[str]]:
    """Write x_path (global ids in id_dtype of the vocabulary) from the pass-1 codes; return per categorical
    field the names of its local ids (0 missing, 1 OOV, then the kept values' raw strings, first occurrence in
    the file)."""
    named = [np.zeros(len(h), dtype=bool) for h, _ in vocabularies]
    found_names: list[list[tuple[np.ndarray, pa.Array]]] = [[] for _ in vocabularies]
    F = numeric_fields + len(vocabularies)
    with NpyAppender(x_path, dtype, (F,)) as x_out, pa.memory_map(str(strings)) as source:
        names_reader = pa.ipc.open_stream(source)
        for block, block_hashes, distinct in zip(iter_sized_blocks(codes, log.rows),
                                                 iter_sized_blocks(hashes, [d.sum() for d in log.distinct]),
                                                 log.distinct):
            block_strings = names_reader.read_next_batch().column(0)
            out = np.empty(block.shape, dtype=dtype)
            np.add(block[:, :numeric_fields], offsets[:numeric_fields], out=out[:, :numeric_fields])
            bounds = np.concatenate([[0], np.cumsum(distinct)])
            for k, (kept, local) in enumerate(vocabularies):
                f = numeric_fields + k
                values = block_hashes[bounds[k]:bounds[k + 1]]
                table = np.empty(len(values) + 1, dtype=np.int64)
                table[0] = offsets[f]                                  # missing
                if len(kept):
                    position = np.minimum(np.searchsorted(kept, values), len(kept) - 1)
                    found = kept[position] == values
                    table[1:] = np.where(found, local[position], 1) + offsets[f]
                    new = np.flatnonzero(found & ~named[k][position])
                    if len(new):
                        first = np.unique(position[new], return_index=True)[1]   # earliest of equal hashes
                        new = new[first]
                        named[k][position[new]] = True
                        found_names[k].append((local[position[new]],
                                               block_strings.slice(int(bounds[k]), int(distinct[k])).take(new)))
                else:
                    table[1:] = 1 + offsets[f]
                out[:, f] = table[block[:, f]]
            x_out.append(out)
    names = []
    for (kept, local), parts in zip(vocabularies, found_names):
        field_names = ["<missing>", "<oov>"] + [""] * len(kept)
        for i, h in zip(local.tolist(), kept.tolist()):
            field_names[i] = f"hash {h:016x}"          # only if the value's string was never seen
        for ids, values in parts:
            for i, name in zip(ids.tolist(), values.to_pylist()):
                field_names[i] = name
        names.append(field_names)
    return names


def source_key(paths: list[Path], spec: TableSpec, options: dict) -> str:
    """Cache key: resolved paths, sizes, modification times, the layout and the encoding options."""
    identity = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps({"format": CACHE_FORMAT, "files": identity, "spec": asdict(spec), "options": options},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def preprocess(path: Path, spec: TableSpec, encoding: Encoding, seed: int, folder: Path) -> dict:
    """Stream `path` into folder/X.npy (int64 (N, F) global ids), folder/y.npy, folder/meta.json.
    Blocks follow the reader's `encoding.block_size`."""
    started = time.perf_counter()
    reader = TableReader(path, spec, encoding)
    vocab = encoding.categorical == "vocab"
    numeric_fields = len(spec.numeric)
    work = {"codes": folder / "codes.npy", "hashes": folder / "hashes.npy", "strings": folder / "strings.arrow"}
    dropped_by_cleaning = 0
    try:
        log = _first_pass(reader, spec, encoding, folder / "X.npy", folder / "y.npy", work)
    except pa.ArrowInvalid:
        # Only reached with on_bad_lines="skip" when a value conversion (not a column count) failed:
        # copy the file without its bad lines once, then read the copy.
        cleaned = folder / "cleaned.csv"
        dropped_by_cleaning = _clean_copy(path, spec, reader.has_header, reader.expected_columns, cleaned)
        reader = TableReader(cleaned, spec, encoding)
        log = _first_pass(reader, spec, encoding, folder / "X.npy", folder / "y.npy", work)
        cleaned.unlink()
    rows = read_header(folder / "y.npy")[1][0]
    if rows == 0:
        raise BadInputError(path, None, "no data rows")
    field_dims = [NUMERIC_DIM] * numeric_fields
    codebooks = [numeric_codebook() for _ in spec.numeric]
    if vocab:
        train_mask = np.zeros(rows, dtype=bool)
        train_mask[make_splits(rows, seed)["train"]] = True
        counted = _count_training_values(work["codes"], work["hashes"], log, train_mask, numeric_fields)
        del train_mask
        vocabularies = [_vocabulary(d, c, encoding.min_count) for d, c in counted]
        del counted
        field_dims += [2 + len(h) for h, _ in vocabularies]
        offsets = field_offsets(field_dims)
        names = _map_blocks(work["codes"], work["hashes"], work["strings"], log, vocabularies, offsets,
                            numeric_fields, folder / "X.npy", id_dtype(sum(field_dims)))
        for file in work.values():
            file.unlink()
        codebooks += [FieldCodebook(field_names) for field_names in names]
    else:
        field_dims += [1 + encoding.hash_buckets] * len(spec.categorical)
        codebooks += [FieldCodebook(["<missing>"], "hash bucket ") for _ in spec.categorical]
    meta = {"rows": rows, "field_names": [*spec.numeric, *spec.categorical], "field_dims": field_dims,
            "codebooks": [c.to_json() for c in codebooks],
            "stats": {"skipped_lines": reader.skipped + dropped_by_cleaning,
                      "preprocess_seconds": round(time.perf_counter() - started, 3)}}
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def _hash_field_dims(spec: TableSpec, encoding: Encoding) -> list[int]:
    return [NUMERIC_DIM] * len(spec.numeric) + [1 + encoding.hash_buckets] * len(spec.categorical)


def _field_offsets(spec: TableSpec, encoding: Encoding) -> np.ndarray:
    """Global id offsets in hash mode, where every field's size is known before reading."""
    return field_offsets(_hash_field_dims(spec, encoding))


def _first_pass(reader: TableReader, spec: TableSpec, encoding: Encoding, x_path: Path, y_path: Path,
                work: dict[str, Path]) -> _BlockLog | None:
    """Stream the file once: labels to y_path, and final ids to x_path (hash) or, for vocab, block codes,
    distinct-value hashes and strings to the `work` files (returns the log of blocks written)."""
    F = len(spec.numeric) + len(spec.categorical)
    if encoding.categorical != "vocab":
        offsets = _field_offsets(spec, encoding)
        dtype = id_dtype(sum(_hash_field_dims(spec, encoding)))
        with NpyAppender(x_path, dtype, (F,)) as x_out, NpyAppender(y_path, np.float32) as y_out:
            for y, batch in reader.blocks():
                x_out.append(_encode_block(batch, spec, encoding, offsets, dtype))
                y_out.append(y)
        return None
    log = _BlockLog()
    schema = pa.schema([("value", pa.string())])
    with NpyAppender(work["codes"], np.int32, (F,)) as codes_out, NpyAppender(y_path, np.float32) as y_out, \
            NpyAppender(work["hashes"], np.uint64) as hashes_out, \
            pa.OSFile(str(work["strings"]), "wb") as sink, pa.ipc.new_stream(sink, schema) as strings_out:
        for y, batch in reader.blocks():
            codes, hashes, strings = _encode_block_codes(batch, spec)
            codes_out.append(codes)
            y_out.append(y)
            hashes_out.append(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))
            strings_out.write_batch(pa.record_batch(
                [pa.concat_arrays(strings) if strings else pa.array([], pa.string())], schema=schema))
            log.rows.append(len(codes))
            log.distinct.append(np.array([len(h) for h in hashes], dtype=np.int64))
    return log


def load_table(path: Path, spec: TableSpec, seed: int, encoding: Encoding, cache_dir=None, use_cache: bool = True,
               extra_options: dict | None = None) -> Dataset:
    """Preprocess (or reuse the cached preprocessing of) one delimited file into a Dataset."""
    path = Path(path)
    if not path.is_file():
        raise missing_files_error(spec.name, path.parent, [path.name])
    if encoding.on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {encoding.on_bad_lines!r}")
    if encoding.categorical not in ("vocab", "hash"):
        raise ValueError(f"categorical must be 'vocab' or 'hash', got {encoding.categorical!r}")
    options = {"file": str(path), "seed": seed, **asdict(encoding), **(extra_options or {})}
    keyed = dict(options, seed=seed if encoding.categorical == "vocab" else None)   # hash ids ignore the split
    keyed.pop("block_size")
    folder = resolve_cache_dir(cache_dir) / f"{spec.name}-{source_key([path], spec, keyed)}"
    hit = use_cache and cache_complete(folder)
    if not hit:
        _build_cache(path, spec, encoding, seed, folder)
    meta = json.loads((folder / "meta.json").read_text())
    X = np.load(folder / "X.npy", mmap_mode="r")   # read-only maps: no RAM until read, never changes the cache
    y = np.load(folder / "y.npy", mmap_mode="r")
    stats = dict(meta["stats"], cache_hit=hit, cache_folder=str(folder))
    return Dataset(name=spec.name, X=X, y=y, field_names=meta["field_names"], field_dims=meta["field_dims"],
                   splits=make_splits(len(y), seed), options=options,
                   codebooks=[FieldCodebook.from_json(c) for c in meta["codebooks"]], stats=stats)


def _source_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_complete(folder: Path) -> bool:
    """Whether `folder` holds a whole cache of this format: meta.json names it, and X.npy and y.npy
    have the rows it says, every byte present. A folder that a killed or failed run left (without
    meta.json, or with short arrays) is never used: `load_table` rebuilds it."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return False
        rows, fields = meta["rows"], len(meta["field_dims"])
        for name, shape in (("X.npy", (rows, fields)), ("y.npy", (rows,))):
            dtype, found, offset = read_header(Path(folder) / name)
            expected_bytes = offset + dtype.itemsize * int(np.prod(shape))
            if tuple(found) != shape or (Path(folder) / name).stat().st_size != expected_bytes:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build_cache(path: Path, spec: TableSpec, encoding: Encoding, seed: int, folder: Path) -> None:
    """Preprocess into a temporary folder beside `folder`, then rename it into place (atomic: readers see
    a whole cache or none). Temporary folders of killed runs (their process gone) are removed; so are
    caches of this same file built from an earlier version of it (other size or modification time)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    building = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        source = _source_identity(path)
        meta = preprocess(path, spec, encoding, seed, building)
        if _source_identity(path) != source:
            raise BadInputError(path, None, "changed while it was being preprocessed; load it again")
        dtype = read_header(building / "X.npy")[0]
        meta.update(format=CACHE_FORMAT, source=source, id_dtype=dtype.name)
        (building / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(building, folder)       # atomic: readers see all files or none
        except OSError:
            if not cache_complete(folder):     # another process renamed its own build first: use that
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    for other in folder.parent.glob(f"{spec.name}-*"):
        if other == folder:
            continue
        try:
            earlier = json.loads((other / "meta.json").read_text()).get("source") or {}
        except (OSError, ValueError):
            continue
        if earlier.get("path") == source["path"] and earlier != source:
            shutil.rmtree(other, ignore_errors=True)


def first_line(path: Path) -> str:
    with _open_lines(path) as stream:
        return stream.readline().decode("utf-8", errors="replace")


__all__ = ["TableSpec", "Encoding", "load_table", "cache_complete", "criteo_spec", "avazu_spec", "movielens_spec",
           "first_line", "numeric_local_ids", "hash_strings"]
