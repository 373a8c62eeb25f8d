"""Cost measures that do not depend on how busy the machine is: FLOPs, bytes autograd saves, and
the kernel's own peak-RSS counter for one call."""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call as torch's flop counter sees them.

    It counts matrix-class operations (mm, bmm, addmm, convolution, attention) and not elementwise
    ones, so an implementation made of gathers and multiplies reads near zero: compare like with like.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct tensor storages autograd keeps for backward during one call of `fn`
    (parameters and inputs that it saves count too: they are what backward holds on to)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(storages.values())


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
