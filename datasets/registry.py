"""`load(name, ...)`: every dataset by name. Each loader registers itself beside its code with
`@register_dataset` (as models do with `@register_model`), saying which files it looks for and where they
can be fetched: a new dataset is one new file in this folder."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from .core import Dataset, DatasetNotFoundError, data_dir_candidates, id_dtype


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., Dataset]          # loader(data_dir=None, seed=0, **options)
    options_of: Callable                    # whose signature lists the options (the loader's, by default)
    files: tuple[str, ...] = ()             # looked for in data_dir/<name>/, best first; () for a generated set
    min_count: int | None = None            # a table's default vocabulary threshold
    sources: tuple = ()                     # download.RemoteFile, where `ctrbench download` fetches from
    manual: str | None = None               # how to fetch by hand, where no download is possible
    doc: str = ""

    @property
    def needs_files(self) -> bool:
        return bool(self.files)


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, files=(), min_count: int | None = None, sources=(), manual: str | None = None,
                     options_of: Callable | None = None):
    """Register a loader `loader(data_dir=None, seed=0, **options) -> Dataset` under `name`."""
    def decorate(loader):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        doc = (inspect.getdoc(loader) or "").splitlines()
        _DATASETS[name] = DatasetEntry(name, loader, options_of or loader, tuple(files), min_count, tuple(sources),
                                       manual, doc[0] if doc else "")
        return loader
    return decorate


def dataset_entry(name: str) -> DatasetEntry:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}") from None


def list_datasets() -> list[str]:
    """Names `load` knows: the generated one, frappe, the public tables, csv."""
    return sorted(_DATASETS, key=lambda name: (name == "csv", _DATASETS[name].needs_files, name != "frappe", name))


def list_options(name: str) -> set[str]:
    """The options of dataset `name` that take a list (their default is one, or their annotation says so)."""
    found = set()
    for parameter in inspect.signature(dataset_entry(name).options_of).parameters.values():
        annotation = str(parameter.annotation)
        if isinstance(parameter.default, (list, tuple)) or "list[" in annotation or "tuple[" in annotation:
            found.add(parameter.name)
    return found


def as_list(value):
    """Comma-separated text (a shell's `categorical=user_id,item_id`) as a list of its items; a list as it is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip()]


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

    An option that takes a list also takes comma-separated text (`categorical="user_id,item_id"`).
    """
    entry = dataset_entry(name)
    lists = list_options(name)
    options = {key: as_list(value) if key in lists else value for key, value in options.items()}
    try:
        dataset = entry.loader(data_dir=data_dir, seed=seed, **options)
    except DatasetNotFoundError as error:
        # A loader looks in the one folder chosen for it; say every place that was searched.
        if entry.needs_files and "file" not in options and [origin for _, origin in error.searched] == ["explicit"]:
            error.searched = [(folder / name, origin) for folder, origin in data_dir_candidates(data_dir)]
        raise
    narrow = id_dtype(dataset.vocab_size)
    if dataset.X.dtype != narrow:       # the in-memory sets (purchase, frappe); the cached ones are written narrow
        dataset.X = dataset.X.astype(narrow)
    return dataset
