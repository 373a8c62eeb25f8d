"""Run records: one JSON file per finished run, written atomically, read back defensively."""
from __future__ import annotations

import json
from pathlib import Path

from ctrbench.files import write_text_atomic

SCHEMA = 1


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
