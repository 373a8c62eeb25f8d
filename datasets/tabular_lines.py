"""The line-by-line view of a delimited file: opening it decompressed, its first line, and the slow scan
that names the lines the fast reader rejects (or copies the file without them)."""
from __future__ import annotations

import bz2
import csv
import gzip
from pathlib import Path

import numpy as np

from .tabular_formats import TableSpec


def open_lines(path: Path):
    """Python binary file over the decompressed bytes, for the line-by-line checks."""
    suffix = Path(path).suffix
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def first_line(path: Path) -> str:
    with open_lines(path) as stream:
        return stream.readline().decode("utf-8", errors="replace")


def find_first_bad_line(path: Path, spec: TableSpec, has_header: bool, expected_columns: int,
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
    with open_lines(path) as stream:
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


def clean_copy(path: Path, spec: TableSpec, has_header: bool, expected_columns: int, target: Path) -> int:
    """Copy `path` without the lines the policy skips; returns how many were dropped."""
    bad = {number for number, _ in _bad_lines(path, spec, has_header, expected_columns)}
    with open_lines(path) as stream, open(target, "wb") as out:
        for number, raw in enumerate(stream, start=1):
            if number not in bad:
                out.write(raw if raw.endswith(b"\n") else raw + b"\n")
    return len(bad)
