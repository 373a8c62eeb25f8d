"""The regression gate: what it flags, and that a real planted 2x slowdown trips it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ctrbench import gate

SUITE = Path(gate.__file__).resolve().parent / "suite"


def measures(ratio=1.5, flops=100, saved=1000):
    return {"layer product F=39 E=16 B=1024 train | einsum": {"ratio": ratio, "flops": flops, "saved_activation_bytes": saved},
            "layer product F=39 E=16 B=1024 train | triu_index": {"ratio": 1.0, "flops": flops, "saved_activation_bytes": saved}}


def test_unchanged_measures_pass():
    baseline = gate.baseline_from_runs([measures(), measures(ratio=1.6)], tolerance=0.5)
    assert gate.compare(baseline, measures(ratio=1.7)) == ([], [])


def test_doubled_ratio_fails():
    baseline = gate.baseline_from_runs([measures()], tolerance=0.5)
    regressions, _ = gate.compare(baseline, measures(ratio=3.0))
    assert len(regressions) == 1 and "einsum" in regressions[0] and "time ratio" in regressions[0]


@pytest.mark.parametrize("cost", ["flops", "saved"])
def test_grown_deterministic_cost_fails(cost):
    baseline = gate.baseline_from_runs([measures()])
    regressions, _ = gate.compare(baseline, measures(**{cost: 1001 if cost == "saved" else 101}))
    assert len(regressions) == 2 and all(("flops" if cost == "flops" else "saved_activation_bytes") in r
                                         for r in regressions)


def test_new_cell_is_a_note_not_a_failure():
    baseline = gate.baseline_from_runs([measures()])
    current = {**measures(), "layer product F=39 E=16 B=1024 train | fresh": measures()["layer product F=39 E=16 B=1024 train | einsum"]}
    regressions, notes = gate.compare(baseline, current)
    assert not regressions and any("fresh" in n for n in notes)


def test_baseline_records_the_spread():
    baseline = gate.baseline_from_runs([measures(ratio=1.0), measures(ratio=1.2), measures(ratio=1.1)])
    assert baseline["cells"]["layer product F=39 E=16 B=1024 train | einsum"]["ratio"] == pytest.approx(1.1)
    assert baseline["measured_spread"] == pytest.approx(0.1 / 1.1)


def test_missing_baseline_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ctrbench gate-baseline"):
        gate.load_baseline(tmp_path / "none.json")


PLANT = """
import ctrbench.models.interactions.einsum as einsum

_forward = einsum.EinsumOuter.forward


def twice(self, emb):
    _forward(self, emb)
    return _forward(self, emb)


einsum.EinsumOuter.forward = twice
"""


def run_gate_cells(tmp_path, *extra, plant=False):
    env_path = [str(tmp_path)] if plant else []
    command = [sys.executable, "-m", "pytest", str(SUITE), "--benchmark-only", "-q", "-p", "no:cacheprovider",
               "-k", "39-16-1024-forward-product and (einsum or triu_index)", *(["-p", "planted_slowdown"] if plant else []),
               *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(env_path + [os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_planted_2x_slowdown_trips_the_gate(tmp_path):
    (tmp_path / "planted_slowdown.py").write_text(PLANT)
    dump = tmp_path / "clean.json"
    clean = run_gate_cells(tmp_path, f"--ctrbench-gate-dump={dump}")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    baseline_path = tmp_path / "baseline.json"
    gate.save_baseline(gate.baseline_from_runs([json.loads(dump.read_text())], tolerance=0.5), baseline_path)

    slowed = run_gate_cells(tmp_path, "--ctrbench-gate", f"--ctrbench-gate-baseline={baseline_path}", plant=True)
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    assert "REGRESSION: layer product F=39 E=16 B=1024 forward | einsum: time ratio" in slowed.stdout


def test_check_fails_only_cells_that_regress_in_every_run(tmp_path, monkeypatch):
    baseline = gate.baseline_from_runs([measures()], tolerance=0.5)
    runs = iter([measures(ratio=3.0), measures(ratio=1.5)])          # a burst of load, then normal
    monkeypatch.setattr(gate, "measure_runs", lambda count, workdir, log=print: [next(runs)])
    assert gate.check(baseline, tmp_path, attempts=3, log=lambda m: None) == ([], [])
    runs = iter([measures(ratio=3.0)] * 3)                            # a real slowdown
    regressions, _ = gate.check(baseline, tmp_path, attempts=3, log=lambda m: None)
    assert len(regressions) == 1 and "einsum" in regressions[0]
