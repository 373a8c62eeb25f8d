"""Training protocol: early stopping, determinism, records that survive a crash, resume."""
import json
import re

import pytest
import torch
from conftest import make_tiny_dataset

import ctrbench.training.protocol as protocol
from ctrbench.models import create_model
from ctrbench.report.leaderboard import render
from ctrbench.store.records import read_record, read_records
from ctrbench.training.context import RunContext
from ctrbench.training.protocol import Grid, RunSpec, run_grid, run_one
from ctrbench.training.train import TrainConfig, fit

FAST = TrainConfig(max_epochs=3, batch_size=256, patience=2)


def scripted_evaluation(aucs, snapshots):
    """An evaluate_fn that returns the given validation AUCs in turn and remembers the weights it saw."""
    calls = iter(aucs)

    def evaluate_fn(model, data, batch_size):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"auc": next(calls), "logloss": 0.5, "samples_per_s": 1.0}
    return evaluate_fn


def test_early_stopping_stops_after_patience_and_restores_best_epoch(tiny_dataset):
    torch.manual_seed(0)
    model = create_model("fm", tiny_dataset.field_dims)
    X, y = (torch.as_tensor(a) for a in tiny_dataset.split("train"))
    snapshots = []
    evaluate_fn = scripted_evaluation([0.60, 0.70, 0.65, 0.64, 0.66, 0.99], snapshots)
    result = fit(model, (X, y), (X, y), TrainConfig(max_epochs=20, batch_size=512, patience=3),
                 torch.Generator().manual_seed(0), RunContext(evaluate=evaluate_fn))
    assert result.epochs_run == 5            # epochs 3, 4, 5 brought no gain over epoch 2
    assert result.best_epoch == 2
    assert result.best_validation["auc"] == 0.70
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, snapshots[1][name])
    assert not torch.equal(model.state_dict()["embedding.embedding.weight"],
                           snapshots[-1]["embedding.embedding.weight"])


def test_plateau_cuts_the_learning_rate(tiny_dataset):
    torch.manual_seed(0)
    model = create_model("fm", tiny_dataset.field_dims)
    X, y = (torch.as_tensor(a) for a in tiny_dataset.split("train"))
    result = fit(model, (X, y), (X, y), TrainConfig(max_epochs=10, batch_size=512, patience=2,
                                                    plateau_lr_factor=0.1),
                 torch.Generator().manual_seed(0), RunContext(evaluate=scripted_evaluation([0.6, 0.7, 0.65, 0.6], [])))
    assert [round(h["lr"], 8) for h in result.history] == [1e-3, 1e-3, 1e-3, 1e-4]
    assert result.epochs_run == 4 and result.best_epoch == 2


@pytest.mark.parametrize("model_name", ["fm", "nfm", "afm"])
def test_same_seed_gives_identical_results(tiny_dataset, model_name):
    spec = RunSpec("tiny", model_name, "triu_index", seed=3, config=FAST)
    first, second = run_one(spec, tiny_dataset), run_one(spec, tiny_dataset)
    assert first["test"] == second["test"]
    assert [h["loss"] for h in first["history"]] == [h["loss"] for h in second["history"]]
    other = run_one(RunSpec("tiny", model_name, "triu_index", seed=4, config=FAST), tiny_dataset)
    assert other["test"] != first["test"]


def test_record_has_what_the_protocol_promises(tiny_dataset):
    record = run_one(RunSpec("tiny", "afm", "einsum", seed=0, hparams={"embed_dim": 8}, config=FAST), tiny_dataset)
    assert 0.5 < record["test"]["auc"] <= 1.0 and record["test"]["logloss"] > 0
    assert record["hparams"] == {"embed_dim": 8, "attn_dim": 16, "dropout": 0.2}
    assert record["config"]["batch_size"] == 256
    assert 1 <= record["best_epoch"] <= record["epochs_run"] <= 3
    assert record["train_samples_per_s"] > 0 and record["inference_samples_per_s"] > 0
    assert record["memory"]["rss_peak_bytes"] > 0 and record["memory"]["cuda_peak_bytes"] is None
    assert record["parameters"] == sum(p.numel() for p in create_model("afm", tiny_dataset.field_dims,
                                                                      embed_dim=8).parameters())
    for key in ("torch", "device_name", "cpu_model", "threads", "git_commit", "date"):
        assert key in record["environment"]
    assert record["environment"]["gpu"] is None and record["environment"]["device"] == "cpu"
    assert record["running_backend"] == "einsum" and record["compile"] is False
    assert record["warmup_seconds"] > 0 and "cuda_peak_bytes" not in record["history"][0]
    json.dumps(record)


def test_warm_up_leaves_weights_buffers_and_random_state_as_they_were(tiny_dataset):
    """The warm-up trains a few steps; a run must go on exactly as if it had not (NFM: BatchNorm
    statistics; AFM: dropout draws)."""
    from ctrbench.training.train import warm_up

    X, y = (torch.as_tensor(a) for a in tiny_dataset.split("train"))
    for name in ("nfm", "afm"):
        torch.manual_seed(0)
        model = create_model(name, tiny_dataset.field_dims)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()
        assert warm_up(model, (X, y), [X[:700]], FAST) > 0
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert torch.equal(torch.get_rng_state(), rng)


def test_out_of_range_ids_in_the_data_stop_the_run_before_training(tiny_dataset, monkeypatch):
    """On a GPU the forward does not check id values (that would wait for the device every step), so
    the protocol checks every split once on load, naming the split."""
    tiny_dataset.X = tiny_dataset.X.copy()
    tiny_dataset.X[tiny_dataset.splits["test"][3], 2] = 99
    monkeypatch.setattr(protocol, "fit", lambda *args, **kwargs: pytest.fail("trained on bad data"))
    with pytest.raises(ValueError, match=r"tiny test split: feature id 99 at row 3, field 2"):
        run_one(RunSpec("tiny", "fm", "sum_square", 0, config=FAST), tiny_dataset)


@pytest.fixture
def tiny_loader(monkeypatch):
    loads = []

    def load(name, data_dir=None, seed=0, **options):
        loads.append(seed)
        return make_tiny_dataset(seed=seed, **options)
    monkeypatch.setattr(protocol, "load", load)
    return loads


def grid(results_dir, log=lambda message: None):
    return run_grid(Grid("tiny", ["fm", "afm"], "default", [0, 1], config=FAST), results_dir, log=log)


def test_grid_resumes_after_a_kill_between_runs(tmp_path, tiny_loader):
    class Killed(Exception):
        pass

    def kill_after_second_record(message):
        if message.startswith("[2/4]"):
            raise Killed
    with pytest.raises(Killed):
        grid(tmp_path, log=kill_after_second_record)
    assert len(read_records(tmp_path / "runs")[0]) == 2
    messages = []
    records = grid(tmp_path, log=messages.append)
    assert len(records) == 4
    assert sum("already stored" in m for m in messages) == 2
    assert len(read_records(tmp_path / "runs")[0]) == 4
    assert sum("already stored" in m for m in (lambda ms: (grid(tmp_path, ms.append), ms)[1])([])) == 4


def test_grid_resumes_after_a_kill_inside_a_run(tmp_path, tiny_loader, monkeypatch):
    real_fit = protocol.fit
    calls = []

    def fit_killed_on_third_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)
    monkeypatch.setattr(protocol, "fit", fit_killed_on_third_run)
    with pytest.raises(KeyboardInterrupt):
        grid(tmp_path)
    stored = list((tmp_path / "runs").rglob("*"))
    assert len([p for p in stored if p.is_file()]) == 2          # no partial or temp file left
    monkeypatch.setattr(protocol, "fit", real_fit)
    assert len(grid(tmp_path)) == 4


def test_corrupt_record_is_reported_skipped_and_rerun(tmp_path, tiny_loader):
    grid(tmp_path)
    victim = sorted((tmp_path / "runs").rglob("*.json"))[0]
    victim.write_text(victim.read_text()[:100])                    # a half-written file
    (tmp_path / "runs" / "tiny" / "stray.json").write_text("[1, 2]")
    markdown, problems = render(tmp_path)
    assert len(problems) == 2 and any(victim.name in p for p in problems)
    assert "fm" in markdown and "afm" in markdown
    messages = []
    assert len(grid(tmp_path, log=messages.append)) == 4
    assert any("warning" in m and victim.name in m for m in messages)
    read_record(victim)


def test_leaderboard_aggregates_seeds(tmp_path, tiny_loader):
    records = grid(tmp_path)
    markdown, problems = render(tmp_path)
    assert not problems
    assert markdown.splitlines()[0].startswith("<!-- Generated by")
    fm_aucs = [r["test"]["auc"] for r in records if r["model"] == "fm"]
    mean = sum(fm_aucs) / 2
    fm_row = next(line for line in markdown.splitlines() if line.startswith("| fm "))
    assert f"{mean:.4f} ± " in fm_row and "(2)" in fm_row


def test_impossible_combination_lists_valid_choices(tmp_path, tiny_loader):
    with pytest.raises(ValueError, match="valid interactions for 'afm'"):
        run_grid(Grid("tiny", ["afm"], ["sum_square"], [0], config=FAST), tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        run_grid(Grid("tiny", ["fm", "ffm"], "all", [0], config=FAST), tmp_path)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        run_grid(Grid("tiny", ["fm"], "all", [0], hparams={"attn_dim": 4}, config=FAST), tmp_path)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lr": 0}, {"patience": 0}, {"plateau_lr_factor": 1.5}])
def test_bad_training_settings_are_clear_errors(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_quality_tables_never_mix_devices_modes_or_training_settings(tmp_path, tiny_loader):
    """A GPU run, a compiled run and a run with another batch size each get their own table (and
    their own best row), even for the same model, data and seeds."""
    from ctrbench.store.records import write_record

    records = grid(tmp_path)
    for record in records:
        variants = [{"device": "cuda", "memory": {**record["memory"], "cuda_peak_bytes": 3 * 2**20},
                     "environment": {**record["environment"], "device_name": "NVIDIA H200"}},
                    {"compile": True}, {"config": {**record["config"], "batch_size": 128}}]
        for number, change in enumerate(variants):
            write_record(tmp_path / "runs" / "tiny" / f"variant{number}_{record['key']}_{record['seed']}.json",
                         {**record, **change, "key": f"{record['key']}-{number}"})
    markdown, problems = render(tmp_path)
    assert not problems
    headings = [line for line in markdown.splitlines() if line.startswith("### tiny")]
    machines = sorted(heading.split(" · ")[1] for heading in headings)
    assert machines == ["cpu, compiled", "cpu, eager", "cpu, eager", "cuda (NVIDIA H200), eager"]
    assert len(set(headings)) == 4 and not any("{" in heading for heading in headings)
    assert len(re.findall(r"\| best +\|", markdown)) == 4
    cuda_heading = next(h for h in headings if "cuda (NVIDIA H200)" in h)
    cuda_table = markdown.split(cuda_heading)[1].split("###")[0]
    assert "CUDA peak MiB" in cuda_table and "| 3 " in cuda_table
    assert "batch=128" in markdown and "batch=256" in markdown
    assert '| data options                 | rows=3000' in markdown
