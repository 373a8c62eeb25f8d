"""Embedding-update strategies: each update equals its plain definition written as a loop over the
touched rows, lazy strategies leave the other rows alone, the dense layers keep Adam, the protocol's
default (dense Adam) and its run key are unchanged."""
import hashlib
import json
import math

import pytest
import torch
from torch import nn

from ctrbench.models import create_model, list_models, model_entry
from ctrbench.training.context import RunContext
from ctrbench.training.embedding_updates import (
    DEFAULT,
    build_optimizer,
    embedding_modules,
    embedding_update,
    list_embedding_updates,
    optimizer_state_bytes,
    split_parameters,
)
from ctrbench.training.embedding_updates.fused_rowwise_adagrad import FusedRowWiseAdagrad, fused_lookup
from ctrbench.training.embedding_updates.rowwise_adagrad import RowWiseAdagrad
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.regularizers import Regularizer
from ctrbench.training.train import TrainConfig, fit, train_step

FIELD_DIMS = [5, 7, 3, 9]
LAZY = [name for name in list_embedding_updates() if embedding_update(name).lazy]


def batch(field_dims=FIELD_DIMS, rows=16, seed=0):
    """Ids of the first half of each field only: the other rows are never in the batch."""
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *field_dims[:-1]]).cumsum(0)
    local = torch.stack([torch.randint(max(d // 2, 1), (rows,), generator=generator) for d in field_dims], dim=1)
    return local + offsets, (torch.rand(rows, generator=generator) < 0.4).float()


def model_pair(name="fm", seed=0, **hparams):
    torch.manual_seed(seed)
    first = create_model(name, FIELD_DIMS, **hparams)
    second = create_model(name, FIELD_DIMS, **hparams)
    second.load_state_dict(first.state_dict())
    return first, second


def steps(model, optimizer, count=3, loss_fn=nn.BCEWithLogitsLoss()):
    model.train()
    for k in range(count):
        x, y = batch(seed=k)
        train_step(model, optimizer, loss_fn, x, y)


def test_registry_lists_the_strategies_and_rejects_unknown_names():
    assert {"adam", "sparse_adam", "rowwise_adagrad", "fused_rowwise_adagrad", "sparse_sgd"} <= set(
        list_embedding_updates())
    assert DEFAULT == "adam" and TrainConfig().embedding_optimizer == "adam"
    with pytest.raises(ValueError, match="known: adam"):
        embedding_update("lazy_lion")
    with pytest.raises(ValueError, match="known"):
        TrainConfig(embedding_optimizer="lazy_lion")
    with pytest.raises(ValueError, match="embedding_lr"):
        TrainConfig(embedding_lr=0.0)


def test_tables_are_every_embedding_and_nothing_else():
    model = create_model("afm", FIELD_DIMS)
    tables, dense = split_parameters(model)
    assert [p.shape for p in tables] == [m.weight.shape for m in embedding_modules(model)]
    assert len(tables) == 2                              # the latent vectors and the linear term's weights
    assert len(tables) + len(dense) == len(list(model.parameters()))


def test_default_is_one_dense_adam_over_every_parameter_bit_for_bit():
    ours, plain = model_pair("afm", dropout=0.0)
    steps(ours, build_optimizer(ours, lr=1e-2))
    steps(plain, torch.optim.Adam(plain.parameters(), lr=1e-2))
    for (name, a), b in zip(ours.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name
    assert not any(m.sparse for m in embedding_modules(ours))


@pytest.mark.parametrize("strategy", list_embedding_updates())
@pytest.mark.parametrize("model_name", list_models())
def test_every_strategy_trains_every_model(strategy, model_name):
    torch.manual_seed(0)
    model = create_model(model_name, FIELD_DIMS)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, strategy, lr=1e-2)
    steps(model, optimizer, count=2)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(m.sparse == embedding_update(strategy).sparse_gradients for m in embedding_modules(model))


@pytest.mark.parametrize("strategy", list_embedding_updates())
def test_int32_ids_train_as_int64_ids(strategy):
    """The data sets may hold ids as int32; every strategy updates exactly as with int64."""
    models = model_pair("fm")
    for model, dtype in zip(models, (torch.int32, torch.int64)):
        optimizer = build_optimizer(model, strategy, lr=1e-2)
        for k in range(2):
            x, y = batch(seed=k)
            train_step(model, optimizer, nn.BCEWithLogitsLoss(), x.to(dtype), y)
    for a, b in zip(*(m.state_dict().values() for m in models)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", LAZY)
def test_lazy_strategies_leave_rows_outside_the_batch_untouched(strategy):
    torch.manual_seed(0)
    model = create_model("fm", FIELD_DIMS)
    tables = [m.weight.detach().clone() for m in embedding_modules(model)]
    optimizer = build_optimizer(model, strategy, lr=1e-1)
    seen = torch.zeros(sum(FIELD_DIMS), dtype=torch.bool)
    for k in range(4):
        x, y = batch(seed=k)
        seen[x.flatten()] = True
        train_step(model, optimizer, nn.BCEWithLogitsLoss(), x, y)
    assert 0 < seen.sum() < len(seen)
    for before, module in zip(tables, embedding_modules(model)):
        after = module.weight.detach()
        assert torch.equal(after[~seen], before[~seen])
        assert not torch.equal(after[seen], before[seen])


@pytest.mark.parametrize("strategy", list_embedding_updates())
def test_dense_layers_keep_their_own_adam(strategy):
    """After one step (same gradients everywhere) every non-table parameter moved as plain Adam moves it."""
    ours, plain = model_pair("afm", dropout=0.0)
    steps(ours, build_optimizer(ours, strategy, lr=1e-2), count=1)
    steps(plain, torch.optim.Adam(plain.parameters(), lr=1e-2), count=1)
    _, dense = split_parameters(ours)
    _, plain_dense = split_parameters(plain)
    for a, b in zip(dense, plain_dense):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def sparse_table_steps(optimizer_for, rows=6, dim=3, count=4):
    """A tiny table trained by `optimizer_for(params)` on fixed batches with duplicate ids; returns the
    table after each step and the (ids, upstream gradient) of each step."""
    torch.manual_seed(0)
    table = nn.Embedding(rows, dim, sparse=True)
    optimizer = optimizer_for([table.weight])
    generator = torch.Generator().manual_seed(1)
    history, batches = [table.weight.detach().clone()], []
    for k in range(count):
        ids = torch.tensor([[0, 2, 2], [3, 0, 2]]) if k % 2 == 0 else torch.tensor([[1, 1, 3]])
        upstream = torch.randn(*ids.shape, dim, generator=generator)
        optimizer.zero_grad()
        (table(ids) * upstream).sum().backward()
        optimizer.step()
        history.append(table.weight.detach().clone())
        batches.append((ids, upstream))
    return history, batches


def row_gradients(ids, upstream, dim):
    """{row: summed gradient} of a lookup whose output received `upstream`: the definition, by loop."""
    grads = {}
    for i, row in enumerate(ids.flatten().tolist()):
        grads[row] = grads.get(row, torch.zeros(dim, dtype=torch.float64)) + upstream.reshape(-1, dim)[i].double()
    return grads


def test_rowwise_adagrad_is_its_definition_on_touched_rows_only():
    lr, eps, decay = 0.3, 1e-8, 0.05
    history, batches = sparse_table_steps(lambda p: RowWiseAdagrad(p, lr=lr, eps=eps, weight_decay=decay))
    weight, state = history[0].double().clone(), [0.0] * len(history[0])
    for (ids, upstream), expected in zip(batches, history[1:]):
        for row, grad in row_gradients(ids, upstream, weight.shape[1]).items():
            grad = grad + decay * weight[row]
            state[row] += float((grad ** 2).mean())
            weight[row] -= lr * grad / (math.sqrt(state[row]) + eps)
        torch.testing.assert_close(expected, weight.float(), rtol=1e-5, atol=1e-6)


def test_rowwise_adagrad_keeps_one_float_per_row_and_takes_dense_gradients_too():
    history, _ = sparse_table_steps(lambda p: RowWiseAdagrad(p, lr=0.3))
    table = nn.Parameter(history[0].clone())
    optimizer = RowWiseAdagrad([table], lr=0.3)
    table.grad = torch.zeros_like(table)
    table.grad[2] = 1.0
    optimizer.step()
    assert optimizer.state[table]["sum"].shape == (table.shape[0],)
    assert optimizer_state_bytes(optimizer) == table.shape[0] * 4
    changed = (table.detach() != history[0]).any(dim=1)
    assert changed.tolist() == [False, False, True, False, False, False]


def fused_table_steps(lr, weight_decay, rows=6, dim=3, count=4):
    """`sparse_table_steps` with the table updated inside its lookup's backward."""
    torch.manual_seed(0)
    table = nn.Embedding(rows, dim)
    optimizer = FusedRowWiseAdagrad([table.weight], lr=lr, weight_decay=weight_decay)
    table.forward = fused_lookup(table, optimizer)
    generator = torch.Generator().manual_seed(1)
    history = [table.weight.detach().clone()]
    for k in range(count):
        ids = torch.tensor([[0, 2, 2], [3, 0, 2]]) if k % 2 == 0 else torch.tensor([[1, 1, 3]])
        upstream = torch.randn(*ids.shape, dim, generator=generator)
        optimizer.zero_grad()
        (table(ids) * upstream).sum().backward()
        assert table.weight.grad is None             # no gradient tensor: the backward updated the rows
        optimizer.step()
        history.append(table.weight.detach().clone())
    return history


def test_fused_rowwise_adagrad_updates_as_rowwise_adagrad_inside_backward():
    fused = fused_table_steps(lr=0.3, weight_decay=0.05)
    plain, _ = sparse_table_steps(lambda p: RowWiseAdagrad(p, lr=0.3, weight_decay=0.05))
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert torch.equal(fused[-1][[4, 5]], fused[0][[4, 5]])        # rows 4, 5 never in a batch


def test_fused_rowwise_adagrad_trains_a_model_as_rowwise_adagrad_and_evaluates_plainly():
    fused, plain = model_pair("afm", dropout=0.0)
    steps(fused, build_optimizer(fused, "fused_rowwise_adagrad", lr=1e-2, embedding_lr=0.1))
    steps(plain, build_optimizer(plain, "rowwise_adagrad", lr=1e-2, embedding_lr=0.1))
    # Equal up to summation order (1 ulp in the tables), which Adam magnifies where a dense gradient is
    # near zero (measured: 1e-4 on the attention's bias after 3 steps), hence the dense layers' bound.
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        table = "embedding" in name or "linear.weight" in name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if table else 1e-3, msg=name)
    x, _ = batch()
    before = fused.state_dict()["embedding.embedding.weight"].clone()
    with torch.no_grad():
        fused(x)
    assert torch.equal(before, fused.state_dict()["embedding.embedding.weight"])
    build_optimizer(fused, "adam")                 # another strategy: the plain lookup again
    assert all("forward" not in vars(m) for m in embedding_modules(fused))


def test_sparse_adam_is_lazy_adam_by_its_definition():
    lr, (beta1, beta2), eps = 0.1, (0.9, 0.999), 1e-8
    history, batches = sparse_table_steps(lambda p: torch.optim.SparseAdam(p, lr=lr))
    weight = history[0].double().clone()
    m, v = torch.zeros_like(weight), torch.zeros_like(weight)
    for t, ((ids, upstream), expected) in enumerate(zip(batches, history[1:]), start=1):
        # the step count is the table's (every step), the moments move only on the batch's rows
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        for row, grad in row_gradients(ids, upstream, weight.shape[1]).items():
            m[row] = beta1 * m[row] + (1 - beta1) * grad
            v[row] = beta2 * v[row] + (1 - beta2) * grad ** 2
            weight[row] -= step_size * m[row] / (v[row].sqrt() + eps)
        torch.testing.assert_close(expected, weight.float(), rtol=1e-5, atol=1e-6)


def test_sparse_sgd_is_sgd_on_touched_rows():
    lr = 0.5
    history, batches = sparse_table_steps(lambda p: torch.optim.SGD(p, lr=lr))
    weight = history[0].double().clone()
    for (ids, upstream), expected in zip(batches, history[1:]):
        for row, grad in row_gradients(ids, upstream, weight.shape[1]).items():
            weight[row] -= lr * grad
        torch.testing.assert_close(expected, weight.float(), rtol=1e-5, atol=1e-6)


def test_strategies_without_table_weight_decay_refuse_it():
    model = create_model("fm", FIELD_DIMS)
    for name in ("sparse_adam", "sparse_sgd"):
        with pytest.raises(ValueError, match="weight decay"):
            build_optimizer(model, name, weight_decay=1e-4)
    build_optimizer(model, "rowwise_adagrad", weight_decay=1e-4)   # applied to the batch's rows


def test_embedding_lr_is_the_tables_rate_and_lr_the_dense_layers():
    model = create_model("fm", FIELD_DIMS)
    for name in list_embedding_updates():
        optimizer = build_optimizer(model, name, lr=1e-3, embedding_lr=0.2)
        tables, _ = split_parameters(model)
        rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
        assert all(rates[id(p)] == 0.2 for p in tables)
        assert all(rate == 1e-3 for key, rate in rates.items() if key not in {id(p) for p in tables})


def test_optimizer_state_bytes_counts_the_state_tensors():
    torch.manual_seed(0)
    model = create_model("fm", FIELD_DIMS, embed_dim=4)
    tables, dense = split_parameters(model)
    table_floats = sum(p.numel() for p in tables)
    table_rows = sum(p.shape[0] for p in tables)
    dense_floats = sum(p.numel() for p in dense)
    expected = {"adam": 2 * (table_floats + dense_floats) * 4 + 4 * len(tables + dense),   # moments + step
                "sparse_adam": 2 * (table_floats + dense_floats) * 4 + 4 * len(dense),  # its step: an int
                "rowwise_adagrad": table_rows * 4 + 2 * dense_floats * 4 + 4 * len(dense),
                "fused_rowwise_adagrad": table_rows * 4 + 2 * dense_floats * 4 + 4 * len(dense),
                "sparse_sgd": 2 * dense_floats * 4 + 4 * len(dense)}
    for name, size in expected.items():
        optimizer = build_optimizer(model, name)
        steps(model, optimizer, count=1)
        assert optimizer_state_bytes(optimizer) == size, name


@pytest.mark.parametrize("strategy", ["sparse_adam", "rowwise_adagrad"])
def test_embedding_regularizer_works_with_sparse_gradients(strategy):
    """Issue 16's regularizer (on the gathered rows) keeps the gradient sparse, equal to the dense one."""
    sparse_model, dense_model = model_pair("fm")
    x, y = batch()
    grads = []
    for model, sparse in ((sparse_model, True), (dense_model, False)):
        for module in embedding_modules(model):
            module.sparse = sparse
        with Regularizer(model, embedding=0.5) as regularizer:
            loss = nn.BCEWithLogitsLoss()(model(x), y) + regularizer.penalty()
            loss.backward()
        grads.append([m.weight.grad for m in embedding_modules(model)])
    for sparse_grad, dense_grad in zip(*grads):
        assert sparse_grad.is_sparse
        torch.testing.assert_close(sparse_grad.to_dense(), dense_grad)
    config = TrainConfig(max_epochs=2, batch_size=8, patience=2, embedding_optimizer=strategy,
                         embedding_regularizer=0.1)
    model = create_model("fm", FIELD_DIMS)
    X, y = batch(rows=64)
    result = fit(model, (X, y), (X, y), config, torch.Generator().manual_seed(0))
    assert result.epochs_run >= 1 and all(math.isfinite(h["loss"]) for h in result.history)


def old_key(spec: RunSpec) -> str:
    """The run key as it was computed before embedding optimizers existed (config = the 7 original settings)."""
    config = spec.config
    identity = {"dataset": spec.dataset, "dataset_options": spec.dataset_options, "model": spec.model,
                "interaction": spec.interaction, "hparams": spec.full_hparams(), "seed": spec.seed,
                "config": {"max_epochs": config.max_epochs, "batch_size": config.batch_size, "lr": config.lr,
                           "weight_decay": config.weight_decay, "patience": config.patience,
                           "plateau_lr_factor": config.plateau_lr_factor,
                           "eval_batch_size": config.eval_batch_size},
                "device": spec.device}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_the_default_keeps_old_run_keys_and_a_strategy_is_in_the_key_and_record(tiny_dataset):
    config = TrainConfig(max_epochs=2, batch_size=256, patience=2)
    spec = RunSpec("tiny", "fm", "sum_square", seed=1, config=config)
    assert spec.key() == old_key(spec)
    assert "embedding_optimizer" not in spec.identity()["config"]
    keys = {spec.key()}
    for name in list_embedding_updates():
        if name == DEFAULT:
            continue
        other = RunSpec("tiny", "fm", "sum_square", seed=1,
                        config=TrainConfig(max_epochs=2, batch_size=256, patience=2, embedding_optimizer=name))
        keys.add(other.key())
        record = run_one(other, tiny_dataset)
        assert record["embedding_optimizer"] == name and record["config"]["embedding_optimizer"] == name
    assert len(keys) == len(list_embedding_updates())
    lr_spec = RunSpec("tiny", "fm", "sum_square", seed=1,
                      config=TrainConfig(max_epochs=2, batch_size=256, patience=2, embedding_lr=0.1))
    assert lr_spec.key() not in keys
    assert run_one(spec, tiny_dataset)["embedding_optimizer"] == DEFAULT


@pytest.mark.parametrize("strategy", list_embedding_updates())
def test_same_seed_gives_identical_training(strategy, tiny_dataset):
    spec = RunSpec("tiny", "afm", model_entry("afm").default_interaction, seed=2,
                   config=TrainConfig(max_epochs=2, batch_size=256, patience=2, embedding_optimizer=strategy))
    first, second = run_one(spec, tiny_dataset), run_one(spec, tiny_dataset)
    assert first["test"] == second["test"] and first["history"][-1]["loss"] == second["history"][-1]["loss"]


def test_sparse_strategies_refuse_data_parallel_training():
    model = create_model("fm", FIELD_DIMS)
    X, y = batch(rows=32)
    with pytest.raises(ValueError, match="single-process"):
        fit(model, (X, y), (X, y), TrainConfig(embedding_optimizer="sparse_adam"), torch.Generator(),
            RunContext(world_size=2))


def test_cli_takes_the_embedding_optimizer_and_its_rate():
    from ctrbench.commands import build_parser
    args = build_parser().parse_args(["run", "--embedding-optimizer", "rowwise_adagrad", "--embedding-lr", "0.2"])
    assert (args.embedding_optimizer, args.embedding_lr) == ("rowwise_adagrad", 0.2)
    assert build_parser().parse_args(["run"]).embedding_optimizer == DEFAULT
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--embedding-optimizer", "lazy_lion"])
