"""What the benchmark suite measures: the cells of each profile, and how one cell is set up.

A layer cell times one pairwise-product implementation alone on random embeddings; a model cell
times a whole model's train step (forward, backward, Adam) or inference on a dataset's shape.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ctrbench.models import (ATTENTION_POOLED, available_pairs, create_model, interaction_entry,
                             list_interactions)
from ctrbench.models.layers import PairAttention, attention_pooled_pairs

PROFILES = ("quick", "full")
ATTN_DIM = 16
# Above this many bytes for one (B, P, E) or (B, F, F, E) tensor a cell is skipped, saying so:
# the whole grid has to fit a 24 GiB machine.
MAX_TENSOR_BYTES = 3 * 2**30


def purchase_field_dims() -> list[int]:
    from ctrbench.datasets.purchase import FIELD_DIMS
    return list(FIELD_DIMS)


def criteo_field_dims() -> list[int]:
    """Criteo's 39 fields: 13 bucketed integers and 26 hashed categoricals. Fixed sizes (not the
    vocabulary of any one file) so that the shape is the same on every machine."""
    return [64] * 13 + [10_000] * 26


SHAPES: dict[str, Callable[[], list[int]]] = {"purchase": purchase_field_dims, "criteo": criteo_field_dims}


@dataclass(frozen=True)
class LayerCell:
    interaction: str
    num_fields: int
    embed_dim: int
    batch: int
    mode: str               # "forward" or "train" (forward + backward)
    pooling: str = "product"  # "product": the implementation's own output; "afm": AFM's attention pooling
    dtype: str = "float32"

    @property
    def group(self) -> str:
        return f"layer {self.pooling} F={self.num_fields} E={self.embed_dim} B={self.batch} {self.mode}"

    @property
    def largest_tensor_bytes(self) -> int:
        pairs = self.num_fields * (self.num_fields - 1) // 2
        per_row = self.num_fields ** 2 if self.interaction == "einsum" else pairs
        width = max(self.embed_dim, ATTN_DIM) if self.pooling == "afm" else self.embed_dim
        return self.batch * per_row * width * torch.finfo(getattr(torch, self.dtype)).bits // 8

    def info(self) -> dict:
        return {"cell": "layer", **asdict(self), "attn_dim": ATTN_DIM,
                "output": interaction_entry(self.interaction).output}


@dataclass(frozen=True)
class ModelCell:
    model: str
    interaction: str
    shape: str              # a key of SHAPES
    batch: int
    mode: str               # "train" (forward, backward, Adam step) or "inference"

    @property
    def group(self) -> str:
        return f"model {self.shape} B={self.batch} {self.mode}"

    def info(self) -> dict:
        return {"cell": "model", **asdict(self), "num_fields": len(SHAPES[self.shape]())}


def implementations(pooling: str) -> list[str]:
    """`product`: every implementation that gives pair products or their sum on its own; `afm`: every
    implementation AFM can pool with attention (per-pair products, or fused)."""
    if pooling == "afm":
        return list_interactions(model="afm")
    return [name for name in list_interactions() if interaction_entry(name).output != ATTENTION_POOLED]


def grid(fields, embeds, batches) -> list[LayerCell]:
    return [LayerCell(name, f, e, b, mode, pooling) for pooling in ("product", "afm") for f in fields
            for e in embeds for b in batches for mode in ("forward", "train") for name in implementations(pooling)]


def layer_cells(profile: str) -> list[LayerCell]:
    if profile == "quick":
        return grid(fields=(10, 39, 100), embeds=(16,), batches=(1024,))
    return grid(fields=(10, 22, 39, 100), embeds=(16, 64), batches=(1024, 4096))


def gate_cells() -> list[LayerCell]:
    """The regression gate's cells: small enough for CI, every implementation, both modes."""
    return grid(fields=(10, 39), embeds=(16,), batches=(1024,))


def model_cells(profile: str) -> list[ModelCell]:
    batch = 1024 if profile == "quick" else 4096
    return [ModelCell(model, interaction, shape, batch, mode) for shape in SHAPES
            for mode in ("train", "inference") for model, interaction in available_pairs()]


def random_ids(field_dims: list[int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
    local = torch.stack([torch.randint(d, (batch,), generator=generator) for d in field_dims], dim=1)
    return local + offsets


def layer_step(cell: LayerCell, device: str = "cpu") -> Callable[[], torch.Tensor]:
    """A closure running the cell's work once; its result is returned so nothing is optimised away."""
    torch.manual_seed(0)
    dtype = getattr(torch, cell.dtype)
    module = interaction_entry(cell.interaction).builder(cell.num_fields).to(device)
    train = cell.mode == "train"
    emb = torch.randn(cell.batch, cell.num_fields, cell.embed_dim, dtype=dtype, device=device, requires_grad=train)
    if cell.pooling == "afm":
        attention = PairAttention(cell.embed_dim, ATTN_DIM, dropout=0.0).to(device=device, dtype=dtype)
        forward = lambda: attention_pooled_pairs(module, emb, attention)  # noqa: E731
    else:
        forward = lambda: module(emb)  # noqa: E731
    if not train:
        def run():
            with torch.no_grad():
                return forward()
        return run

    def run_train():
        out = forward()
        out.sum().backward()
        emb.grad = None
        return out
    return run_train


def model_step(cell: ModelCell, device: str = "cpu") -> Callable[[], torch.Tensor]:
    torch.manual_seed(0)
    field_dims = SHAPES[cell.shape]()
    model = create_model(cell.model, field_dims, interaction=cell.interaction).to(device)
    x = random_ids(field_dims, cell.batch).to(device)
    if cell.mode == "inference":
        model.eval()

        def infer():
            with torch.no_grad():
                return model(x)
        return infer
    y = (torch.rand(cell.batch, generator=torch.Generator().manual_seed(1)) < 0.3).float().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss
    return train_step
