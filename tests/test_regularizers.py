"""The embedding and net regularizers: their gradient against a plain reference, their place in the run key."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ctrbench.models import create_model, list_models
from ctrbench.training.context import RunContext
from ctrbench.training.protocol import RunSpec
from ctrbench.training.regularizers import Regularizer
from ctrbench.training.train import TrainConfig, fit, train_step

REPO = Path(__file__).resolve().parents[1]


def reference_penalty(model: nn.Module, x: torch.Tensor, embedding: float, net: float) -> torch.Tensor:
    """The definition written out: (λe/2) Σ over each embedding table's distinct rows in x of ||w_r||²,
    plus (λn/2) Σ ||p||² over every other parameter."""
    total = torch.zeros(())
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    for table in tables:
        for row in torch.unique(x).tolist():
            total = total + 0.5 * embedding * table.weight[row].pow(2).sum()
    weights = {id(t.weight) for t in tables}
    for parameter in model.parameters():
        if id(parameter) not in weights:
            total = total + 0.5 * net * parameter.pow(2).sum()
    return total


# The reference below indexes every table with the global ids: one-table models. DeepCTR's peer models keep a
# table per field; tests/test_peers.py checks the regularizer on those against a per-field reference.
@pytest.mark.parametrize("model_name", [m for m in list_models() if not m.startswith("deepctr_")])
def test_gradient_equals_the_plain_reference(model_name):
    torch.manual_seed(0)
    field_dims = [4, 5, 3, 6]
    model = create_model(model_name, field_dims).double()
    model.eval()                                          # no dropout: both forwards see the same network
    x = torch.tensor([[0, 4, 9, 12], [1, 4, 10, 17], [0, 5, 9, 12]])   # rows repeat within the batch
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    loss_fn = nn.BCEWithLogitsLoss()

    def gradients(penalty_of):
        model.zero_grad()
        loss = loss_fn(model(x), y)
        (loss + penalty_of()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    expected = gradients(lambda: reference_penalty(model, x, 0.3, 0.2))
    with Regularizer(model, embedding=0.3, net=0.2) as regularizer:
        with torch.enable_grad():
            got = gradients(regularizer.penalty)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-12, msg=name)


def test_train_step_adds_the_penalty_and_returns_the_data_loss():
    torch.manual_seed(0)
    model = create_model("fm", [4, 5, 3, 6])
    x, y = torch.tensor([[0, 4, 9, 12], [1, 5, 10, 17]]), torch.tensor([1.0, 0.0])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.embedding.embedding.weight.detach().clone()
    with torch.no_grad():
        data_loss = nn.BCEWithLogitsLoss()(model(x), y)
    with Regularizer(model, embedding=0.5) as regularizer:
        loss = train_step(model, optimizer, nn.BCEWithLogitsLoss(), x, y, regularizer=regularizer)
    torch.testing.assert_close(loss, data_loss)
    unused = [r for r in range(18) if r not in x.flatten().tolist()]
    torch.testing.assert_close(model.embedding.embedding.weight[unused], before[unused])   # lazy: untouched rows
    assert regularizer._hooks == []                                                     # closed


def test_evaluation_forwards_are_not_collected():
    model = create_model("fm", [4, 5, 3, 6])
    with Regularizer(model, embedding=1.0) as regularizer:
        with torch.no_grad():
            model(torch.tensor([[0, 4, 9, 12]]))
        assert regularizer._gathered == []


def test_off_leaves_the_run_key_of_stored_records_unchanged():
    """The shipped records were made by `ctrbench run` without --data-option (the key holds the options
    given, {}; the record the loader's full options) and before the regularizers existed."""
    paths = [p for p in sorted((REPO / "results" / "runs").rglob("*.json"))
             if "regularizer" not in p.read_text() and '"tuned"' not in p.read_text()]
    if not paths:
        pytest.skip("no stored records in this checkout")
    for path in paths:
        record = json.loads(path.read_text())
        if record["model"] not in list_models():        # a peer library's model, where its extra is not installed
            continue
        config = TrainConfig(**record["config"])
        spec = RunSpec(record["dataset"], record["model"], record["interaction"], record["seed"],
                       record["hparams"], {}, config, record["device"],
                       record.get("world_size", 1), record.get("compile", False))
        assert spec.key() == record["key"], path.name


def test_on_enters_the_key_and_the_record_config():
    off = RunSpec("tiny", "fm", "sum_square", 0)
    on = RunSpec("tiny", "fm", "sum_square", 0, config=TrainConfig(embedding_regularizer=1e-5))
    assert "embedding_regularizer" not in off.identity()["config"]
    assert on.identity()["config"]["embedding_regularizer"] == 1e-5
    assert on.key() != off.key()
    with pytest.raises(ValueError, match="net_regularizer"):
        TrainConfig(net_regularizer=-1)


def test_fit_with_regularizers_trains_and_removes_its_hooks(tiny_dataset):
    torch.manual_seed(0)
    model = create_model("afm", tiny_dataset.field_dims)
    X, y = (torch.as_tensor(a) for a in tiny_dataset.split("train"))
    seen = []
    result = fit(model, (X, y), (X, y), TrainConfig(max_epochs=2, batch_size=512, embedding_regularizer=1e-3,
                                                    net_regularizer=1e-4),
                 torch.Generator().manual_seed(0), RunContext(on_epoch=seen.append))
    assert result.epochs_run == 2 and [e["epoch"] for e in seen] == [1, 2]
    assert all(not m._forward_hooks for m in model.modules())
