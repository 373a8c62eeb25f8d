"""AFM's pair products + attention pooling as a C++ CPU kernel: `afm_kernel`. (B, F, E), PairAttention -> (B, E).

Why a kernel: `afm_fused` (torch ops only) already avoids keeping (B, P, E) and (B, P, A) alive, but
each of its ops still writes a chunk of them to memory and reads it back (about 25 passes per step)
and its four (chunk·P, 16) @ (16, 16) matrix products already run near the core's peak, so torch ops
leave little to gain. Per sample everything AFM needs is tiny (F·E inputs, P scores). The kernel
(afm_kernel.cpp) takes L samples at a time as the lanes of one vector register (16 float32 with
AVX-512, 8 with AVX2): a pair's q, z and gradients are rows worked on in small register tiles, the
block's scores stay in cache, the attention weights are broadcast rows, and memory is touched only for
V, the weights and the results. The forward keeps z's ReLU mask as bits (B·P·A / 8 bytes) so that the
backward need not recompute z. Same algebra as afm_fused (its docstring derives the backward); pairs in
the reference's i < j order; the dropout mask is the attention module's own, drawn as the reference
draws it. What to read to know *what* is computed is still `attention_pooling_reference` in reference.py.

The kernel (float32 and float64; E, A <= 64, unrolled for E = A = 16 in float32) is two torch operators,
torch.ops.<build name>.forward / backward, with fake tensors for torch.compile (KernelBuild), so a
compiled AFM traces it as one graph. It is compiled by torch.utils.cpp_extension on first use (20-40 s,
then cached under $CTRBENCH_BUILD_DIR or torch's extension folder, keyed by a digest of the source and
the compiler flags, and for a native build by CPU model and feature flags) for the vector ISA
$CTRBENCH_AFM_KERNEL_ISA names: `native` (the default: -march=native, this machine's vector units),
`avx2` or `avx512` (that ISA whatever the machine; on a CPU without it the kernel is not built and
afm_fused runs). `kernel_isa()` says which build runs ("native:avx512", "avx2", ...); `build_for(isa)`
loads a given ISA's build (tests run the AVX2 build on an AVX-512 machine). It runs on torch's intra-op
thread pool (at::parallel_for: as many threads as torch.set_num_threads says, no threads of its own; the
same bits at any thread count). Off the CPU, for other sizes or dtypes, or where it cannot be built (no
C++ compiler), it runs `afm_fused` instead (saying why, once, when the build failed), so a model built
with it trains anywhere.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from ctrbench.cpu import distinct_cores

from ..registry import ATTENTION_POOLED, register_interaction
from .afm_fused import FusedAttentionPooling, dropout_mask, parameter_grads

SOURCE = Path(__file__).with_name("afm_kernel.cpp")
MAX_KERNEL_DIM = 64     # E and A; kMaxGeneric in the .cpp
BUILD_DIR_ENV = "CTRBENCH_BUILD_DIR"
ISA_ENV = "CTRBENCH_AFM_KERNEL_ISA"
NOT_BUILT = "afm_fused (afm_kernel could not be built)"

# The builds one can ask for: compiler flags, and the /proc/cpuinfo flags a CPU needs to run the result.
# "native" is whatever this machine has (-march=native); the others are that ISA on any x86-64 CPU that
# has it, tuned generically (so an AVX2 build can be measured on an AVX-512 machine).
ISA_FLAGS = {
    "native": ["-march=native"],
    "avx2": ["-mavx2", "-mfma"],
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl"],
}
ISA_CPU_FLAGS = {
    "native": set(),
    "avx2": {"avx2", "fma"},
    "avx512": {"avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl"},
}


def build_dir() -> Path:
    """Where the compiled kernel is kept: $CTRBENCH_BUILD_DIR, else torch's extension folder
    ($TORCH_EXTENSIONS_DIR or ~/.cache/torch_extensions), where torch keeps every extension it builds."""
    if os.environ.get(BUILD_DIR_ENV):
        return Path(os.environ[BUILD_DIR_ENV]).expanduser()
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch_extensions"


def machine_key() -> str:
    """Tells apart CPUs that one `-march=native` build does not serve alike: torch's capability name
    (avx2, avx512) plus a digest of the CPU model and its feature flags, so a home folder shared by
    two CPU models never loads the other's build."""
    digest = hashlib.sha256("\n".join(distinct_cores()).encode()).hexdigest()[:8]
    return f"{torch.backends.cpu.get_cpu_capability().lower()}_{digest}"


def openmp_flags() -> list[str]:
    """["-fopenmp"] where torch's intra-op pool is OpenMP's (its Linux builds): the kernel's
    at::parallel_for is then a header template whose `omp parallel` is compiled into the extension, and
    without the flag every call would run on the calling thread alone. Compile only, not link: the
    kernel's OpenMP calls then resolve, when it is loaded, to the runtime torch itself loaded (through
    libtorch_cpu), never to a second copy with a pool and thread count of its own."""
    return ["-fopenmp"] if torch.backends.openmp.is_available() else []


def requested_isa() -> str:
    """The ISA $CTRBENCH_AFM_KERNEL_ISA asks for ("native" where unset or empty), lower-cased."""
    return (os.environ.get(ISA_ENV) or "native").strip().lower()


def cpu_lacks(isa: str) -> set[str]:
    """The CPU feature flags an `isa` build needs that this machine's cores do not all list (none for
    "native"; all of them off x86 Linux, where /proc/cpuinfo lists no x86 flags)."""
    needed = ISA_CPU_FLAGS[isa]
    if not needed:
        return set()
    cores = distinct_cores()
    have = set.intersection(*(set(core.rsplit("|", 1)[-1].split()) for core in cores)) if cores else set()
    return needed - have


_LOADED: dict[str, tuple] = {}      # build_status(isa) of each ISA asked for so far


def _build():
    """The build $CTRBENCH_AFM_KERNEL_ISA asks for (build_status): the variable is read at every call,
    each ISA's build made once per process."""
    isa = requested_isa()
    # A plain dict in front of build_status's lru_cache: torch.compile traces a dict lookup, whereas it
    # ignores lru_cache and would trace the build itself (file-system calls: graph breaks).
    if isa not in _LOADED:
        _LOADED[isa] = build_status(isa)
    return _LOADED[isa]


def build_for(isa: str):
    """The KernelBuild for `isa` ("native", "avx2", "avx512"), or None where this CPU lacks that ISA or
    it cannot be built (build_status says why). Its forward/backward are the kernel's operators."""
    return build_status(isa)[0]


class KernelBuild:
    """One loaded build: its operators torch.ops.<name>.forward / backward (afm_kernel.cpp's schemas),
    `isa()` the vector ISA the compiler was given ("avx2", "avx512", ...), `parallel` whether it was
    built for torch's OpenMP pool (where a compiler refuses -fopenmp, a build without it, correct but
    serial, is taken rather than none), `isa_request` the ISA asked for."""

    def __init__(self, name: str, parallel: bool, isa_request: str):
        self.name, self.parallel, self.isa_request = name, parallel, isa_request
        ops = getattr(torch.ops, name)
        self.forward, self.backward = ops.forward, ops.backward
        self._isa = ops.isa()
        self.vector_bytes, self.pad = ops.layout()
        torch.library.register_fake(f"{name}::forward")(self._fake_forward)
        torch.library.register_fake(f"{name}::backward")(self._fake_backward)

    def isa(self) -> str:
        return self._isa

    def label(self) -> str:
        """What the build is: its ISA ("avx2", "avx512"), or "native:" and what -march=native gave it."""
        return f"native:{self._isa}" if self.isa_request == "native" else self._isa

    def relu_bytes(self, V: torch.Tensor, A) -> int:
        """The size of forward's ReLU bits (afm_kernel.cpp's relu_bytes): one bit per sample, pair and
        padded hidden unit, a vector register's lanes at a time (their bits in a uint16 where there are
        more than 8 lanes, else in a uint8)."""
        B, F, _ = V.shape
        lanes = self.vector_bytes // V.element_size()
        padded_A = (A + self.pad - 1) // self.pad * self.pad
        return (B + lanes - 1) // lanes * (F * (F - 1) // 2) * padded_A * (2 if lanes > 8 else 1)

    def _fake_forward(self, V, W, b, h, mask, weights_only, keep_relu):
        B, F, E = V.shape
        return [V.new_empty((0 if weights_only else B, E)), V.new_empty((B, F * (F - 1) // 2)),
                V.new_empty((self.relu_bytes(V, W.shape[0]) if keep_relu else 0,), dtype=torch.uint8)]

    @staticmethod
    def _fake_backward(V, W, b, h, weights, mask, g, relu):
        return [torch.empty_like(V), W.new_empty(W.shape), W.new_empty((W.shape[0],))]


@functools.lru_cache(maxsize=None)
def build_status(isa: str):
    """(KernelBuild, None) or (None, why it could not be built) for the build of `isa`."""
    if isa not in ISA_FLAGS:
        return None, f"{ISA_ENV}={isa!r} is none of {', '.join(ISA_FLAGS)}"
    lacks = cpu_lacks(isa)
    if lacks:
        return None, f"this CPU lacks {', '.join(sorted(lacks))}, which the {isa} build needs"
    try:
        from torch.utils.cpp_extension import load
        if shutil.which("ninja") is None:          # torch's builder runs `ninja`; the pip package has one
            import ninja
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except Exception as error:  # noqa: BLE001 - any build failure means "run afm_fused instead"
        return None, f"{type(error).__name__}: {str(error).strip()[-2000:]}"
    failure = None
    for parallel in ([True, False] if openmp_flags() else [False]):
        # -march=native: the build is for this machine's vector units, and its name keeps the builds for
        # different ones (a shared home folder) apart; an explicit ISA's build is the same on any machine.
        # The digest keeps those of other sources or flags apart.
        flags = ["-O3", *ISA_FLAGS[isa], *(openmp_flags() if parallel else [])]
        digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:10]
        name = f"ctrbench_afm_kernel_{machine_key() if isa == 'native' else isa}_{digest}"
        try:
            directory = build_dir() / name
            directory.mkdir(parents=True, exist_ok=True)
            if not (directory / f"{name}.so").exists():
                print(f"ctrbench: compiling the afm_kernel CPU extension into {directory} (once; 20-40 s)...",
                      file=sys.stderr, flush=True)
            load(name=name, sources=[str(SOURCE)], build_directory=str(directory), extra_cflags=flags,
                 is_python_module=False, verbose=False)
            return KernelBuild(name, parallel=parallel, isa_request=isa), None
        except Exception as error:  # noqa: BLE001 - any build failure means "run afm_fused instead"
            failure = failure or f"{type(error).__name__}: {str(error).strip()[-2000:]}"
    return None, failure


def kernel_status() -> tuple[bool, str]:
    """(built, reason it is not) — builds it on first call."""
    build, why = _build()
    return build is not None, why or ""


def kernel_isa() -> str | None:
    """Which build of the kernel runs ($CTRBENCH_AFM_KERNEL_ISA): "avx2", "avx512", or "native:" and the
    ISA -march=native gave it ("native:avx512"); None where it is not built (afm_fused runs). For
    benchmark records: KernelAttentionPooling.backend says "afm_kernel" whichever build it is."""
    build = _build()[0]
    return None if build is None else build.label()


class _KernelAttentionPooling(torch.autograd.Function):

    @staticmethod
    def forward(ctx, V, W, b, h, mask, keep_relu: bool):
        # Where a backward may follow, the forward keeps z's ReLU bits (B·P·A / 8 bytes) for it.
        kernel = _build()[0]
        out, weights, relu = kernel.forward(V, W, b, h, mask, False, keep_relu)
        ctx.save_for_backward(V, W, b, h, weights, mask, relu)
        ctx.kernel = kernel       # the bits are this build's: its backward reads them
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        V, W, b, h, weights, mask, relu = ctx.saved_tensors
        dV, dW_h, db_h = ctx.kernel.backward(V, W, b, h, weights, mask, g, relu)
        return (dV, *parameter_grads(W, b, h, dW_h, db_h), None, None)


@register_interaction("afm_kernel", output=ATTENTION_POOLED)
class KernelAttentionPooling(FusedAttentionPooling):
    """AFM pooling as a C++ CPU kernel, a vector register's worth of samples at a time (afm_fused
    elsewhere). Equal to the reference.

    Saves V, the weights, the dropout mask and z's ReLU bits only.
    """

    devices = ("cpu",)     # where its own code runs; elsewhere it is afm_fused
    _warned = False

    def backend(self, device: torch.device, dtype: torch.dtype, embed_dim: int, attn_dim: int) -> str:
        """What runs for these inputs: "afm_kernel", or "afm_fused" and why (see running_backend)."""
        if device.type != "cpu":
            return f"afm_fused (afm_kernel runs on the CPU only, not {device.type})"
        if dtype not in (torch.float32, torch.float64):
            return f"afm_fused (afm_kernel takes float32/float64, not {dtype})"
        if max(embed_dim or 0, attn_dim or 0) > MAX_KERNEL_DIM:
            return f"afm_fused (afm_kernel takes E, A <= {MAX_KERNEL_DIM})"
        return "afm_kernel" if kernel_status()[0] else NOT_BUILT

    def _use_kernel(self, emb: torch.Tensor, attention) -> bool:
        if any(p.dtype != emb.dtype for p in attention.parameters()):
            return False
        backend = self.backend(emb.device, emb.dtype, emb.shape[2], attention.hidden.out_features)
        if backend == NOT_BUILT and not KernelAttentionPooling._warned:
            KernelAttentionPooling._warned = True
            warnings.warn(f"afm_kernel could not be built, running afm_fused instead: {kernel_status()[1]}",
                          stacklevel=3)
        return backend == "afm_kernel"

    def _attention_tensors(self, attention):
        return attention.hidden.weight, attention.hidden.bias, attention.score.weight.view(-1)

    def forward(self, emb: torch.Tensor, attention) -> torch.Tensor:
        if not self._use_kernel(emb, attention):
            return super().forward(emb, attention)
        mask = dropout_mask(emb, attention)
        tensors = self._attention_tensors(attention)
        backward_follows = torch.is_grad_enabled() and any(t.requires_grad for t in (emb, *tensors))
        return _KernelAttentionPooling.apply(emb.contiguous(), *tensors, emb.new_empty(0) if mask is None else mask,
                                             backward_follows)

    def attention_weights(self, emb: torch.Tensor, attention) -> torch.Tensor:
        if not self._use_kernel(emb, attention):
            return super().attention_weights(emb, attention)
        with torch.no_grad():
            return _build()[0].forward(emb.contiguous(), *self._attention_tensors(attention), emb.new_empty(0),
                                       True, False)[1]
