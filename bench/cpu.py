"""What the CPU is, from /proc/cpuinfo: read here once for the three that need it (the environment a record
carries, the gate's machine signature, the afm_kernel build's cache key). Imports nothing of ours, so that
models/ may use it too."""
from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.lru_cache(maxsize=1)
def processors() -> tuple[dict[str, str], ...]:
    """Every processor's fields, as /proc/cpuinfo lists them (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    blocks = (block for block in text.split("\n\n") if block.strip())
    return tuple({name.strip(): value.strip()
                  for name, _, value in (line.partition(":") for line in block.splitlines())}
                 for block in blocks)


def cpu_model() -> str:
    """The CPU's marketing name ("AMD EPYC 9B14"), or what the platform says where /proc has none."""
    for fields in processors():
        if fields.get("model name"):
            return fields["model name"]
    return platform.processor() or platform.machine()


def feature_flags(fields: dict[str, str]) -> str:
    """One processor's feature flags (x86 `flags`, ARM `Features`), sorted, space-separated."""
    return " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))


def distinct_cores() -> list[str]:
    """Each distinct kind of core (model, ARM part, feature flags) once, sorted: what code built with
    -march=native depends on, on hybrid CPUs too."""
    kinds = {f"{fields.get('model name', '')}|{fields.get('CPU part', '')}|{feature_flags(fields)}"
             for fields in processors()}
    return sorted(kinds) or [platform.processor() + platform.machine()]


def vector_isa() -> str:
    """The widest vector instruction set the CPU has, as a user names it: AVX-512, AVX2, AVX, SSE4.2,
    NEON/SVE on ARM, else the machine's name. What a kernel compiled for this machine runs with."""
    flags = set(feature_flags(processors()[0]).split()) if processors() else set()
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
                       ("sve", "SVE"), ("asimd", "NEON")):
        if flag in flags:
            return name
    return platform.machine() or "unknown"
