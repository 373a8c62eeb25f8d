"""Delimited files (criteo, avazu, movielens, any csv) loaded as Datasets through a cache of their
preprocessed arrays, keyed by the source files and the options; the public face of the tabular modules.

This module owns the cache: its key, the atomic build of a folder and the check that a folder is whole.
The pieces it drives: tabular_formats (layouts, options), tabular_reader (the fast reader),
tabular_lines (the bad-line scan), tabular_encoding (ids per block), tabular_preprocess and tabular_vocab
(the passes that write the arrays).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .core import BadInputError, Dataset, FieldCodebook, make_splits, missing_files_error, resolve_cache_dir
from .npyio import read_header
from .tabular_encoding import (
    HASH_KEY,
    LOG_BUCKETS,
    MISSING_HASH,
    NUMERIC_DIM,
    SMALL_BUCKETS,
    SMALL_MAX,
    SMALL_MIN,
    hash_strings,
    numeric_codebook,
    numeric_local_ids,
)
from .tabular_formats import (
    AVAZU_CATEGORICAL,
    CRITEO_COLUMNS,
    MOVIELENS_COLUMNS,
    TRANSFORMS,
    Encoding,
    TableSpec,
    avazu_spec,
    criteo_spec,
    movielens_spec,
)
from .tabular_lines import first_line
from .tabular_preprocess import preprocess
from .tabular_reader import TableReader

CACHE_FORMAT = 2                                   # 2: X in id_dtype (int32), meta records dtype


def source_key(paths: list[Path], spec: TableSpec, options: dict) -> str:
    """Cache key: resolved paths, sizes, modification times, the layout and the encoding options."""
    identity = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    blob = json.dumps({"format": CACHE_FORMAT, "files": identity, "spec": asdict(spec), "options": options},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def load_table(path: Path, spec: TableSpec, seed: int, encoding: Encoding, cache_dir=None, use_cache: bool = True,
               extra_options: dict | None = None) -> Dataset:
    """Preprocess (or reuse the cached preprocessing of) one delimited file into a Dataset."""
    path = Path(path)
    if not path.is_file():
        raise missing_files_error(spec.name, path.parent, [path.name])
    if encoding.on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {encoding.on_bad_lines!r}")
    if encoding.categorical not in ("vocab", "hash"):
        raise ValueError(f"categorical must be 'vocab' or 'hash', got {encoding.categorical!r}")
    options = {"file": str(path), "seed": seed, **asdict(encoding), **(extra_options or {})}
    keyed = dict(options, seed=seed if encoding.categorical == "vocab" else None)   # hash ids ignore the split
    keyed.pop("block_size")
    folder = resolve_cache_dir(cache_dir) / f"{spec.name}-{source_key([path], spec, keyed)}"
    hit = use_cache and cache_complete(folder)
    if not hit:
        _build_cache(path, spec, encoding, seed, folder)
    meta = json.loads((folder / "meta.json").read_text())
    X = np.load(folder / "X.npy", mmap_mode="r")   # read-only maps: no RAM until read, never changes the cache
    y = np.load(folder / "y.npy", mmap_mode="r")
    stats = dict(meta["stats"], cache_hit=hit, cache_folder=str(folder))
    return Dataset(name=spec.name, X=X, y=y, field_names=meta["field_names"], field_dims=meta["field_dims"],
                   splits=make_splits(len(y), seed), options=options,
                   codebooks=[FieldCodebook.from_json(c) for c in meta["codebooks"]], stats=stats)


def _source_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_complete(folder: Path) -> bool:
    """Whether `folder` holds a whole cache of this format: meta.json names it, and X.npy and y.npy
    have the rows it says, every byte present. A folder that a killed or failed run left (without
    meta.json, or with short arrays) is never used: `load_table` rebuilds it."""
    try:
        meta = json.loads((Path(folder) / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return False
        rows, fields = meta["rows"], len(meta["field_dims"])
        for name, shape in (("X.npy", (rows, fields)), ("y.npy", (rows,))):
            dtype, found, offset = read_header(Path(folder) / name)
            expected_bytes = offset + dtype.itemsize * int(np.prod(shape))
            if tuple(found) != shape or (Path(folder) / name).stat().st_size != expected_bytes:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _build_cache(path: Path, spec: TableSpec, encoding: Encoding, seed: int, folder: Path) -> None:
    """Preprocess into a temporary folder beside `folder`, then rename it into place (atomic: readers see
    a whole cache or none). Temporary folders of killed runs (their process gone) are removed; so are
    caches of this same file built from an earlier version of it (other size or modification time)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    building = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        source = _source_identity(path)
        meta = preprocess(path, spec, encoding, seed, building)
        if _source_identity(path) != source:
            raise BadInputError(path, None, "changed while it was being preprocessed; load it again")
        dtype = read_header(building / "X.npy")[0]
        meta.update(format=CACHE_FORMAT, source=source, id_dtype=dtype.name)
        (building / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(building, folder)       # atomic: readers see all files or none
        except OSError:
            if not cache_complete(folder):     # another process renamed its own build first: use that
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    for other in folder.parent.glob(f"{spec.name}-*"):
        if other == folder:
            continue
        try:
            earlier = json.loads((other / "meta.json").read_text()).get("source") or {}
        except (OSError, ValueError):
            continue
        if earlier.get("path") == source["path"] and earlier != source:
            shutil.rmtree(other, ignore_errors=True)


__all__ = ["TableSpec", "Encoding", "load_table", "cache_complete", "criteo_spec", "avazu_spec", "movielens_spec",
           "first_line", "numeric_local_ids", "hash_strings", "preprocess", "source_key", "TableReader",
           "numeric_codebook", "TRANSFORMS", "CACHE_FORMAT", "CRITEO_COLUMNS", "AVAZU_CATEGORICAL",
           "MOVIELENS_COLUMNS", "NUMERIC_DIM", "SMALL_MIN", "SMALL_MAX", "SMALL_BUCKETS", "LOG_BUCKETS",
           "HASH_KEY", "MISSING_HASH"]
