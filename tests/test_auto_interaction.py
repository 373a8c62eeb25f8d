"""`--interactions auto`: the fastest implementation that agrees with the reference, cached per machine,
and recorded in the run's record."""
import json

import pytest
import torch

from ctrbench.models import PAIRS, registry
from ctrbench.models.interactions.triu_index import TriuIndex
from ctrbench.training import auto
from ctrbench.training.protocol import Grid, run_grid
from ctrbench.training.train import TrainConfig


class Skewed(TriuIndex):
    """Wrong on purpose: every pair product 1% too large."""

    def forward(self, emb):
        return super().forward(emb) * 1.01


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "auto_interaction.json"))
    return tmp_path / "auto_interaction.json"


@pytest.fixture
def skewed(monkeypatch):
    Skewed.registry_name, Skewed.output = "skewed", PAIRS
    monkeypatch.setitem(registry._INTERACTIONS, "skewed",
                        registry.InteractionEntry("skewed", PAIRS, Skewed, "wrong on purpose"))
    return "skewed"


def test_every_shipped_implementation_agrees_with_the_reference():
    for model in ("fm", "afm", "fwfm", "ipnn", "fibinet", "xdeepfm"):
        for name in auto.candidates(model, torch.device("cpu")):
            assert auto.agrees_with_reference(model, name, 5), (model, name)


def test_a_wrong_implementation_is_refused_however_fast(cache, skewed, monkeypatch):
    assert not auto.agrees_with_reference("fm", skewed, 5)
    speeds = {"skewed": 0.001, "triu_index": 0.02, "sum_square": 0.01, "loop_gather": 0.03, "einsum": 0.04}
    monkeypatch.setattr(auto, "time_train_step", lambda model, name, *rest: speeds[name])
    choice = auto.resolve("fm", 10, 256, log=lambda message: None)
    assert choice["picked"] == "sum_square" and choice["refused"] == ["skewed"] and "skewed" not in choice["seconds"]


def test_the_choice_is_cached_per_machine_model_and_shape(cache, monkeypatch):
    monkeypatch.setattr(auto, "time_train_step", lambda model, name, *rest: {"afm_fused": 0.01}.get(name, 0.05))
    first = auto.resolve("afm", 10, 256, log=lambda message: None)
    assert first["picked"] == "afm_fused" and not first["cached"]
    monkeypatch.setattr(auto, "time_train_step", lambda *args: pytest.fail("timed again"))
    again = auto.resolve("afm", 10, 256, log=lambda message: None)
    assert again["picked"] == "afm_fused" and again["cached"]
    assert len(json.loads(cache.read_text())) == 1
    monkeypatch.setattr(auto, "time_train_step", lambda model, name, *rest: {"triu_index": 0.01}.get(name, 0.05))
    assert auto.resolve("afm", 39, 256, log=lambda message: None)["picked"] == "triu_index"   # another shape


def test_a_grid_run_with_auto_records_what_it_picked(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(auto, "time_train_step", lambda model, name, *rest: {"triu_index": 0.01}.get(name, 0.05))
    said = []
    grid = Grid("purchase", ["fwfm"], "auto", [0], dataset_options={"rows": 2000},
                config=TrainConfig(max_epochs=1, batch_size=512, patience=1))
    (record,) = run_grid(grid, tmp_path, log=said.append)
    assert record["interaction"] == "triu_index"
    assert record["interaction_choice"]["asked"] == "auto" and record["interaction_choice"]["picked"] == "triu_index"
    assert any(line.startswith("auto: fwfm at F=10, B=512") for line in said)


def test_auto_loads_each_seeds_split_once(cache, tmp_path, monkeypatch):
    """auto reads the field count from the first seed's split, which that seed then trains on."""
    monkeypatch.setattr(auto, "time_train_step", lambda model, name, *rest: {"triu_index": 0.01}.get(name, 0.05))
    grid = Grid("purchase", ["fwfm"], "auto", [0, 1], dataset_options={"rows": 2000},
                config=TrainConfig(max_epochs=1, batch_size=512, patience=1))
    loads = []
    real_load = Grid.load
    monkeypatch.setattr(Grid, "load", lambda self, seed: loads.append(seed) or real_load(self, seed))
    assert len(run_grid(grid, tmp_path, log=lambda message: None)) == 2
    assert loads == [0, 1]
    loads.clear()
    assert len(run_grid(grid, tmp_path, log=lambda message: None)) == 2     # all stored: only auto's load
    assert loads == [0]
