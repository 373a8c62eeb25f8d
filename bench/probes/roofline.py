"""This machine's attainable arithmetic peak, the roof a cell's GFLOP/s is read against.

`peak_gflops(threads)` measures, once per (threads, dtype) in a process, the best rate of torch's own
matrix multiply (torch.mm, which runs MKL's / oneDNN's GEMM on the CPU) on square operands small enough
to stay in cache (256 and 512: 0.25 and 1 MiB per float32 operand), at that many torch threads. A
cache-resident GEMM is the best-tuned dense arithmetic torch has: it runs near the vector units' FMA
peak and is not held back by memory, so its rate is what this machine's cores can do at that thread
count, here, with torch's build, including whatever the other load on the machine takes from them (a
shared machine reads lower). It is a measured roof, not the data sheet's (clock × cores × FMA lanes × 2):
a cell's `peak_fraction` of it says how much of the arithmetic the cores *can* do the cell uses. An
elementwise or memory-bound implementation sits far below 1 whatever its quality; read fractions of
implementations of one cell side by side, as their algebraic FLOPs are the same (costs.algebraic_flops).

The measurement takes under a second: for each size a warm-up call, then rounds of timed batches of
calls (each batch about 20 ms, one per size a round) until 0.8 s are spent or 10 rounds are done; the
best rate over sizes and batches is returned, in GFLOP/s (2·n³ FLOPs per n×n product).

What the roof is: the rate of fused multiply-adds in torch's GEMM. On this project's machine (AMD EPYC,
torch 2.13's MKL and oneDNN) both reach ~100 GFLOP/s on one thread, at any size from 128 to 1024. Code
that also keeps a CPU's separate add units busy (AMD's cores have add pipes beside the FMA pipes), or an
implementation that skips part of the algebra's count, can pass it: a `peak_fraction` above 1 is
possible, and says the roof is GEMM's, not the silicon's.
"""
from __future__ import annotations

import functools
import math
import time

import torch

SIZES = (256, 512)
MAX_ROUNDS = 10             # timed batches per size at most; the fastest counts
BATCH_SECONDS = 0.02        # each batch about this long
BUDGET_SECONDS = 0.8        # no new round past this (a round times one batch of each size)


@functools.lru_cache(maxsize=None)
def _peak(threads: int, dtype: torch.dtype) -> float:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    best = 0.0
    try:
        generator = torch.Generator().manual_seed(0)
        operands = []
        for n in SIZES:
            a = torch.randn(n, n, generator=generator).to(dtype)
            b = torch.randn(n, n, generator=generator).to(dtype)
            out = torch.empty(n, n, dtype=dtype)
            torch.mm(a, b, out=out)                             # warm-up: threads up, caches filled
            begun = time.perf_counter()
            torch.mm(a, b, out=out)
            once = max(time.perf_counter() - begun, 1e-7)
            operands.append((n, a, b, out, max(1, math.ceil(BATCH_SECONDS / once))))
        # Rounds until the budget is spent: on a shared machine the best batch is the one least
        # disturbed, and more of them find it (threads > 1 suffer most: they wait for each other).
        for _ in range(MAX_ROUNDS):
            for n, a, b, out, calls in operands:
                begun = time.perf_counter()
                for _ in range(calls):
                    torch.mm(a, b, out=out)
                best = max(best, 2 * n ** 3 * calls / (time.perf_counter() - begun) / 1e9)
            if time.perf_counter() - started > BUDGET_SECONDS:
                break
    finally:
        torch.set_num_threads(previous)
    return best


def peak_gflops(threads: int, dtype: torch.dtype = torch.float32) -> float:
    """This machine's measured peak in GFLOP/s at `threads` torch threads for `dtype`: the best rate of a
    cache-resident torch.mm (see the module's docstring). Measured once per (threads, dtype) in a
    process (≤ 1 s), then cached. torch's thread count is set back as it was."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, not {threads}")
    return _peak(int(threads), dtype)
