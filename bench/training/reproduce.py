"""Re-make a stored run from its own record: the same data, split, model, settings and seed, trained again by
this checkout on this machine. Whoever holds a record can check its number this way, and a number whose code
cannot be named (a dirty commit recorded without its code tree) can be replaced by one whose code can."""
from __future__ import annotations

import itertools

import torch

from ctrbench.datasets import load
from ctrbench.store.code_identity import is_dirty

from .context import LOCAL, RunContext
from .protocol import RunSpec, run_one
from .train import TrainConfig

# A record's fields that no run makes but the command that ran it added (the tuner's trial count, the
# choice `--interactions auto` made): a re-made record keeps them.
DESCRIBED_FIELDS = ("tuning", "interaction_choice")


def untraceable(record: dict) -> bool:
    """Whether the code that made the record cannot be named: a dirty commit (or none) and no code tree."""
    environment = record.get("environment") or {}
    commit = environment.get("git_commit")
    return (not commit or is_dirty(commit)) and not environment.get("code_tree")


def spec_of(record: dict) -> RunSpec:
    """The RunSpec whose key is the record's key, so a re-made run is the same run and nothing else.

    A record stores every dataset option its loader reported, not the ones its command was given; those are
    some of these, and the key tells which. ValueError where no choice of them gives the key: the model's or
    the protocol's settings changed since the record was made."""
    try:
        config = TrainConfig(**record["config"])
        base = dict(dataset=record["dataset"], model=record["model"], interaction=record["interaction"],
                    seed=record["seed"], hparams=dict(record["hparams"]), config=config, device=record["device"],
                    world_size=record.get("world_size") or 1, compile=bool(record.get("compile")),
                    tuned=record.get("tuned"))
        RunSpec(**base).full_hparams()              # a model no longer registered
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"the record's settings are not this code's ({error}): it cannot be re-made here") from None
    options = {name: value for name, value in record["dataset_options"].items() if name != "seed"}
    for size in range(len(options) + 1):             # the fewest given options first: {} is the loader's defaults
        for names in itertools.combinations(sorted(options), size):
            spec = RunSpec(dataset_options={name: options[name] for name in names}, **base)
            if spec.key() == record["key"]:
                return spec
    raise ValueError(f"no run of this code has the record's key {record['key']}: its model, hyper-parameters or "
                     "training settings changed since it was made, so it cannot be re-made as the same run")


def remake(record: dict, data_dir=None, context: RunContext = LOCAL) -> dict:
    """Train the record's run again; return the new record, with `reproduces`: what the stored one said
    (its code, machine, date, scores, epochs). ValueError (with the reason) for a run this process cannot make
    again: one of several torchrun processes, a GPU's on a machine without one, or one whose data no longer
    loads as it did."""
    spec = spec_of(record)
    if spec.world_size > 1:
        raise ValueError(f"it was trained by {spec.world_size} torchrun processes: re-make it under torchrun "
                         "with the same --nproc_per_node")
    if str(spec.device).startswith("cuda") and not torch.cuda.is_available():
        name = (record.get("environment") or {}).get("device_name") or "a GPU"
        raise ValueError(f"it was trained on {spec.device} ({name}) and this torch sees no CUDA GPU: re-make it "
                         "on a machine with one")
    dataset = load(spec.dataset, data_dir=data_dir, seed=spec.seed, **spec.dataset_options)
    if dataset.options != record["dataset_options"]:
        raise ValueError(f"the {spec.dataset} data load differently now ({dataset.options} where the record has "
                         f"{record['dataset_options']})")
    fresh = run_one(spec, dataset, context)
    fresh.update({name: record[name] for name in DESCRIBED_FIELDS if name in record})
    environment = record.get("environment") or {}
    fresh["reproduces"] = {
        "git_commit": environment.get("git_commit"), "code_tree": environment.get("code_tree"),
        "date": environment.get("date"), "device_name": environment.get("device_name"),
        "threads": environment.get("threads"), "test": record["test"], "best_epoch": record["best_epoch"],
        "epochs_run": record["epochs_run"]}
    return fresh


def agreement(record: dict) -> dict:
    """How a re-made record's scores compare with those of the record it reproduces."""
    before = record["reproduces"]
    return {"test_auc_change": record["test"]["auc"] - before["test"]["auc"],
            "test_logloss_change": record["test"]["logloss"] - before["test"]["logloss"],
            "same_best_epoch": record["best_epoch"] == before["best_epoch"],
            "identical": record["test"] == before["test"] and record["best_epoch"] == before["best_epoch"]}
