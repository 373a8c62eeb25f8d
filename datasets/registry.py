"""`load(name, ...)`: every dataset by name, with its options and where its files are looked for."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

from .core import (Dataset, DatasetNotFoundError, DatasetOptionError, data_dir_candidates, id_dtype,
                   missing_files_error, resolve_data_dir)
from .libfm import load_frappe
from .purchase import load_purchase
from .tabular import Encoding, TableSpec, avazu_spec, criteo_spec, first_line, load_table, movielens_spec

# Files looked for in data_dir/<name>/, best first: the full public file, then the shared sample.
CANDIDATE_FILES = {
    "criteo": ["train.txt", "train.txt.gz", "criteo_sample.txt"],
    "avazu": ["train", "train.csv", "train.gz", "train.csv.gz", "avazu_sample.txt"],
    "movielens": ["movielens.csv", "movielens_sample.txt"],
}
DEFAULT_MIN_COUNT = {"criteo": 10, "avazu": 5, "movielens": 1, "csv": 1}
SPECS: dict[str, Callable[[str], TableSpec]] = {"criteo": criteo_spec, "avazu": avazu_spec,
                                                 "movielens": movielens_spec}


def _find_file(name: str, data_dir: Path, file: str | None) -> Path:
    folder = data_dir / name
    if file is not None:
        path = Path(file)
        path = path if path.is_absolute() or path.exists() else folder / path
        if not path.is_file():
            raise DatasetNotFoundError(name, [(path, "file")], [path.name])
        return path
    for candidate in CANDIDATE_FILES[name]:
        if (folder / candidate).is_file():
            return folder / candidate
    raise missing_files_error(name, folder, CANDIDATE_FILES[name][:1], f"(Any of {CANDIDATE_FILES[name]}.)",
                              downloadable=True)


def _encoding(name: str, categorical: str, min_count: int | None, hash_buckets: int, on_bad_lines: str,
              block_size: int) -> Encoding:
    return Encoding(categorical=categorical, min_count=DEFAULT_MIN_COUNT[name] if min_count is None else min_count,
                    hash_buckets=hash_buckets, on_bad_lines=on_bad_lines, block_size=block_size)


def load_public_table(name: str, data_dir=None, seed: int = 0, file: str | None = None, categorical: str = "vocab",
                      min_count: int | None = None, hash_buckets: int = 100_000, on_bad_lines: str = "error",
                      block_size: int = 4 << 20, cache_dir=None, use_cache: bool = True) -> Dataset:
    """criteo / avazu / movielens from data_dir/<name>/ (layout detected from the first line)."""
    path = _find_file(name, resolve_data_dir(data_dir, name), file)
    spec = SPECS[name](first_line(path))
    encoding = _encoding(name, categorical, min_count, hash_buckets, on_bad_lines, block_size)
    return load_table(path, spec, seed, encoding, cache_dir=cache_dir, use_cache=use_cache)


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
        searched = [(file.resolve(), "cwd")] + [(folder / file, origin) for folder, origin in data_dir_candidates(data_dir)]
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
    enc = _encoding("csv", encoding, min_count, hash_buckets, on_bad_lines, block_size)
    return load_table(file, spec, seed, enc, cache_dir=cache_dir, use_cache=use_cache,
                      extra_options={"label": label, "categorical": list(categorical), "numeric": list(numeric),
                                     "label_threshold": label_threshold})


LOADERS: dict[str, Callable[..., Dataset]] = {
    "purchase": lambda data_dir=None, seed=0, **o: load_purchase(data_dir, seed=seed, **o),
    "frappe": lambda data_dir=None, seed=0, **o: load_frappe(resolve_data_dir(data_dir, "frappe"), seed=seed, **o),
    "criteo": lambda data_dir=None, seed=0, **o: load_public_table("criteo", data_dir, seed, **o),
    "avazu": lambda data_dir=None, seed=0, **o: load_public_table("avazu", data_dir, seed, **o),
    "movielens": lambda data_dir=None, seed=0, **o: load_public_table("movielens", data_dir, seed, **o),
    "csv": lambda data_dir=None, seed=0, **o: load_csv(data_dir, seed, **o),
}


def list_datasets() -> list[str]:
    """Names `load` knows."""
    return list(LOADERS)


def load(name: str, data_dir=None, seed: int = 0, **options) -> Dataset:
    """Load dataset `name`; `seed` fixes generation (purchase) and the 8:1:1 split. X holds ids in
    `id_dtype(vocab_size)` (int32 for every real set); criteo/avazu/movielens/csv X and y are read-only
    memory maps of the preprocessed cache. Options per dataset:

    purchase:  rows=100_000, hot_spot=True (bool or share of positives), signal=1.0, positive_rate=1/3,
               planted=[(i, j, strength), ...], n_users=20_000, n_items=5_000, main_scale=0.26
    frappe:    on_bad_lines="error", use_file_split=True
    criteo / avazu / movielens:  file=None, categorical="vocab"|"hash", min_count (criteo 10, avazu 5,
               movielens 1), hash_buckets=100_000, on_bad_lines="error"|"skip", cache_dir=None, use_cache=True
    csv:       path=..., label="label", categorical=[...], numeric=[...], delimiter=None, column_names=None,
               label_threshold=None, encoding="vocab"|"hash", min_count=1, plus the cache/bad-line options
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    try:
        dataset = LOADERS[name](data_dir=data_dir, seed=seed, **options)
    except DatasetNotFoundError as error:
        # A loader looks in the one folder chosen for it; say every place that was searched.
        if ((name in CANDIDATE_FILES or name == "frappe") and "file" not in options
                and [origin for _, origin in error.searched] == ["explicit"]):
            error.searched = [(folder / name, origin) for folder, origin in data_dir_candidates(data_dir)]
        raise
    narrow = id_dtype(dataset.vocab_size)
    if dataset.X.dtype != narrow:       # the in-memory sets (purchase, frappe); the cached ones are written narrow
        dataset.X = dataset.X.astype(narrow)
    return dataset
