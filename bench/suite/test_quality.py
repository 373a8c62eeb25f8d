"""Quality as a tracked number (asv's `track_` idea): multi-seed test AUC per (model, dataset).

Minutes per dataset, so only with --ctrbench-quality. Each run is stored as a record under
RESULTS/runs (resumable, like `ctrbench run`), and the leaderboard's quality table is built from them.
"""
import statistics

import pytest

from ctrbench.datasets import load
from ctrbench.models import list_models
from ctrbench.training.protocol import run_grid
from ctrbench.training.train import preset_config

SEEDS = {"quick": 3, "full": 5}
DATASETS = ["purchase", "frappe"]


@pytest.mark.quality
@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model", list_models())
def test_track_auc(benchmark, dataset, model, request):
    profile = request.config.getoption("ctrbench_profile")
    try:
        load(dataset, rows=1000) if dataset == "purchase" else load(dataset)
    except FileNotFoundError as error:
        pytest.skip(f"{dataset} is not on this machine: {error}")
    config = preset_config("suite")
    seeds = list(range(SEEDS[profile]))
    records = benchmark.pedantic(run_grid, args=(dataset, [model], "default", seeds,
                                                 request.config.getoption("ctrbench_results")),
                                 kwargs={"config": config, "hparams": {"embed_dim": 16}, "log": lambda m: None},
                                 rounds=1, iterations=1)
    aucs = [r["test"]["auc"] for r in records]
    benchmark.group = f"quality {dataset}"
    benchmark.extra_info.update({"cell": "quality", "dataset": dataset, "model": model, "seeds": seeds,
                                 "auc_mean": statistics.fmean(aucs), "auc_std": statistics.stdev(aucs),
                                 "aucs": aucs})
    assert all(0.5 < auc <= 1.0 for auc in aucs), f"{model} on {dataset} did not learn: {aucs}"
