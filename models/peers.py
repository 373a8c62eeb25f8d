"""The peers' implementations as ctrbench models: torchfm (rixwew/pytorch-fm) and DeepCTR-Torch.

`pip install -e ".[peers]"` (torchfm 0.7.0, deepctr-torch 0.3.0) registers `torchfm_<model>` and
`deepctr_<model>`; without the libraries nothing is registered and nothing fails (`missing_peers_hint`
is the line `ctrbench list` prints). Each class is a thin adapter: it checks ctrbench's input, x
LongTensor (B, F) of global feature ids, converts it to the library's own input format, runs the
library's model (`self.peer`, built with the library's own layers and initialization) and returns
logits (B,), so the protocol's BCEWithLogitsLoss, ctrbench's embedding updates and regularizers (they
look for `nn.Embedding`s, which both libraries use) apply to the peers as to our models.

- torchfm takes per-field local ids (B, F) and adds its offsets itself, into one table of sum(field_dims)
  rows as ours. Its models end in `torch.sigmoid(x.squeeze(1))`; each adapter's `logits` is the peer's
  own forward, the same calls on the same submodules, without that sigmoid (tests/test_peers.py checks
  sigmoid(logits) against the peer's forward).
- DeepCTR-Torch takes a float tensor (B, F) of columns described by `SparseFeat`s: column f holds field
  f's local id, and each field has its own table (`embedding_dict[f"f{f}"]`, the library's usual
  layout; xDeepFM and AutoInt count fields by their tables). Its models end in `PredictionLayer`, which
  adds a bias and applies a sigmoid for task="binary"; the adapters build them with task="regression",
  where the layer is the logit plus that bias and no sigmoid: the logit itself, not a sigmoid inverted
  afterwards (which would saturate). DeepCTR's own L2 terms (`l2_reg_*`) are added only by its `fit`,
  which ctrbench does not call; ctrbench's `embedding_regularizer`/`net_regularizer` are the equivalent.
  Its package asks PyPI for a newer version on import; `_silence_version_check` keeps that off the network.

Defaults are those of ctrbench's model of the same name (DCN and DCN-Mix: dcnv2's), so that `ctrbench
run --models afm,torchfm_afm,deepctr_afm` compares one configuration, except where a peer fixes
otherwise (said in its docstring); the search spaces are those models' `SEARCH_SPACE`, less the names a
peer has no parameter for. All of them take interaction "none": the pairwise products are the peers'.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from contextlib import contextmanager

import torch
from torch import nn

from . import afm, autoint, dcnv2, deepfm, fm, ipnn, nfm, xdeepfm
from .layers import FieldIds
from .registry import NONE, build_interaction, register_model

PINS = {"torchfm": "torchfm==0.7.0", "deepctr_torch": "deepctr-torch==0.3.0"}
LIBRARIES = {"torchfm": "torchfm", "deepctr": "deepctr_torch"}      # model-name prefix -> import name
# Every adapter below, by library, whether installed or not: a record naming one of them is a peer's whose
# library is missing here, not a model gone from the registry (tests/test_peers.py checks the lists).
PEER_MODELS = {
    "torchfm": ("torchfm_afm", "torchfm_dcn", "torchfm_deepfm", "torchfm_fm", "torchfm_ipnn", "torchfm_nfm",
                "torchfm_xdeepfm"),
    "deepctr_torch": ("deepctr_afm", "deepctr_autoint", "deepctr_dcnmix", "deepctr_deepfm", "deepctr_fm",
                      "deepctr_ipnn", "deepctr_nfm", "deepctr_xdeepfm"),
}
# The model of ctrbench's a peer's is compared with, where the names differ (peer name less its library prefix).
OURS = {"dcn": "dcnv2", "dcnmix": "dcnv2"}
# Training settings a space may search (ctrbench.tuning.spaces.TUNABLE_SETTINGS; not imported, which
# would import the training package from the model registry).
SETTINGS = ("embedding_regularizer", "net_regularizer", "weight_decay", "lr")
# DeepCTR-Torch reads the ids from a float tensor; float32 holds every integer up to 2^24 exactly.
FLOAT32_EXACT = 2 ** 24


def installed(library: str) -> bool:
    """Whether `library` ("torchfm" or "deepctr_torch") can be imported, without importing it."""
    return importlib.util.find_spec(library) is not None


def ours_of(model: str) -> str | None:
    """ctrbench's model that peer `model` is compared with ("torchfm_afm" -> "afm"); None for one of ours.
    Plain string work: it names peers whose library is not installed here too (stored records)."""
    prefix = next((f"{p}_" for p in LIBRARIES if model.startswith(f"{p}_")), None)
    if prefix is None:
        return None
    name = model[len(prefix):]
    return OURS.get(name, name)


def missing_peers_hint() -> str | None:
    """The line `ctrbench list` prints where a peer library is not installed; None where both are."""
    missing = [name for name in PINS if not installed(name)]
    if not missing:
        return None
    prefixes = " and ".join(f"{prefix}_*" for prefix, library in LIBRARIES.items() if library in missing)
    return (f'peers: pip install -e ".[peers]" adds {prefixes} models '
            f"(not installed: {', '.join(PINS[name] for name in missing)})")


def _space(space: dict, hparams: dict) -> dict:
    """`space` less the names that are neither the adapter's hyper-parameters nor training settings."""
    return {name: values for name, values in space.items() if name in hparams or name in SETTINGS}


def _peer_model(name: str, hparams: dict, space: dict):
    """register_model for an adapter (interaction "none"), with `space` cut to what it has."""
    return register_model(name, accepts={NONE}, hparams=hparams, search_space=_space(space, hparams))


EMBED = "size E of each feature's latent vector"
HIDDEN = "widths of the DNN's hidden layers"
DROPOUT = "dropout after each hidden layer of the DNN"
BATCH_NORM = "BatchNorm in each hidden layer of the DNN"


class _Adapter(nn.Module):
    """What every adapter shares: ctrbench's field check and interaction "none" around `self.peer`.

    DIFFERENCE says how the peer's model differs in algebra or cost from ctrbench's model it is compared
    with (`ours_of`), "" where only details such as initialization do; the suite records it with the
    peer's cells and the speed page prints it under its peer table. OURS_AS_PEER is the hyper-parameters
    that make ctrbench's model compute the peer's algebra where its defaults do not; the suite times
    ctrbench's model so configured beside the peer ({}: the defaults do, or no setting can: DIFFERENCE says
    which).
    """

    DIFFERENCE = ""
    OURS_AS_PEER: dict = {}

    def _setup(self, field_dims, interaction) -> None:
        self.fields = FieldIds(field_dims)
        self.interaction = build_interaction(interaction, self.fields.num_fields, self)

    def local_ids(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F) global ids, checked -> (B, F) per-field local ids (int64)."""
        self.fields.check(x)
        return x.long() - self.fields.lower                          # (B, F)


# ------------------------------------------------------------------------------------------- torchfm

if installed("torchfm"):

    class _TorchFM(_Adapter):
        """Input: per-field local ids (torchfm adds its own offsets). `logits` is the peer's forward
        without its closing sigmoid."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits(self.local_ids(x))                    # (B,)

    @_peer_model("torchfm_fm", hparams={"embed_dim": EMBED}, space=fm.SEARCH_SPACE)
    class TorchFMFM(_TorchFM):
        """torchfm's FactorizationMachineModel (FM). x: LongTensor (B, F) of global ids -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16):
            super().__init__()
            from torchfm.model.fm import FactorizationMachineModel
            self._setup(field_dims, interaction)
            self.peer = FactorizationMachineModel(self.fields.field_dims, embed_dim)

        def logits(self, x):
            peer = self.peer
            return (peer.linear(x) + peer.fm(peer.embedding(x))).squeeze(1)

    @_peer_model("torchfm_afm", hparams={
        "embed_dim": EMBED, "attn_dim": "size A of the attention net's hidden layer",
        "dropout": "torchfm's two dropouts (on the attention weights, on the pooled vector); applied in eval "
                   "mode too (torchfm calls F.dropout without training=)",
    }, space=afm.SEARCH_SPACE)
    class TorchFMAFM(_TorchFM):
        """torchfm's AttentionalFactorizationMachineModel (AFM). x: LongTensor (B, F) -> logits (B,).

        dropout defaults to 0, not ctrbench's 0.2: torchfm's AFM layer calls `F.dropout(..., p)` without
        `training=`, so its dropout also runs in eval mode and would make every evaluation random.
        """

        DIFFERENCE = "no dropout (ctrbench's afm: 0.2 on the attention weights)"

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, attn_dim: int = 16,
                     dropout: float = 0.0):
            super().__init__()
            from torchfm.model.afm import AttentionalFactorizationMachineModel
            self._setup(field_dims, interaction)
            self.peer = AttentionalFactorizationMachineModel(self.fields.field_dims, embed_dim, attn_dim,
                                                             (dropout, dropout))

        def logits(self, x):
            peer = self.peer
            return (peer.linear(x) + peer.afm(peer.embedding(x))).squeeze(1)

    @_peer_model("torchfm_nfm", hparams={
        "embed_dim": EMBED, "hidden": "widths of the MLP's hidden layers above the bi-interaction pooling",
        "dropout": "dropout on the pooled vector and after each hidden layer",
    }, space=nfm.SEARCH_SPACE)
    class TorchFMNFM(_TorchFM):
        """torchfm's NeuralFactorizationMachineModel (NFM). x: LongTensor (B, F) -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, hidden: tuple[int, ...] = (64,),
                     dropout: float = 0.2):
            super().__init__()
            from torchfm.model.nfm import NeuralFactorizationMachineModel
            self._setup(field_dims, interaction)
            self.peer = NeuralFactorizationMachineModel(self.fields.field_dims, embed_dim, tuple(hidden),
                                                        (dropout, dropout))

        def logits(self, x):
            peer = self.peer
            return (peer.linear(x) + peer.mlp(peer.fm(peer.embedding(x)))).squeeze(1)

    @_peer_model("torchfm_deepfm", hparams={"embed_dim": EMBED, "hidden": HIDDEN, "dropout": DROPOUT},
                 space=deepfm.SEARCH_SPACE)
    class TorchFMDeepFM(_TorchFM):
        """torchfm's DeepFactorizationMachineModel (DeepFM). x: LongTensor (B, F) -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16,
                     hidden: tuple[int, ...] = (64, 64), dropout: float = 0.2):
            super().__init__()
            from torchfm.model.dfm import DeepFactorizationMachineModel
            self._setup(field_dims, interaction)
            self.peer = DeepFactorizationMachineModel(self.fields.field_dims, embed_dim, tuple(hidden), dropout)

        def logits(self, x):
            peer = self.peer
            embed_x = peer.embedding(x)                                  # (B, F, E)
            deep = peer.mlp(embed_x.view(-1, peer.embed_output_dim))     # (B, 1)
            return (peer.linear(x) + peer.fm(embed_x) + deep).squeeze(1)

    @_peer_model("torchfm_dcn", hparams={
        "embed_dim": EMBED, "cross_layers": "number of cross layers (DCN's rank-1 x_0 x_l^T w)",
        "hidden": HIDDEN, "dropout": DROPOUT,
    }, space=dcnv2.SEARCH_SPACE)
    class TorchFMDCN(_TorchFM):
        """torchfm's DeepCrossNetworkModel (DCN v1, vector cross layers). x: LongTensor (B, F) -> logits (B,).

        Wang et al. 2017's first DCN, cross network in parallel with an MLP; defaults and space: dcnv2's.
        """

        DIFFERENCE = ("DCN v1: each cross layer is x_0 (w·x_l) + b + x_l, one weight vector of D = F·E values, where "
                      "dcnv2's default has one full-rank D × D matrix per layer (D² values); ctrbench has no DCN v1, "
                      "so no like-for-like cell")

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, cross_layers: int = 4,
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.4):
            super().__init__()
            from torchfm.model.dcn import DeepCrossNetworkModel
            self._setup(field_dims, interaction)
            self.peer = DeepCrossNetworkModel(self.fields.field_dims, embed_dim, cross_layers, tuple(hidden), dropout)

        def logits(self, x):
            peer = self.peer
            embed_x = peer.embedding(x).view(-1, peer.embed_output_dim)   # (B, F·E)
            stacked = torch.cat([peer.cn(embed_x), peer.mlp(embed_x)], dim=1)
            return peer.linear(stacked).squeeze(1)

    @_peer_model("torchfm_xdeepfm", hparams={
        "embed_dim": EMBED, "cin_layers": "feature maps of each CIN layer", "hidden": HIDDEN, "dropout": DROPOUT,
        "split_half": "half of each CIN layer but the last feeds the next, half the output",
    }, space=xdeepfm.SEARCH_SPACE)
    class TorchFMxDeepFM(_TorchFM):
        """torchfm's ExtremeDeepFactorizationMachineModel (xDeepFM). x: LongTensor (B, F) -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, cin_layers: tuple[int, ...] = (64,),
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.2, split_half: bool = True):
            super().__init__()
            from torchfm.model.xdfm import ExtremeDeepFactorizationMachineModel
            self._setup(field_dims, interaction)
            self.peer = ExtremeDeepFactorizationMachineModel(self.fields.field_dims, embed_dim, tuple(hidden),
                                                             dropout, tuple(cin_layers), split_half)

        def logits(self, x):
            peer = self.peer
            embed_x = peer.embedding(x)                                  # (B, F, E)
            deep = peer.mlp(embed_x.view(-1, peer.embed_output_dim))
            return (peer.linear(x) + peer.cin(embed_x) + deep).squeeze(1)

    @_peer_model("torchfm_ipnn", hparams={"embed_dim": EMBED, "hidden": HIDDEN, "dropout": DROPOUT},
                 space=ipnn.SEARCH_SPACE)
    class TorchFMIPNN(_TorchFM):
        """torchfm's ProductNeuralNetworkModel with method="inner" (IPNN). x: LongTensor (B, F) -> logits (B,).

        torchfm's MLP always has BatchNorm (ctrbench's ipnn defaults to none), so ipnn's batch_norm is not
        in its space.
        """

        DIFFERENCE = "BatchNorm in every hidden layer (torchfm's MLP always has it; ctrbench's ipnn defaults to none)"
        OURS_AS_PEER = {"batch_norm": True}

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16,
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.3):
            super().__init__()
            from torchfm.model.pnn import ProductNeuralNetworkModel
            self._setup(field_dims, interaction)
            self.peer = ProductNeuralNetworkModel(self.fields.field_dims, embed_dim, tuple(hidden), dropout,
                                                  method="inner")
            # torchfm builds a FeaturesLinear(field_dims, embed_dim) that its forward never reads: a dead
            # table of sum(field_dims) x E, which no gradient reaches; dropped.
            del self.peer.linear

        def logits(self, x):
            peer = self.peer
            embed_x = peer.embedding(x)                                  # (B, F, E)
            product = torch.cat([embed_x.view(-1, peer.embed_output_dim), peer.pn(embed_x)], dim=1)
            return peer.mlp(product).squeeze(1)


# ------------------------------------------------------------------------------------------- DeepCTR

def _silence_version_check() -> None:
    """deepctr_torch's `__init__` calls `utils.check_version`, which starts a thread that asks PyPI for a
    newer release (an HTTP request on every import; a line on stdout when offline) and needs `requests`,
    which deepctr-torch 0.3.0 does not declare. Nothing else uses `deepctr_torch.utils`, so a stand-in
    with a check that does nothing takes its place before the package is imported."""
    if "deepctr_torch" not in sys.modules and "deepctr_torch.utils" not in sys.modules:
        stand_in = types.ModuleType("deepctr_torch.utils")
        stand_in.check_version = lambda version: None
        sys.modules["deepctr_torch.utils"] = stand_in


@contextmanager
def _own_seed():
    """DeepCTR's BaseModel calls `torch.manual_seed(seed)`, which would reset the caller's generators (the
    protocol's seed, the data order; on a GPU also CUDA's, whose seeding waits for CUDA's first use).
    Yields a seed drawn from the caller's generator, so the model's initialization still follows the
    run's seed, and restores every generator's state afterwards."""
    seed = int(torch.randint(2 ** 31 - 1, ()))
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield seed


if installed("deepctr_torch"):

    class _DeepCTR(_Adapter):
        """Input: a float tensor (B, F), column f field f's local id (`SparseFeat(f"f{f}", field_dims[f])`).
        Built with task="regression": the output layer adds its bias and no sigmoid, so the output is the
        logit."""

        def _build(self, field_dims, interaction, embed_dim, model_class_name, linear=True, **kwargs) -> None:
            self._setup(field_dims, interaction)
            if max(self.fields.field_dims) > FLOAT32_EXACT:
                raise ValueError(f"DeepCTR-Torch reads ids from a float32 tensor, exact up to 2^24 = {FLOAT32_EXACT}; "
                                 f"the largest field has {max(self.fields.field_dims)} ids")
            _silence_version_check()
            from deepctr_torch import models
            from deepctr_torch.inputs import SparseFeat
            columns = [SparseFeat(f"f{f}", vocabulary_size=d, embedding_dim=embed_dim)
                       for f, d in enumerate(self.fields.field_dims)]
            with _own_seed() as seed:
                if linear:
                    self.peer = getattr(models, model_class_name)(columns, columns, task="regression", seed=seed,
                                                                   **kwargs)
                else:                                  # PNN takes no linear columns
                    self.peer = getattr(models, model_class_name)(columns, task="regression", seed=seed, **kwargs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            local = self.local_ids(x)                                    # (B, F)
            weight = next(self.peer.parameters())
            return self.peer(local.to(weight.dtype)).squeeze(1)          # (B, 1) -> (B,)

    @_peer_model("deepctr_fm", hparams={"embed_dim": EMBED}, space=fm.SEARCH_SPACE)
    class DeepCTRFM(_DeepCTR):
        """DeepCTR-Torch's AFM with use_attention=False: FM. x: LongTensor (B, F) -> logits (B,).

        DeepCTR-Torch has no FM model of its own; its AFM docstring calls this setting "the same as
        standard Factorization Machine".
        """

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "AFM", use_attention=False)

    @_peer_model("deepctr_afm", hparams={
        "embed_dim": EMBED, "attn_dim": "size A of the attention net (DeepCTR's attention_factor)",
        "dropout": "dropout on the attention-pooled vector (DeepCTR's afm_dropout)",
    }, space=afm.SEARCH_SPACE)
    class DeepCTRAFM(_DeepCTR):
        """DeepCTR-Torch's AFM. x: LongTensor (B, F) -> logits (B,).

        dropout defaults to DeepCTR's 0 (it drops the pooled vector, where ctrbench's afm drops the
        attention weights).
        """

        DIFFERENCE = "dropout 0, on the pooled vector (ctrbench's afm: 0.2 on the attention weights)"

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, attn_dim: int = 16,
                     dropout: float = 0.0):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "AFM", attention_factor=attn_dim, afm_dropout=dropout)

    @_peer_model("deepctr_nfm", hparams={
        "embed_dim": EMBED, "hidden": "widths of the DNN's hidden layers above the bi-interaction pooling",
        "dropout": "dropout on the pooled vector (bi_dropout) and in the DNN (dnn_dropout)",
    }, space=nfm.SEARCH_SPACE)
    class DeepCTRNFM(_DeepCTR):
        """DeepCTR-Torch's NFM (its DNN has no BatchNorm). x: LongTensor (B, F) -> logits (B,)."""

        DIFFERENCE = "no BatchNorm (ctrbench's nfm: on the pooled vector and in each hidden layer)"

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, hidden: tuple[int, ...] = (64,),
                     dropout: float = 0.2):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "NFM", dnn_hidden_units=tuple(hidden),
                        bi_dropout=dropout, dnn_dropout=dropout)

    @_peer_model("deepctr_deepfm", hparams={"embed_dim": EMBED, "hidden": HIDDEN, "dropout": DROPOUT,
                                            "batch_norm": BATCH_NORM}, space=deepfm.SEARCH_SPACE)
    class DeepCTRDeepFM(_DeepCTR):
        """DeepCTR-Torch's DeepFM. x: LongTensor (B, F) -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, hidden: tuple[int, ...] = (64, 64),
                     dropout: float = 0.2, batch_norm: bool = True):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "DeepFM", dnn_hidden_units=tuple(hidden),
                        dnn_dropout=dropout, dnn_use_bn=batch_norm)

    @_peer_model("deepctr_dcnmix", hparams={
        "embed_dim": EMBED, "cross_layers": "number of cross layers", "hidden": HIDDEN, "dropout": DROPOUT,
        "low_rank": "rank r of each expert's low-rank cross", "experts": "experts per cross layer",
        "batch_norm": BATCH_NORM,
    }, space=dcnv2.SEARCH_SPACE)
    class DeepCTRDCNMix(_DeepCTR):
        """DeepCTR-Torch's DCNMix (DCN-V2's mixture of low-rank experts). x: LongTensor (B, F) -> logits (B,).

        Cross network parallel to a DNN; defaults and space: dcnv2's (the rank: DeepCTR's 32).
        """

        DIFFERENCE = ("a mixture of 4 low-rank experts (rank 32) per cross layer, where dcnv2's default has one "
                      "full-rank D × D matrix (D = F·E)")
        OURS_AS_PEER = {"low_rank": 32, "experts": 4}

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, cross_layers: int = 4,
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.4, low_rank: int = 32,
                     experts: int = 4, batch_norm: bool = True):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "DCNMix", cross_num=cross_layers,
                        dnn_hidden_units=tuple(hidden), dnn_dropout=dropout, low_rank=low_rank, num_experts=experts,
                        dnn_use_bn=batch_norm)

    @_peer_model("deepctr_xdeepfm", hparams={
        "embed_dim": EMBED, "cin_layers": "feature maps of each CIN layer", "hidden": HIDDEN, "dropout": DROPOUT,
        "batch_norm": BATCH_NORM, "split_half": "half of each CIN layer but the last feeds the next, half the output",
    }, space=xdeepfm.SEARCH_SPACE)
    class DeepCTRxDeepFM(_DeepCTR):
        """DeepCTR-Torch's xDeepFM. x: LongTensor (B, F) -> logits (B,)."""

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, cin_layers: tuple[int, ...] = (64,),
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.2, batch_norm: bool = True,
                     split_half: bool = True):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "xDeepFM", dnn_hidden_units=tuple(hidden),
                        cin_layer_size=tuple(cin_layers), cin_split_half=split_half, dnn_dropout=dropout,
                        dnn_use_bn=batch_norm)

    @_peer_model("deepctr_autoint", hparams={
        "embed_dim": EMBED, "num_layers": "self-attention layers", "num_heads": "heads per layer (E per head: "
        "embed_dim / num_heads; DeepCTR's attention size is the embedding size)",
        "hidden": "widths of the DNN's hidden layers beside the attention; () for none", "dropout": DROPOUT,
    }, space=autoint.SEARCH_SPACE)
    class DeepCTRAutoInt(_DeepCTR):
        """DeepCTR-Torch's AutoInt. x: LongTensor (B, F) -> logits (B,).

        Residual multi-head self-attention layers over the fields, plus DeepCTR's linear term.
        """

        DIFFERENCE = ("attention width = the embedding size, 16 (DeepCTR fixes it; ctrbench's autoint defaults to 128, "
                      "BARS's best Frappe trial), a residual projection in every layer, and a linear term")
        OURS_AS_PEER = {"attn_dim": 16}

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16, num_layers: int = 6,
                     num_heads: int = 4, hidden: tuple[int, ...] = (), dropout: float = 0.0):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "AutoInt", att_layer_num=num_layers, att_head_num=num_heads,
                        dnn_hidden_units=tuple(hidden), dnn_dropout=dropout)

    @_peer_model("deepctr_ipnn", hparams={"embed_dim": EMBED, "hidden": HIDDEN, "dropout": DROPOUT},
                 space=ipnn.SEARCH_SPACE)
    class DeepCTRIPNN(_DeepCTR):
        """DeepCTR-Torch's PNN with the inner product only (IPNN). x: LongTensor (B, F) -> logits (B,).

        Its DNN has no BatchNorm, as ctrbench's ipnn by default.
        """

        def __init__(self, field_dims, interaction="none", embed_dim: int = 16,
                     hidden: tuple[int, ...] = (400, 400, 400), dropout: float = 0.3):
            super().__init__()
            self._build(field_dims, interaction, embed_dim, "PNN", linear=False, dnn_hidden_units=tuple(hidden),
                        dnn_dropout=dropout, use_inner=True, use_outter=False)
