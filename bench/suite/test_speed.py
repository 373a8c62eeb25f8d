"""Speed and cost of every pairwise-product implementation, alone and inside each model.

Parametrized over the registry: a new implementation or model is benchmarked the moment it registers.
Each record's extra_info carries the cell, the environment, FLOPs, saved-activation bytes and the
peak-RSS rise of one call; pytest-benchmark stores the timings.
"""
import math
import time

import pytest
import torch

from ctrbench.cells import MAX_TENSOR_BYTES, gate_cells, layer_cells, layer_step, model_cells, model_step
from ctrbench.costs import flops, peak_rss_rise_bytes, saved_activation_bytes
from ctrbench.pytest_plugin import is_gate_run

ROUNDS = {"quick": 5, "full": 10}
GATE_ROUNDS = 9


def cell_id(cell) -> str:
    return "-".join(str(v) for v in cell.__dict__.values())


def pytest_generate_tests(metafunc):
    config = metafunc.config
    profile = config.getoption("ctrbench_profile")
    gate = is_gate_run(config)
    if "layer_cell" in metafunc.fixturenames:
        cells = [] if gate else layer_cells(profile)
        metafunc.parametrize("layer_cell", cells, ids=cell_id)
    if "gate_cell" in metafunc.fixturenames:
        metafunc.parametrize("gate_cell", gate_cells() if gate else [], ids=cell_id)
    if "model_cell" in metafunc.fixturenames:
        metafunc.parametrize("model_cell", [] if gate else model_cells(profile), ids=cell_id)


def environment_info() -> dict:
    return {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__}


MIN_ROUND_SECONDS = 0.01     # a round of a few microseconds would time the timer, not the step


def measure(benchmark, cell, step, rounds):
    benchmark.group = cell.group
    benchmark.extra_info.update(cell.info())
    benchmark.extra_info.update(environment_info())
    step()                                           # first call: allocator and caches warm
    benchmark.extra_info["flops"] = flops(step)
    benchmark.extra_info["saved_activation_bytes"] = saved_activation_bytes(step)
    benchmark.extra_info["peak_rss_rise_bytes"] = peak_rss_rise_bytes(step)
    started = time.perf_counter()
    step()
    iterations = max(1, math.ceil(MIN_ROUND_SECONDS / max(time.perf_counter() - started, 1e-9)))
    benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=1)
    benchmark.extra_info["iterations_per_round"] = iterations
    benchmark.extra_info["samples_per_s"] = cell.batch / benchmark.stats.stats.median


def run_layer_cell(benchmark, cell, rounds):
    if cell.largest_tensor_bytes > MAX_TENSOR_BYTES:
        pytest.skip(f"{cell.interaction} at {cell.group} would hold a {cell.largest_tensor_bytes / 2**30:.1f} GiB "
                    f"tensor (limit {MAX_TENSOR_BYTES / 2**30:.0f} GiB on this suite)")
    measure(benchmark, cell, layer_step(cell), rounds)


def test_layer(benchmark, layer_cell, request):
    run_layer_cell(benchmark, layer_cell, ROUNDS[request.config.getoption("ctrbench_profile")])


def test_gate_layer(benchmark, gate_cell):
    run_layer_cell(benchmark, gate_cell, GATE_ROUNDS)


def test_model(benchmark, model_cell, request):
    measure(benchmark, model_cell, model_step(model_cell), ROUNDS[request.config.getoption("ctrbench_profile")])
