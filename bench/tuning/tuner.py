"""Optuna studies over a model's search space, kept in a relational database, and the re-run of the best.

One study = one (dataset, model, interaction) under one training budget (batch, lr, patience, epochs,
dataset options, device, seed, sampler, pruning, search space): its identity is stored with the study and a
worker with other settings is refused, so trials of two budgets never mix. Any number of workers (`ctrbench
tune` processes, on any machines that reach the database) pull trials from one study; Optuna's storage
hands out each trial once. A worker killed mid-trial stops beating its heartbeat; after the grace period
the next worker to look marks that trial failed and Optuna's retry callback puts a copy of it
(same parameters) back in the queue, so it is retried, not lost and not silently counted twice.

The budget is N finished (complete or pruned) trials of distinct points: a point the sampler proposes
again is failed (`repeat_of`) and an untried one queued instead. Optuna numbers trials atomically in the database;
a trial that finds N unfailed trials numbered before it gives up at once (state FAIL, user attribute
`surplus`), which is what makes N exact when several workers start trials at the same moment.
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import os
import random
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
import optuna.storages
import sqlalchemy
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState
from tqdm.auto import tqdm

from ctrbench.datasets import load
from ctrbench.models import model_entry
from ctrbench.training.context import RunContext
from ctrbench.training.protocol import Grid, RunSpec, run_grid, train_and_test
from ctrbench.training.train import TrainConfig

from .fields import GRACE_S, HEARTBEAT_S, PRUNE_FROM, PRUNE_FROM_BEFORE  # noqa: F401  (shared with readers)
from .spaces import grid_size, search_space, space_hash, split_params, untuned_point

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_RETRIES = 3           # a killed trial is retried this often before it stays failed


# Puts a copy of a trial whose heartbeat stopped back in the queue (named so since Optuna 4.9).
RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback


# What a lost race to create a new database's tables looks like (SQLite, PostgreSQL).
CREATION_RACE = ("IntegrityError", "UniqueViolation", "already exists", "duplicate key")


class Surplus(Exception):
    """The study's budget was already taken by trials numbered before this one."""


class Repeat(Surplus):
    """The sampler proposed a point an earlier trial has tried: not trained again and not counted (TPE
    repeats itself on small categorical spaces); an untried point is queued in its place."""


def default_storage(results_dir: Path) -> str:
    """An SQLite file under the results folder: embedded, nothing to start."""
    path = (Path(results_dir) / "studies" / "studies.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def redact(url: str) -> str:
    """The storage URL without its password, for messages and records."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    except ValueError:                   # an unparsable URL: show only its scheme
        return url.split("://", 1)[0] + "://…" if "://" in url else "<unparsable URL>"


def serialize_sqlite_transactions(engine) -> None:
    """Make every transaction on this SQLite engine begin IMMEDIATE (take the write lock up front).

    Python's sqlite3 opens no transaction before a SELECT, so Optuna's read-then-write steps, such as
    taking a queued trial (WAITING -> RUNNING), can interleave between two workers and both take it;
    PostgreSQL locks the row instead (SELECT ... FOR UPDATE). Seen with two workers starting on one
    study: both ran the queued first trial and the second to finish could not report it. One writer at
    a time is cheap next to a trial; the 60 s busy timeout covers the wait."""
    @sqlalchemy.event.listens_for(engine, "connect")
    def no_implicit_transactions(dbapi_connection, _record):
        dbapi_connection.isolation_level = None         # sqlite3 stops issuing BEGIN on its own

    @sqlalchemy.event.listens_for(engine, "begin")
    def begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()                                      # connections opened before the hooks are dropped


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S) -> RDBStorage:
    """Optuna's RDB storage with heartbeats and retries of dead trials; ValueError in one line when the
    URL is malformed, its driver missing or the database unreachable."""
    if "://" not in url:
        raise ValueError(f"storage {url!r} is not a database URL (sqlite:///path.db or "
                         "postgresql://user:password@host/db)")
    given = url
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is not None:
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")    # the postgres extra's driver
    engine_kwargs = ({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                     else {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}})
    for attempt in range(3):
        try:
            with warnings.catch_warnings():    # heartbeats and retries are marked experimental; we rely on them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s,
                                     grace_period=grace_s, heartbeat_stale_trial_callback=RETRY(max_retry=MAX_RETRIES))
            if url.startswith("sqlite"):
                serialize_sqlite_transactions(storage.engine)
            return storage
        except Exception as error:  # noqa: BLE001 - SQLAlchemy's many kinds all mean: no usable database
            text = f"{type(error).__name__}: {error}"
            # Workers that start together on a new database race to create its tables; the loser sees
            # them half made and simply opens the database again.
            if attempt < 2 and any(sign in text for sign in CREATION_RACE):
                time.sleep(1 + attempt)
                continue
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot open the study storage {redact(given)}: {type(error).__name__}: "
                             f"{first}") from None


@dataclass
class TuneSettings:
    dataset: str
    model: str
    interaction: str | None = None       # None: the model's default
    config: TrainConfig = field(default_factory=TrainConfig)
    dataset_options: dict = field(default_factory=dict)
    device: str = "cpu"
    seed: int = 0                         # the split, initialisation and order of every trial
    sampler: str = "tpe"                  # tpe or grid
    data_dir: Path | None = None
    # The median pruner may stop a trial from this epoch on; None: no pruning. Early validation AUC
    # predicts little on slow learners: on purchase, FM's curves under every regularizer agreed to four
    # digits at epoch 2, where the first studies (PRUNE_FROM_BEFORE) pruned them.
    prune_from: int | None = PRUNE_FROM

    def __post_init__(self):
        entry = model_entry(self.model)
        self.interaction = self.interaction or entry.default_interaction
        if self.sampler not in ("tpe", "grid"):
            raise ValueError(f"sampler must be tpe or grid, got {self.sampler!r}")
        if self.prune_from is not None and self.prune_from < 1:
            raise ValueError(f"--prune-from must be an epoch >= 1, got {self.prune_from}")
        self.space = search_space(self.model)

    def identity(self) -> dict:
        """What makes two workers' trials comparable: stored with the study, checked by every worker."""
        return {"dataset": self.dataset, "dataset_options": self.dataset_options, "model": self.model,
                "interaction": self.interaction, "config": self.config.as_dict(), "device": self.device,
                "seed": self.seed, "sampler": self.sampler, "prune_from_epoch": self.prune_from,
                "space": self.space}

    def default_study_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.dataset}-{self.model}-{digest[:8]}"


def open_study(settings: TuneSettings, storage: RDBStorage, name: str, budget: int) -> optuna.Study:
    """Create the study or continue it; ValueError if it exists with other settings."""
    if settings.sampler == "grid":
        sampler = optuna.samplers.GridSampler(settings.space, seed=settings.seed)
    else:
        # Seeded; offset by the trials already there, so a continued study does not replay its start.
        done = 0
        try:
            done = len(optuna.load_study(study_name=name, storage=storage).trials)
        except KeyError:
            pass
        sampler = optuna.samplers.TPESampler(seed=settings.seed + done, n_startup_trials=max(2, min(10, budget // 3)),
                                             constant_liar=True)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=settings.prune_from)
              if settings.prune_from is not None else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    identity = json.loads(json.dumps(settings.identity(), default=str))
    stored = study.user_attrs.get("identity")
    if stored is not None and "prune_from_epoch" not in stored:      # made before pruning was a setting
        stored = {**stored, "prune_from_epoch": PRUNE_FROM_BEFORE}
    if stored is None:
        study.set_user_attr("identity", identity)
        study.set_user_attr("space_hash", space_hash(settings.space))
    elif stored != identity:
        changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        raise ValueError(f"study {name!r} exists with other settings ({', '.join(changed)} differ); "
                         "name another study (--study) or drop the option that changed")
    enqueue_untuned(study, settings)
    return study


def enqueue_untuned(study: optuna.Study, settings: TuneSettings) -> None:
    """Queue the untuned configuration as the study's next trial unless a trial trained it to the end or
    holds it queued or running (the grid has it anyway): the best trial is then never one the untuned
    run beats on validation, and a study started before this rule gets the point when it is continued."""
    point = untuned_point(settings.model, settings.space, settings.config)
    if settings.sampler == "grid" or point is None:
        return
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.COMPLETE and counted(trial) and trial.params == point:
            return                      # trained to the end already (a pruned one is run again, unpruned)
        if trial.state in (TrialState.WAITING, TrialState.RUNNING) and trial.user_attrs.get("untuned"):
            return
    study.enqueue_trial(point, user_attrs={"untuned": True})


def enqueue_untried(study: optuna.Study, settings: TuneSettings, in_place_of: int) -> None:
    """Queue a point of the space that no trial has tried or holds, drawn with a seed (nothing where
    every point is taken)."""
    names = list(settings.space)
    taken = set()
    for trial in study.get_trials(deepcopy=False):
        params = trial.system_attrs.get("fixed_params", trial.params) if trial.state == TrialState.WAITING \
            else trial.params
        if trial.state != TrialState.FAIL and counted(trial) and set(params) == set(names):
            taken.add(tuple(params[name] for name in names))
    untried = [combo for combo in itertools.product(*settings.space.values()) if combo not in taken]
    if untried:
        choice = random.Random(f"{settings.seed}:{in_place_of}").choice(untried)
        study.enqueue_trial(dict(zip(names, choice)), user_attrs={"in_place_of": in_place_of})


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial takes a place in the budget: not failed, not a repeat of an earlier point
    (studies made before repeats were failed hold them as complete, marked `repeat_of`)."""
    return trial.state != TrialState.FAIL and "repeat_of" not in trial.user_attrs


def finished_points(study: optuna.Study) -> int:
    """Finished (complete or pruned) trials of distinct points: what `--trials` counts."""
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if counted(t))


def best_line(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.4f}"
    except ValueError:
        return "–"


def make_objective(settings: TuneSettings, dataset, study: optuna.Study, budget: int):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and counted(t))
        if ahead >= budget:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the budget of {budget} was taken by earlier trials")
        if trial.user_attrs.get("untuned") and any(
                t.number < trial.number and t.user_attrs.get("untuned") and t.state != TrialState.FAIL
                for t in study.get_trials(deepcopy=False)):
            trial.set_user_attr("surplus", True)       # two workers queued it at once (enqueue_untuned)
            raise Surplus(f"trial {trial.number}: the untuned point is queued or run by an earlier trial")
        params = {name: trial.suggest_categorical(name, values) for name, values in settings.space.items()}
        untuned = bool(trial.user_attrs.get("untuned"))
        for earlier in study.get_trials(deepcopy=False, states=FINISHED):
            if earlier.params == params and counted(earlier) and not untuned:
                trial.set_user_attr("repeat_of", earlier.number)
                enqueue_untried(study, settings, trial.number)
                raise Repeat(f"trial {trial.number}: the point of trial {earlier.number} again")
        hparams, config = split_params(settings.model, params, settings.config)
        spec = RunSpec(settings.dataset, settings.model, settings.interaction, settings.seed, hparams,
                       settings.dataset_options, config, settings.device)

        def on_epoch(entry: dict) -> None:
            trial.report(entry["val_auc"], entry["epoch"])
            if not untuned and trial.should_prune():      # the untuned reference is always trained to the end
                raise optuna.TrialPruned(f"epoch {entry['epoch']}: validation AUC {entry['val_auc']:.4f}")

        run = train_and_test(spec, dataset, RunContext(on_epoch=on_epoch))
        trial.set_user_attr("best_epoch", run.fit.best_epoch)
        trial.set_user_attr("epochs_run", run.fit.epochs_run)
        return run.fit.best_validation["auc"]
    return objective


def work(study: optuna.Study, objective, budget: int, timeout: float | None = None, progress: bool = True,
         poll_s: float = 2.0) -> int:
    """Run trials until the study has `budget` finished ones (waiting for other workers' trials in flight,
    which finish or go stale and come back as retries) or `timeout` seconds pass; returns the finished count."""
    start = time.monotonic()
    bar = tqdm(total=budget, initial=min(finished_points(study), budget), desc=study.study_name,
               disable=not progress, leave=True)
    try:
        while True:
            finished = finished_points(study)
            bar.n = min(finished, budget)
            bar.set_postfix(best=best_line(study))
            bar.refresh()
            if finished >= budget or (timeout is not None and time.monotonic() - start > timeout):
                return finished
            trials = study.get_trials(deepcopy=False)
            open_ = sum(1 for t in trials if counted(t))
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if open_ >= budget and not waiting:
                time.sleep(poll_s)           # the rest run elsewhere: wait for them to end or go silent
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
                continue
            study.optimize(objective, n_trials=1, catch=(Surplus,))
    finally:
        bar.close()


def rerun_best(study: optuna.Study, settings: TuneSettings, seeds: list[int], results_dir: Path, progress: bool,
               log=print) -> list[dict]:
    """The best trial's configuration through the ordinary protocol on `seeds`; records say tuned."""
    best = study.best_trial
    hparams, config = split_params(settings.model, best.params, settings.config)
    finished = finished_points(study)
    complete = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if counted(t))
    tuned = {"study": study.study_name, "space_hash": space_hash(settings.space)}
    # The budget's own values of the training settings the study chose (lr=0.001, say): what the record's
    # table shares with the other models' tables, whose studies did not search those settings.
    budget = {name: value for name, value in settings.config.as_dict().items()
              if name in best.params and name not in hparams}
    extra = {"tuning": {"study": study.study_name, "trials": finished, "complete": complete,
                        "best_trial": best.number, "best_validation_auc": best.value, "params": best.params,
                        "space": settings.space, "sampler": settings.sampler, "seed": settings.seed,
                        "prune_from_epoch": settings.prune_from, "budget": budget}}
    grid = Grid(settings.dataset, [settings.model], [settings.interaction], seeds, hparams, settings.dataset_options,
                config, settings.device, settings.data_dir, tuned=tuned, record_extra=extra)
    return run_grid(grid, results_dir, RunContext(progress=progress), log)


def tune(settings: TuneSettings, storage: RDBStorage, trials: int, study_name: str | None = None,
         timeout: float | None = None, progress: bool = True) -> optuna.Study:
    """Open (or continue) the study and work on it until it has `trials` finished trials of distinct
    points (the whole space at most)."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    trials = min(trials, grid_size(settings.space))
    study = open_study(settings, storage, study_name or settings.default_study_name(), trials)
    if finished_points(study) < trials:
        dataset = load(settings.dataset, data_dir=settings.data_dir, seed=settings.seed, **settings.dataset_options)
        work(study, make_objective(settings, dataset, study, trials), trials, timeout, progress)
    return study
