"""Training from a memory-mapped set's split views (`ctrbench run` on data larger than RAM): the protocol
streams a set above `protocol.STREAM_ROWS` rows, the training loop takes a view as it takes tensors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ctrbench.datasets import load
from ctrbench.measure import data_scale
from ctrbench.models import create_model
from ctrbench.report import scale
from ctrbench.training import protocol
from ctrbench.training.protocol import RunSpec, run_one
from ctrbench.training.train import TrainConfig, evaluate, train_epoch

FAST = TrainConfig(max_epochs=2, batch_size=256, patience=2)


pytestmark = pytest.mark.usefixtures("private_cache")     # conftest: no test writes to ~/.cache


class RowCounter(nn.Module):
    """The wrapped model, counting the rows of every batch it sees and the ids of each row's first field."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().cpu())
        return self.model(x)


def test_large_memory_mapped_set_streams_through_the_protocol(generated_criteo, monkeypatch):
    monkeypatch.setattr(protocol, "STREAM_ROWS", 1000)
    dataset = load("criteo", file=str(generated_criteo), min_count=2)
    assert isinstance(dataset.X, np.memmap) and protocol.streams(dataset)
    spec = RunSpec("criteo", "fm", "sum_square", seed=0, config=FAST)
    records = [run_one(spec, dataset) for _ in range(2)]
    assert records[0]["data_path"] == "memory-mapped"
    assert records[0]["epochs_run"] >= 1 and 0.0 < records[0]["test"]["auc"] < 1.0
    assert records[0]["test"]["auc"] == records[1]["test"]["auc"]
    assert records[0]["history"] == [{**h, "seconds": records[0]["history"][i]["seconds"]}
                                     for i, h in enumerate(records[1]["history"])]


def test_small_set_keeps_the_tensor_path_and_its_record(generated_criteo):
    dataset = load("criteo", file=str(generated_criteo), min_count=2)
    assert not protocol.streams(dataset)              # 3000 rows, far below STREAM_ROWS
    record = run_one(RunSpec("criteo", "fm", "sum_square", seed=0, config=FAST), dataset)
    assert "data_path" not in record


def test_streamed_split_checks_feature_ids(generated_criteo, monkeypatch):
    monkeypatch.setattr(protocol, "STREAM_ROWS", 1000)
    dataset = load("criteo", file=str(generated_criteo), min_count=2)
    too_small = list(dataset.field_dims)
    too_small[3] = 1                                  # ids of field 3 past its first fall outside
    dataset.field_dims = too_small
    with pytest.raises(ValueError, match="train split: feature id"):
        protocol.train_and_test(RunSpec("criteo", "fm", "sum_square", seed=0, config=FAST), dataset)


def test_train_epoch_sees_every_row_once_from_a_view_and_from_tensors(generated_criteo):
    dataset = load("criteo", file=str(generated_criteo), min_count=2)
    view = dataset.view("train")
    X, y = (torch.as_tensor(np.ascontiguousarray(a)) for a in view.materialize())
    for data in ((view, None), (X, y)):
        torch.manual_seed(0)
        counter = RowCounter(create_model("fm", dataset.field_dims, interaction="sum_square"))
        optimizer = torch.optim.Adam(counter.parameters(), lr=1e-3)
        loss = train_epoch(counter, optimizer, data, 300, torch.Generator().manual_seed(0))
        seen = torch.cat(counter.seen)
        assert len(seen) == len(view) and loss.dtype == torch.float64 and torch.isfinite(loss)
        # Every row once: the multiset of rows seen is the split's.
        assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, X.tolist()))


def test_evaluate_scores_a_view_as_its_tensors(generated_criteo):
    dataset = load("criteo", file=str(generated_criteo), min_count=2)
    view = dataset.view("validation")
    X, y = (torch.as_tensor(np.ascontiguousarray(a)) for a in view.materialize())
    torch.manual_seed(0)
    model = create_model("fm", dataset.field_dims, interaction="sum_square")
    from_view, from_tensors = evaluate(model, view, 128), evaluate(model, (X.long(), y), 128)
    assert from_view["auc"] == pytest.approx(from_tensors["auc"], abs=1e-12)
    assert from_view["logloss"] == pytest.approx(from_tensors["logloss"], rel=1e-6)


DATA_SCALE = {
    "kind": "data_scale", "command": "ctrbench measure data_scale --rows 20000000",
    "file": {"bytes": 4_900_000_000, "rows": 20_000_000, "generated": True},
    "preprocess": {"rows": 20_000_000, "rows_per_s": 180_000.0, "rows_per_cpu_s": 170_000.0,
                   "peak_rss_bytes": 2 * 2**30, "cache_bytes": 3_200_000_000},
    "train": {"rows_seen": 16_000_000, "rows_per_s": 400_000.0, "peak_rss_bytes": int(1.2 * 2**30),
              "validation_auc": 0.71, "loadavg_1m": 3.5, "threads": 2, "batch_size": 4096,
              "path": "train_epoch"},
    "goals": {"train_peak_rss_bytes_max": 3 * 10**9, "train_peak_rss_met": True,
              "preprocess_rows_per_s_min": 150_000, "preprocess_rows_per_s_met": True},
    "environment": {"cpus": 2, "loadavg_1m": 3.5, "memory_bytes": 8 * 2**30},
    "when": "2026-11-28T20:00:00Z",
}


def test_leaderboard_renders_data_at_scale_from_its_json(tmp_path):
    path = tmp_path / "data_scale.json"
    path.write_text(json.dumps(DATA_SCALE))
    text = "\n".join(scale.data_scale_section(data_scale.read(path)))
    assert "Data at scale" in text
    assert "20,000,000" in text and "180,000" in text and "400,000" in text
    assert "1.20" in text                           # the epoch's peak RSS, GiB
    assert "load average" in text.lower() and "3.5" in text
    assert scale.data_scale_section(data_scale.read(tmp_path / "absent.json")) == []


@pytest.mark.slow                                   # two child processes, each importing torch: ~9 s
def test_data_scale_trains_through_the_protocols_epoch(tmp_path):
    from ctrbench.commands.measure import data_scale as data_scale_command

    out = tmp_path / "data_scale.json"
    assert data_scale_command.main(["--rows", "3000", "--no-progress", "--work-dir", str(tmp_path / "work"),
                            "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["train"]["path"] == "ctrbench.training.train.train_epoch"
    assert document["train"]["rows_seen"] == document["train"]["train_rows"] == 2400
    assert "Data at scale" in "\n".join(scale.data_scale_section(data_scale.read(out)))
