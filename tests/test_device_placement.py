"""Device placement without a GPU: everything the training loop creates follows the data.

CUDA refuses an operation whose tensors live on different devices; the CPU and the `meta` device do
not (index_select of meta data with a CPU index just works). `SameDevice` makes the CPU as strict as
CUDA: it fails any operation that mixes devices, so running the loop on `meta` data under it catches
a permutation, mask or accumulator left on the CPU, the bug that broke `--device cuda`.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ctrbench.attention.analysis import pair_dots
from ctrbench.datasets.batching import batches
from ctrbench.measure.cells import random_ids
from ctrbench.models import create_model, list_models
from ctrbench.training.train import predict_on_device, train_epoch

FIELD_DIMS = [4, 5, 3, 6]


class SameDevice(TorchDispatchMode):
    """Fail any operation on tensors of more than one device, as CUDA does. A 0-dim CPU tensor may
    join any device, also as on CUDA (it is read as a number: Adam's step counter is one)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
        devices = {t.device for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1:
            raise RuntimeError(f"{func} mixes devices {sorted(map(str, devices))}")
        return func(*args, **(kwargs or {}))


def meta_data(rows=103):
    return torch.empty(rows, len(FIELD_DIMS), dtype=torch.long, device="meta"), torch.empty(rows, device="meta")


def test_same_device_catches_a_mixed_operation():
    X, _ = meta_data()
    with SameDevice(), pytest.raises(RuntimeError, match="mixes devices"):
        X.index_select(0, torch.arange(3))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("shard,world_size", [("batches", 1), ("rows", 3), ("batches", 2)])
def test_batches_are_gathered_on_the_data_device(shuffle, shard, world_size):
    X, y = meta_data()
    with SameDevice():
        got = [(xb, yb) for rank in range(world_size)
               for xb, yb in batches(X, y, 10, shuffle=shuffle, generator=torch.Generator().manual_seed(0),
                                     rank=rank, world_size=world_size, shard=shard)]
    assert got and all(xb.device.type == "meta" and yb.device.type == "meta" for xb, yb in got)
    assert sum(len(xb) for xb, _ in got) == 103


def test_a_cpu_generator_draws_the_same_order_whatever_the_data_device():
    """The order comes from the CPU generator's stream, so it does not depend on where the data is:
    the generator advances the same way for meta data as for CPU data, and the CPU order is that
    generator's permutation."""
    X_cpu, y_cpu = torch.arange(103).unsqueeze(1), torch.zeros(103)
    on_cpu, on_meta = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    order = torch.cat([xb[:, 0] for xb, _ in batches(X_cpu, y_cpu, 10, shuffle=True, generator=on_cpu)])
    list(batches(*meta_data(), 10, shuffle=True, generator=on_meta))
    assert torch.equal(on_cpu.get_state(), on_meta.get_state())
    assert torch.equal(order, torch.randperm(103, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("model_name", list_models())
def test_a_training_epoch_and_prediction_stay_on_the_data_device(model_name):
    torch.manual_seed(0)
    model = create_model(model_name, FIELD_DIMS).to("meta")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    X, y = meta_data()
    with SameDevice():
        loss = train_epoch(model, optimizer, (X, y), 16, torch.Generator().manual_seed(0))
        probabilities = predict_on_device(model, X, 32)
    assert loss.device.type == "meta" and loss.shape == ()
    assert probabilities.device.type == "meta" and probabilities.shape == (103,)


def test_the_id_check_needs_no_host_read_off_the_cpu():
    """On a GPU, reading the result of a value check would wait for the device in every forward:
    the forward checks values on the CPU only (the protocol checks each split once on load)."""
    model = create_model("fm", FIELD_DIMS)
    bad = random_ids(FIELD_DIMS, 4)
    bad[0, 0] = 99
    with pytest.raises(ValueError, match="feature id 99 at row 0, field 0"):
        model(bad)
    with pytest.raises(ValueError, match="feature id 99 at row 0, field 0"):
        model.fields.check_values(bad)
    create_model("fm", FIELD_DIMS).to("meta")(bad.to("meta"))     # no value read: meta has none to read


def test_the_attention_analysis_reads_weights_and_pair_strengths_on_the_data_device():
    torch.manual_seed(0)
    X, _ = meta_data()
    with SameDevice():
        weights = create_model("afm", FIELD_DIMS).to("meta").attention_weights(X)
        dots = [list(pair_dots(create_model(name, FIELD_DIMS).to("meta"), X, 40)) for name in ("fm", "fwfm")]
    assert weights.device.type == "meta" and weights.shape == (103, 6)
    for per_batch in dots:
        assert [d.shape for d in per_batch] == [(40, 6), (40, 6), (23, 6)]
        assert all(d.device.type == "meta" for d in per_batch)
