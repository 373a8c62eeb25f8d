"""A model's search space (declared beside the model: `SEARCH_SPACE` in models/<name>.py), checked and
split into model hyper-parameters and training settings, and hashed so records can name it."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math

from ctrbench.models import model_entry
from ctrbench.training.train import TrainConfig

# Training settings a space may search; the rest of TrainConfig is the protocol's budget, fixed per study.
TUNABLE_SETTINGS = ("embedding_regularizer", "net_regularizer", "weight_decay", "lr")


def search_space(model: str) -> dict[str, list]:
    """{name: [values]} for `model`; ValueError for an unknown model, an empty space or a name that is
    neither one of its hyper-parameters nor a tunable training setting."""
    entry = model_entry(model)
    space = entry.search_space
    if not space or any(not values for values in space.values()):
        raise ValueError(f"model {model!r} declares an empty search space (SEARCH_SPACE beside the model, "
                         f"passed to register_model): nothing to tune")
    unknown = sorted(set(space) - set(entry.hparams) - set(TUNABLE_SETTINGS))
    if unknown:
        raise ValueError(f"model {model!r}: search space names {unknown} are neither its hyper-parameters "
                         f"({sorted(entry.hparams)}) nor tunable training settings ({list(TUNABLE_SETTINGS)})")
    return {name: list(values) for name, values in space.items()}


def space_hash(space: dict) -> str:
    """A short hash of the space (names and values, order-free): what a tuned record says it searched."""
    return hashlib.sha256(json.dumps(space, sort_keys=True).encode()).hexdigest()[:12]


def grid_size(space: dict) -> int:
    return math.prod(len(values) for values in space.values())


def untuned_point(model: str, space: dict, config: TrainConfig) -> dict | None:
    """The space's point that an untuned run with `config` trains (the model's default hyper-parameters,
    the config's settings), or None where the space does not hold it."""
    defaults = {name: default for name, (default, _) in model_entry(model).hparams.items()}
    point = {}
    for name, values in space.items():
        untuned = defaults[name] if name in defaults else getattr(config, name)
        matches = [value for value in values if value == untuned]
        if not matches:
            return None
        point[name] = matches[0]          # the space's own value (and type), as the sampler would give it
    return point


def split_params(model: str, params: dict, config: TrainConfig) -> tuple[dict, TrainConfig]:
    """A trial's params as (the model's hyper-parameters, the training config with its settings applied)."""
    hparams = {k: v for k, v in params.items() if k in model_entry(model).hparams}
    settings = {k: v for k, v in params.items() if k not in hparams}
    return hparams, dataclasses.replace(config, **settings)
