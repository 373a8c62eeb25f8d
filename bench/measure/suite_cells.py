"""The suite's per-cell file, RESULTS/benchmark_cells/<session>.json: its keys, and its one reader. The
pytest plugin (`CellLog`) writes it after every cell, so a session killed at a time limit keeps all it
measured; the leaderboard reads it for a session that never wrote pytest-benchmark's JSON."""
from __future__ import annotations

from pathlib import Path

KIND = "suite_cells"
KEYS = frozenset({"kind", "session", "device", "device_name", "environment", "profile", "compile", "budget_s",
                  "argv", "started", "finished", "complete", "stopped", "cells"})


def read(path: Path) -> dict:
    """A per-cell file as `CellLog` writes it (ValueError otherwise)."""
    from ctrbench.store.records import read_document
    return read_document(path, KIND, KEYS, lists=("cells",))
