"""Datasets in one shape: X int64 (rows, fields) global feature ids, y float32 0/1, field layout, splits.

    >>> from ctrbench.datasets import load, list_datasets, batches
    >>> ds = load("purchase", rows=100_000, hot_spot=True)      # generated, no files needed
    >>> X_train, y_train = ds.split("train")
    >>> ds.describe_feature(int(X_train[0, 8]))                  # ('brand', 'hash bucket 5')

Only relative imports here: this folder is `ctrbench.datasets` and must never be mistaken for (or
shadow) Hugging Face's top-level `datasets` package.
"""
import importlib
import pkgutil

from ctrbench.pairs import pair_number  # the article's pair numbering, which purchase's truth uses

from .batching import batches
from .core import (
    BadInputError,
    Dataset,
    DatasetNotFoundError,
    FieldCodebook,
    make_splits,
    resolve_cache_dir,
    resolve_data_dir,
)
from .download import DownloadError, download
from .registry import dataset_entry, list_datasets, load, register_dataset

# Every loader registers itself when its file is imported; a new dataset is one new file.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["load", "list_datasets", "register_dataset", "dataset_entry", "batches", "Dataset", "FieldCodebook",
           "BadInputError", "DatasetNotFoundError",
           "DownloadError", "download", "make_splits", "resolve_data_dir", "resolve_cache_dir", "pair_number"]
