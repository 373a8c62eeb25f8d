"""AFM's pair products + attention pooling in one autograd Function that never keeps (B, P, E) or
(B, P, A) tensors alive: `afm_fused`. (B, F, E), PairAttention -> (B, E).

The plain definition stays in `reference.py` (`attention_pooling_reference`: explicit pair loop, then
`PairAttention`); it is what the tests prove this file against, and what to read to know *what* is
computed. This file is only about *how fast*: hand-written backward, chunking and a pair layout, all of
which make it harder to read and which is why the reference is kept beside it.

Algebra (per sample; q_p = v_i ⊙ v_j for pair p = (i, j); W, b, h from the attention net):
    s_p = h · relu(W q_p + b),  w = softmax(s),  a = w ⊙ m (m: dropout's mask, 0 or 1/(1-p)),
    out = Σ_p a_p q_p.
Backward for the incoming gradient g (E):
    da_p = g · q_p,  ds_p = w_p (m_p da_p − Σ_r w_r m_r da_r)
    dZ'_pa = ds_p [W q_p + b > 0]_a                (dZ = h ⊙ dZ'; h is folded into tiny (A, E) results)
    dW = h ⊙ (dZ'^T Q),  db = h ⊙ Σ_p dZ'_p,  dh = rowsum(W ⊙ dZ'^T Q) + b ⊙ Σ_p dZ'_p
    dq_p = dZ'_p (h ⊙ W) + a_p g,   dv_i += dq_p ⊙ v_j,  dv_j += dq_p ⊙ v_i
(dh uses h·relu(z) = Σ_a h_a [z_a > 0] z_a, so it needs only the GEMM dZ'^T Q already formed for dW.)

How it stays small and fast:
  * Only V (B, F, E), the softmax weights (B, S) and the dropout mask (B, S) are saved; pair products
    and the hidden layer are recomputed in backward, a cache-sized chunk of the batch at a time.
  * Pair layout: "circulant" slots (k, i) pair field i with field (i + k + 1) mod F for k < K = F // 2.
    For odd F that lists every unordered pair exactly once (S = F·K = P); for even F the last offset
    lists each pair twice, and the copy gets score −inf (weight exactly 0). The partners of all i for
    one k are a *view* of V (no gather), so q is one broadcast multiply and the hidden layer one GEMM
    (chunk·S, E) @ (E, A). The scatter dv_j += ... is a strided sum over a half-padded buffer instead
    of `index_add_`. Slot order ↔ the article's i<j order (torch.triu_indices) is a (B, P) gather.
  * Dropout: the fused path asks `attention.dropout` for its mask on a (B, P) tensor of ones, at the
    point where the reference drops out its weights (nothing in between draws random numbers), so one
    seed gives the same mask, and whatever that module does (p = 0, eval mode) is followed exactly.
Device-agnostic torch ops only; the chunk is larger off-CPU where caches are not the constraint.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from ctrbench.pairs import num_pairs

from ..registry import ATTENTION_POOLED, register_interaction

CPU_CHUNK_ELEMS = 1 << 18    # elements of one (chunk·S, max(E, A)) temporary: ~1 MB in float32
OTHER_CHUNK_ELEMS = 1 << 26


def circulant_layout(num_fields: int):
    """K, the triu pair number of each slot (K·F,), and which slots repeat a pair (even F)."""
    F, K = num_fields, num_fields // 2
    k = torch.arange(K).repeat_interleave(F)
    i = torch.arange(F).repeat(K)
    j = (i + k + 1) % F
    lo, hi = torch.minimum(i, j), torch.maximum(i, j)
    triu = lo * F - lo * (lo + 1) // 2 + (hi - lo - 1)
    repeat = torch.zeros(K * F, dtype=torch.bool)
    if F % 2 == 0:
        repeat[(K - 1) * F + K:] = True      # offset F/2: slot i >= F/2 repeats slot i - F/2
    return K, triu, repeat


def _partners(V: torch.Tensor, K: int) -> torch.Tensor:
    """V (n, F, E) -> view (n, K, F, E) whose [:, k, i] is V[:, (i + k + 1) % F]."""
    n, F, E = V.shape
    doubled = torch.cat([V, V[:, :K + 1]], 1)
    return doubled.as_strided((n, K, F, E), (doubled.stride(0), E, E, 1), E)


def _products(V: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """q for every slot, contiguous (n, S, E), slot (k, i) at row k·F + i."""
    n, K, F, E = partners.shape
    if torch.compiler.is_compiling():
        # A traced mul(out=) takes the broadcast's own layout ((n, F, K, E): K and F step alike in
        # `partners`), which no view can flatten; the compiler writes the contiguous copy in the same kernel.
        return (V[:, None] * partners).contiguous().view(n, K * F, E)
    return torch.mul(V[:, None], partners, out=V.new_empty(partners.shape)).view(n, K * F, E)


def dropout_mask(emb: torch.Tensor, attention) -> torch.Tensor | None:
    """The attention module's own dropout mask (B, P) in i < j pair order, drawn where the reference
    draws it (nothing between draws random numbers), or None where the reference drops nothing
    (eval mode, p = 0: no draw there either)."""
    if not (attention.dropout.training and attention.dropout.p > 0):
        return None
    num_fields = emb.shape[1]
    return attention.dropout(emb.new_ones(emb.shape[0], num_pairs(num_fields)))


def parameter_grads(W, b, h, dW_h, db_h):
    """(dW, db, dh) from dW_h = dZ'^T Q and db_h = Σ_p dZ'_p (see the algebra above)."""
    return h[:, None] * dW_h, h * db_h, (W * dW_h).sum(1) + b * db_h


class _FusedAttentionPooling(torch.autograd.Function):

    @staticmethod
    def forward(ctx, V, W, b, h, mask, repeat_bias, K: int, chunk: int, weights_only: bool):
        B, F, E = V.shape
        S = F * K
        out = V.new_empty(B, E)
        weights = V.new_empty(B, S)
        for lo in range(0, B, chunk):
            Vc = V[lo:lo + chunk]
            n = Vc.shape[0]
            Q = _products(Vc, _partners(Vc, K))
            scores = torch.mv(torch.addmm(b, Q.view(-1, E), W.t()).relu_(), h).view(n, S)
            if repeat_bias is not None:
                scores += repeat_bias
            w = torch.softmax(scores, 1)
            weights[lo:lo + n] = w
            if not weights_only:
                a = w if mask is None else w * mask[lo:lo + n]
                torch.bmm(a[:, None], Q, out=out[lo:lo + n, None])
        if weights_only:
            return weights
        ctx.save_for_backward(V, W, b, h, weights, mask)
        ctx.K, ctx.chunk = K, chunk
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        V, W, b, h, weights, mask = ctx.saved_tensors
        K, chunk = ctx.K, ctx.chunk
        B, F, E = V.shape
        S, A = F * K, W.shape[0]
        g = g.contiguous()
        dV = torch.empty_like(V)
        dW_h = torch.zeros_like(W)      # dZ'^T Q
        db_h = torch.zeros_like(b)      # Σ dZ'
        Wh = h[:, None] * W
        for lo in range(0, B, chunk):
            Vc, gc = V[lo:lo + chunk], g[lo:lo + chunk]
            n = Vc.shape[0]
            partners = _partners(Vc, K)
            Q = _products(Vc, partners)
            Qf = Q.view(-1, E)
            da = torch.bmm(gc[:, None, :], Q.transpose(1, 2)).view(n, S)
            w = weights[lo:lo + n]
            if mask is None:
                a, dw = w, da
            else:
                a, dw = w * mask[lo:lo + n], da * mask[lo:lo + n]
            ds = w * (dw - (w * dw).sum(1, keepdim=True))
            hidden = torch.addmm(b, Qf, W.t()).relu_()
            dZ = torch.ops.aten.threshold_backward(ds.view(-1, 1).expand(-1, A), hidden, 0)
            db_h += dZ.sum(0)
            dW_h.addmm_(dZ.t(), Qf)
            dQ = torch.mm(dZ, Wh).view(n, K, F, E)
            dQ.view(n, S, E).addcmul_(a[:, :, None], gc[:, None, :])
            # dv_j += dq ⊙ v_i, j = (i + k + 1) % F: write dq ⊙ v_i at column K + i of a row padded on
            # the left by its own last K entries, then sum the diagonal view (j, k) -> K + j - k - 1.
            padded = Vc.new_empty(n, K, F + K, E)
            torch.mul(dQ, Vc[:, None], out=padded[:, :, K:])
            padded[:, :, :K] = padded[:, :, F:]
            to_j = padded.as_strided((n, F, K, E), (padded.stride(0), E, (F + K - 1) * E, 1), (K - 1) * E)
            torch.add(dQ.mul_(partners).sum(1), to_j.sum(2), out=dV[lo:lo + n])   # + dv_i
        return (dV, *parameter_grads(W, b, h, dW_h, db_h), None, None, None, None, None)


@register_interaction("afm_fused", output=ATTENTION_POOLED)
class FusedAttentionPooling(nn.Module):
    """AFM pooling fused: recompute-in-backward Function over batch chunks, circulant pair layout.

    Saves V, the weights and the dropout mask only. Equal to `attention_pooling_reference`.
    """

    def __init__(self, num_fields: int):
        super().__init__()
        self.num_fields = num_fields
        self.K, triu, repeat = circulant_layout(num_fields)
        self.register_buffer("slot_pair", triu, persistent=False)               # slot -> triu pair
        self.register_buffer("pair_slot", torch.arange(triu.numel())[~repeat][triu[~repeat].argsort()],
                             persistent=False)                                   # triu pair -> slot
        self.register_buffer("repeat", repeat, persistent=False)

    def _run(self, emb, attention, mask, weights_only):
        B, F, E = emb.shape
        per_row = F * self.K * max(E, attention.hidden.out_features)
        budget = CPU_CHUNK_ELEMS if emb.device.type == "cpu" else OTHER_CHUNK_ELEMS
        repeat_bias = None
        if self.num_fields % 2 == 0:     # a Python test and masked_fill: no host sync, no graph break
            repeat_bias = torch.zeros(self.repeat.shape, dtype=emb.dtype, device=emb.device).masked_fill_(
                self.repeat, float("-inf"))
        return _FusedAttentionPooling.apply(
            emb, attention.hidden.weight, attention.hidden.bias, attention.score.weight.view(-1),
            mask, repeat_bias, self.K, max(1, budget // per_row), weights_only)

    def forward(self, emb: torch.Tensor, attention) -> torch.Tensor:
        mask = dropout_mask(emb, attention)
        if mask is not None:
            mask = mask.index_select(1, self.slot_pair)
        return self._run(emb, attention, mask, weights_only=False)

    def attention_weights(self, emb: torch.Tensor, attention) -> torch.Tensor:
        with torch.no_grad():
            weights = self._run(emb, attention, None, weights_only=True)
        return weights.index_select(1, self.pair_slot)
