"""What a measurement ran on, recorded beside every number."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from ctrbench.cpu import cpu_model, vector_isa
from ctrbench.store.code_identity import code_tree, git_commit  # noqa: F401  (git_commit: re-exported, its old home)

ENVIRONMENT_KEYS = ("torch", "cuda", "python", "device", "device_name", "cpu_model", "cpu_isa", "cpu_count",
                    "threads", "git_commit", "code_tree", "date", "gpu", "load_avg")
# and, in a run whose pooling afm_kernel computed, "afm_kernel_isa": the build that ran (protocol.kernel_build)


def load_snapshot() -> dict | None:
    """The machine's load now: the 1- and 5-minute load averages and how many other threads are runnable
    (/proc/loadavg's running count, less the one reading it); None off Linux."""
    try:
        one, five, _, running, _ = Path("/proc/loadavg").read_text().split()
    except (OSError, ValueError):
        return None
    return {"1m": float(one), "5m": float(five), "runnable_others": max(int(running.split("/")[0]) - 1, 0),
            "cpus": os.cpu_count()}


def _busy_cpu_seconds() -> float | None:
    """CPU-seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]      # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class LoadWindow:
    """The machine's load over a stretch of work: a snapshot at the start and at the end, and the cores
    other processes kept busy in between on average (all busy CPU time less this process's, over the wall
    time): the one figure that says whether a throughput was measured on a shared machine."""

    def __init__(self):
        self.start = load_snapshot()
        self._wall, self._busy, self._own = time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()

    def finish(self) -> dict:
        wall, busy = time.perf_counter() - self._wall, _busy_cpu_seconds()
        others = None
        if busy is not None and self._busy is not None and wall > 0.25:
            others = round(max((busy - self._busy) - (_own_cpu_seconds() - self._own), 0.0) / wall, 3)
        return {"start": self.start, "end": load_snapshot(), "others_busy_cores": others}


def is_loaded(load_avg: dict | None, threads: int | None) -> bool | None:
    """Whether other work competed for the cores: their busy cores and this run's threads exceed the
    machine's cores (a quarter of a core of slack). None where the record has no such measure."""
    if not load_avg or load_avg.get("others_busy_cores") is None:
        return None
    cpus = (load_avg.get("start") or load_avg.get("end") or {}).get("cpus") or os.cpu_count() or 1
    return load_avg["others_busy_cores"] + (threads or 1) > cpus + 0.25


def load_warning(load_avg: dict | None, threads: int | None, ahead: bool = False) -> str | None:
    """What to tell a user whose run was measured on a busy machine (`ahead`: is about to be), or None."""
    if not is_loaded(load_avg, threads):
        return None
    cpus = (load_avg.get("start") or load_avg.get("end") or {}).get("cpus") or os.cpu_count()
    busy = f"other processes {'keep' if ahead else 'kept'} {load_avg['others_busy_cores']:.1f} of {cpus} cores busy"
    if ahead:
        return (f"the machine is busy: {busy}, and this run will use {threads} thread(s): its throughput will be "
                "low and marked 'loaded'; on a shared machine --threads 1 avoids threads waiting on a busy core")
    return (f"the machine was busy: {busy} while this ran on {threads} thread(s), so its throughput is low and is "
            "marked 'loaded'; on a shared machine --threads 1 avoids threads waiting on a busy core")


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version, from nvidia-smi or the kernel module; None where neither answers."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:       # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        words = Path("/proc/driver/nvidia/version").read_text().split()
        return next(w for w in words if w[:1].isdigit() and "." in w)
    except (OSError, StopIteration):
        return None


def gpu_info(device: torch.device | str) -> dict | None:
    """Name, compute capability, memory, CUDA runtime and driver of a CUDA `device`; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    properties = torch.cuda.get_device_properties(device)
    return {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
            "memory_bytes": properties.total_memory, "count": torch.cuda.device_count(),
            "cuda_runtime": torch.version.cuda, "driver": nvidia_driver_version()}


def environment(device: torch.device | str = "cpu", load_avg: dict | None = None) -> dict:
    """What a measurement ran on (ENVIRONMENT_KEYS). `load_avg`: a `LoadWindow.finish()` over the work;
    without one, a snapshot of the load now as its end."""
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,         # None on a CPU-only build of torch
        "python": platform.python_version(),
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_isa": vector_isa(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "code_tree": code_tree(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu_info(device),
        "load_avg": load_avg or {"start": None, "end": load_snapshot(), "others_busy_cores": None},
    }


def busy_machine_warning(threads: int, sample_s: float = 0.3) -> str | None:
    """A warning when other processes keep this machine's cores busy right now (sampled for `sample_s`)."""
    window = LoadWindow()
    time.sleep(sample_s)
    return load_warning(window.finish(), threads, ahead=True)
