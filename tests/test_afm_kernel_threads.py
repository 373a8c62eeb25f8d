"""afm_kernel's parallelism: torch's intra-op pool (at::parallel_for), not threads of its own, and the same
bits whatever the thread count. Its equality with the reference is in test_fast_afm.py."""
import os
import threading
import time
from contextlib import contextmanager

import pytest
import torch

from ctrbench.models.interactions.afm_kernel import kernel_status
from ctrbench.models.layers import PairAttention
from ctrbench.models.registry import interaction_entry


@pytest.fixture(autouse=True)
def _kernel_built():
    built, why = kernel_status()
    if not built:
        pytest.skip("afm_kernel not built: " + why)


@contextmanager
def _threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _setup(F, E, A, B, dtype, seed=0):
    torch.manual_seed(seed)
    attention = PairAttention(E, A, 0.2).to(dtype).train()
    emb = torch.randn(B, F, E, dtype=dtype, requires_grad=True)
    grad_out = torch.randn(B, E, dtype=dtype)
    return interaction_entry("afm_kernel").builder(F), attention, emb, grad_out


def _step(module, attention, emb, grad_out, seed=3):
    """(output, attention weights, gradients of the embeddings and the attention's parameters)."""
    torch.manual_seed(seed)                 # the same dropout mask every time
    out = module(emb, attention)
    grads = torch.autograd.grad(out, [emb, *attention.parameters()], grad_out)
    return [out.detach(), module.attention_weights(emb, attention), *grads]


# B = 1000: not a multiple of a block (a vector register's lanes: 16 float32 / 8 float64 samples with
# AVX-512, 8 / 4 with AVX2) and many blocks, so at 2 and 3
# threads the blocks (and the backward's chunks) are split unevenly. E = A = 16 is the unrolled kernel,
# E = 8, A = 5 the run-time-sized one.
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("F,E,A", [(39, 16, 16), (10, 16, 16), (7, 8, 5), (2, 16, 16)])
def test_same_bits_at_any_thread_count(F, E, A, dtype):
    module, attention, emb, grad_out = _setup(F, E, A, 1000, dtype)
    runs = {}
    for n in (1, 2, 3, 1):
        with _threads(n):
            runs.setdefault(n, []).append(_step(module, attention, emb, grad_out))
    names = ["out", "weights", "dV", "dW", "db", "dh"]
    single = runs[1][0]
    for n, results in runs.items():
        for result in results:
            for name, got, expected in zip(names, result, single):
                assert torch.equal(got, expected), f"{name} differs at {n} threads from 1 thread"


def _task_ids():
    return set(os.listdir("/proc/self/task"))


class _ThreadWatcher(threading.Thread):
    """Lists this process's OS threads (/proc/self/task) over and over until stopped: the kernel releases
    the GIL while it runs, so a thread it started and joined within one call is seen too."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self._done = threading.Event()
        self.started_up = threading.Event()

    def run(self):
        while not self._done.is_set():
            self.seen |= _task_ids()
            self.started_up.set()
            time.sleep(0.0002)

    def stop(self):
        self._done.set()
        self.join()
        return self.seen


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc/self/task here (not Linux)")
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_starts_no_threads_of_its_own(threads):
    # At 1 thread ATen runs everything on the calling thread, so no thread may appear at all. At 2 the
    # pool's worker is made by the first parallel region (the warm-up) and reused afterwards, where
    # threads started per call (as this kernel once did) would each show up as a new task id.
    module, attention, emb, grad_out = _setup(39, 16, 16, 2048, torch.float32)
    with _threads(threads):
        _step(module, attention, emb, grad_out)                 # warm-up: the pool at this size
        watcher = _ThreadWatcher()
        watcher.start()
        watcher.started_up.wait()
        before = _task_ids()
        for seed in range(4):
            _step(module, attention, emb, grad_out, seed)
        after = _task_ids()
        seen = watcher.stop()
    assert not seen - before, f"threads appeared during afm_kernel calls: {sorted(seen - before)}"
    assert len(after) <= len(before)


def _cpu_ticks():
    """{task id: user + system CPU time in clock ticks} of this process's threads."""
    ticks = {}
    for tid in _task_ids():
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()   # after "pid (comm)"
        except OSError:                                          # the thread ended meanwhile
            continue
        ticks[tid] = int(fields[11]) + int(fields[12])           # utime, stime
    return ticks


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc/self/task here (not Linux)")
def test_kernel_runs_on_torchs_pool_at_two_threads():
    # The kernel's own calls, at 2 threads, must keep a second thread (torch's pool's) busy about as long
    # as the calling one. Built without OpenMP (where torch's pool is OpenMP's), at::parallel_for would
    # quietly run everything on the calling thread: this is what tells.
    from ctrbench.models.interactions.afm_kernel import _build
    kernel = _build()[0]
    if not kernel.parallel:
        pytest.skip("afm_kernel was built without OpenMP here (the compiler refused -fopenmp): it runs serially")
    torch.manual_seed(0)
    V, W, b, h = torch.randn(2048, 39, 16), torch.randn(16, 16) * 0.3, torch.randn(16) * 0.1, torch.randn(16)
    no_mask = V.new_empty(0)
    caller = str(threading.get_native_id())
    with _threads(2):
        _, weights, relu = kernel.forward(V, W, b, h, no_mask, False, True)  # warm-up: the pool at 2
        g = torch.randn(2048, 16)
        enough = 0.2 * os.sysconf("SC_CLK_TCK")   # 0.2 s of the calling thread's CPU time, in clock ticks
        before = _cpu_ticks()
        for _ in range(200):
            kernel.forward(V, W, b, h, no_mask, False, True)
            kernel.backward(V, W, b, h, weights, no_mask, g, relu)
            after = _cpu_ticks()
            if after[caller] - before[caller] >= enough:
                break
    spent = {tid: after[tid] - before.get(tid, 0) for tid in after}
    others = sum(t for tid, t in spent.items() if tid != caller)
    assert others >= 0.3 * spent[caller], f"the kernel ran on the calling thread alone: {spent}"
