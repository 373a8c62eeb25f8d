"""Run records: one JSON file per finished run, written atomically, read back defensively; and the one
reader of every results file kind, which refuses a key that no writer produces (a hand-edited file)."""
from __future__ import annotations

import json
from pathlib import Path

from ctrbench.files import write_text_atomic

SCHEMA = 1
# What `protocol.run_one` writes (and the tuner adds: `tuned` in the key, `tuning` beside it; `run_grid` adds
# `interaction_choice` to a run whose implementation `--interactions auto` picked; `ctrbench reproduce` adds
# `reproduces`, what the record it re-made said).
RECORD_KEYS = frozenset({
    "schema", "kind", "key", "dataset", "dataset_options", "model", "interaction", "hparams", "seed", "config",
    "device", "world_size", "compile", "tuned", "tuning", "embedding_optimizer", "field_dims", "rows", "data_path",
    "test", "validation", "best_epoch", "epochs_run", "history", "train_samples_per_s", "inference_samples_per_s",
    "warmup_seconds", "wall_seconds", "memory", "parameters", "running_backend", "backend", "environment",
    "interaction_choice", "reproduces"})


def read_document(path: Path, kind: str, keys: frozenset[str], schema: int = 1, lists: tuple[str, ...] = ()) -> dict:
    """A results file of `kind` (its "kind" field), as its writer wrote it; ValueError saying why where it
    is unreadable, of another kind or schema, holds a key that its writer (`keys`) never writes, or where
    one of `lists` is not a list."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(document, dict) or document.get("kind") != kind:
        raise ValueError(f"{path}: not a {kind} file")
    if document.get("schema", 1) != schema:
        raise ValueError(f"{path}: a {kind} file of schema {document.get('schema')}, this code reads schema {schema}")
    unknown = sorted(set(document) - set(keys))
    if unknown:
        raise ValueError(f"{path}: key(s) {unknown} are written by no code of ctrbench (a {kind} file has "
                         f"{sorted(keys)}); results are regenerated, never edited")
    for key in lists:
        if not isinstance(document.get(key), list):
            raise ValueError(f"{path}: a {kind} file without a list of {key}")
    return document


def write_record(path: Path, record: dict) -> Path:
    """Write one run's record; see `write_text_atomic`."""
    return write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def read_record(path: Path) -> dict:
    """One record; ValueError saying why if the file is not a complete record."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON record ({error})") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or "key" not in record:
        raise ValueError(f"{path}: not a ctrbench record of schema {SCHEMA}")
    unknown = sorted(set(record) - RECORD_KEYS)
    if unknown:
        raise ValueError(f"{path}: key(s) {unknown} are written by no code of ctrbench; results are regenerated, "
                         "never edited")
    return record


def read_records(folder: Path, pattern: str = "*.json") -> tuple[list[dict], list[str]]:
    """All complete records under `folder` (recursively), and a message for each file skipped."""
    records, problems = [], []
    folder = Path(folder)
    if not folder.exists():
        return records, problems
    for path in sorted(folder.rglob(pattern)):
        if path.name.startswith("."):       # an unfinished temp file of an interrupted write
            continue
        try:
            records.append(read_record(path))
        except ValueError as error:
            problems.append(str(error))
    return records, problems
