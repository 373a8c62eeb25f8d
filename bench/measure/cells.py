"""What the benchmark suite measures: the cells of each profile, and how one cell is set up.

A layer cell times one pairwise-product implementation alone on random embeddings; a model cell
times a whole model's train step (forward, backward, Adam) or inference on a dataset's shape. Either
can run eager or under `torch.compile` (`compile=True`), on the CPU or a GPU: a profile's shapes
depend on the device (a GPU gets batches up to 65536), and so does which cells are compiled.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch

from ctrbench.models import (
    ATTENTION_POOLED,
    PAIRS,
    POOLED,
    available_pairs,
    create_model,
    interaction_backend,
    interaction_entry,
    list_interactions,
    list_models,
    model_entry,
    running_backend,
)
from ctrbench.models.layers import PairAttention, attention_pooled_pairs
from ctrbench.models.peers import ours_of
from ctrbench.pairs import num_pairs
from ctrbench.training.embedding_updates import DEFAULT as DEFAULT_UPDATE
from ctrbench.training.embedding_updates import build_optimizer, list_embedding_updates
from ctrbench.training.train import train_step

PROFILES = ("quick", "full")
COMPILE_CHOICES = ("auto", "all", "none")   # the profile's compiled cells, every cell also compiled, none
ATTN_DIM = 16
# Above this many bytes for one (B, P, E) or (B, F, F, E) tensor a CPU cell is skipped, saying so:
# the whole grid has to fit a 24 GiB machine.
MAX_TENSOR_BYTES = 3 * 2**30
# Off the CPU a cell of an unfused implementation is not tried when its largest tensor times this
# passes the device's memory: a train step holds several of them at once (products, hidden layer, grads).
MEMORY_FACTOR = 6


class CellCompileError(RuntimeError):
    """A compiled cell's first call (where torch.compile compiles) failed: recorded as not compiling."""


def purchase_field_dims() -> list[int]:
    from ctrbench.datasets.purchase import FIELD_DIMS
    return list(FIELD_DIMS)


def criteo_field_dims() -> list[int]:
    """Criteo's 39 fields: 13 bucketed integers and 26 hashed categoricals. Fixed sizes (not the
    vocabulary of any one file) so that the shape is the same on every machine."""
    return [64] * 13 + [10_000] * 26


def wide_field_dims() -> list[int]:
    """100 fields of 1000 ids: where P = 4950 pairs makes the pairwise product dominate a step."""
    return [1_000] * 100


SHAPES: dict[str, Callable[[], list[int]]] = {"purchase": purchase_field_dims, "criteo": criteo_field_dims,
                                              "wide": wide_field_dims}


def vocab_field_dims(rows: int, num_fields: int = 39, dense_fields: int = 13) -> list[int]:
    """Criteo's layout at a chosen table size: 13 bucketed integer fields of 64 ids, and the other
    rows shared out over 26 categorical fields (the first few one id larger), summing to `rows`."""
    categorical = num_fields - dense_fields
    rest = rows - 64 * dense_fields
    if rest < categorical:
        raise ValueError(f"{rows} rows are too few for {num_fields} fields")
    return [64] * dense_fields + [rest // categorical + (f < rest % categorical) for f in range(categorical)]


# The vocabulary axis: whole-model train steps on Criteo's layout at these table sizes (rows of the
# embedding tables), each with every embedding-update strategy (full profile).
VOCAB_ROWS = (40_000, 1_000_000, 10_000_000)


@dataclass(frozen=True)
class LayerCell:
    interaction: str
    num_fields: int
    embed_dim: int
    batch: int
    mode: str               # "forward" or "train" (forward + backward)
    pooling: str = "product"  # "product": the implementation's own output; "afm": AFM's attention pooling
    dtype: str = "float32"
    compile: bool = False   # the forward under torch.compile

    @property
    def attn_dim(self) -> int:
        """The attention net's width where pooling == "afm" (not a field: cell ids stay as they were)."""
        return ATTN_DIM

    @property
    def group(self) -> str:
        # An eager cell's group is the regression gate's key: it stays as it was before compiled cells.
        group = f"layer {self.pooling} F={self.num_fields} E={self.embed_dim} B={self.batch} {self.mode}"
        return group + (" compiled" if self.compile else "")

    @property
    def largest_tensor_bytes(self) -> int:
        pairs = num_pairs(self.num_fields)
        per_row = self.num_fields ** 2 if self.interaction == "einsum" else pairs
        width = max(self.embed_dim, ATTN_DIM) if self.pooling == "afm" else self.embed_dim
        return self.batch * per_row * width * torch.finfo(getattr(torch, self.dtype)).bits // 8

    def info(self) -> dict:
        return {"cell": "layer", **cell_fields(self), "attn_dim": ATTN_DIM,
                "output": interaction_entry(self.interaction).output}


@dataclass(frozen=True)
class ModelCell:
    model: str
    interaction: str
    shape: str              # a key of SHAPES
    batch: int
    mode: str               # "train" (forward, backward, Adam step) or "inference"
    compile: bool = False   # the model under torch.compile (the optimizer step stays eager)
    rows: int | None = None  # embedding rows on Criteo's layout (vocab_field_dims); None: the shape's own
    embedding_optimizer: str = DEFAULT_UPDATE   # how the train step updates the tables (training.embedding_updates)
    # ((hyper-parameter, value), ...) set other than the model's defaults: ctrbench's model configured as a
    # peer's (the peer adapter's OURS_AS_PEER); () for the defaults
    config: tuple = ()

    @property
    def group(self) -> str:
        group = f"model {self.shape} B={self.batch} {self.mode}" if self.rows is None else \
            f"model rows={self.rows} F={len(self.field_dims())} B={self.batch} {self.mode}"
        return group + (" compiled" if self.compile else "")

    def field_dims(self) -> list[int]:
        return SHAPES[self.shape]() if self.rows is None else vocab_field_dims(self.rows)

    def info(self) -> dict:
        field_dims = self.field_dims()
        info = {"cell": "model", **cell_fields(self), "num_fields": len(field_dims), "vocab_rows": sum(field_dims),
                "embedding_optimizer": self.embedding_optimizer}
        if ours_of(self.model):   # stored with the peer's cell: the page reads them where the peer is not installed
            adapter = model_entry(self.model).builder
            if getattr(adapter, "DIFFERENCE", ""):
                info["difference"] = adapter.DIFFERENCE
            if getattr(adapter, "OURS_AS_PEER", {}):
                info["ours_as_peer"] = dict(adapter.OURS_AS_PEER)
        return info


def cell_fields(cell) -> dict:
    """The cell's fields for extra_info; `compile`, `rows`, `embedding_optimizer` and `config` only where set
    (not the default), so the records and ids of cells made before them read as before."""
    fields = asdict(cell)
    if "config" in fields:
        if fields["config"]:
            fields["config"] = dict(fields["config"])
        else:
            del fields["config"]
    if not fields["compile"]:
        del fields["compile"]
    if fields.get("rows", 0) is None:
        del fields["rows"]
    if fields.get("embedding_optimizer") == DEFAULT_UPDATE:
        del fields["embedding_optimizer"]
    return fields


def cell_id(cell) -> str:
    """pytest's id of a cell: its fields joined by '-', with '-compiled' on compiled cells only."""
    return "-".join(config_text(v) if k == "config" else str(v) for k, v in cell_fields(cell).items()
                    if k != "compile") + ("-compiled" if cell.compile else "")


def config_text(config: dict) -> str:
    """{"low_rank": 32, "experts": 4} -> "low_rank=32,experts=4" (a cell's id, a table's label)."""
    return ",".join(f"{name}={value}" for name, value in config.items())


def runs_on(name: str, device_type: str) -> bool:
    """Whether implementation `name` runs its own code on this kind of device: one whose module
    declares other `devices` (afm_kernel: CPU only, afm_fused elsewhere) would only time another again."""
    devices = getattr(interaction_entry(name).builder, "devices", None)
    return not devices or device_type in devices


def implementations(pooling: str, device_type: str | None = None) -> list[str]:
    """`product`: every implementation that gives pair products or their sum from the embeddings alone
    (`module(emb)`); `afm`: every implementation AFM can pool with attention (per-pair products, or fused).
    The kinds that take a model's weights (FiBiNET's bilinear, xDeepFM's CIN) are timed inside their models'
    cells, and "none" computes nothing. With `device_type`, only those that run their own code there."""
    if pooling == "afm":
        names = list_interactions(model="afm")
    else:
        names = [name for name in list_interactions() if interaction_entry(name).output in (PAIRS, POOLED)]
    return [name for name in names if device_type is None or runs_on(name, device_type)]


def grid(fields, embeds, batches, device_type: str | None = None) -> list[LayerCell]:
    return [LayerCell(name, f, e, b, mode, pooling) for pooling in ("product", "afm") for f in fields
            for e in embeds for b in batches for mode in ("forward", "train")
            for name in implementations(pooling, device_type)]


def with_compiled(cells: list, chosen: Callable[[object], bool]) -> list:
    """Each cell, followed by its compiled twin where `chosen(cell)`: eager and compiled side by side."""
    out = []
    for cell in cells:
        out.append(cell)
        if chosen(cell):
            out.append(replace(cell, compile=True))
    return out


def layer_cells(profile: str, device_type: str = "cpu", compile: str = "auto") -> list[LayerCell]:
    """CPU: B = 1024, F = 10 and 39 (full: B = 4096 too, F = 22 and 100 too: a per-pair AFM step at F = 100
    takes seconds on two cores, and these cells ran half of the quick profile's time). GPU: B = 65536 (full:
    4096 to 65536). Compiled only with compile="all": the whole-model cells carry the compiled axis, where a
    user would compile."""
    if device_type == "cpu":
        cells = (grid(fields=(10, 39), embeds=(16,), batches=(1024,)) if profile == "quick" else
                 grid(fields=(10, 22, 39, 100), embeds=(16, 64), batches=(1024, 4096)))
    elif profile == "quick":
        cells = grid(fields=(10, 39, 100), embeds=(16,), batches=(65536,), device_type=device_type)
    else:
        cells = grid(fields=(10, 22, 39, 100), embeds=(16, 64), batches=(4096, 16384, 65536), device_type=device_type)
    return with_compiled(cells, lambda cell: compile == "all")


def gate_cells() -> list[LayerCell]:
    """The regression gate's cells: small enough for CI, every implementation, both modes."""
    return grid(fields=(10, 39), embeds=(16,), batches=(1024,))


def compiled_pairs(device_type: str = "cpu") -> set[tuple[str, str]]:
    """The (model, implementation) pairs the profiles compile by default on `device_type`: what a user
    would compile first (each model's default implementation) and AFM's fused paths that run their own
    code there, whose hand-written backwards the compiler cannot see into (afm_kernel's operators it
    traces as opaque calls, fusing the rest of the model)."""
    fused = {("afm", name) for name in ("afm_fused", "afm_kernel") if runs_on(name, device_type)}
    return {(name, model_entry(name).default_interaction) for name in list_models()} | fused


# (shape, batch) of the whole-model cells per device kind and profile, and of those compiled by default.
MODEL_SHAPES = {
    ("cpu", "quick"): [("purchase", 1024), ("criteo", 1024)],
    ("cpu", "full"): [("purchase", 4096), ("criteo", 4096)],
    ("gpu", "quick"): [("criteo", 65536), ("criteo", 16384), ("wide", 16384)],
    ("gpu", "full"): [("purchase", 65536), ("criteo", 16384), ("criteo", 65536), ("wide", 16384)],
}
# The quick profiles compile train steps only (what a compiled model is for), at one shape: compiling
# costs 5-40 s a cell on 2 CPU cores (afm_fused at F=39: 2 min, its chunk loop unrolled), and about
# as much on a GPU host. The GPU's also compiles AFM's indexed model at every shape (the baseline).
COMPILED_QUICK = {"cpu": ("purchase", 1024, "train"), "gpu": ("criteo", 65536, "train")}
# The quick CPU profile compiles the FM family's steps only, the models whose pairwise product is the question;
# compiling each of the field's other models (IPNN ... FinalMLP) costs 20-50 s more on 2 cores: the full
# profile, and the GPU's quick one, have them.
QUICK_COMPILED_MODELS = ("fm", "nfm", "deepfm", "fwfm", "afm", "qafm")


def model_pairs(device_type: str) -> list[tuple[str, str]]:
    """CPU: every valid (model, implementation). GPU: each model's default implementation and every AFM
    implementation that runs its own code there (the per-pair ones are timed alone in the layer cells)."""
    if device_type == "cpu":
        return available_pairs()
    defaults = {(name, model_entry(name).default_interaction) for name in list_models()}
    return [(model, name) for model, name in available_pairs()
            if ((model, name) in defaults or model == "afm") and runs_on(name, device_type)]


def vocab_cells(profile: str, device_type: str = "cpu") -> list[ModelCell]:
    """The vocabulary axis: full: each model's default implementation at every VOCAB_ROWS size with every
    embedding-update strategy (train steps, B = 4096 on the CPU, 65536 on a GPU). quick: one small cell,
    FM's train step with row-wise Adagrad beside the Criteo shape's dense-Adam cell (same group)."""
    if profile == "quick":
        batch = dict(MODEL_SHAPES["cpu" if device_type == "cpu" else "gpu", "quick"])["criteo"]
        return [ModelCell("fm", model_entry("fm").default_interaction, "criteo", batch, "train",
                          embedding_optimizer="rowwise_adagrad")]
    batch = 4096 if device_type == "cpu" else 65536
    return [ModelCell(model, model_entry(model).default_interaction, "criteo", batch, "train", rows=rows,
                      embedding_optimizer=strategy)
            for rows in VOCAB_ROWS for model in list_models() for strategy in list_embedding_updates()]


def as_peer_cells(cells: list[ModelCell]) -> list[ModelCell]:
    """For each peer model among `cells` whose adapter declares OURS_AS_PEER (models/peers.py): ctrbench's
    model configured so, with its default implementation, at the peer cell's shape, batch and mode: the
    like-for-like cell beside the peer's (two peers of one configuration share it)."""
    found = []
    for cell in cells:
        ours = ours_of(cell.model)
        settings = getattr(model_entry(cell.model).builder, "OURS_AS_PEER", {}) if ours else {}
        if settings:
            twin = ModelCell(ours, model_entry(ours).default_interaction, cell.shape, cell.batch, cell.mode,
                             config=tuple(settings.items()))
            if twin not in found:
                found.append(twin)
    return found


def model_cells(profile: str, device_type: str = "cpu", compile: str = "auto") -> list[ModelCell]:
    kind = "cpu" if device_type == "cpu" else "gpu"
    cells = [ModelCell(model, interaction, shape, batch, mode) for shape, batch in MODEL_SHAPES[kind, profile]
             for mode in ("train", "inference") for model, interaction in model_pairs(device_type)]
    cells += as_peer_cells(cells)
    cells += vocab_cells(profile, device_type)
    chosen_pairs = compiled_pairs(device_type)

    def chosen(cell: ModelCell) -> bool:
        if compile != "auto":
            return compile == "all"
        if cell.config:           # a like-for-like cell is read beside its peer's eager cell only
            return False
        if profile == "full":
            return (cell.model, cell.interaction) in chosen_pairs
        if (cell.model, cell.interaction, cell.mode) == ("afm", "triu_index", "train") and not cell.rows:
            # AFM's indexed model compiled at every shape: the front page's "× torch.compile" is measured
            # where its fastest step is (on the CPU the Criteo shape's compile costs ~30 s more)
            return True
        return ((cell.shape, cell.batch, cell.mode) == COMPILED_QUICK[kind]
                and (cell.model, cell.interaction) in chosen_pairs
                and (kind == "gpu" or cell.model in QUICK_COMPILED_MODELS))
    cells = with_compiled(cells, chosen)
    if kind == "gpu":
        # Every eager cell first (fast on a GPU), then the compiled ones, AFM's at F=39, B=65536 first: a
        # time budget that runs out during the compilations leaves all the eager numbers and those.
        first = COMPILED_QUICK["gpu"][:2]
        cells.sort(key=lambda cell: (cell.compile, cell.compile and cell.model != "afm",
                                     cell.compile and (cell.shape, cell.batch) != first))
    return cells


def too_large(cell: LayerCell, device: torch.device) -> str | None:
    """Why a layer cell is not tried on `device` (its largest tensor would not fit), or None."""
    size = cell.largest_tensor_bytes
    if device.type == "cpu":
        if size > MAX_TENSOR_BYTES:
            return (f"{cell.interaction} at {cell.group} would hold a {size / 2**30:.1f} GiB tensor "
                    f"(limit {MAX_TENSOR_BYTES / 2**30:.0f} GiB on this suite)")
        return None
    memory = device_memory_bytes(device)
    if interaction_entry(cell.interaction).output == ATTENTION_POOLED or memory is None:
        return None       # a fused pooling never holds (B, P, E)
    if size * MEMORY_FACTOR > memory:
        return (f"{cell.interaction} at {cell.group}: largest tensor {size / 2**30:.1f} GiB × {MEMORY_FACTOR} "
                f"> {memory / 2**30:.1f} GiB of device memory")
    return None


# Upper bound on a train step's resident bytes per table float: the weights, a dense gradient and
# Adam's two moments (dense Adam; the lazy strategies hold less).
TABLE_COPIES = 4


def model_too_large(cell: ModelCell, device: torch.device) -> str | None:
    """Why a vocabulary cell is not tried (its tables, gradient and optimizer state would pass half of the
    device's memory: the machine is shared), or None."""
    if cell.rows is None:
        return None
    embed_dim = model_entry(cell.model).hparams.get("embed_dim", (16, ""))[0]
    size = TABLE_COPIES * cell.rows * (embed_dim + 1) * 4
    memory = device_memory_bytes(torch.device(device))
    if memory is not None and size > memory / 2:
        return (f"{cell.model} with {cell.rows:,} embedding rows would hold up to {size / 2**30:.1f} GiB "
                f"(tables, gradient, optimizer state) > half of {memory / 2**30:.1f} GiB")
    return None


def device_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def random_ids(field_dims: list[int], batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
    local = torch.stack([torch.randint(d, (batch,), generator=generator) for d in field_dims], dim=1)
    return local + offsets


def compiled(fn):
    """`fn` under torch.compile, compiled afresh: dynamo's caches are per code object, so without a
    reset a later cell of the same model class would hit the recompile limit (and run eager) or get a
    dynamic-shape graph after a shape change, and not be the graph a user's single model gets."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def layer_step(cell: LayerCell, device: str = "cpu") -> Callable[[], torch.Tensor]:
    """A closure running the cell's work once; its result is returned so nothing is optimised away.
    `step.backend` names the code that runs it."""
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
    if cell.compile:
        forward = compiled(forward)
    if not train:
        def run():
            with torch.no_grad():
                return forward()
        run.backend = interaction_backend(module, device, dtype, cell.embed_dim, ATTN_DIM)
        return run

    def run_train():
        out = forward()
        out.sum().backward()
        emb.grad = None
        return out
    run_train.backend = interaction_backend(module, device, dtype, cell.embed_dim, ATTN_DIM)
    return run_train


def model_step(cell: ModelCell, device: str = "cpu") -> Callable[[], torch.Tensor]:
    """A closure running one train step or inference; `step.backend` names the code that computes the
    model's pairwise product (running_backend)."""
    torch.manual_seed(0)
    field_dims = cell.field_dims()
    module = create_model(cell.model, field_dims, interaction=cell.interaction, **dict(cell.config)).to(device)
    model = compiled(module) if cell.compile else module
    x = random_ids(field_dims, cell.batch).to(device)
    backend = running_backend(module, device)
    if cell.mode == "inference":
        module.eval()

        def infer():
            with torch.no_grad():
                return model(x)
        infer.backend = backend
        return infer
    y = (torch.rand(cell.batch, generator=torch.Generator().manual_seed(1)) < 0.3).float().to(device)
    optimizer = build_optimizer(module, cell.embedding_optimizer, lr=1e-3)   # "adam": one Adam over all
    loss_fn = torch.nn.BCEWithLogitsLoss()
    module.train()

    def step():
        return train_step(model, optimizer, loss_fn, x, y)
    step.backend = backend
    step.optimizer = optimizer          # its state's bytes are a cost of the cell (optimizer_state_bytes)
    return step
