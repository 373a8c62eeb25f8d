"""The peers' implementations (models/peers.py): logits on ctrbench ids, training, equality with our
models where the algebra is the same, and a `ctrbench run` beside ours. Needs `pip install -e ".[peers]"`;
CI does not install it, so all but the first test skip there."""
import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from ctrbench.commands import main
from ctrbench.measure.cells import SHAPES, ModelCell, model_cells, random_ids
from ctrbench.models import create_model, list_models, model_entry
from ctrbench.models.peers import PEER_MODELS, installed, missing_peers_hint, ours_of

HAVE_TORCHFM, HAVE_DEEPCTR = installed("torchfm"), installed("deepctr_torch")
needs_torchfm = pytest.mark.skipif(not HAVE_TORCHFM, reason='torchfm is not installed (pip install -e ".[peers]")')
needs_deepctr = pytest.mark.skipif(not HAVE_DEEPCTR,
                                   reason='deepctr-torch is not installed (pip install -e ".[peers]")')
needs_both = pytest.mark.skipif(not (HAVE_TORCHFM and HAVE_DEEPCTR),
                                reason='torchfm and deepctr-torch are not installed (pip install -e ".[peers]")')
PEERS = list_models("torchfm_*") + list_models("deepctr_*")
NOT_INSTALLED = 'the peers are not installed (pip install -e ".[peers]")'


def each(models: list[str]) -> list:
    """Parameters over `models`, or one skipped with the reason where there are none (not installed)."""
    return models or [pytest.param(None, marks=pytest.mark.skip(reason=NOT_INSTALLED))]
FIELD_DIMS = [4, 3, 6, 2, 5, 7, 3, 8, 6, 4]


def test_what_is_registered_follows_what_is_installed(capsys):
    """Without a library nothing of it is registered and `ctrbench list` says how to get it."""
    assert list_models("torchfm_*") == (list(PEER_MODELS["torchfm"]) if HAVE_TORCHFM else [])
    assert list_models("deepctr_*") == (list(PEER_MODELS["deepctr_torch"]) if HAVE_DEEPCTR else [])
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    hint = missing_peers_hint()
    if HAVE_TORCHFM and HAVE_DEEPCTR:
        assert hint is None and "peers:" not in out and "model torchfm_fm:" in out and "model deepctr_afm:" in out
    else:
        assert hint in out.splitlines() and 'pip install -e ".[peers]"' in hint and "not installed" in hint


def test_the_settings_a_peer_space_may_name_are_the_tuners():
    from ctrbench.models.peers import SETTINGS
    from ctrbench.tuning.spaces import TUNABLE_SETTINGS
    assert SETTINGS == TUNABLE_SETTINGS


@needs_both
def test_the_libraries_models_are_all_there():
    assert {"torchfm_fm", "torchfm_afm", "torchfm_nfm", "torchfm_deepfm", "torchfm_dcn", "torchfm_xdeepfm",
            "torchfm_ipnn", "deepctr_afm", "deepctr_nfm", "deepctr_deepfm", "deepctr_dcnmix", "deepctr_xdeepfm",
            "deepctr_autoint", "deepctr_ipnn"} <= set(PEERS)


@pytest.mark.parametrize("model_name", each(PEERS))
def test_forward_gives_logits_and_is_the_peers_own_forward(model_name):
    """(B,) logits on global ids; their sigmoid is what the peer's own forward (ending in a sigmoid)
    gives on its own input format."""
    torch.manual_seed(0)
    model = create_model(model_name, FIELD_DIMS).eval()
    x = random_ids(FIELD_DIMS, 64)
    logits = model(x)
    assert logits.shape == (64,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    local = x - model.fields.lower
    with torch.no_grad():
        if model_name.startswith("torchfm_"):
            probabilities = model.peer(local)
        else:
            model.peer.out.task = "binary"             # DeepCTR's own output layer, with its sigmoid
            try:
                probabilities = model.peer(local.float()).squeeze(1)
            finally:
                model.peer.out.task = "regression"
    torch.testing.assert_close(torch.sigmoid(logits.detach()), probabilities, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("model_name", each(PEERS))
def test_construction_leaves_the_callers_random_state_alone(model_name):
    """DeepCTR's BaseModel calls torch.manual_seed; the adapter keeps the run's seed in charge."""
    torch.manual_seed(3)
    first = create_model(model_name, FIELD_DIMS)
    after_first = torch.rand(3)
    torch.manual_seed(3)
    second = create_model(model_name, FIELD_DIMS)
    assert torch.equal(torch.rand(3), after_first)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(4)
    other = create_model(model_name, FIELD_DIMS)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values())
               if a.is_floating_point() and a.numel() > 1)


def planted_problem(rows=1024, seed=0):
    """Ids with a signal: a first-order effect per field and a planted pair (fields 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    field_dims = [5, 6, 4, 7]
    local = torch.stack([torch.randint(d, (rows,), generator=generator) for d in field_dims], dim=1)
    first = [torch.randn(d, generator=generator) for d in field_dims]
    pair = 2 * torch.randn(field_dims[0], field_dims[1], generator=generator)
    score = sum(first[f][local[:, f]] for f in range(len(field_dims))) + pair[local[:, 0], local[:, 1]]
    y = (torch.rand(rows, generator=generator) < torch.sigmoid(score)).float()
    offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
    return field_dims, local + offsets, y


@pytest.mark.parametrize("model_name", each(PEERS))
def test_thirty_adam_steps_lower_the_loss(model_name):
    field_dims, x, y = planted_problem()
    torch.manual_seed(0)
    model = create_model(model_name, field_dims)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()

    def evaluate():
        model.eval()
        with torch.no_grad():
            return float(loss_fn(model(x), y))
    before = evaluate()
    model.train()
    for step in range(30):
        rows = slice((step % 4) * 256, (step % 4 + 1) * 256)
        optimizer.zero_grad()
        loss_fn(model(x[rows]), y[rows]).backward()
        optimizer.step()
        model.train()
    after = evaluate()
    assert after < before - 0.01, f"{model_name}: loss {before:.4f} -> {after:.4f}"


# ------------------------------------------------------------------------ equal to ours, weight for weight

def copy_into_torchfm(ours: nn.Module, peer_adapter: nn.Module, renames: dict[str, str], zeros=()) -> None:
    """Our state dict, keys renamed (prefixes), into the torchfm peer, `zeros` its entries set to 0; every
    peer entry must be given."""
    state = {key: torch.zeros_like(peer_adapter.peer.state_dict()[key]) for key in zeros}
    for key, value in ours.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                state[new + key[len(old):]] = value
                break
    peer = peer_adapter.peer
    state = {k: v.reshape(peer.state_dict()[k].shape) for k, v in state.items()}
    peer.load_state_dict(state, strict=True)


TORCHFM_BASE = {"linear.weight.weight": "linear.fc.weight", "linear.bias": "linear.bias",
                "embedding.embedding.weight": "embedding.embedding.weight"}


def same_logits(ours, theirs, field_dims=FIELD_DIMS):
    x = random_ids(field_dims, 128)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-6, atol=1e-6)


def randomized(model: nn.Module) -> nn.Module:
    """Every parameter and BatchNorm statistic drawn at random (ours start with zero linear weights)."""
    torch.manual_seed(5)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name else 0.3 * torch.randn_like(tensor))
    return model


@needs_torchfm
def test_torchfm_fm_is_our_fm():
    ours, theirs = randomized(create_model("fm", FIELD_DIMS)), create_model("torchfm_fm", FIELD_DIMS)
    copy_into_torchfm(ours, theirs, TORCHFM_BASE)
    same_logits(ours, theirs)


@needs_torchfm
def test_torchfm_afm_is_our_afm():
    """torchfm's attention projection has a bias (it cancels in the softmax) and its output Linear one
    (ours is the linear term's bias): both 0, the rest ours."""
    ours = randomized(create_model("afm", FIELD_DIMS, dropout=0.0))
    theirs = create_model("torchfm_afm", FIELD_DIMS)
    copy_into_torchfm(ours, theirs, {**TORCHFM_BASE, "attention.hidden.": "afm.attention.",
                                     "attention.score.weight": "afm.projection.weight",
                                     "projection.weight": "afm.fc.weight"},
                      zeros=("afm.projection.bias", "afm.fc.bias"))
    same_logits(ours, theirs)


@needs_torchfm
def test_torchfm_nfm_is_our_nfm():
    ours = randomized(create_model("nfm", FIELD_DIMS, hidden=(32, 16), dropout=0.0))
    theirs = create_model("torchfm_nfm", FIELD_DIMS, hidden=(32, 16), dropout=0.0)
    copy_into_torchfm(ours, theirs, {**TORCHFM_BASE, "pooled_norm.0.": "fm.1.", "mlp.layers.": "mlp.mlp."})
    same_logits(ours, theirs)


@needs_torchfm
def test_torchfm_deepfm_is_our_deepfm():
    ours = randomized(create_model("deepfm", FIELD_DIMS, hidden=(32, 16), dropout=0.0))
    theirs = create_model("torchfm_deepfm", FIELD_DIMS, hidden=(32, 16), dropout=0.0)
    copy_into_torchfm(ours, theirs, {**TORCHFM_BASE, "mlp.layers.": "mlp.mlp."})
    same_logits(ours, theirs)


def copy_into_deepctr(ours: nn.Module, peer_adapter: nn.Module) -> None:
    """Our global tables split into DeepCTR's per-field ones; our linear bias into its output layer's."""
    peer = peer_adapter.peer
    with torch.no_grad():
        for f, (start, size) in enumerate(zip(ours.fields.lower.tolist(), ours.fields.field_dims)):
            peer.embedding_dict[f"f{f}"].weight.copy_(ours.embedding.embedding.weight[start:start + size])
            peer.linear_model.embedding_dict[f"f{f}"].weight.copy_(ours.linear.weight.weight[start:start + size])
        peer.out.bias.copy_(ours.linear.bias.reshape(1))


@needs_deepctr
def test_deepctr_fm_is_our_fm():
    ours, theirs = randomized(create_model("fm", FIELD_DIMS)), create_model("deepctr_fm", FIELD_DIMS)
    copy_into_deepctr(ours, theirs)
    same_logits(ours, theirs)


@needs_deepctr
def test_deepctr_afm_is_our_afm():
    ours = randomized(create_model("afm", FIELD_DIMS, dropout=0.0))
    theirs = create_model("deepctr_afm", FIELD_DIMS)
    copy_into_deepctr(ours, theirs)
    layer = theirs.peer.fm
    with torch.no_grad():
        layer.attention_W.copy_(ours.attention.hidden.weight.T)
        layer.attention_b.copy_(ours.attention.hidden.bias)
        layer.projection_h.copy_(ours.attention.score.weight.T)
        layer.projection_p.copy_(ours.projection.weight.T)
    same_logits(ours, theirs)


# ----------------------------------------------------------------------------- ctrbench run, side by side

@needs_both
def test_ctrbench_run_trains_ours_and_the_peers_on_the_same_splits(tmp_path):
    models = ["afm", "torchfm_afm", "deepctr_afm"]
    assert main(["run", "--models", ",".join(models), "--dataset", "purchase", "--data-option", "rows=3000",
                 "--max-epochs", "1", "--seeds", "1", "--results-dir", str(tmp_path), "--quiet",
                 "--threads", "1"]) == 0
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / "purchase").glob("*.json"))]
    assert sorted(r["model"] for r in records) == sorted(models)
    assert all(r["interaction"] == ("triu_index" if r["model"] == "afm" else "none") for r in records)
    assert all(0 < r["test"]["auc"] < 1 for r in records)
    # the split is drawn from the data set, its options and the seed: the same for the three
    splits = {json.dumps({k: r[k] for k in ("dataset", "dataset_options", "seed", "rows", "field_dims")},
                         sort_keys=True) for r in records}
    assert len(splits) == 1, splits


# ---------------------------------------------------------------------- ctrbench's regularizers on DeepCTR

@pytest.mark.parametrize("model_name", each(list_models("deepctr_*")))
def test_the_embedding_regularizer_takes_deepctrs_per_field_tables(model_name):
    """tests/test_regularizers.py's reference indexes every table with the global ids, as our one-table
    models do; DeepCTR has one table per field, read with local ids: the same check, per field."""
    from ctrbench.training.regularizers import Regularizer
    torch.manual_seed(0)
    field_dims = [4, 5, 3, 6]
    model = create_model(model_name, field_dims).double().eval()
    x = torch.tensor([[0, 4, 9, 12], [1, 4, 10, 17], [0, 5, 9, 12]])
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    local = x - model.fields.lower
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}

    def reference():
        total = torch.zeros((), dtype=torch.float64)
        for f in range(len(field_dims)):
            for tables_of in (model.peer.embedding_dict, getattr(model.peer.linear_model, "embedding_dict", {})):
                if f"f{f}" in tables_of:
                    weight = tables_of[f"f{f}"].weight
                    total = total + 0.5 * 0.3 * weight[torch.unique(local[:, f])].pow(2).sum()
        return total + sum(0.5 * 0.2 * p.pow(2).sum() for p in model.parameters() if id(p) not in tables)

    def gradients(penalty_of):
        model.zero_grad()
        (nn.functional.binary_cross_entropy_with_logits(model(x), y) + penalty_of()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected = gradients(reference)
    with Regularizer(model, embedding=0.3, net=0.2) as regularizer:
        got = gradients(regularizer.penalty)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12, msg=name)


def _train_flops(model, field_dims, x, **hparams) -> int:
    """FLOPs of forward + backward as torch's FlopCounterMode counts them (the suite's `flops` column)."""
    from torch.utils.flop_counter import FlopCounterMode
    module = create_model(model, field_dims, interaction=model_entry(model).default_interaction, **hparams)
    with FlopCounterMode(display=False) as counter:
        module(x).sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("model_name", each(PEERS))
def test_a_peer_that_computes_otherwise_than_ours_says_so_and_our_twin_computes_as_it(model_name):
    """At the Criteo shape: a peer whose FLOPs are not within 25% of ctrbench's default model declares a
    DIFFERENCE, and where it declares OURS_AS_PEER our model so configured is within 25% of the peer."""
    field_dims = SHAPES["criteo"]()
    x = random_ids(field_dims, 16)
    adapter, ours = model_entry(model_name).builder, ours_of(model_name)
    peer = _train_flops(model_name, field_dims, x)
    default = _train_flops(ours, field_dims, x)
    if peer == default == 0:                      # FM's sum of squares: no matrix product to count
        return
    if not 0.8 <= default / peer <= 1.25:
        assert adapter.DIFFERENCE, f"{model_name}: {default / peer:.2f}× ctrbench's FLOPs, no DIFFERENCE declared"
    if adapter.OURS_AS_PEER:
        twin = _train_flops(ours, field_dims, x, **adapter.OURS_AS_PEER)
        assert 0.8 <= twin / peer <= 1.25, f"{model_name}: ours as the peer computes {twin / peer:.2f}× its FLOPs"


@needs_both
def test_the_suite_times_ours_configured_as_each_differing_peer():
    quick = model_cells("quick")
    twin = ModelCell("autoint", "none", "criteo", 1024, "train", config=(("attn_dim", 16),))
    assert twin in quick and replace(twin, compile=True) not in quick
    assert ModelCell("dcnv2", "none", "criteo", 1024, "inference", config=(("low_rank", 32), ("experts", 4))) in quick
    assert sum(1 for c in quick if c.model == "ipnn" and c.config) == 4      # 2 shapes x 2 modes, once for 1 peer
    info = next(c for c in quick if c.model == "deepctr_autoint").info()
    assert info["ours_as_peer"] == {"attn_dim": 16} and "attention width" in info["difference"]
    assert "difference" not in next(c for c in quick if c.model == "torchfm_fm").info()
