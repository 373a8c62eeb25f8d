"""The public click logs read as tables (criteo, avazu, movielens): one registration each, in its own file,
through `register_table`; the file is found in data_dir/<name>/ and its layout detected from its first line."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from .core import DatasetNotFoundError, missing_files_error, resolve_data_dir
from .registry import dataset_entry, register_dataset
from .tabular import Encoding, TableSpec, first_line, load_table


def find_file(name: str, data_dir: Path, file: str | None) -> Path:
    """`file` (absolute, relative to the working folder, or to data_dir/<name>/), else the first of the
    dataset's files that data_dir/<name>/ holds."""
    folder = data_dir / name
    candidates = dataset_entry(name).files
    if file is not None:
        path = Path(file)
        path = path if path.is_absolute() or path.exists() else folder / path
        if not path.is_file():
            raise DatasetNotFoundError(name, [(path, "file")], [path.name])
        return path
    for candidate in candidates:
        if (folder / candidate).is_file():
            return folder / candidate
    raise missing_files_error(name, folder, candidates[:1], f"(Any of {list(candidates)}.)", downloadable=True)


def table_encoding(name: str, categorical: str, min_count: int | None, hash_buckets: int, on_bad_lines: str,
                   block_size: int) -> Encoding:
    default = dataset_entry(name).min_count
    return Encoding(categorical=categorical, min_count=default if min_count is None else min_count,
                    hash_buckets=hash_buckets, on_bad_lines=on_bad_lines, block_size=block_size)


def load_public_table(name: str, spec_of: Callable[[str], TableSpec], data_dir=None, seed: int = 0,
                      file: str | None = None, categorical: str = "vocab", min_count: int | None = None,
                      hash_buckets: int = 100_000, on_bad_lines: str = "error", block_size: int = 4 << 20,
                      cache_dir=None, use_cache: bool = True):
    """A public table from data_dir/<name>/ (its layout detected from the first line by `spec_of`)."""
    path = find_file(name, resolve_data_dir(data_dir, name), file)
    encoding = table_encoding(name, categorical, min_count, hash_buckets, on_bad_lines, block_size)
    return load_table(path, spec_of(first_line(path)), seed, encoding, cache_dir=cache_dir, use_cache=use_cache)


def register_table(name: str, spec_of: Callable[[str], TableSpec], files, min_count: int, sources=(),
                   manual: str | None = None):
    """Register public table `name`: `load(name, ...)` takes load_public_table's options."""
    def loader(data_dir=None, seed: int = 0, **options):
        return load_public_table(name, spec_of, data_dir, seed, **options)
    loader.__doc__ = f"{name}: {load_public_table.__doc__}"
    register_dataset(name, files=files, min_count=min_count, sources=sources, manual=manual,
                     options_of=load_public_table)(loader)
    return loader
