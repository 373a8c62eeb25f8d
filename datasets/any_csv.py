"""Any CSV/TSV as a dataset: a label column and the categorical and numeric columns you name."""
from __future__ import annotations

import csv
from pathlib import Path

from .core import Dataset, DatasetNotFoundError, DatasetOptionError, data_dir_candidates
from .public_tables import table_encoding
from .registry import register_dataset
from .tabular import TableSpec, first_line, load_table


@register_dataset("csv", min_count=1)
def load_csv(data_dir=None, seed: int = 0, path: str | None = None, label: str = "label",
             categorical: list[str] | tuple[str, ...] = (), numeric: list[str] | tuple[str, ...] = (),
             delimiter: str | None = None, column_names: list[str] | None = None,
             label_threshold: float | None = None, encoding: str = "vocab", min_count: int | None = None,
             hash_buckets: int = 100_000, on_bad_lines: str = "error", block_size: int = 4 << 20,
             cache_dir=None, use_cache: bool = True) -> Dataset:
    """Any CSV/TSV: `label` column (0/1 or -1/+1, or >= label_threshold), categorical and numeric columns.
    delimiter None: tab if the first line has one, else comma. column_names: for files without a header."""
    if path is None:
        raise DatasetOptionError("load('csv') needs path=... (a relative path is looked up in data_dir too)",
                                 "--dataset csv needs --data-option path=FILE (a relative path is looked up "
                                 "in --data-dir too)")
    file = Path(path)
    if not file.is_absolute() and not file.exists():
        searched = [(file.resolve(), "cwd")]
        searched += [(folder / file, origin) for folder, origin in data_dir_candidates(data_dir)]
        file = next((candidate for candidate, _ in searched[1:] if candidate.is_file()), searched[1][0])
        if not file.is_file():
            raise DatasetNotFoundError("csv", searched, [Path(path).name])
    if not file.is_file():
        raise DatasetNotFoundError("csv", [(file, "file")], [file.name])
    if not categorical and not numeric:
        raise DatasetOptionError("load('csv') needs categorical=[...] and/or numeric=[...] column names",
                                 "--dataset csv needs --data-option categorical=[...] and/or "
                                 "--data-option numeric=[...] (column names)")
    line = first_line(file)
    spec = TableSpec(name="csv", label=label, numeric=list(numeric), categorical=list(categorical),
                     column_names=list(column_names) if column_names else None,
                     delimiter=delimiter or ("\t" if "\t" in line else ","), label_threshold=label_threshold)
    header = None if column_names else next(csv.reader([line.rstrip("\r\n")], delimiter=spec.delimiter))
    if header is not None:
        unknown = [c for c in [label, *numeric, *categorical] if c not in header]
        if unknown:
            raise ValueError(f"{file}: columns {unknown} are not in the header {header}")
    enc = table_encoding("csv", encoding, min_count, hash_buckets, on_bad_lines, block_size)
    return load_table(file, spec, seed, enc, cache_dir=cache_dir, use_cache=use_cache,
                      extra_options={"label": label, "categorical": list(categorical), "numeric": list(numeric),
                                     "label_threshold": label_threshold})
