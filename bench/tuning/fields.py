"""What a tuned record's fields mean, and the tuner's defaults, for readers that must not load the tuner
(Optuna, SQLAlchemy): the leaderboard reads these, `ctrbench tune --help` shows them; the tuner writes by them."""
from __future__ import annotations

from pathlib import Path

PRUNE_FROM = 10           # the first epoch at which the median pruner may stop a trial
PRUNE_FROM_BEFORE = 2     # what the studies made before `prune_from` was a setting used (not in their records)
HEARTBEAT_S = 10          # a running trial's heartbeat; one silent for GRACE_S is taken as dead
GRACE_S = 30


def figure_paths(results_dir: Path, study_name: str) -> dict[str, Path]:
    """Where `ctrbench tune` writes a study's plots."""
    folder = Path(results_dir) / "tuning"
    return {"history": folder / f"{study_name}_history.png", "importance": folder / f"{study_name}_importance.png"}
