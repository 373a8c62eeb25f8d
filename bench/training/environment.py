"""What a measurement ran on, recorded beside every number."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

from ctrbench.cpu import cpu_model


def git_commit() -> str | None:
    """The commit of the ctrbench checkout (suffixed '+dirty' if its code has local changes), if any.
    Changes under results/ do not count: a run that only wrote its own records leaves the code as it was."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)", ":(top,exclude)results"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


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


def environment(device: torch.device | str = "cpu") -> dict:
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,         # None on a CPU-only build of torch
        "python": platform.python_version(),
        "device": str(torch.device(device)),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu_info(device),
    }
