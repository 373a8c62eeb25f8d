"""Models and pairwise-product implementations, reached through the registry.

    >>> from ctrbench.models import create_model, list_models, available_pairs
    >>> model = create_model("afm", field_dims=[3, 5, 7], interaction="triu_index", embed_dim=8)
"""
import importlib
import pkgutil

import torch

from . import interactions  # noqa: F401  (registers every implementation)
from .layers import pair_fields
from .registry import (
    ATTENTION_POOLED,
    BILINEAR,
    CIN,
    INNER,
    NONE,
    PAIRS,
    POOLED,
    available_pairs,
    check_hparams,
    check_pair,
    create_model,
    hparams_for,
    interaction_backend,
    interaction_entry,
    list_interactions,
    list_models,
    model_entry,
    register_interaction,
    register_model,
    running_backend,
)

# Every model file registers itself when imported; a new model is one new file.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in {"registry", "layers", "interactions"}:
        importlib.import_module(f"{__name__}.{_module.name}")


@torch.no_grad()
def predict_proba(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Click probabilities (B,) in eval mode; the model's own mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        return torch.sigmoid(model(x))
    finally:
        model.train(was_training)


__all__ = ["create_model", "list_models", "list_interactions", "available_pairs", "check_pair", "check_hparams",
           "hparams_for", "interaction_backend", "running_backend",
           "register_model", "register_interaction", "model_entry", "interaction_entry",
           "predict_proba", "pair_fields", "PAIRS", "POOLED", "ATTENTION_POOLED", "INNER", "BILINEAR", "CIN",
           "NONE"]
