"""frappe: libFM files (`label idx:value ...`), one feature per field, global ids as the NFM/AFM authors wrote them.

Labels +1/-1 (or 1/0) become 1/0. With all three of the authors' files the split is theirs; with the
validation and test files only (what ../shared/datasets/frappe holds) they are one dataset split 8:1:1 by seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .core import (
    BadInputError,
    Dataset,
    FieldCodebook,
    field_offsets,
    make_splits,
    missing_files_error,
    resolve_data_dir,
    split_from_parts,
)
from .download import RemoteFile
from .registry import register_dataset

NFM_DATA = "https://raw.githubusercontent.com/hexiangnan/neural_factorization_machine/master/data/frappe"
# Checksums: validation/test are the digests of the NFM/AFM authors' files as we hold them
# (../shared/datasets/frappe); the train file's is not published.
FRAPPE_SOURCES = (
    RemoteFile(f"{NFM_DATA}/frappe.train.libfm", "frappe.train.libfm"),
    RemoteFile(f"{NFM_DATA}/frappe.validation.libfm", "frappe.validation.libfm",
               "fdf4be563a7dd9b15f7a6e8b32671e90e6e7a2a2bd3af4e10bf13c5ad7e76e9e"),
    RemoteFile(f"{NFM_DATA}/frappe.test.libfm", "frappe.test.libfm",
               "a2ebaef3a9af8e55f8bb0d08bc4923965e42e43760ebd7635ac2f8c5db99e097"),
)

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather",
                 "country", "city"]
FRAPPE_DIMS = [957, 4082, 7, 7, 2, 3, 2, 9, 80, 233]   # global id ranges from the dataset's README
FRAPPE_FILES = {"train": "frappe.train.libfm", "validation": "frappe.validation.libfm",
                "test": "frappe.test.libfm"}
LABELS = {"1": 1.0, "+1": 1.0, "-1": 0.0, "0": 0.0, "1.0": 1.0, "-1.0": 0.0, "0.0": 0.0, "+1.0": 1.0}


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise BadInputError(path, line, f"bytes that are not UTF-8 ({raw[error.start:error.start + 4]!r})") from None


def _parse_line(text: str, num_fields: int, offsets: np.ndarray, dims: list[int]) -> tuple[float, list[int]]:
    """One libFM line -> (label 0/1, global ids per field). Raises ValueError with the problem."""
    tokens = text.split()
    if tokens[0] not in LABELS:
        raise ValueError(f"label {tokens[0]!r} is not one of 1/+1/-1/0")
    if len(tokens) - 1 != num_fields:
        raise ValueError(f"expected {num_fields} features after the label, got {len(tokens) - 1}")
    ids = []
    for f, token in enumerate(tokens[1:]):
        index, colon, _value = token.partition(":")
        if not colon:
            raise ValueError(f"feature token {token!r} has no ':' (want idx:value)")
        if not index.isdigit():
            raise ValueError(f"feature index {index!r} is not a non-negative integer")
        feature = int(index)
        if not offsets[f] <= feature < offsets[f] + dims[f]:
            raise ValueError(f"feature id {feature} in column {f} is outside field {FRAPPE_FIELDS[f]!r} "
                             f"ids [{offsets[f]}, {offsets[f] + dims[f]})")
        ids.append(feature)
    return LABELS[tokens[0]], ids


def read_libfm(path: Path, field_dims: list[int], on_bad_lines: str = "error") -> tuple[np.ndarray, np.ndarray, int]:
    """X int64 (n, F) global ids, y float32 (n,), count of skipped bad lines.

    on_bad_lines: "error" raises BadInputError naming file and line; "skip" drops the line and counts it.
    Blank lines are ignored. An empty file (or one with no valid rows) is always an error.
    """
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise BadInputError(path, None, "empty file: no rows")
    text = _decode(path, raw)
    offsets = field_offsets(field_dims)
    labels, rows, skipped = [], [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            label, ids = _parse_line(line, len(field_dims), offsets, field_dims)
        except ValueError as problem:
            if on_bad_lines == "error":
                raise BadInputError(path, number, str(problem)) from None
            skipped += 1
            continue
        labels.append(label)
        rows.append(ids)
    if not rows:
        raise BadInputError(path, None, f"no valid rows ({skipped} bad lines skipped)")
    return np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.float32), skipped


@register_dataset("frappe", files=tuple(FRAPPE_FILES.values()), sources=FRAPPE_SOURCES)
def load_frappe(data_dir=None, seed: int = 0, on_bad_lines: str = "error", use_file_split: bool = True) -> Dataset:
    """frappe from `data_dir/frappe/` (data_dir found as `resolve_data_dir` finds it): the authors'
    train/validation/test files if all three are there (and use_file_split), else validation + test
    stacked and split 8:1:1 by seed."""
    folder = resolve_data_dir(data_dir, "frappe") / "frappe"
    present = {part: folder / name for part, name in FRAPPE_FILES.items() if (folder / name).is_file()}
    if use_file_split and len(present) == 3:
        parts = ["train", "validation", "test"]
    elif "validation" in present and "test" in present:
        parts = [p for p in ("train", "validation", "test") if p in present]
    else:
        raise missing_files_error("frappe", folder, list(FRAPPE_FILES.values()),
                                  "At least frappe.validation.libfm and frappe.test.libfm are needed.",
                                  downloadable=True)
    Xs, ys, skipped = [], [], 0
    for part in parts:
        X, y, bad = read_libfm(present[part], FRAPPE_DIMS, on_bad_lines)
        Xs.append(X)
        ys.append(y)
        skipped += bad
    file_split = use_file_split and len(parts) == 3
    X, y = np.concatenate(Xs), np.concatenate(ys)
    splits = split_from_parts([len(v) for v in ys]) if file_split else make_splits(len(y), seed)
    options = {"seed": seed, "on_bad_lines": on_bad_lines, "files": [present[p].name for p in parts],
               "split": "files" if file_split else "seed 8:1:1"}
    codebooks = [FieldCodebook([], f"{name} #") for name in FRAPPE_FIELDS]
    return Dataset(name="frappe", X=X, y=y, field_names=list(FRAPPE_FIELDS), field_dims=list(FRAPPE_DIMS),
                   splits=splits, options=options, codebooks=codebooks, stats={"skipped_lines": skipped},
                   item_fields=(FRAPPE_FIELDS.index("item"),))
