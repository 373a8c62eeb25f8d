"""AFM's pair products + attention pooling as Triton GPU kernels: `afm_triton` (exact float32) and
`afm_triton_tf32` (the attention net's matrix products on TF32 tensor cores). (B, F, E), PairAttention -> (B, E).

Why kernels: on a GPU `afm_fused` (torch ops) still writes every chunk of (B, P, E) and (B, P, A) to
memory and reads it back; per sample all AFM needs is F·E inputs and P scores. One Triton program takes
BLOCK_B samples and walks the pairs (i < j) in the reference's order, with q = v_i ⊙ v_j and the hidden
layer z = q Wᵀ + b held in registers; nothing of size (B, P, E) or (B, P, A) reaches global memory.
  * forward: an online softmax over the pairs (running max and sum, the weighted sum rescaled as the
    max grows), so one pass gives out = Σ_p w_p m_p q_p and the row's logsumexp;
  * backward: recomputes q, z and the weights w_p = exp(s_p − logsumexp) per pair; saved are V, the
    output, the logsumexp (B,) and the dropout mask. Σ_r w_r m_r (g·q_r) is g·out, so
    ds_p = w_p (m_p g·q_p − g·out) needs no second pass. Same algebra as afm_fused (its docstring
    derives it) and the same `parameter_grads`; the sums over samples of dZ'ᵀQ and dZ' are per-program
    partials added up by torch (deterministic, no float atomics).
  * dropout: the attention module's own mask (`dropout_mask`, drawn where the reference draws it).
What to read to know *what* is computed is still `attention_pooling_reference` in reference.py; the
kernels are in afm_triton_kernels.py.

Precision: `afm_triton` does its three matrix products per pair (z = QWᵀ, dQ = dZ'(h⊙W), dZ'ᵀQ) in
IEEE float32 (equal to the reference at 1e-5 / 1e-4); `afm_triton_tf32` does them on tensor cores in
TF32 (10-bit mantissa inputs, float32 accumulation), within TF32_TOLERANCE of the reference. E and A
are padded to powers of two, at least 16, the tensor cores' tile.

Where it runs: CUDA tensors (float32, E, A <= MAX_DIM) with triton installed (`pip install
ctrbench[triton]`). Under Triton's interpreter (TRITON_INTERPRET=1 set before triton is first
imported: triton fixes its mode then) it runs there, on CPU tensors too: how the tests run the kernels
without a GPU; slow, small shapes only. Anywhere else it runs `afm_fused`, warns once, and `backend()`
names what ran.
"""
from __future__ import annotations

import contextlib
import functools
import os
import warnings

import torch
from torch.autograd.function import once_differentiable

from ctrbench.pairs import num_pairs

from ..registry import ATTENTION_POOLED, register_interaction
from .afm_fused import FusedAttentionPooling, dropout_mask, parameter_grads

MAX_DIM = 64                     # E and A: beyond it the exact mode's tiles outgrow shared memory
# forward, gradients: max |error| / max |reference|. Rounding q and W to TF32 in the reference's
# forward alone gave 2e-4 and 1.2e-2 (the embeddings' gradient: a few z_a change side of the ReLU) at
# F = 39 and 100, B = 512; the bound leaves room for the backward's products and larger batches.
TF32_TOLERANCE = (5e-3, 5e-2)


def interpreter_requested() -> bool:
    """TRITON_INTERPRET set the way triton reads it (1/true/yes/on)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=None)
def triton_status() -> tuple[bool, str]:
    """(importable, why not)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
        return True, ""
    except Exception as error:  # noqa: BLE001 - any import failure means "run afm_fused instead"
        return False, f"{type(error).__name__}: {error}"


def triton_mode() -> tuple[str | None, str]:
    """("compiled" or "interpreter", "") or (None, why not). Triton fixes the mode when it is first
    imported (TRITON_INTERPRET then decides how its own library functions, tl.zeros, tl.sum, are
    wrapped), so that is what is read here: the kernels must run the same way."""
    importable, why = triton_status()
    if not importable:
        return None, f"triton is not importable ({why}); pip install 'ctrbench[triton]'"
    import triton.language as tl
    return ("interpreter" if type(tl.zeros).__name__ == "InterpretedFunction" else "compiled"), ""


def _padded(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def _launch_args(V, W, precision):
    B, F, E = V.shape
    A = W.shape[0]
    return dict(B=B, F=F, E=E, A=A, P=num_pairs(F), B_BUCKET=_padded(B)), \
        dict(EP=_padded(E), AP=_padded(A), PRECISION=precision)


def triton_forward(V, W, b, h, mask, precision: str, store_scores: bool = False):
    """(out (B, E), logsumexp (B,), scores (B, P) or None) for float32 V (B, F, E) on CUDA or, under
    the interpreter, the CPU; mask (B, P) or None."""
    from .afm_triton_kernels import kernels
    run = kernels(triton_mode()[0] == "interpreter")
    sizes, meta = _launch_args(V, W, precision)
    out = V.new_empty(sizes["B"], sizes["E"])
    lse = V.new_empty(sizes["B"])
    scores = V.new_empty(sizes["B"], sizes["P"]) if store_scores else None
    grid = lambda m: (-(-sizes["B"] // m["BLOCK_B"]),)   # noqa: E731
    with torch.cuda.device(V.device) if V.is_cuda else contextlib.nullcontext():
        run.forward[grid](V, W, b, h, V if mask is None else mask, out, lse, lse if scores is None else scores,
                          *sizes.values(), **meta, HAS_MASK=mask is not None, STORE_SCORES=store_scores,
                          **run.fixed)
    return out, lse, scores


def triton_backward(V, W, b, h, mask, out, lse, g, precision: str):
    """(dV (B, F, E), dZ'ᵀQ (A, E), Σ dZ' (A,)) for the incoming gradient g (B, E)."""
    from .afm_triton_kernels import GPU_CONFIGS, INTERPRETER_BLOCK_B, kernels
    run = kernels(triton_mode()[0] == "interpreter")
    sizes, meta = _launch_args(V, W, precision)
    smallest = min([block for block, _ in GPU_CONFIGS] + [INTERPRETER_BLOCK_B])
    programs = -(-sizes["B"] // smallest)
    dV = torch.empty_like(V)
    dW_part = V.new_empty(programs, meta["AP"], meta["EP"])
    db_part = V.new_empty(programs, meta["AP"])
    grid = lambda m: (-(-sizes["B"] // m["BLOCK_B"]),)   # noqa: E731
    with torch.cuda.device(V.device) if V.is_cuda else contextlib.nullcontext():
        run.backward[grid](V, W, h[:, None] * W, b, h, V if mask is None else mask, out, lse, g, dV,
                           dW_part, db_part, *sizes.values(), **meta, HAS_MASK=mask is not None, **run.fixed)
    used = -(-sizes["B"] // run.block_of(run.backward))   # rows past it are left from autotuning runs
    A, E = sizes["A"], sizes["E"]
    return dV, dW_part[:used].sum(0)[:A, :E], db_part[:used].sum(0)[:A]


class _TritonAttentionPooling(torch.autograd.Function):

    @staticmethod
    def forward(ctx, V, W, b, h, mask, precision: str):
        out, lse, _ = triton_forward(V, W, b, h, mask, precision)
        ctx.save_for_backward(V, W, b, h, mask, out, lse)
        ctx.precision = precision
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        V, W, b, h, mask, out, lse = ctx.saved_tensors
        dV, dW_h, db_h = triton_backward(V, W, b, h, mask, out, lse, g.contiguous(), ctx.precision)
        return (dV, *parameter_grads(W, b, h, dW_h, db_h), None, None)


def _pool(emb, W, b, h, mask, precision: str) -> torch.Tensor:
    return _TritonAttentionPooling.apply(emb, W, b, h, mask, precision)


# `_pool` left out of torch.compile graphs (a graph break): the launchers are host code that reads the
# autotuner's choice back after launching, which a trace cannot follow; the kernels are fused already.
# Made by the first layer built rather than at import, since torch.compiler.disable imports dynamo (~2 s),
# which importing ctrbench should not pay for; a module global, not an attribute, so that models pickle.
_pool_outside_graphs = None


def _wrap_pool_once() -> None:
    global _pool_outside_graphs
    if _pool_outside_graphs is None:
        _pool_outside_graphs = torch.compiler.disable(_pool)


@register_interaction("afm_triton", output=ATTENTION_POOLED)
class TritonAttentionPooling(FusedAttentionPooling):
    """AFM pooling as Triton GPU kernels, exact float32 (afm_fused elsewhere). Equal to the reference.

    Saves V, the output, the logsumexp per sample and the dropout mask only.
    """

    devices = ("cuda",)   # where its own code runs (cells.runs_on); elsewhere it is afm_fused
    precision = "ieee"
    _warned = False       # one warning per process, for either registered name

    def __init__(self, num_fields: int):
        super().__init__(num_fields)
        _wrap_pool_once()

    def __setstate__(self, state):
        # unpickling builds no layer: a model loaded in a process that built none needs the launcher too
        super().__setstate__(state)
        _wrap_pool_once()

    def _plan(self, device: torch.device, dtype: torch.dtype, embed_dim, attn_dim) -> tuple[bool, str]:
        """(Triton runs, how / why not)."""
        name = self.registry_name
        if device.type not in ("cuda", "cpu") or (device.type == "cpu" and not interpreter_requested()):
            return False, f"{name} runs on CUDA (or on the CPU under TRITON_INTERPRET=1), not {device.type}"
        if dtype != torch.float32:
            return False, f"{name} takes float32, not {dtype}"
        if max(embed_dim or 0, attn_dim or 0) > MAX_DIM:
            return False, f"{name} takes E, A <= {MAX_DIM}"
        if self.num_fields < 2:
            return False, f"{name} needs at least two fields"
        mode, why = triton_mode()
        if mode is None:
            return False, why
        if mode == "interpreter":
            return True, f"{name} (Triton interpreter)"
        if device.type == "cpu":
            return False, (f"{name} on the CPU needs Triton's interpreter, which needs TRITON_INTERPRET=1 "
                           "before triton is first imported (here it was imported without)")
        return True, name

    def backend(self, device: torch.device, dtype: torch.dtype, embed_dim: int, attn_dim: int) -> str:
        """What runs for these inputs: "afm_triton", or "afm_fused" and why (see running_backend)."""
        runs, how = self._plan(torch.device(device), dtype, embed_dim, attn_dim)
        return how if runs else f"afm_fused ({how})"

    def _use_triton(self, emb: torch.Tensor, attention) -> bool:
        runs, why = self._plan(emb.device, emb.dtype, emb.shape[2], attention.hidden.out_features)
        if runs and any(p.dtype != emb.dtype or p.device != emb.device for p in attention.parameters()):
            runs, why = False, "the attention net's parameters differ from the embeddings in dtype or device"
        if runs and emb.shape[0] == 0:
            return False
        if not runs and not TritonAttentionPooling._warned:
            TritonAttentionPooling._warned = True
            warnings.warn(f"running afm_fused instead: {why}", stacklevel=3)
        return runs

    def _attention_tensors(self, attention):
        return (attention.hidden.weight.contiguous(), attention.hidden.bias.contiguous(),
                attention.score.weight.reshape(-1).contiguous())

    def forward(self, emb: torch.Tensor, attention) -> torch.Tensor:
        if not self._use_triton(emb, attention):
            return super().forward(emb, attention)
        mask = dropout_mask(emb, attention)
        return _pool_outside_graphs(emb.contiguous(), *self._attention_tensors(attention),
                     None if mask is None else mask.contiguous(), self.precision)

    def attention_weights(self, emb: torch.Tensor, attention) -> torch.Tensor:
        """(B, P) softmax weights, no dropout, pairs in the reference's i < j order."""
        if not self._use_triton(emb, attention):
            return super().attention_weights(emb, attention)
        with torch.no_grad():
            _, lse, scores = triton_forward(emb.contiguous(), *self._attention_tensors(attention), None,
                                            self.precision, store_scores=True)
            return torch.exp(scores - lse[:, None])


@register_interaction("afm_triton_tf32", output=ATTENTION_POOLED, tolerance=TF32_TOLERANCE)
class TritonTF32AttentionPooling(TritonAttentionPooling):
    """AFM pooling as Triton GPU kernels, attention net on TF32 tensor cores (afm_fused elsewhere).

    Within TF32_TOLERANCE of the reference (forward 5e-3, gradients 5e-2 of the largest value).
    """

    precision = "tf32"
