"""The device sweep (issue 7) end to end on a tiny CPU grid: cells and statuses, a failing cell, the
time budget, --help; and its leaderboard section from a hand-written sweep file."""
import itertools
import json

import pytest

from ctrbench.commands import main
from ctrbench.commands.measure import device_sweep as device_sweep_command
from ctrbench.measure import device_sweep
from ctrbench.measure.cells import implementations
from ctrbench.report.leaderboard import render

TINY = ["--device", "cpu", "--fields", "5", "--batches", "8,16", "--reps", "1", "--warmup", "0"]
CELL_KEYS = {"impl", "num_fields", "batch", "mode", "embed_dim", "attn_dim", "status", "median_s", "min_s",
             "samples_per_s", "peak_extra_bytes", "error"}


def test_cpu_only_kernel_is_left_out_on_other_devices():
    assert "afm_kernel" not in device_sweep.device_implementations(device_sweep.torch.device("cuda"))
    assert "afm_fused" in device_sweep.device_implementations(device_sweep.torch.device("cuda"))


def test_sweep_on_cpu_writes_every_cell(tmp_path):
    out = tmp_path / "sweep.json"
    assert device_sweep_command.main([*TINY, "--out", str(out)]) == 0
    sweep = json.loads(out.read_text())
    impls = device_sweep.device_implementations(device_sweep.torch.device("cpu"))
    assert impls == implementations("afm", "cpu") and "triu_index" in impls
    assert sweep["kind"] == "device_sweep" and sweep["complete"] and sweep["finished"] and sweep["stopped"] is None
    assert sweep["environment"]["device"] == "cpu" and sweep["device_name"]
    assert sweep["planned_cells"] == len(sweep["cells"]) == 2 * 2 * len(impls)
    assert {(c["impl"], c["batch"], c["mode"]) for c in sweep["cells"]} == set(
        itertools.product(impls, (8, 16), ("train", "forward")))
    for cell in sweep["cells"]:
        assert CELL_KEYS <= set(cell) and cell["status"] == "ok" and cell["error"] is None
        assert cell["num_fields"] == 5 and cell["embed_dim"] == 16 and cell["peak_extra_bytes"] is None
        assert cell["min_s"] <= cell["median_s"] and cell["samples_per_s"] == cell["batch"] / cell["median_s"]
    shapes = [(c["batch"], c["mode"]) for c in sweep["cells"]]
    # cheapest shape first, and each shape's implementations back to back
    assert shapes[0] == (8, "forward") and shapes[-1] == (16, "train")
    assert all(len(list(group)) == len(impls) for _, group in itertools.groupby(shapes))


def test_failing_cells_are_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    real_step = device_sweep.layer_step
    failures = {"einsum": RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                "loop_gather": ValueError("boom")}

    def layer_step(cell, device="cpu"):
        if cell.interaction in failures:
            def fail():
                raise failures[cell.interaction]
            return fail
        return real_step(cell, device)
    monkeypatch.setattr(device_sweep, "layer_step", layer_step)
    out = tmp_path / "sweep.json"
    assert device_sweep_command.main([*TINY, "--impls", "triu_index,einsum,loop_gather", "--out", str(out)]) == 0
    sweep = json.loads(out.read_text())
    assert sweep["complete"] and len(sweep["cells"]) == 12
    status = {c["impl"]: {x["status"] for x in sweep["cells"] if x["impl"] == c["impl"]} for c in sweep["cells"]}
    assert status == {"triu_index": {"ok"}, "einsum": {"oom"}, "loop_gather": {"error"}}
    errors = {c["impl"]: c["error"] for c in sweep["cells"]}
    assert "CUDA out of memory" in errors["einsum"] and errors["loop_gather"] == "ValueError: boom"
    assert all(c["median_s"] is None for c in sweep["cells"] if c["status"] != "ok")


def test_a_cell_too_large_for_the_device_is_skipped_untried(monkeypatch):
    monkeypatch.setattr(device_sweep, "measure", lambda *a: (_ for _ in ()).throw(AssertionError("tried")))
    cell = device_sweep.plan([5], [8], ["train"], ["triu_index"])[0]
    result = device_sweep.run_cell(cell, device_sweep.torch.device("cpu"), 0, 1,
                                   memory_bytes=cell.largest_tensor_bytes * 5)
    assert result["status"] == "skipped" and result["error"].startswith("skipped: too large")


def test_the_budget_stops_new_cells_and_every_cell_is_written_at_once(tmp_path, monkeypatch):
    written = []
    real_write = device_sweep.write_record
    monkeypatch.setattr(device_sweep, "write_record",
                        lambda path, doc: written.append(len(doc["cells"])) or real_write(path, doc))
    cells = device_sweep.plan([5], [8, 16], ["forward"], ["triu_index", "einsum"])
    clock = itertools.count(0.0, 1.0).__next__        # each reading one second later than the last
    settings = {"reps": 1, "warmup": 0}
    out = tmp_path / "sweep.json"
    sweep = device_sweep.sweep(cells, device_sweep.torch.device("cpu"), out, settings, budget_s=3.5,
                               clock=clock, log=lambda *a: None)
    assert 0 < len(sweep["cells"]) < len(cells) and not sweep["complete"] and sweep["finished"]
    assert sweep["stopped"] == f"stopped at the time budget (3.5 s) after {len(sweep['cells'])} of 4 cells"
    assert written == [0, *range(1, len(sweep["cells"]) + 1), len(sweep["cells"])]
    assert json.loads(out.read_text()) == json.loads(json.dumps(sweep))


def test_zero_budget_runs_nothing(tmp_path):
    out = tmp_path / "sweep.json"
    assert device_sweep_command.main([*TINY, "--budget-s", "0", "--out", str(out)]) == 0
    sweep = json.loads(out.read_text())
    assert sweep["cells"] == [] and not sweep["complete"] and sweep["stopped"].startswith("stopped at the time budget")


def test_help_exits_0(capsys):
    # `ctrbench measure device_sweep --help`, through the command line's own dispatch
    with pytest.raises(SystemExit) as stop:
        main(["measure", "device_sweep", "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "usage: ctrbench measure device_sweep" in out
    assert "--budget-s" in out and "--device" in out


def cell(impl, f, b, mode, status="ok", median=None, mib=None):
    return {"impl": impl, "num_fields": f, "batch": b, "mode": mode, "embed_dim": 16, "attn_dim": 16,
            "status": status, "median_s": median, "min_s": median,
            "samples_per_s": b / median if median else None,
            "peak_extra_bytes": None if mib is None else int(mib * 2**20),
            "error": None if status == "ok" else status}


def test_leaderboard_section_from_a_sweep_file(tmp_path):
    assert "AFM pooling on GPU" not in render(tmp_path)[0]
    impls = ["afm_fused", "einsum", "loop_gather", "triu_index"]
    sweep = {"kind": "device_sweep", "device_name": "NVIDIA Test GPU", "complete": False,
             "stopped": "stopped at the time budget (240 s) after 6 of 16 cells", "planned_cells": 16,
             "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:04:00+00:00",
             "environment": {"torch": "2.11.0+cu128", "cuda": "12.8", "git_commit": "abc"},
             "settings": {"impls": impls, "reps": 5, "warmup": 2, "embed_dim": 16, "attn_dim": 16,
                          "dtype": "float32"},
             "cells": [cell("afm_fused", 39, 1024, "train", median=0.002, mib=10),
                       cell("einsum", 39, 1024, "train", status="oom"),
                       cell("loop_gather", 39, 1024, "train", status="skipped"),
                       cell("triu_index", 39, 1024, "train", median=0.01, mib=100),
                       cell("triu_index", 100, 65536, "train", status="oom"),
                       cell("afm_fused", 100, 65536, "train", median=0.5, mib=64)]}
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "afm_nvidia-test-gpu.json").write_text(json.dumps(sweep))
    (tmp_path / "gpu" / "broken.json").write_text("{")
    markdown, problems = render(tmp_path)
    section = markdown[markdown.index("## AFM pooling on GPU"):]
    assert "### NVIDIA Test GPU" in section and "torch 2.11.0+cu128, CUDA 12.8" in section
    assert "median of 5 steps" in section and "max_memory_allocated" in section
    assert "stopped at the time budget after 6 of 16 cells" in section
    rows = [line for line in section.splitlines() if line.startswith("| 39 ") or line.startswith("| 100 ")]
    speed_39, memory_39, speed_100, memory_100 = rows[0], rows[2], rows[1], rows[3]
    assert [c.strip() for c in speed_39.split("|")[1:-1]] == [
        "39", "1,024", "512,000 (×5.00)", "OOM", "—", "102,400 (×1.00)"]
    assert [c.strip() for c in memory_39.split("|")[1:-1]] == [
        "39", "1,024", "10.0 (÷10.0)", "OOM", "—", "100.0 (÷1.0)"]
    assert [c.strip() for c in speed_100.split("|")[1:-1]] == ["100", "65,536", "131,072", "not run", "not run", "OOM"]
    assert "64.0" in memory_100
    assert "forward:" not in section          # no forward cells, no forward tables
    assert len(problems) == 1 and "broken.json" in problems[0]
