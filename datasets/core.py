"""The one shape every dataset takes, its deterministic splits, and where data files live.

Shapes: N rows, F fields. X holds global feature ids: field f owns [offsets[f], offsets[f] + field_dims[f]).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")
DATA_DIR_ENV = "CTRBENCH_DATA_DIR"
CACHE_DIR_ENV = "CTRBENCH_CACHE_DIR"


# How each place a dataset is looked for is named, in the words of the interface the user is in.
PLACE_WORDS = {
    "explicit": {"api": "data_dir=...", "cli": "--data-dir"},
    "env": {"api": f"${DATA_DIR_ENV}", "cli": f"${DATA_DIR_ENV}"},
    "shared": {"api": "../shared/datasets beside the repository", "cli": "../shared/datasets beside the repository"},
    "cache": {"api": "the user cache", "cli": "the user cache"},
    "cwd": {"api": "the current folder", "cli": "the current folder"},
    "file": {"api": "file=...", "cli": "--data-option file=..."},
}


class WordedError(Exception):
    """An error whose text depends on the interface: `str()` speaks the Python API, `for_cli()` the
    command line's words (`--data-dir`, `--data-option path=...`)."""

    def for_cli(self) -> str:
        return str(self)


class DatasetOptionError(WordedError, ValueError):
    """A dataset option is missing or wrong."""

    def __init__(self, api: str, cli: str):
        super().__init__(api)
        self.cli = cli

    def for_cli(self) -> str:
        return self.cli


class DatasetNotFoundError(WordedError, FileNotFoundError):
    """A dataset's files are in none of the places searched; the message names every place searched
    and which files to put there."""

    def __init__(self, name: str, searched: Sequence[tuple[Path, str]], wanted: Sequence[str], hint: str = "",
                 downloadable: bool = False):
        self.name, self.searched, self.wanted = name, list(searched), list(wanted)
        self.hint, self.downloadable = hint, downloadable
        super().__init__(self.worded("api"))

    def worded(self, words: str) -> str:
        places = "; ".join(f"{path} ({PLACE_WORDS[origin][words]})" for path, origin in self.searched)
        if self.name == "csv":
            where = "--data-option path=FILE" if words == "cli" else "path=..."
            return f"dataset 'csv': no file {', '.join(self.wanted)}. Searched: {places}. Pass {where}."
        where = "--data-dir DIR" if words == "cli" else "data_dir=..."
        fetch = {"api": f" ctrbench.datasets.download({self.name!r}) fetches them.",
                 "cli": f" `ctrbench download {self.name}` fetches them."}[words] if self.downloadable else ""
        return (f"dataset {self.name!r}: no data found. Searched: {places}. Put {', '.join(self.wanted)} in "
                f"a folder {self.name}/ and pass {where} (its parent), or set ${DATA_DIR_ENV} to that parent."
                f" {self.hint}".rstrip() + fetch)

    def __str__(self) -> str:
        return self.worded("api")

    def for_cli(self) -> str:
        return self.worded("cli")


class BadInputError(ValueError):
    """A data file is malformed; the message names the file and the (1-based) line."""

    def __init__(self, path, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")


def field_offsets(field_dims) -> np.ndarray:
    """int64 (F,): the first global id of each field when field f owns field_dims[f] ids in order."""
    return np.concatenate([[0], np.cumsum(list(field_dims)[:-1])]).astype(np.int64)


@dataclass
class FieldCodebook:
    """Names the values of one field: local id k < len(labels) is labels[k], later ids are
    f"{fallback}{k - len(labels)}" (hash buckets, or ids whose raw value the source never had)."""

    labels: list[str] = field(default_factory=list)
    fallback: str = ""

    def describe(self, local_id: int) -> str:
        if local_id < len(self.labels):
            return self.labels[local_id]
        return f"{self.fallback}{local_id - len(self.labels)}"

    def to_json(self) -> dict:
        return {"labels": list(self.labels), "fallback": self.fallback}

    @classmethod
    def from_json(cls, data: dict) -> "FieldCodebook":
        return cls(list(data["labels"]), data["fallback"])


@dataclass
class Dataset:
    """A loaded dataset.

    X: (N, F) global feature ids in `id_dtype(vocab_size)` (int32 for every real set); y: float32 (N,)
    0/1 labels; splits: int64 row indices per split name (sorted). For the delimited sets (criteo,
    avazu, movielens, csv) X and y are read-only memory maps of the preprocessed cache (np.memmap),
    so loading costs no RAM; `view(name)` reads a split by index without copying it, `split(name)`
    copies it into memory.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    field_names: list[str]
    field_dims: list[int]
    splits: dict[str, np.ndarray]
    options: dict
    codebooks: list[FieldCodebook]
    truth: dict | None = None
    stats: dict = field(default_factory=dict)   # e.g. skipped bad lines, cache hit, seconds
    # Fields that describe the item (product, app, ad) rather than the user or the context: qAFM's
    # default query. Empty where a layout does not say.
    item_fields: tuple[int, ...] = ()

    @property
    def offsets(self) -> np.ndarray:
        """int64 (F,): first global id of each field."""
        return field_offsets(self.field_dims)

    @property
    def vocab_size(self) -> int:
        return int(sum(self.field_dims))

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(X_part (n, F), y_part (n,) float32) of split `name`, as in-memory copies (X keeps its id
        dtype). For a set larger than RAM use `view(name)`, which copies nothing."""
        return self.view(name).materialize()

    def view(self, name: str) -> "SplitView":
        """Split `name` by index over X and y (memory maps stay memory maps): nothing is copied."""
        if name not in self.splits:
            raise KeyError(f"unknown split {name!r}; have {sorted(self.splits)}")
        return SplitView(self.X, self.y, self.splits[name])

    def describe_feature(self, feature_id: int) -> tuple[str, str]:
        """(field name, raw value or bucket label) of a global feature id."""
        feature_id = int(feature_id)
        if not 0 <= feature_id < self.vocab_size:
            raise ValueError(f"feature id {feature_id} outside [0, {self.vocab_size})")
        f = int(np.searchsorted(self.offsets, feature_id, side="right") - 1)
        return self.field_names[f], self.codebooks[f].describe(feature_id - int(self.offsets[f]))

    def __repr__(self) -> str:
        positives = float(np.mean(self.y)) if len(self.y) else 0.0
        sizes = {k: len(v) for k, v in self.splits.items()}
        return (f"Dataset({self.name!r}, rows={len(self.y)}, fields={self.num_fields}, "
                f"vocab={self.vocab_size}, positive_rate={positives:.3f}, splits={sizes})")


@dataclass(frozen=True)
class SplitView:
    """Rows `index` (sorted, int64) of X (N, F) and y (N,), which may be memory maps: a split by
    index, not a copy. `ctrbench.datasets.batching.block_batches` reads shuffled batches from it with
    bounded memory; `materialize()` copies it into RAM."""

    X: np.ndarray
    y: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    @property
    def num_fields(self) -> int:
        return int(self.X.shape[1])

    def materialize(self) -> tuple[np.ndarray, np.ndarray]:
        """(X rows, y rows) as in-memory arrays (one gather; for sets that fit in RAM)."""
        return np.asarray(self.X[self.index]), np.asarray(self.y[self.index])

    def head(self, rows: int) -> "SplitView":
        """The first `rows` rows of the split (in index order), still by index: e.g. a warm-up's share."""
        return SplitView(self.X, self.y, self.index[:rows])

    def labels(self) -> np.ndarray:
        """y of the split's rows, in memory (n float32: small beside X)."""
        return np.asarray(self.y[self.index])


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest integer type that torch's embedding lookups take directly and that holds every
    global id below `vocab_size`: int32 up to 2**31 - 1 ids (every real set), else int64. (int16
    would hold small sets but nn.Embedding takes int32/int64 indices only, so each batch would need
    a conversion.)"""
    return np.dtype(np.int32) if int(vocab_size) <= np.iinfo(np.int32).max else np.dtype(np.int64)


def make_splits(rows: int, seed: int, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Deterministic train/validation/test row indices (int64, each sorted) from a seeded permutation.

    Sizes are floor(rows * 0.8), floor(rows * 0.1) and the rest, so they do not depend on the seed.
    Indices are sorted inside each split for memory locality; batching shuffles anyway.
    """
    order = np.random.default_rng([seed, 0x5B11]).permutation(rows)
    n_train = int(rows * fractions[0])
    n_valid = int(rows * fractions[1])
    parts = (order[:n_train], order[n_train:n_train + n_valid], order[n_train + n_valid:])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLIT_NAMES, parts)}


def split_from_parts(part_sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """Row indices when the files bring their own train/validation/test split, stacked in that order."""
    bounds = np.concatenate([[0], np.cumsum(part_sizes)])
    return {name: np.arange(bounds[k], bounds[k + 1], dtype=np.int64) for k, name in enumerate(SPLIT_NAMES)}


def repo_shared_datasets() -> Path:
    """`../shared/datasets` next to the repository (the repo root is this package's parent)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or (Path.home() / ".cache")
    return Path(base) / "ctrbench"


def data_dir_candidates(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Where datasets are looked for, in order, each with how it was chosen: an explicit argument or
    $CTRBENCH_DATA_DIR alone; otherwise ../shared/datasets (if present), then ~/.cache/ctrbench/datasets."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "explicit")]
    if os.environ.get(DATA_DIR_ENV):
        return [(Path(os.environ[DATA_DIR_ENV]).expanduser(), "env")]
    shared = repo_shared_datasets()
    return ([(shared, "shared")] if shared.is_dir() else []) + [(user_cache_root() / "datasets", "cache")]


def resolve_data_dir(data_dir: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Explicit argument > $CTRBENCH_DATA_DIR > ../shared/datasets (if present) > ~/.cache/ctrbench/datasets.
    With `name`, the first of those that holds a folder `name/`."""
    candidates = data_dir_candidates(data_dir)
    if name is not None:
        for folder, _ in candidates:
            if (folder / name).is_dir():
                return folder
    return candidates[0][0]


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where preprocessed arrays go: argument > $CTRBENCH_CACHE_DIR > ~/.cache/ctrbench/preprocessed.
    Never the data dir, which may be read-only (the shared one is)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return user_cache_root() / "preprocessed"


def missing_files_error(name: str, folder: Path, wanted: Sequence[str], hint: str = "",
                        downloadable: bool = False, origin: str = "explicit") -> DatasetNotFoundError:
    """The error for files missing from one folder; `load` widens `searched` to every place it looked."""
    return DatasetNotFoundError(name, [(Path(folder), origin)], wanted, hint, downloadable)
