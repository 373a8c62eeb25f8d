"""`ctrbench tune`: search spaces, bad input, studies in SQLite and PostgreSQL, several workers, a killed worker."""
import dataclasses
import glob
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from ctrbench.commands import main
from ctrbench.datasets import load
from ctrbench.models import model_entry, registry
from ctrbench.report.leaderboard import render
from ctrbench.training.protocol import Grid, run_grid
from ctrbench.training.train import TrainConfig
from ctrbench.tuning.spaces import grid_size, search_space, space_hash, split_params, untuned_point
from ctrbench.tuning.tuner import (
    TuneSettings,
    finished_points,
    make_objective,
    open_storage,
    open_study,
    redact,
    rerun_best,
    tune,
    work,
)

# A tiny purchase log and short runs: a trial takes about a second.
TINY = ["--dataset", "purchase", "--data-option", "rows=2000", "--max-epochs", "2", "--threads", "1", "--quiet"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def tiny_settings(model="fm", **kw) -> TuneSettings:
    return TuneSettings("purchase", model, config=TrainConfig(batch_size=512, max_epochs=2, patience=2),
                        dataset_options={"rows": 2000}, **kw)


# ------------------------------------------------------------------------------------------ spaces

@pytest.mark.parametrize("model", ["fm", "nfm", "afm", "fwfm", "deepfm", "qafm"])
def test_every_benchmarked_model_declares_a_space_with_its_untuned_point(model):
    space = search_space(model)
    defaults = {name: default for name, (default, _) in model_entry(model).hparams.items()}
    for name, values in space.items():
        assert values, name
        untuned = defaults.get(name, getattr(TrainConfig(), name, None))
        assert untuned in values, f"{model}: the untuned {name}={untuned} is not in {values}"


def test_bars_floor_is_in_the_spaces():
    afm, fm, nfm, deepfm = (search_space(m) for m in ("afm", "fm", "nfm", "deepfm"))
    assert {64, 128} <= set(afm["attn_dim"]) and {0, 0.1, 0.2} <= set(afm["dropout"])
    assert {1e-4, 1e-5, 1e-6} <= set(afm["embedding_regularizer"])
    assert {5e-5, 5e-6} <= set(fm["embedding_regularizer"])
    assert {1e-5, 0.05} <= set(nfm["embedding_regularizer"]) and {0.1, 0.4} <= set(nfm["dropout"])
    assert {0.05, 0.1, 0.2, 0.5} <= set(deepfm["embedding_regularizer"]) and {0, 0.1, 0.2} <= set(deepfm["dropout"])


def test_fm_and_fwfm_search_the_learning_rate_which_a_trial_trains_with():
    # At BARS's lr of 1e-3 both were still improving at epoch 100 of 100 on frappe: a capped verdict.
    for model in ("fm", "fwfm"):
        assert {1e-3, 1e-2} <= set(search_space(model)["lr"])
    hparams, config = split_params("fm", {"embed_dim": 8, "lr": 1e-2}, TrainConfig())
    assert hparams == {"embed_dim": 8} and config.lr == 1e-2


def test_space_hash_ignores_order_and_params_split_into_hparams_and_settings():
    assert space_hash({"a": [1], "b": [2]}) == space_hash({"b": [2], "a": [1]})
    hparams, config = split_params("afm", {"attn_dim": 64, "embedding_regularizer": 1e-5}, TrainConfig())
    assert hparams == {"attn_dim": 64} and config.embedding_regularizer == 1e-5


def test_redact_hides_the_password():
    assert redact("postgresql://me:secret@db.example:5432/studies") == "postgresql://me:***@db.example:5432/studies"


# -------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("arguments, says", [
    (["--models", "nosuchmodel", "--trials", "2"], "unknown model 'nosuchmodel'"),
    (["--models", "fm", "--trials", "2", "--storage", "not a url"], "not a database URL"),
    (["--models", "fm", "--trials", "2", "--storage", "nosuchdialect://x/y"], "cannot open the study storage"),
    (["--models", "fm", "--trials", "2", "--storage", "postgresql://u:pw@127.0.0.1:1/none"],
     "cannot open the study storage postgresql://u:***@127.0.0.1:1/none"),
    (["--models", "fm", "--trials", "0"], "--trials must be >= 1"),
    (["--models", "fm", "--trials", "2", "--prune-from", "0"], "--prune-from must be an epoch >= 1"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arguments, says):
    code = main(["tune", *TINY, "--results-dir", str(tmp_path), *arguments])
    err = capsys.readouterr().err
    assert code == 2
    assert says in err and err.count("\n") == 1, err
    assert "pw" not in err.replace("***", "")


def test_a_model_without_a_space_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(registry._MODELS, "fm", dataclasses.replace(model_entry("fm"), search_space={}))
    code = main(["tune", *TINY, "--results-dir", str(tmp_path), "--models", "fm", "--trials", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "empty search space" in err and err.count("\n") == 1, err


def take_queued_trial(url: str, name: str, ready, start, taken) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    study.get_trials()                                      # connected before the start
    ready.put(True)
    while start.value == 0 or time.time() < start.value:    # every worker spins to the same instant
        pass
    taken.put(study._pop_waiting_trial_id())


def test_a_queued_trial_is_taken_by_one_worker_only_on_sqlite(tmp_path):
    # Without BEGIN IMMEDIATE (serialize_sqlite_transactions) 2 to 6 of 6 processes took the one trial here.
    import multiprocessing
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    context = multiprocessing.get_context("fork")       # quick to start; the children open their own storage
    for round_ in range(3):
        optuna.create_study(study_name=f"q{round_}", storage=open_storage(url)).enqueue_trial({"x": 1})
        ready, taken, start = context.Queue(), context.Queue(), context.Value("d", 0.0)
        workers = [context.Process(target=take_queued_trial, args=(url, f"q{round_}", ready, start, taken))
                   for _ in range(6)]
        for process in workers:
            process.start()
        for _ in workers:                                   # all six connected, then one start for all
            ready.get(timeout=60)
        start.value = time.time() + 0.2
        for process in workers:
            process.join(60)
        assert sum(taken.get(timeout=10) is not None for _ in workers) == 1


# ------------------------------------------------------------------------------- one SQLite study

def test_tune_reaches_the_budget_continues_and_refuses_other_settings(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = tune(tiny_settings(), storage, trials=3, study_name="s", progress=False)
    assert sum(t.state in FINISHED for t in study.trials) == 3
    study = tune(tiny_settings(), storage, trials=5, study_name="s", progress=False)      # continued
    assert sum(t.state in FINISHED for t in study.trials) == 5
    assert len({t.number for t in study.trials}) == len(study.trials)
    with pytest.raises(ValueError, match="exists with other settings"):
        tune(tiny_settings(seed=1), storage, trials=5, study_name="s", progress=False)


def test_the_untuned_point_is_the_first_trial_and_is_queued_once(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = tune(tiny_settings(), storage, trials=2, study_name="u", progress=False)
    first = study.trials[0]
    assert first.params == {"embedding_regularizer": 0.0, "lr": 1e-3} and first.user_attrs.get("untuned")
    study = tune(tiny_settings(), storage, trials=3, study_name="u", progress=False)      # continued
    assert sum(bool(t.user_attrs.get("untuned")) for t in study.trials) == 1
    assert study.best_value >= first.value


def test_a_study_begun_without_the_untuned_point_gets_it_when_continued(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    settings = tiny_settings()
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")    # as before the rule
    old.set_user_attr("identity", json.loads(json.dumps(settings.identity(), default=str)))
    old.enqueue_trial({"embedding_regularizer": 1e-4})
    old.optimize(make_objective(settings, load("purchase", rows=2000), old, 2), n_trials=1)
    study = tune(settings, storage, trials=2, study_name="old", progress=False)
    done = [t for t in study.trials if t.state in FINISHED]
    assert [t.params["embedding_regularizer"] for t in done] == [1e-4, 0.0]


def test_a_space_without_the_configs_setting_queues_nothing():
    assert untuned_point("fm", {"embedding_regularizer": [1e-5, 1e-4]}, TrainConfig()) is None
    assert untuned_point("afm", search_space("afm"), TrainConfig()) == {"attn_dim": 16, "dropout": 0.2,
                                                                         "embedding_regularizer": 0.0}


def test_repeats_are_not_counted_and_an_untried_point_takes_their_place(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    settings = tiny_settings()
    space = search_space("fm")
    points = grid_size(space)
    study = tune(settings, storage, trials=points, study_name="r", progress=False)      # every point, once
    counted_trials = [t for t in study.trials if t.state in FINISHED]
    assert sorted(tuple(t.params[name] for name in space) for t in counted_trials) == sorted(
        itertools.product(*space.values()))
    for repeat in [t for t in study.trials if "repeat_of" in t.user_attrs]:
        assert repeat.state == TrialState.FAIL                          # not trained, not in the budget
        assert any(t.user_attrs.get("in_place_of") == repeat.number for t in study.trials)
    study = tune(settings, storage, trials=points + 5, study_name="r", progress=False)  # the space is the cap
    assert sum(t.state in FINISHED for t in study.trials) == points


def test_the_untuned_trial_is_never_pruned(tmp_path, monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)     # a pruner that prunes all
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = tune(tiny_settings(), storage, trials=2, study_name="p", progress=False)
    first, second = [t for t in study.trials if t.state in FINISHED]
    assert first.user_attrs.get("untuned") and first.state == TrialState.COMPLETE
    assert second.state == TrialState.PRUNED


def test_pruning_starts_where_asked_and_can_be_switched_off(tmp_path, monkeypatch):
    seen_from = []

    def prune_always(self, study, trial):
        seen_from.append(self._n_warmup_steps)
        return True
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", prune_always)
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    pruned = tune(tiny_settings(prune_from=1), storage, trials=3, study_name="a", progress=False)
    assert [t.state for t in pruned.trials if t.state in FINISHED] == [TrialState.COMPLETE] + [TrialState.PRUNED] * 2
    assert set(seen_from) == {1}
    free = tune(tiny_settings(prune_from=None), storage, trials=3, study_name="b", progress=False)
    assert [t.state for t in free.trials if t.state in FINISHED] == [TrialState.COMPLETE] * 3
    assert tiny_settings(prune_from=None).default_study_name() != tiny_settings().default_study_name()


def test_a_study_from_before_the_pruning_setting_continues_with_its_old_rule(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    settings = tiny_settings(prune_from=2)
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    identity = json.loads(json.dumps(settings.identity(), default=str))
    del identity["prune_from_epoch"]                                    # as such studies stored it
    old.set_user_attr("identity", identity)
    assert finished_points(tune(settings, storage, trials=1, study_name="old", progress=False)) == 1
    with pytest.raises(ValueError, match="prune_from_epoch differ"):
        tune(tiny_settings(), storage, trials=2, study_name="old", progress=False)


def test_a_duplicate_untuned_trial_is_surplus_not_trained_twice(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    settings = tiny_settings()
    study = open_study(settings, storage, "race", budget=2)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={"untuned": True},
                                              system_attrs={"fixed_params": {"embedding_regularizer": 0.0}}))
    work(study, make_objective(settings, load("purchase", rows=2000), study, 2), 2, progress=False)
    trials = study.trials
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs.get("surplus")
    assert sum(t.state in FINISHED for t in trials) == 2


def test_grid_sampler_caps_the_budget_at_the_grid(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    study = tune(tiny_settings(sampler="grid"), storage, trials=50, study_name="g", progress=False)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == grid_size(search_space("fm"))
    assert len({tuple(sorted(t.params.items())) for t in finished}) == len(finished)


def test_tuned_rerun_records_and_their_own_table(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    settings = tiny_settings()
    study = tune(settings, storage, trials=2, study_name="t", progress=False)
    records = rerun_best(study, settings, [0, 1], tmp_path, progress=False, log=lambda message: None)
    assert len(records) == 2
    for record in records:
        assert record["tuned"] == {"study": "t", "space_hash": space_hash(search_space("fm"))}
        assert record["tuning"]["trials"] == 2 and record["tuning"]["params"] == study.best_params
    # the same configuration untuned is another run (another key), and another table
    main(["run", *TINY, "--models", "fm", "--seeds", "2", "--batch-size", "512", "--patience", "2",
          "--results-dir", str(tmp_path)])
    markdown, _ = render(tmp_path)
    tuned_tables = [line for line in markdown.splitlines() if line.startswith("### ") and " · tuned (" in line]
    assert len(tuned_tables) == 1 and "study `t`, 2 trials" in markdown


def test_a_tuned_learning_rate_is_its_row_s_and_the_table_keeps_the_budget_s(tmp_path):
    # FM's study picks lr 0.01 (a trial added with the best value), NFM's searches no lr: both re-runs share
    # one tuned table, whose heading gives the budget's lr, and FM's row says its own.
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}")
    fm_settings, nfm_settings = tiny_settings("fm"), tiny_settings("nfm")
    fm_study = tune(fm_settings, storage, trials=1, study_name="fm", progress=False)
    space = fm_settings.space
    fm_study.add_trial(optuna.trial.create_trial(
        params={"embedding_regularizer": 0.0, "lr": 0.01}, value=1.0,
        distributions={name: optuna.distributions.CategoricalDistribution(space[name]) for name in space}))
    records = rerun_best(fm_study, fm_settings, [0], tmp_path, progress=False, log=lambda message: None)
    assert records[0]["config"]["lr"] == 0.01 and records[0]["tuning"]["budget"] == {"lr": 1e-3}
    nfm_study = tune(nfm_settings, storage, trials=1, study_name="nfm", progress=False)
    rerun_best(nfm_study, nfm_settings, [0], tmp_path, progress=False, log=lambda message: None)
    markdown, problems = render(tmp_path)
    headings = [line for line in markdown.splitlines() if line.startswith("### ") and " · tuned (" in line]
    assert problems == [] and len(headings) == 1 and "lr 0.001" in headings[0], headings
    table = markdown.split(headings[0])[1].split("\n### ")[0]
    fm_row = next(line for line in table.splitlines() if line.startswith("| fm "))
    assert "lr=0.01" in fm_row and any(line.startswith("| nfm ") for line in table.splitlines())


def test_a_stored_rerun_is_described_anew_not_trained_again(tmp_path):
    options = dict(dataset_options={"rows": 2000}, config=TrainConfig(batch_size=512, max_epochs=1, patience=1),
                   tuned={"study": "s", "space_hash": "h"})
    cells = ("purchase", ["fm"], ["sum_square"], [0])
    first = run_grid(Grid(*cells, record_extra={"tuning": {"trials": 5}}, **options), tmp_path, log=lambda m: None)
    said = []
    again = run_grid(Grid(*cells, record_extra={"tuning": {"trials": 6}}, **options), tmp_path, log=said.append)
    assert "all 1 runs were stored already" in said[-1] and "nothing trained" in said[-1]
    assert again[0]["tuning"] == {"trials": 6} and again[0]["wall_seconds"] == first[0]["wall_seconds"]
    (path,) = (tmp_path / "runs" / "purchase").glob("*.json")
    assert json.loads(path.read_text())["tuning"] == {"trials": 6}


def test_cli_tune_writes_plots_and_the_leaderboard(tmp_path, capsys):
    assert main(["tune", *TINY, "--models", "fm", "--trials", "3", "--rerun-seeds", "2",
                 "--results-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 finished trials" in out
    assert list((tmp_path / "tuning").glob("*_history.png"))
    assert (tmp_path / "studies" / "studies.db").exists()
    assert "tuned (tpe" in (tmp_path / "leaderboard.md").read_text()          # the front page's verdict


# ------------------------------------------------------------------- several workers, a killed one

def postgres_binaries() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 only, in a temp data folder, stopped afterwards; skipped (saying
    why) where Debian's `postgresql` package or the psycopg driver is not installed."""
    pytest.importorskip("psycopg", reason="the postgres extra (psycopg) is not installed")
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's server is not installed (Debian: apt-get install -y postgresql)")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="ctrbench-postgres-"))
    data = root / "data"
    as_user = []
    if os.geteuid() == 0:                       # initdb refuses root: run the server as `postgres`
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
                    "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run([*as_user, str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "studies"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/studies"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("postgres_url")


def worker(storage: str, study: str, trials: int, results_dir: Path, *extra: str) -> subprocess.Popen:
    """A `ctrbench tune` process that tunes only (no re-runs), as a worker on another machine would."""
    command = [sys.executable, "-m", "ctrbench", "tune", *TINY, "--models", "fm", "--trials", str(trials),
               "--storage", storage, "--study", study, "--no-rerun", "--results-dir", str(results_dir), *extra]
    return subprocess.Popen(command, cwd=results_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished_trials(storage: str, study: str) -> list:
    return [t for t in optuna.load_study(study_name=study, storage=storage).trials if t.state in FINISHED]


@pytest.mark.slow
def test_two_workers_share_one_study_without_duplicates(storage_url, tmp_path):
    study = f"two-{os.getpid()}-{time.monotonic_ns()}"
    workers = [worker(storage_url, study, 6, tmp_path) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    finished = finished_trials(storage_url, study)
    assert len(finished) == 6
    # every trial ran in one worker only; surplus trials (a worker that came too late) did not train
    by_worker = [t.user_attrs["worker"] for t in finished]
    assert len({t.number for t in finished}) == 6 and all(by_worker)
    everything = optuna.load_study(study_name=study, storage=storage_url).trials
    assert all(t.user_attrs.get("surplus") or "repeat_of" in t.user_attrs
               for t in everything if t.state == TrialState.FAIL)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_a_failed_trial_that_is_retried(storage_url, tmp_path):
    study = f"kill-{os.getpid()}-{time.monotonic_ns()}"
    # trials of a few seconds (50 epochs of ~50 ms, no early stop), found running within 0.5 s of their start,
    # so that the kill lands inside one; heartbeat 1 s, grace 3 s
    slow = ["--max-epochs", "50", "--patience", "50", "--heartbeat", "1"]
    victim = worker(storage_url, study, 3, tmp_path, *slow)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            running = [t for t in optuna.load_study(study_name=study, storage=storage_url).trials
                       if t.state == TrialState.RUNNING and "embedding_regularizer" in t.params]
        except KeyError:                         # the study is not created yet
            running = []
        if running:
            break
        time.sleep(0.5)
    assert running, "the worker never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed = running[0].number
    survivor = worker(storage_url, study, 3, tmp_path, *slow)
    output = survivor.communicate(timeout=900)[0]
    assert survivor.returncode == 0, output
    trials = optuna.load_study(study_name=study, storage=storage_url).trials
    assert len([t for t in trials if t.state in FINISHED]) == 3
    assert trials[killed].state == TrialState.FAIL                                   # not lost: marked failed
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params          # retried once, same point
    assert retries[0].state in FINISHED
