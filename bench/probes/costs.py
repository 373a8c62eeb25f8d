"""Cost measures that do not depend on how busy the machine is: FLOPs (torch's count and the
algebra's), bytes autograd saves, and the kernel's own peak-RSS counter for one call."""
from __future__ import annotations

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


def pair_product_flops(batch: int, num_fields: int, embed_dim: int) -> int:
    """The pair products q_p = v_i ⊙ v_j of one forward: B·P·E multiplies (P = F(F-1)/2)."""
    return batch * (num_fields * (num_fields - 1) // 2) * embed_dim


def afm_pooling_flops(batch: int, num_fields: int, embed_dim: int, attn_dim: int, dropout: bool = False) -> int:
    """One forward of AFM's attention pooling, (B, F, E) -> (B, E), as the algebra needs it.

    With P = F(F-1)/2 pairs, per sample and pair p (E-vectors q_p, A hidden units):

    - pair products q_p = v_i ⊙ v_j:                    E multiplies              -> B·P·E
    - hidden layer z_p = W q_p + b (W: A×E):             2·E·A (multiply + add)    -> 2·B·P·E·A
      its bias and ReLU:                                 2·A                       -> 2·B·P·A
    - score s_p = h · ReLU(z_p):                         2·A                       -> 2·B·P·A
    - softmax over the P scores (exp, sum, divide):      3                         -> 3·B·P
    - dropout on the weights (model cells with p > 0):   1 (times the scaled mask) -> B·P
    - weighted sum Σ_p a_p q_p:                          2·E (multiply + add)      -> 2·B·P·E

    Total B·P·(3E + 2EA + 4A + 3 [+ 1]). The count is the algebra's, not any implementation's: a fused
    kernel that never writes q or z does the same arithmetic, an unfused one the same plus memory traffic.
    The softmax's max-subtraction and the additions that accumulate gradients are not counted.
    """
    pairs = num_fields * (num_fields - 1) // 2
    per_pair = 3 * embed_dim + 2 * embed_dim * attn_dim + 4 * attn_dim + 3 + (1 if dropout else 0)
    return batch * pairs * per_pair


# A backward needs about twice its forward's FLOPs: for a product y = a·b (elementwise or matrix), dL/da
# = g·b and dL/db = a·g are one forward's work each. So forward + backward = 3 × forward.
TRAIN_FACTOR = 3


def algebraic_flops(cell) -> int | None:
    """FLOPs the algebra of a suite cell needs, the same for every implementation of that cell (so that
    FLOPs / seconds compares implementations like with like, and a fused kernel's is not ~0 as torch's
    flop counter, which sees matrix-class operators only, makes it). None where not defined.

    Layer cells (cells.LayerCell; B, F, E, A = cells.ATTN_DIM):
      - pooling "product", forward: the pair products, B·P·E (pair_product_flops), whatever the
        implementation outputs (the P products, or their sum, which is left uncounted);
      - pooling "afm", forward: AFM's attention pooling, B·P·(3E + 2EA + 4A + 3) (afm_pooling_flops);
      - mode "train" (forward, then backward of out.sum()): TRAIN_FACTOR = 3 × the forward, since each
        term's backward needs ≈ 2× its forward (the gradient with respect to each of its two operands;
        for the hidden layer, the matrix work, dW = Σ g qᵀ and dq = Wᵀ g are 2·B·P·E·A each).
    AFM model cells (cells.ModelCell with model "afm"; its default E, A and dropout):
      - inference (eval mode, no dropout): the linear term (B·F adds, one per field, and the bias: B)
        + the pooling + the projection p·pooled (2·B·E) + the sum of the two terms (B):
        B·(F + 2E + 2) + afm_pooling_flops;
      - train: 3 × the forward (with the pooling's dropout where the model has it). The optimizer's
        update is left out: its cost depends on the embedding-update strategy and the table sizes, not on
        the implementation of the interaction. Embedding lookups are gathers (no FLOPs), and the loss's
        few FLOPs per sample are left out too.
    """
    mode = cell.mode
    if getattr(cell, "pooling", None) is not None:          # a layer cell
        if cell.pooling == "product":
            forward = pair_product_flops(cell.batch, cell.num_fields, cell.embed_dim)
        elif cell.pooling == "afm":
            forward = afm_pooling_flops(cell.batch, cell.num_fields, cell.embed_dim, cell.attn_dim)
        else:
            return None
        return {"forward": forward, "train": TRAIN_FACTOR * forward}.get(mode)
    if getattr(cell, "model", None) != "afm":
        return None
    from ctrbench.models import model_entry
    defaults = {name: default for name, (default, _) in model_entry("afm").hparams.items()}
    embed_dim, attn_dim, dropout = defaults["embed_dim"], defaults["attn_dim"], defaults.get("dropout", 0.0)
    batch, num_fields = cell.batch, len(cell.field_dims())

    def forward(with_dropout: bool) -> int:
        return (batch * (num_fields + 2 * embed_dim + 2)
                + afm_pooling_flops(batch, num_fields, embed_dim, attn_dim, dropout=with_dropout))
    if mode == "inference":
        return forward(False)
    return TRAIN_FACTOR * forward(bool(dropout)) if mode == "train" else None


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
