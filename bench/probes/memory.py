"""Memory of a region of code: the resident set (read from /proc/self/status: now, its high-water mark
and its rise over one call), sampled by a thread, and CUDA's own counter; and
the synchronised timing of a step that the GPU measurements (device_sweep, afm_gpu_step, step_gap) share."""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import resource
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch


def current_rss_bytes() -> int:
    """The resident set now (Linux's VmRSS); off Linux the lifetime peak, the best available."""
    rss = _status_kib("VmRSS")
    return rss * 1024 if rss is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS so an earlier cell's leftovers do not hide this one's peak."""
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def status_bytes(*fields: str) -> dict[str, int]:
    """The named memory fields of /proc/self/status (VmRSS, RssAnon, VmHWM, ...) in bytes; those the
    kernel does not report are left out (all of them off Linux)."""
    found = {field: _status_kib(field) for field in fields}
    return {field: kib * 1024 for field, kib in found.items() if kib is not None}


def reset_peak_rss() -> int | None:
    """Reset the kernel's high-water mark (VmHWM) to the current resident set, after handing freed
    heap back to the OS; returns that starting level in bytes, None where Linux's interface is missing."""
    _release_free_heap()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    start = _status_kib("VmRSS")
    return None if start is None else start * 1024


def peak_rss() -> int | None:
    """The resident-set high-water mark in bytes since the last `reset_peak_rss` (or process start)."""
    peak = _status_kib("VmHWM")
    return None if peak is None else peak * 1024


def peak_rss_rise_bytes(fn: Callable[[], object]) -> int | None:
    """How far the process's resident set rose above its starting level during one call of `fn`.

    Uses Linux's high-water mark, so no short peak is missed; None where that interface is missing.
    """
    start = reset_peak_rss()
    fn()
    peak = peak_rss()
    if start is None or peak is None:
        return None
    return max(peak - start, 0)


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
