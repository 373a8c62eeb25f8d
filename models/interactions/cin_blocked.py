import torch
from torch import nn

from ..registry import CIN, register_interaction

# The outer products of one block of rows fit in a core's L2 cache on the CPU; a GPU takes large blocks
# (each block is a few kernel launches).
CPU_BLOCK_BYTES = 2 ** 20
GPU_BLOCK_BYTES = 2 ** 28


@register_interaction("cin_blocked", output=CIN)
class CINBlocked(nn.Module):
    """One CIN layer as matrix products over blocks of rows, the outer product never held whole.

    With rows r = (b, e): z_r = x^{k-1}_r ⊗ x^0_r (H·F numbers) and x^k_r = W z_r, W (H', H·F). A block
    of rows (B·E, H·F) is formed and multiplied at once, while it is still in cache; the backward forms
    each block again instead of saving B·H·F·E numbers (cin_matmul's z) between the passes.

    hidden (B, H, E), emb (B, F, E), W (H', H, F) -> (B, H', E). Holds one block of z at a time:
    `rows_per_block` rows, by default as many as fit CPU_BLOCK_BYTES per thread (GPU_BLOCK_BYTES on a GPU).
    """

    def __init__(self, num_fields: int, rows_per_block: int | None = None):
        super().__init__()
        self.rows_per_block = rows_per_block

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        batch, _, dim = hidden.shape
        by_row = lambda t: t.transpose(1, 2).reshape(batch * dim, t.shape[1])  # noqa: E731  (B·E, H) or (B·E, F)
        out = _blocked_outer_product_matmul(by_row(hidden), by_row(emb), weight, self.rows_per_block)
        return out.view(batch, dim, -1).transpose(1, 2)                                     # (B, H', E)


def _blocked_outer_product_matmul(hidden, emb, weight, rows_per_block: int | None) -> torch.Tensor:
    """(B·E, H), (B·E, F), W (H', H, F) -> (B·E, H')."""
    if not rows_per_block:
        # torch.compile cannot trace the thread count (a graph break): a compiled step takes one thread's block
        threads = 1 if torch.compiler.is_compiling() else torch.get_num_threads()
        budget = GPU_BLOCK_BYTES if hidden.is_cuda else CPU_BLOCK_BYTES * threads
        rows_per_block = max(16, budget // (hidden.shape[1] * emb.shape[1] * hidden.element_size()))
    return _BlockedOuterProductMatmul.apply(hidden, emb, weight, rows_per_block)


def _outer(hidden: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """(R, H), (R, F) -> (R, H·F): each row's outer product, h-major as W (H', H, F) is laid out."""
    return (hidden.unsqueeze(2) * emb.unsqueeze(1)).flatten(start_dim=1)


class _BlockedOuterProductMatmul(torch.autograd.Function):
    """out_r = W z_r with z_r = hidden_r ⊗ emb_r, block by block; saves only hidden, emb and W."""

    @staticmethod
    def forward(ctx, hidden, emb, weight, rows):
        flat = weight.reshape(weight.shape[0], -1)                           # (H', H·F)
        out = [_outer(hidden[s:s + rows], emb[s:s + rows]) @ flat.t() for s in range(0, hidden.shape[0], rows)]
        ctx.save_for_backward(hidden, emb, weight)
        ctx.rows = rows
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad_out):
        hidden, emb, weight = ctx.saved_tensors
        rows, maps, num_fields = ctx.rows, hidden.shape[1], emb.shape[1]
        flat = weight.reshape(weight.shape[0], -1)
        grad_weight = torch.zeros_like(flat) if ctx.needs_input_grad[2] else None
        grad_hidden, grad_emb = [], []
        for s in range(0, hidden.shape[0], rows):
            h, e, g = hidden[s:s + rows], emb[s:s + rows], grad_out[s:s + rows]
            if grad_weight is not None:
                grad_weight.addmm_(g.t(), _outer(h, e))                      # Σ_r g_r z_rᵀ
            grad_z = (g @ flat).view(-1, maps, num_fields)                   # (R, H, F)
            if ctx.needs_input_grad[0]:
                grad_hidden.append(torch.bmm(grad_z, e.unsqueeze(2)).squeeze(2))   # Σ_i dz_{h,i} e_i
            if ctx.needs_input_grad[1]:
                grad_emb.append(torch.bmm(h.unsqueeze(1), grad_z).squeeze(1))      # Σ_h h_h dz_{h,i}
        return (torch.cat(grad_hidden) if grad_hidden else None, torch.cat(grad_emb) if grad_emb else None,
                grad_weight.view_as(weight) if grad_weight is not None else None, None)
