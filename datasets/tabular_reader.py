"""The fast reader: one delimited file streamed through pyarrow as blocks of (labels, feature columns), with
the bad-line policy applied (skip and count, or name the first bad line)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from .core import BadInputError
from .tabular_formats import Encoding, TableSpec
from .tabular_lines import find_first_bad_line, open_lines


def _open_binary(path: Path):
    """Arrow stream over the decompressed bytes (.gz/.bz2 detected by extension), for the fast reader."""
    return pa.input_stream(str(path), compression="detect")


def _labels_to_binary(values: np.ndarray, spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """(y float32 0/1, valid mask) from float labels with NaN for missing."""
    if spec.label_threshold is not None:
        valid = ~np.isnan(values)
        return (values >= spec.label_threshold).astype(np.float32), valid
    valid = (values == 0) | (values == 1) | (values == -1)
    return (values == 1).astype(np.float32), valid


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
        with open_lines(self.path) as stream:
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
            found = find_first_bad_line(self.path, self.spec, self.has_header, self.expected_columns, start)
            if found is None and start > 1:
                found = find_first_bad_line(self.path, self.spec, self.has_header, self.expected_columns)
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
