"""The benchmark suite's device option, GPU profile and compiled axis, its per-cell record and time
budget, and the leaderboard's one section per device; all on the CPU (a GPU is faked where needed)."""
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ctrbench import pytest_plugin
from ctrbench.measure import cells
from ctrbench.measure.cells import LayerCell, ModelCell, cell_id, layer_cells, model_cells
from ctrbench.models import list_models, model_entry
from ctrbench.report.leaderboard import render, render_pages

SUITE = Path(__file__).resolve().parents[1] / "bench" / "suite" / "test_speed.py"


def squash(text: str) -> str:
    """Markdown with runs of spaces made one, so table cells read without their padding."""
    return re.sub(r" +", " ", text)


# ------------------------------------------------------------------------------- device option

def test_device_option_resolves_cpu_auto_and_rejects_what_cannot_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pytest_plugin.resolve_device("cpu") == torch.device("cpu")
    assert pytest_plugin.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="--ctrbench-device cuda asked for, but this torch .* sees no CUDA GPU"):
        pytest_plugin.resolve_device("cuda")
    with pytest.raises(ValueError, match="not supported"):
        pytest_plugin.resolve_device("meta")
    with pytest.raises(ValueError, match="not a device"):
        pytest_plugin.resolve_device("gpu")


def test_device_option_takes_a_gpu_where_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pytest_plugin.resolve_device("auto") == torch.device("cuda", 0)
    assert pytest_plugin.resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="sees 1 CUDA device"):
        pytest_plugin.resolve_device("cuda:1")


def run_suite(tmp_path, *args, plant: str | None = None):
    """The speed suite in a fresh pytest process, results under tmp_path/results."""
    if plant is not None:
        (tmp_path / "planted.py").write_text(plant)
    command = [sys.executable, "-m", "pytest", str(SUITE), "--benchmark-only", "-q", "-p", "no:cacheprovider",
               "--ctrbench-results", str(tmp_path / "results"), *(["-p", "planted"] if plant else []), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ,
                               "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_requested_without_cuda_is_a_usage_error(tmp_path):
    done = run_suite(tmp_path, "--ctrbench-device", "cuda", "--collect-only")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "--ctrbench-device cuda asked for" in done.stderr and "sees no CUDA GPU" in done.stderr


# ------------------------------------------------------------------------------------ profiles

def test_gpu_profiles_have_gpu_shapes_and_only_code_that_runs_there():
    layers = layer_cells("quick", "cuda")
    assert {c.batch for c in layers} == {65536} and {c.num_fields for c in layers} == {10, 39, 100}
    assert "afm_kernel" not in {c.interaction for c in layers} and "afm_fused" in {c.interaction for c in layers}
    assert not any(c.compile for c in layers)
    models = model_cells("quick", "cuda")
    assert {(c.shape, c.batch) for c in models} == {("criteo", 16384), ("criteo", 65536), ("wide", 16384)}
    assert len(cells.SHAPES["wide"]()) == 100
    pairs = {(c.model, c.interaction) for c in models}
    assert {(m, model_entry(m).default_interaction) for m in list_models()} <= pairs
    assert {i for m, i in pairs if m == "afm"} == set(cells.implementations("afm", "cuda"))
    compiled = [c for c in models if c.compile]
    assert {(c.model, c.interaction) for c in compiled} == cells.compiled_pairs("cuda")
    assert {(c.shape, c.batch, c.mode) for c in compiled if c.model != "afm"} == {("criteo", 65536, "train")}
    assert {(c.shape, c.batch) for c in compiled if c.interaction == "triu_index" and c.model == "afm"} == {
        ("criteo", 16384), ("criteo", 65536), ("wide", 16384)}
    # eager cells first, then the compiled ones (AFM's at F=39, B=65536 first): what a budget cuts last
    assert not any(c.compile for c in models[:-len(compiled)])
    assert {(c.interaction, c.shape, c.batch) for c in compiled[:2]} == {
        ("afm_fused", "criteo", 65536), ("triu_index", "criteo", 65536)}
    assert max(c.batch for c in layer_cells("full", "cuda")) == 65536


def test_eager_cells_keep_their_ids_and_groups_and_each_compiled_cell_follows_its_twin():
    eager = LayerCell("triu_index", 39, 16, 1024, "train")
    assert cell_id(eager) == "triu_index-39-16-1024-train-product-float32"
    assert eager.group == "layer product F=39 E=16 B=1024 train" and "compile" not in eager.info()
    twin = LayerCell("triu_index", 39, 16, 1024, "train", compile=True)
    assert cell_id(twin) == cell_id(eager) + "-compiled" and twin.group == eager.group + " compiled"
    assert twin.info()["compile"] is True
    assert cell_id(ModelCell("fm", "sum_square", "criteo", 1024, "train")) == "fm-sum_square-criteo-1024-train"
    quick = model_cells("quick")
    for index, cell in enumerate(quick):
        if cell.compile:
            assert quick[index - 1] == ModelCell(cell.model, cell.interaction, cell.shape, cell.batch, cell.mode)
    assert not any(c.compile for c in model_cells("quick", compile="none") + cells.gate_cells())
    assert all(c.compile for c in model_cells("quick", compile="all")[1::2])
    assert len(layer_cells("quick", compile="all")) == 2 * len(layer_cells("quick"))


def test_the_size_rule_uses_device_memory_off_the_cpu(monkeypatch):
    monkeypatch.setattr(cells, "device_memory_bytes", lambda device: 64 * 2**30)
    big = LayerCell("triu_index", 100, 16, 65536, "train", pooling="afm")       # 20 GiB (B, P, E)
    assert "× 6 > 64.0 GiB of device memory" in cells.too_large(big, torch.device("cuda"))
    assert cells.too_large(LayerCell("afm_fused", 100, 16, 65536, "train", pooling="afm"), torch.device("cuda")) is None
    assert cells.too_large(LayerCell("triu_index", 39, 16, 65536, "train", pooling="afm"), torch.device("cuda")) is None
    assert "limit 3 GiB" in cells.too_large(big, torch.device("cpu"))


# ------------------------------------------------------------------------------ compiled cells

@pytest.fixture
def tiny_shape(monkeypatch):
    monkeypatch.setitem(cells.SHAPES, "tiny", lambda: [3, 4, 5, 2])


def test_a_configured_model_cell_builds_the_model_so_and_says_so(tiny_shape):
    cell = ModelCell("autoint", "none", "tiny", 32, "train", config=(("attn_dim", 8), ("num_layers", 2)))
    assert cell_id(cell) == "autoint-none-tiny-32-train-attn_dim=8,num_layers=2"
    assert cell.info()["config"] == {"attn_dim": 8, "num_layers": 2} and cell.group == "model tiny B=32 train"
    assert "config" not in ModelCell("autoint", "none", "tiny", 32, "train").info()
    step = cells.model_step(cell)
    trained = {id(p) for group in step.optimizer.param_groups for p in group["params"]}
    torch.manual_seed(0)
    expected = cells.create_model("autoint", [3, 4, 5, 2], interaction="none", attn_dim=8, num_layers=2)
    assert len(trained) == len(list(expected.parameters()))
    assert sum(p.numel() for group in step.optimizer.param_groups for p in group["params"]) == \
        sum(p.numel() for p in expected.parameters()) != \
        sum(p.numel() for p in cells.create_model("autoint", [3, 4, 5, 2], interaction="none").parameters())


def test_compiled_model_cells_equal_eager(tiny_shape):
    for mode in ("train", "inference"):
        results = []
        for compiled in (False, True):
            step = cells.model_step(ModelCell("fm", "sum_square", "tiny", 32, mode, compile=compiled))
            assert step.backend == "sum_square"
            results.append([step().detach() for _ in range(3)])    # train: three Adam steps, same losses
        for eager, compiled in zip(*results):
            torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_compiled_layer_cells_equal_eager():
    outs = [cells.layer_step(LayerCell("triu_index", 5, 4, 16, "train", pooling="afm", compile=c))()
            for c in (False, True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ the cell record

class StubConfig:
    def __init__(self, results, budget_s=None):
        self.options = {"ctrbench_results": results, "ctrbench_budget_s": budget_s, "ctrbench_profile": "quick",
                        "ctrbench_compile": "auto"}
        self._ctrbench_device = torch.device("cpu")

    def getoption(self, name):
        return self.options[name]


class StubItem:
    def __init__(self, cell):
        self.nodeid = f"test_speed.py::test_layer[{cell_id(cell)}]"
        self.callspec = type("CallSpec", (), {"params": {"layer_cell": cell}})()


def test_cell_record_is_rewritten_after_every_cell_and_the_budget_stops_new_ones(tmp_path):
    now = [100.0]
    log = pytest_plugin.CellLog(StubConfig(tmp_path, budget_s=5), clock=lambda: now[0])
    assert not log.path.exists()
    for index, name in enumerate(("einsum", "triu_index", "loop_gather")):
        assert log.budget_reason() is None
        cell = LayerCell(name, 10, 16, 1024, "forward")
        log.add(StubItem(cell), "ok" if index else "oom", None if index else "OutOfMemoryError: boom", 0.5)
        document = json.loads(log.path.read_text())
        assert len(document["cells"]) == index + 1 and not document["complete"]
        assert document["cells"][-1]["group"] == cell.group
        assert document["cells"][-1]["extra_info"]["interaction"] == name
        now[0] += 2
    assert log.budget_reason() == "time budget of 5 s spent after 3 cells (--ctrbench-budget-s)"
    log.finish(pytest.ExitCode.OK)
    document = json.loads(log.path.read_text())
    assert document["stopped"] and not document["complete"] and document["finished"]
    assert [c["status"] for c in document["cells"]] == ["oom", "ok", "ok"]
    assert log.path.parent.name == "benchmark_cells" and document["session"] == log.path.stem


def test_failures_are_told_apart():
    assert pytest_plugin.failure_status(cells.CellCompileError("torch.compile failed")) == "compile_error"
    assert pytest_plugin.failure_status(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")) == "oom"
    assert pytest_plugin.failure_status(ValueError("boom")) == "error"


OOM_PLANT = """
import ctrbench.measure.cells as cells
real_step = cells.layer_step


def layer_step(cell, device="cpu"):
    if cell.interaction == "einsum":
        def fail():
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        fail.backend = "einsum"
        return fail
    return real_step(cell, device)


cells.layer_step = layer_step
"""


@pytest.mark.slow
def test_suite_run_records_each_cell_compiled_ones_included_and_a_failure_does_not_stop_it(tmp_path):
    done = run_suite(tmp_path, "-k", "(layer and 10-16-1024-forward-product and (einsum or triu_index)) or "
                                     "test_model[fm-sum_square-purchase-1024-train", plant=OOM_PLANT)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    [path] = (tmp_path / "results" / "benchmark_cells").glob("*.json")
    document = json.loads(path.read_text())
    status = {c["nodeid"].split("[")[1].rstrip("]"): c for c in document["cells"]}
    assert {k: c["status"] for k, c in status.items()} == {
        "einsum-10-16-1024-forward-product-float32": "oom", "triu_index-10-16-1024-forward-product-float32": "ok",
        "fm-sum_square-purchase-1024-train": "ok", "fm-sum_square-purchase-1024-train-compiled": "ok"}
    assert "CUDA out of memory" in status["einsum-10-16-1024-forward-product-float32"]["reason"]
    compiled = status["fm-sum_square-purchase-1024-train-compiled"]
    assert compiled["extra_info"]["compile"] is True and compiled["extra_info"]["compile_s"] > 0
    assert compiled["extra_info"]["backend"] == "sum_square" and compiled["benchmark"]["stats"]["median"] > 0
    assert document["complete"] and document["device"] == "cpu"
    # roofline data on the CPU: the algebra's FLOPs (B·P·E pair products), their rate, the measured peak
    triu = status["triu_index-10-16-1024-forward-product-float32"]
    info, median = triu["extra_info"], triu["benchmark"]["stats"]["median"]
    assert info["algebraic_flops"] == 1024 * 45 * 16
    assert info["gflops"] == pytest.approx(1024 * 45 * 16 / median / 1e9)
    assert 0 < info["peak_gflops"] < float("inf")
    assert info["peak_fraction"] == pytest.approx(info["gflops"] / info["peak_gflops"])
    assert compiled["extra_info"]["algebraic_flops"] is None and compiled["extra_info"]["peak_gflops"] > 0  # not AFM
    [stored] = (tmp_path / "results" / "benchmarks").glob("*/*.json")
    run = json.loads(stored.read_text())
    assert run["ctrbench"]["session"] == document["session"] and len(run["benchmarks"]) == 3
    leaderboard = squash(render(tmp_path / "results")[0])
    assert "| fm · compiled " in leaderboard and "## Cells without a number" in leaderboard
    assert "einsum-10-16-1024-forward-product-float32] | oom | RuntimeError: CUDA out of memory" in leaderboard


COMPILE_FAILS = """
import ctrbench.measure.cells as cells


def compiled(fn):
    def fail(*args, **kwargs):
        raise RuntimeError("BackendCompilerFailed: planted")
    return fail


cells.compiled = compiled
"""


@pytest.mark.slow
def test_a_cell_that_does_not_compile_is_recorded_and_the_budget_skips_the_rest(tmp_path):
    done = run_suite(tmp_path, "--ctrbench-compile", "all", "--ctrbench-budget-s", "1e-9", "-k",
                     "layer and 10-16-1024-forward-product and compiled", plant=COMPILE_FAILS)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    [path] = (tmp_path / "results" / "benchmark_cells").glob("*.json")
    document = json.loads(path.read_text())
    statuses = [c["status"] for c in document["cells"]]
    assert statuses[0] == "compile_error" and set(statuses[1:]) == {"budget"} and len(statuses) >= 3
    assert "torch.compile failed: RuntimeError: BackendCompilerFailed: planted" in document["cells"][0]["reason"]
    assert all("time budget of 1e-09 s spent after 1 cells" in c["reason"] for c in document["cells"][1:])
    assert document["stopped"] and not document["complete"]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_suite_on_cuda_records_device_peak_memory_and_compiled_twins(tmp_path):
    done = run_suite(tmp_path, "--ctrbench-device", "cuda", "-k",
                     "test_model[fm-sum_square-criteo-65536-train or (layer and 39-16-65536-train-afm and afm_fused)")
    assert done.returncode == 0, done.stdout + done.stderr
    [path] = (tmp_path / "results" / "benchmark_cells").glob("*.json")
    document = json.loads(path.read_text())
    assert document["device"].startswith("cuda") and len(document["cells"]) == 3
    for cell in document["cells"]:
        info = cell["extra_info"]
        assert cell["status"] == "ok" and info["device"].startswith("cuda") and info["cuda_peak_bytes"] > 0
        assert info["device_name"] == torch.cuda.get_device_name() and "peak_rss_rise_bytes" not in info
    assert sum(bool(c["extra_info"].get("compile_s")) for c in document["cells"]) == 1
    leaderboard = render(tmp_path / "results")[0]
    assert f"# Speed and memory on {torch.cuda.get_device_name()} (GPU)" in leaderboard
    assert "## Speed: whole models" in leaderboard


# ---------------------------------------------------------------------------------- leaderboard

def bench(cell: str, group: str, seconds: float, **info) -> dict:
    return {"group": group, "name": f"test_{cell}[{info.get('model', '')}{info['interaction']}]",
            "stats": {"median": seconds, "min": seconds},
            "extra_info": {"cell": cell, "batch": 1024, "mode": "train", "threads": 2, "torch": "2.x",
                           "saved_activation_bytes": 2**20, **info}}


def model_bench(model, interaction, seconds, device="cpu", compile=False, **info):
    suffix = " compiled" if compile else ""
    extra = {"compile": True, "compile_s": 12.5} if compile else {}
    return bench("model", f"model criteo B=1024 train{suffix}", seconds, model=model, interaction=interaction,
                 shape="criteo", num_fields=39, device=device, **extra, **info)


def write_run(results, name, benchmarks, device, device_name, cells=()):
    path = results / "benchmarks" / "machine" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmarks": benchmarks, "machine_info": {}, "commit_info": {}, "datetime": "now",
                                "ctrbench": {"session": name, "device": device, "device_name": device_name,
                                             "cells": list(cells)}}))


def test_leaderboard_has_one_section_per_device_and_never_mixes_them(tmp_path):
    results = tmp_path / "results"
    write_run(results, "0001_cpu.json", [
        model_bench("afm", "triu_index", 0.0101, flops=10**9, peak_rss_rise_bytes=2**21),
        model_bench("afm", "triu_index", 0.00505, compile=True, peak_rss_rise_bytes=2**21),
        model_bench("afm", "loop_gather", 0.0202, flops=10**9, peak_rss_rise_bytes=2**21)], "cpu", "AMD EPYC")
    write_run(results, "0002_cuda.json", [
        model_bench("afm", "triu_index", 0.000333, device="cuda:0", cuda_peak_bytes=3 * 2**20),
        model_bench("afm", "triu_index", 0.000111, device="cuda:0", compile=True, cuda_peak_bytes=2**20)],
        "cuda:0", "NVIDIA H200",
        cells=[{"nodeid": "t::test_model[afm-afm_fused-wide-16384-train-compiled]", "status": "compile_error",
                "reason": "torch.compile failed: planted"}])
    pages, problems = render_pages(results)
    assert problems == []
    by_title = {text.splitlines()[2]: squash(text) for text in pages.values() if text.startswith("<!--")}
    cpu_part, gpu_part = by_title["# Speed and memory on AMD EPYC"], by_title["# Speed and memory on NVIDIA H200 (GPU)"]
    assert "## Speed: whole models\n" in cpu_part and "## Speed: whole models\n" in gpu_part
    # CPU: 1024 / 0.0101 s, its compiled twin twice as fast; the GPU's numbers only in its own part
    assert "| afm | 50,693 (×1.00) | 101,386 (×2.00) |" in cpu_part
    assert "| afm · compiled | – | 202,772 (×2.00) |" in cpu_part
    assert "3,075,075" not in cpu_part and "50,693" not in gpu_part
    assert "3,075,075 (×1.00)" in gpu_part and "9,225,225 (×3.00)" in gpu_part     # over triu_index on a GPU
    assert "CUDA peak MiB" in gpu_part and "CUDA peak MiB" not in cpu_part and "peak RSS rise MiB" in cpu_part
    assert "| 12.5 " in gpu_part                                                    # compile seconds
    assert "afm-afm_fused-wide-16384-train-compiled] | compile_error | torch.compile failed: planted" in gpu_part


def test_the_peers_models_are_timed_against_ctrbench_default_and_fastest_implementation(tmp_path):
    results = tmp_path / "results"
    write_run(results, "0001_cpu.json", [
        model_bench("afm", "triu_index", 0.02), model_bench("afm", "afm_kernel", 0.004),
        model_bench("afm", "afm_kernel", 0.002, compile=True),            # compiled: not a contender here
        model_bench("afm", "afm_triton", 0.001, backend="afm_fused"),     # a fallback never counts as itself
        model_bench("torchfm_afm", "none", 0.04), model_bench("deepctr_afm", "none", 0.01),
        model_bench("deepctr_dcnmix", "none", 0.01)], "cpu", "AMD EPYC")   # no dcnv2 cell: no row
    pages, problems = render_pages(results)
    assert problems == []
    page = next(squash(text) for text in pages.values() if "# Speed and memory on AMD EPYC" in text)
    part = page.split("## Speed: ctrbench against the peers")[1].split("\n## ")[0]
    # 1024 / 0.04 s; ctrbench's triu_index (default) 2x the peer's speed, afm_kernel 10x
    assert "| criteo (39 fields), train, B=1024 | afm | torchfm_afm | 25,600 | triu_index: 51,200 (×2.00) | " \
           "afm_kernel: 256,000 (×10.00) | – | – |" in part
    assert "| afm | deepctr_afm | 102,400 | triu_index: 51,200 (×0.50) | afm_kernel: 256,000 (×2.50) |" in part
    assert "dcnmix" not in part and "≠" not in part.split("|---")[1]      # no peer here declares a difference


def test_a_peer_whose_algebra_differs_is_marked_and_set_beside_ours_configured_as_it(tmp_path):
    results = tmp_path / "results"
    matched = {"low_rank": 32, "experts": 4}
    write_run(results, "0001_cpu.json", [
        model_bench("dcnv2", "none", 0.02, flops=4 * 10**9),
        model_bench("dcnv2", "none", 0.01, flops=10**9, config=matched),       # ours configured as the peer
        model_bench("dcnv2", "none", 0.001, config={"low_rank": 8}),          # a configuration no peer names
        model_bench("deepctr_dcnmix", "none", 0.016, flops=2 * 10**9, ours_as_peer=matched,
                    difference="a mixture of low-rank experts"),
        model_bench("torchfm_dcn", "none", 0.008, flops=10**9, difference="DCN v1, rank-1 crosses")],
        "cpu", "AMD EPYC")
    pages, problems = render_pages(results)
    assert problems == []
    page = next(squash(text) for text in pages.values() if "# Speed and memory on AMD EPYC" in text)
    part = page.split("## Speed: ctrbench against the peers")[1].split("\n## ")[0]
    assert "| dcnv2 | deepctr_dcnmix ≠ | 64,000 | none: 51,200 (×0.80) | none: 51,200 (×0.80) | " \
           "low_rank=32,experts=4: 102,400 (×1.60) | 2.00 / 0.50 |" in part
    assert "| dcnv2 | torchfm_dcn ≠ | 128,000 | none: 51,200 (×0.40) | none: 51,200 (×0.40) | – | 4.00 |" in part
    assert "- `deepctr_dcnmix`: a mixture of low-rank experts." in part and "- `torchfm_dcn`: DCN v1" in part
    assert "low_rank=8" not in page and "102,400 (×" not in page.split("## Speed: whole models")[1].split("\n## ")[0]


def test_a_killed_gpu_session_is_rendered_from_its_cell_file(tmp_path):
    results = tmp_path / "results"
    entry = model_bench("fm", "sum_square", 0.001, device="cuda:0", cuda_peak_bytes=2**20)
    cell_file = results / "benchmark_cells" / "nvidia-h200_x.json"
    cell_file.parent.mkdir(parents=True)
    cell_file.write_text(json.dumps({
        "kind": "suite_cells", "session": "nvidia-h200_x", "device": "cuda:0", "device_name": "NVIDIA H200",
        "environment": {"gpu": {"name": "NVIDIA H200", "capability": "9.0", "memory_bytes": 150 * 2**30,
                                "cuda_runtime": "13.0", "driver": "580"}},
        "complete": False, "stopped": None, "started": "then",
        "cells": [{"nodeid": "t::test_model[fm]", "status": "ok", "benchmark": entry}]}))
    markdown, problems = render(results)
    assert problems == [] and "**partial**" in markdown and "CUDA 13.0, driver 580" in markdown
    assert "# Speed and memory on NVIDIA H200 (GPU)" in markdown and "1,024,000" in markdown
    write_run(results, "0003_cuda.json", [entry], "cuda:0", "NVIDIA H200")     # the session that did finish
    cell_file.write_text(cell_file.read_text().replace('"session": "nvidia-h200_x"', '"session": "0003_cuda.json"'))
    markdown, _ = render(results)
    assert "**partial**" not in markdown and "0003_cuda.json" in markdown


def test_an_item_of_an_empty_parametrization_has_no_cell():
    # On a GPU some cell kinds have no cells; pytest then passes its NOTSET placeholder, which once
    # crashed the cell log at the end of the GPU suite (INTERNALERROR).
    from types import SimpleNamespace

    from _pytest.compat import NOTSET

    from ctrbench.measure.cells import LayerCell
    from ctrbench.pytest_plugin import item_cell
    cell = LayerCell("triu_index", 10, 16, 1024, "train")
    assert item_cell(SimpleNamespace(callspec=SimpleNamespace(params={"layer_cell": cell}))) is cell
    assert item_cell(SimpleNamespace(callspec=SimpleNamespace(params={"model_cell": NOTSET}))) is None
    assert item_cell(SimpleNamespace()) is None


def test_the_commit_info_of_stored_benchmarks_ignores_results(monkeypatch):
    # pytest-benchmark names its JSON `..._uncommitted-changes` when the checkout is dirty; a run that
    # only rewrote results/ must not look like modified code. Our hook must answer before its own.
    import ctrbench.store.environment as environment
    from ctrbench import pytest_plugin
    hook = pytest_plugin.pytest_benchmark_generate_commit_info
    assert hook.pytest_impl["tryfirst"]
    monkeypatch.setattr(environment, "git_commit", lambda: "abc123")
    assert hook(None)["dirty"] is False
    monkeypatch.setattr(environment, "git_commit", lambda: "abc123+dirty")
    assert hook(None)["dirty"] is True


def test_a_noisy_cell_is_marked_and_the_page_says_what_the_mark_means(tmp_path):
    results = tmp_path / "results"
    steady, noisy = model_bench("fm", "sum_square", 0.001), model_bench("fm", "triu_index", 0.004)
    steady["stats"]["iqr"], noisy["stats"]["iqr"] = 0.0001, 0.0012        # 10% and 30% of the median
    write_run(results, "0001_cpu.json", [steady, noisy, model_bench("fm", "loop_gather", 0.008)], "cpu", "AMD EPYC")
    pages, problems = render_pages(results)
    assert problems == []
    page = next(squash(text) for text in pages.values() if "# Speed and memory on AMD EPYC" in text)
    models = page.split("## Speed: whole models")[1].split("\n## ")[0]
    # columns: loop_gather, sum_square, triu_index
    assert "| fm | 128,000 (×1.00) | 1,024,000 (×8.00) | 256,000 (×2.00) ≈ |" in models
    assert "≈: a noisy cell, its rounds' interquartile range above 20% of their median" in page


def test_the_front_page_marks_a_ratio_with_a_noisy_cell_behind_it():
    from ctrbench.report import leaderboard, speed
    step = speed.FastestStep(39, 1024, "afm_kernel", 20000.0, 7.5, 4.8, None, None, peer="deepctr_afm", over_peer=5.0,
                             noisy=frozenset({"peer"}))
    row = leaderboard.implementation_row("AMD EPYC", step, "[details]", 2)
    assert row[4:8] == ["20,000", "×7.50", "×4.80", "×5.00 (deepctr_afm) ≈"]
    row = leaderboard.implementation_row("AMD EPYC", replace(step, noisy=frozenset({"fastest"})), "[details]", 2)
    assert row[4:8] == ["20,000 ≈", "×7.50 ≈", "×4.80 ≈", "×5.00 (deepctr_afm) ≈"]


def test_the_front_page_names_each_models_fastest_implementation_beside_its_default_and_the_peer(tmp_path):
    results = tmp_path / "results"
    write_run(results, "0001_cpu.json", [
        model_bench("ipnn", "triu_index", 0.02), model_bench("ipnn", "gram_triu", 0.01),
        model_bench("ipnn", "gram_triu", 0.001, compile=True),                     # compiled: not a contender
        model_bench("ipnn", "triu_index", 0.0001, config={"batch_norm": True}),    # ours as a peer: not a contender
        model_bench("deepctr_ipnn", "none", 0.015), model_bench("torchfm_ipnn", "none", 0.04),
        model_bench("fm", "sum_square", 0.002), model_bench("fm", "loop_gather", 0.01),
        model_bench("afm", "triu_index", 0.02), model_bench("afm", "afm_triton", 0.001, backend="afm_fused"),
        model_bench("dcnv2", "none", 0.02), model_bench("torchfm_dcn", "none", 0.008, difference="DCN v1"),
        model_bench("xdeepfm", "cin_einsum", 0.01),
        model_bench("oldfm", "triu_index", 0.01)], "cpu", "AMD EPYC")            # a model no longer registered
    pages, problems = render_pages(results)
    assert problems == []
    front = squash(pages[results / "leaderboard.md"])
    part = front.split("## Which implementation, per model")[1].split("\n## ")[0]
    assert "### AMD EPYC, 2 threads" in part and "| model | default | F=39, B=1,024 |" in part
    # 1024 / 0.01 s; over triu_index's 0.02 s and over the faster peer's 0.015 s
    assert "| ipnn | triu_index | `gram_triu` 102,400, ×2.00 `triu_index`, ×1.50 `deepctr_ipnn` |" in part
    assert "| fm | sum_square | `sum_square` 512,000 (the default) |" in part
    assert "| afm | triu_index | `triu_index` 51,200 (the default) |" in part          # the fallback never counts
    assert "| dcnv2 | none | 51,200, ×0.40 `torchfm_dcn` ≠ |" in part
    assert "| xdeepfm | cin_matmul | `cin_einsum` 102,400 (`cin_matmul` not measured) |" in part
    assert "torchfm_ipnn |" not in part and "deepctr_ipnn |" not in part           # peers are not rows
    assert "| oldfm | ? | `triu_index` 102,400 |" in part
    # the README's line names the models whose fastest beats their default by more than CLEAR_GAIN, AFM aside
    from ctrbench.report.leaderboard import summary_lines
    assert [line for line in summary_lines(results) if "AFM aside" in line] == [
        "- **AMD EPYC**, F = 39, B = 1,024: the train step's fastest implementation beats the model's default by "
        "more than 1.5× (AFM aside) for ipnn (`gram_triu`, ×2.00 `triu_index`)."]
