"""Peak memory of a region of code: resident set size sampled by a thread, and CUDA's own counter; and
the synchronised timing of a step that the GPU measurements (device_sweep, afm_gpu_step, step_gap) share."""
from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from contextlib import contextmanager

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:    # not Linux: the lifetime peak is the best available
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Filled in by `track_peak_memory`: peak RSS during the region, its rise over the start, and
    CUDA's max_memory_allocated when the device is a GPU."""
    rss_start_bytes: int = 0
    rss_peak_bytes: int = 0
    cuda_peak_bytes: int | None = None

    @property
    def rss_rise_bytes(self) -> int:
        return self.rss_peak_bytes - self.rss_start_bytes


@contextmanager
def track_peak_memory(device: torch.device | str = "cpu", interval_s: float = 0.005):
    device = torch.device(device)
    peak = PeakMemory()
    peak.rss_start_bytes = peak.rss_peak_bytes = current_rss_bytes()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    done = threading.Event()

    def sample():
        while not done.wait(interval_s):
            peak.rss_peak_bytes = max(peak.rss_peak_bytes, current_rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.rss_peak_bytes = max(peak.rss_peak_bytes, current_rss_bytes())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            peak.cuda_peak_bytes = torch.cuda.max_memory_allocated(device)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work so a wall-clock reading covers it (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_step_peak_bytes(step, device: torch.device | str) -> int:
    """CUDA's allocation peak during one call of `step` above what was allocated just before it: the
    step's own working memory, not the weights, optimizer state and inputs it finds in place."""
    device = torch.device(device)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def timed_rounds(step, device: torch.device | str, warmup: int, rounds: int, calls: int = 1) -> list[float]:
    """Seconds of each of `rounds` rounds of `calls` back-to-back calls of `step`, after `warmup` untimed
    calls. Each round lies between two synchronisations, so on a GPU it covers the queued work too."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_step(step, device: torch.device | str, warmup: int, reps: int) -> dict:
    """Median and min of `reps` synchronised calls of `step` after `warmup`; on CUDA the peak allocation of
    one more call above what was allocated before it (`cuda_step_peak_bytes`), else None."""
    times = timed_rounds(step, device, warmup, reps)
    peak_extra = cuda_step_peak_bytes(step, device) if torch.device(device).type == "cuda" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "peak_extra_bytes": peak_extra}
