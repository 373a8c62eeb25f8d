"""`ctrbench run --compile`: a compiled run is its own cell, trains like the eager one, compiles only
in the warm-up (never inside the timed epochs), and the id check leaves the graph whole."""
import pytest
import torch
from conftest import make_tiny_dataset
from torch._dynamo.utils import counters

import ctrbench.training.train as train
from ctrbench.measure.cells import random_ids
from ctrbench.models import create_model, list_models
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.train import TrainConfig

FIELD_DIMS = [4, 5, 3, 6]
# A last batch of another size (2400 % 256 = 96): the warm-up must build both graphs.
CONFIG = TrainConfig(max_epochs=3, batch_size=256, patience=3, eval_batch_size=200)


@pytest.mark.parametrize("model_name", list_models())
def test_the_forward_is_one_graph(model_name):
    """A value check read on the host would break the graph (and, on a GPU, wait for the device)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(create_model(model_name, FIELD_DIMS))(random_ids(FIELD_DIMS, 64))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


# One model: what is checked (graphs built in the warm-up only, the same epochs and metrics) is the protocol's,
# and each compiled run costs ~30 s (dynamo, inductor and g++) on a 2-core machine. FM's compiled step against
# its eager one is test_suite_device.py::test_compiled_model_cells_equal_eager's.
@pytest.mark.parametrize("model_name,interaction,hparams", [
    ("afm", "triu_index", {"dropout": 0.0}),     # compiled dropout draws other masks than eager
])
def test_compiled_run_trains_like_the_eager_one_and_compiles_only_in_warm_up(monkeypatch, model_name,
                                                                             interaction, hparams):
    dataset = make_tiny_dataset()
    eager_spec = RunSpec("tiny", model_name, interaction, 0, hparams, config=CONFIG)
    compiled_spec = RunSpec("tiny", model_name, interaction, 0, hparams, config=CONFIG, compile=True)
    assert compiled_spec.key() != eager_spec.key() and "compile" not in eager_spec.identity()
    eager = run_one(eager_spec, dataset)

    graphs_per_epoch = []
    real_epoch = train.train_epoch

    def counting_epoch(*args, **kwargs):
        before = counters["stats"]["unique_graphs"]
        loss = real_epoch(*args, **kwargs)
        graphs_per_epoch.append(counters["stats"]["unique_graphs"] - before)
        return loss
    monkeypatch.setattr(train, "train_epoch", counting_epoch)
    torch._dynamo.reset()
    compiled = run_one(compiled_spec, dataset)

    assert graphs_per_epoch[0] >= 1 and graphs_per_epoch[1:] == [0] * compiled["epochs_run"]
    assert compiled["compile"] is True and eager["compile"] is False
    assert compiled["warmup_seconds"] > 0 and compiled["running_backend"] == interaction
    assert compiled["epochs_run"] == eager["epochs_run"] and compiled["best_epoch"] == eager["best_epoch"]
    for ours, theirs in zip(compiled["history"], eager["history"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_auc"] == pytest.approx(theirs["val_auc"], abs=1e-5)
    for name in ("auc", "logloss"):
        assert compiled["test"][name] == pytest.approx(eager["test"][name], abs=1e-5)
