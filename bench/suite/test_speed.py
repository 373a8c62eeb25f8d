"""Speed and cost of every pairwise-product implementation, alone and inside each model.

Parametrized over the registry: a new implementation or model is benchmarked the moment it registers.
Each record's extra_info carries the cell, the environment, the code that actually ran (`backend`),
and costs: on the CPU FLOPs, saved-activation bytes and the peak-RSS rise of one call; on a GPU
saved-activation bytes and the CUDA peak allocation of one step. CPU cells also carry roofline data:
`algebraic_flops` (costs.algebraic_flops: what the cell's algebra needs, the same for every
implementation; None where the suite defines none), `gflops` (those over the median step),
`peak_gflops` (roofline.peak_gflops at the cell's thread count and dtype) and `peak_fraction` (the
regression gate's cells, judged and not stored, leave them out). pytest-benchmark stores the timings.
Compiled cells (`compile` in the cell) compile in their first call, before any timing, and record it.
"""
import math
import time

import pytest
import torch

from ctrbench.measure.cells import (
    CellCompileError,
    cell_id,
    gate_cells,
    layer_cells,
    layer_step,
    model_cells,
    model_step,
    model_too_large,
    too_large,
)
from ctrbench.probes.costs import algebraic_flops, flops, saved_activation_bytes
from ctrbench.probes.memory import cuda_step_peak_bytes, peak_rss_rise_bytes
from ctrbench.probes.roofline import peak_gflops
from ctrbench.pytest_plugin import is_gate_run, suite_device
from ctrbench.store.environment import device_name
from ctrbench.training.embedding_updates import optimizer_state_bytes

ROUNDS = {"quick": 5, "full": 10}
GATE_ROUNDS = 9


def pytest_generate_tests(metafunc):
    config = metafunc.config
    profile = config.getoption("ctrbench_profile")
    compile = config.getoption("ctrbench_compile")
    device_type = suite_device(config).type
    gate = is_gate_run(config)
    if "layer_cell" in metafunc.fixturenames:
        cells = [] if gate else layer_cells(profile, device_type, compile)
        metafunc.parametrize("layer_cell", cells, ids=cell_id)
    if "gate_cell" in metafunc.fixturenames:
        metafunc.parametrize("gate_cell", gate_cells() if gate else [], ids=cell_id)
    if "model_cell" in metafunc.fixturenames:
        metafunc.parametrize("model_cell", [] if gate else model_cells(profile, device_type, compile), ids=cell_id)


def environment_info(device: torch.device) -> dict:
    info = {"device": str(device), "device_name": device_name(device), "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    if device.type == "cuda":
        info.update(cuda=torch.version.cuda, float32_matmul_precision=torch.get_float32_matmul_precision())
    return info


MIN_ROUND_SECONDS = 0.01     # a round of a few microseconds would time the timer, not the step


def synchronized(step, device: torch.device):
    """The step, waiting for the GPU's queue at its end so that a timing covers the work, not its launch."""
    if device.type != "cuda":
        return step

    def run():
        out = step()
        torch.cuda.synchronize(device)
        return out
    return run


def first_call(cell, step) -> float | None:
    """Allocator and caches warm; a compiled cell compiles here: its seconds, or CellCompileError."""
    if not cell.compile:
        step()
        return
    started = time.perf_counter()
    try:
        step()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as error:  # noqa: BLE001  (whatever the compiler raises, the cell did not compile)
        raise CellCompileError(f"torch.compile failed: {type(error).__name__}: {error}"[:2000]) from error
    return time.perf_counter() - started


def measure(benchmark, cell, step, rounds, device: torch.device, roofline: bool = True):
    benchmark.group = cell.group
    benchmark.extra_info.update(cell.info())
    benchmark.extra_info.update(environment_info(device))
    benchmark.extra_info["backend"] = step.backend
    if step.backend == "afm_kernel":      # its speed is a property of the vector ISA its build targets
        from ctrbench.models.interactions.afm_kernel import kernel_isa
        benchmark.extra_info["kernel_isa"] = kernel_isa()
    step = synchronized(step, device)
    compile_s = first_call(cell, step)
    if compile_s is not None:
        benchmark.extra_info["compile_s"] = compile_s      # compilation + one step
    if getattr(step, "optimizer", None) is not None:      # a train step: its optimizer's state, allocated by now
        benchmark.extra_info["optimizer_state_bytes"] = optimizer_state_bytes(step.optimizer)
    # Costs of the eager graph: the compiled one runs inductor's kernels, which the flop counter and
    # autograd's saved-tensor hooks do not see as they see torch's operators.
    if not cell.compile:
        if device.type == "cpu":      # the same count on any device: the CPU run has it
            benchmark.extra_info["flops"] = flops(step)
        benchmark.extra_info["saved_activation_bytes"] = saved_activation_bytes(step)
    if device.type == "cpu":
        benchmark.extra_info["peak_rss_rise_bytes"] = peak_rss_rise_bytes(step)
    else:
        benchmark.extra_info["cuda_peak_bytes"] = cuda_step_peak_bytes(step, device)
    started = time.perf_counter()
    step()
    iterations = max(1, math.ceil(MIN_ROUND_SECONDS / max(time.perf_counter() - started, 1e-9)))
    benchmark.pedantic(step, rounds=rounds, iterations=iterations, warmup_rounds=1)
    benchmark.extra_info["iterations_per_round"] = iterations
    benchmark.extra_info["samples_per_s"] = cell.batch / benchmark.stats.stats.median
    if device.type == "cpu" and roofline:
        benchmark.extra_info.update(roofline_info(cell, benchmark.stats.stats.median,
                                                  benchmark.extra_info["threads"], getattr(torch, cell_dtype(cell))))


def cell_dtype(cell) -> str:
    return getattr(cell, "dtype", "float32")


def roofline_info(cell, median_s: float, threads: int, dtype=torch.float32) -> dict:
    """The cell's algebraic FLOPs (the same for every implementation of the cell; None where the suite
    defines none), their rate over the median step, this machine's measured peak at the cell's thread
    count, and the fraction of it the step reached."""
    algebraic = algebraic_flops(cell)
    peak = peak_gflops(threads, dtype)
    gflops = algebraic / median_s / 1e9 if algebraic is not None and median_s > 0 else None
    return {"algebraic_flops": algebraic, "gflops": gflops, "peak_gflops": peak,
            "peak_fraction": gflops / peak if gflops is not None and peak > 0 else None}


def run_layer_cell(benchmark, cell, rounds, device: torch.device, roofline: bool = True):
    reason = too_large(cell, device)
    if reason:
        pytest.skip(reason)
    measure(benchmark, cell, layer_step(cell, device), rounds, device, roofline)


def test_layer(benchmark, layer_cell, request):
    config = request.config
    run_layer_cell(benchmark, layer_cell, ROUNDS[config.getoption("ctrbench_profile")], suite_device(config))


def test_gate_layer(benchmark, gate_cell):
    # Gate runs are judged, not stored (gate.cell_measures reads ratios and costs): no roofline data, so
    # no peak measurement (up to 0.8 s) in each of the gate's fresh processes.
    run_layer_cell(benchmark, gate_cell, GATE_ROUNDS, torch.device("cpu"), roofline=False)


def test_model(benchmark, model_cell, request):
    config = request.config
    device = suite_device(config)
    reason = model_too_large(model_cell, device)
    if reason:
        pytest.skip(reason)
    measure(benchmark, model_cell, model_step(model_cell, device), ROUNDS[config.getoption("ctrbench_profile")],
            device)
