"""bench/measure/afm_gpu_step.py, the GPU micro-benchmark, run tiny on the CPU: its record, its check, its failures."""
import json

import pytest

from ctrbench.commands.measure import afm_gpu_step as afm_gpu_step_command
from ctrbench.measure import afm_gpu_step

TINY = ["--device", "cpu", "--shapes", "39x8", "--reps", "1", "--warmup", "0", "--check-batch", "6"]


@pytest.fixture(autouse=True)
def no_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)     # afm_triton is afm_fused here, quickly


def test_tiny_cpu_run_writes_the_checks_and_every_cell(tmp_path):
    out = tmp_path / "step.json"
    afm_gpu_step_command.main([*TINY, "--out", str(out), "--impls", "triu_index,afm_triton,fm sum_square"])
    document = json.loads(out.read_text())
    assert document["complete"] and document["stopped"] is None
    assert [(c["impl"], c["num_fields"]) for c in document["checks"]] == [("afm_triton", 39), ("afm_triton_tf32", 39)]
    for check in document["checks"]:
        assert check["within_tolerance"] and check["forward_max_rel_error"] <= 1e-5, check
        assert check["backend"].startswith("afm_fused (")        # what ran is named, not what was asked
    cells = document["cells"]
    assert [(c["impl"], c["mode"]) for c in cells] == [(impl, mode) for mode in ("train", "inference")
                                                       for impl in ("triu_index", "afm_triton", "fm sum_square")]
    assert all(c["status"] == "ok" and c["samples_per_s"] > 0 and c["peak_extra_bytes"] is None for c in cells)
    assert cells[1]["backend"].startswith("afm_fused (afm_triton runs on CUDA")


def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch):
    real = afm_gpu_step.model_step

    def failing(cell, device):
        if cell.interaction == "afm_fused":
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(cell, device)

    monkeypatch.setattr(afm_gpu_step, "model_step", failing)
    out = tmp_path / "step.json"
    afm_gpu_step_command.main([*TINY, "--out", str(out), "--impls", "afm_fused,triu_index", "--modes", "train"])
    cells = json.loads(out.read_text())["cells"]
    assert [(c["impl"], c["status"]) for c in cells] == [("triu_index", "ok"), ("afm_fused", "oom")]
    assert "out of memory" in cells[1]["error"]


def test_budget_stops_new_cells_and_says_so(tmp_path):
    out = tmp_path / "step.json"
    afm_gpu_step_command.main([*TINY, "--out", str(out), "--impls", "triu_index", "--budget-s", "0"])
    document = json.loads(out.read_text())
    assert not document["complete"] and document["cells"] == []
    assert "time budget" in document["stopped"]


@pytest.mark.parametrize("argv,message", [
    (["--shapes", "12x8"], "fields must be one of"),
    (["--impls", "torchfm"], "unknown contender"),
    (["--modes", "serve"], "unknown mode"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit):
        afm_gpu_step_command.main([*TINY, "--out", str(tmp_path / "x.json"), *argv])
    assert message in capsys.readouterr().err
