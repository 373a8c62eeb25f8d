"""The layouts of the delimited files (which columns are label, numbers and categories, and how they are
read) and the encoding options that change the arrays made from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

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


@dataclass
class Encoding:
    """The options that change the arrays (recorded in Dataset.options and in the cache key)."""
    categorical: str = "vocab"          # "vocab" or "hash"
    min_count: int = 10                 # vocab: values rarer than this in the training split -> OOV id
    hash_buckets: int = 100_000         # hash: buckets per categorical field
    on_bad_lines: str = "error"         # "error" (BadInputError with file and line) or "skip" (counted)
    block_size: int = 4 << 20           # bytes per pyarrow block; the reader buffers ~40 of them ahead
