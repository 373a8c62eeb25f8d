"""The Triton kernels behind `afm_triton` (afm_triton.py says what they compute and why).

Written as plain functions and turned into kernels on first use by `kernels(interpret)`, because
triton is an optional extra: this module is imported with the package (interactions/__init__.py
imports every file here), so it must not import triton itself, and annotations stay strings
(`from __future__ import annotations`) so `tl.constexpr` is not looked up before triton is there.
Compiled, the kernels are autotuned over GPU_CONFIGS; under Triton's interpreter (TRITON_INTERPRET=1
when triton was first imported) they run with a fixed block, as the autotuner times configs on a GPU.

One program owns BLOCK_B samples and loops over the pairs (i < j) in the reference's order; per pair
it holds q = v_i ⊙ v_j (BLOCK_B, EP) and z = q Wᵀ + b (BLOCK_B, AP) in registers. EP and AP are E and
A rounded up to a power of two and at least 16 (tl.dot's smallest tile), zero-padded so the padding
adds nothing: padded columns of W, b, h are 0, so a padded hidden unit has z = 0 and relu(z) = 0.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

triton = tl = None     # bound by kernels() on first use


def _forward(V, W, b, h, mask, out, lse, scores,
             B, F, E, A, P, B_BUCKET,
             BLOCK_B: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, PRECISION: tl.constexpr,
             HAS_MASK: tl.constexpr, STORE_SCORES: tl.constexpr):
    """out (B, E) = Σ_p softmax(s)_p m_p q_p with an online softmax over pairs; lse (B,) = logsumexp(s);
    scores (B, P) = s when STORE_SCORES (attention weights for the analysis)."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    rows = rows.to(tl.int64)
    e = tl.arange(0, EP)
    a = tl.arange(0, AP)
    tile_ok = row_ok[:, None] & (e < E)[None, :]
    Wt = tl.load(W + a[None, :] * E + e[:, None], mask=(a < A)[None, :] & (e < E)[:, None], other=0.0)  # (EP, AP)
    bias = tl.load(b + a, mask=a < A, other=0.0)
    hv = tl.load(h + a, mask=a < A, other=0.0)
    v_rows = V + rows[:, None] * F * E + e[None, :]
    running_max = tl.full([BLOCK_B], float("-inf"), tl.float32)
    running_sum = tl.zeros([BLOCK_B], tl.float32)
    acc = tl.zeros([BLOCK_B, EP], tl.float32)
    for i in range(0, F - 1):
        vi = tl.load(v_rows + i * E, mask=tile_ok, other=0.0)
        first = i * F - (i * (i + 1)) // 2 - i - 1          # pair number of (i, j) is first + j
        for j in range(i + 1, F):
            q = vi * tl.load(v_rows + j * E, mask=tile_ok, other=0.0)
            z = tl.dot(q, Wt, input_precision=PRECISION) + bias[None, :]
            s = tl.sum(tl.maximum(z, 0.0) * hv[None, :], axis=1)
            new_max = tl.maximum(running_max, s)
            rescale = tl.exp(running_max - new_max)
            weight = tl.exp(s - new_max)
            running_sum = running_sum * rescale + weight
            if HAS_MASK:
                weight = weight * tl.load(mask + rows * P + first + j, mask=row_ok, other=0.0)
            acc = acc * rescale[:, None] + weight[:, None] * q
            running_max = new_max
            if STORE_SCORES:
                tl.store(scores + rows * P + first + j, s, mask=row_ok)
    tl.store(out + rows[:, None] * E + e[None, :], acc / running_sum[:, None], mask=tile_ok)
    tl.store(lse + rows, running_max + tl.log(running_sum), mask=row_ok)


def _backward(V, W, Wh, b, h, mask, out, lse, g, dV, dW_part, db_part,
              B, F, E, A, P, B_BUCKET,
              BLOCK_B: tl.constexpr, EP: tl.constexpr, AP: tl.constexpr, PRECISION: tl.constexpr,
              HAS_MASK: tl.constexpr):
    """dV (B, F, E) and this program's dW_h = dZ'ᵀ Q (AP, EP), db_h = Σ dZ' (AP,) partial sums.

    Recomputes q, z and s per pair. Σ_r w_r m_r (g·q_r) = g·out, so ds_p = w_p (m_p g·q_p − g·out)
    needs no second pass over the pairs. dv_i builds up in registers over j; dv_j is added to dV in
    place (this program alone owns these rows, so plain loads and stores, no atomics)."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    row_ok = rows < B
    rows = rows.to(tl.int64)
    e = tl.arange(0, EP)
    a = tl.arange(0, AP)
    tile_ok = row_ok[:, None] & (e < E)[None, :]
    param_ok = (a < A)[:, None] & (e < E)[None, :]
    Wt = tl.load(W + a[None, :] * E + e[:, None], mask=(a < A)[None, :] & (e < E)[:, None], other=0.0)  # (EP, AP)
    Whm = tl.load(Wh + a[:, None] * E + e[None, :], mask=param_ok, other=0.0)                            # (AP, EP)
    bias = tl.load(b + a, mask=a < A, other=0.0)
    hv = tl.load(h + a, mask=a < A, other=0.0)
    gb = tl.load(g + rows[:, None] * E + e[None, :], mask=tile_ok, other=0.0)
    g_out = tl.sum(gb * tl.load(out + rows[:, None] * E + e[None, :], mask=tile_ok, other=0.0), axis=1)
    row_lse = tl.load(lse + rows, mask=row_ok, other=0.0)
    v_rows = V + rows[:, None] * F * E + e[None, :]
    dv_rows = dV + rows[:, None] * F * E + e[None, :]
    zeros = tl.zeros([BLOCK_B, EP], tl.float32)
    for f in range(0, F):       # the output is accumulated in place, so it starts from zero here
        tl.store(dv_rows + f * E, zeros, mask=tile_ok)
    tl.debug_barrier()
    dW_acc = tl.zeros([AP, EP], tl.float32)
    db_acc = tl.zeros([AP], tl.float32)
    for i in range(0, F - 1):
        vi = tl.load(v_rows + i * E, mask=tile_ok, other=0.0)
        dvi = tl.load(dv_rows + i * E, mask=tile_ok, other=0.0)
        first = i * F - (i * (i + 1)) // 2 - i - 1
        for j in range(i + 1, F):
            vj = tl.load(v_rows + j * E, mask=tile_ok, other=0.0)
            q = vi * vj
            z = tl.dot(q, Wt, input_precision=PRECISION) + bias[None, :]
            s = tl.sum(tl.maximum(z, 0.0) * hv[None, :], axis=1)
            w = tl.where(row_ok, tl.exp(s - row_lse), 0.0)
            da = tl.sum(gb * q, axis=1)
            if HAS_MASK:
                keep = tl.load(mask + rows * P + first + j, mask=row_ok, other=0.0)
                ds = w * (keep * da - g_out)
                weight = w * keep
            else:
                ds = w * (da - g_out)
                weight = w
            dz = tl.where(z > 0, ds[:, None], 0.0)                                   # dZ' (BLOCK_B, AP)
            dW_acc = tl.dot(tl.trans(dz), q, dW_acc, input_precision=PRECISION)
            db_acc += tl.sum(dz, axis=0)
            dq = tl.dot(dz, Whm, input_precision=PRECISION) + weight[:, None] * gb
            dvi += dq * vj
            # Same pointer tensor for the load and the store: each element stays with one thread.
            dvj = dv_rows + j * E
            tl.store(dvj, tl.load(dvj, mask=tile_ok, other=0.0) + dq * vi, mask=tile_ok)
        tl.store(dv_rows + i * E, dvi, mask=tile_ok)
        tl.debug_barrier()      # the next row's dvi is read back by whichever threads own it there
    tl.store(dW_part + pid * AP * EP + a[:, None] * EP + e[None, :], dW_acc)
    tl.store(db_part + pid * AP + a, db_acc)


# (BLOCK_B, num_warps) tried by the autotuner on a GPU: small blocks fill 132 SMs at B = 4096, large
# ones amortise W's loads and give tl.dot taller tiles at B >= 16384.
GPU_CONFIGS = ((16, 1), (32, 2), (64, 4), (128, 4))
INTERPRETER_BLOCK_B = 16
# B_BUCKET (the batch rounded up to a power of two; unused in the kernels) keeps one choice per batch
# scale rather than one per exact batch size (a ragged last batch does not re-tune).
AUTOTUNE_KEY = ["F", "EP", "AP", "PRECISION", "B_BUCKET"]


@functools.lru_cache(maxsize=None)
def kernels(interpret: bool) -> SimpleNamespace:
    """forward/backward launchers: compiled (autotuned) for CUDA tensors, or run by Triton's
    interpreter (CPU tensors, a fixed BLOCK_B). Raises ImportError without triton."""
    global triton, tl
    import triton
    import triton.language as tl

    if interpret:
        from triton.runtime.interpreter import InterpretedFunction
        forward, backward = InterpretedFunction(_forward), InterpretedFunction(_backward)
        fixed = {"BLOCK_B": INTERPRETER_BLOCK_B}
        return SimpleNamespace(forward=forward, backward=backward, fixed=fixed,
                               block_of=lambda kernel: INTERPRETER_BLOCK_B)
    configs = [triton.Config({"BLOCK_B": block}, num_warps=warps) for block, warps in GPU_CONFIGS]
    forward = triton.autotune(configs, key=AUTOTUNE_KEY)(triton.jit(_forward))
    backward = triton.autotune(configs, key=AUTOTUNE_KEY)(triton.jit(_backward))
    return SimpleNamespace(forward=forward, backward=backward, fixed={},
                           block_of=lambda kernel: kernel.best_config.kwargs["BLOCK_B"])
