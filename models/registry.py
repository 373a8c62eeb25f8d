"""The table of contents: every model and every pairwise-product implementation, by name.

Models and interactions register themselves with a decorator; `create_model` pairs them. An
interaction declares what it outputs, a model declares what it accepts, and the valid pairs follow.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# What an interaction returns, and therefore which models can use it.
PAIRS = "pairs"                        # (B, F, E) -> (B, P, E): one product per field pair
POOLED = "pooled"                      # (B, F, E) -> (B, E): sum of the pair products
ATTENTION_POOLED = "attention_pooled"  # (B, F, E), PairAttention -> (B, E): AFM's pooling, fused
OUTPUTS = (PAIRS, POOLED, ATTENTION_POOLED)


@dataclass(frozen=True)
class InteractionEntry:
    name: str
    output: str
    builder: Callable[[int], nn.Module]
    description: str
    # (forward, gradient) bound on max |error| / max |reference| where it is not exact float32
    # (afm_triton_tf32 on a GPU); None: the suite's 1e-5 / 1e-4.
    tolerance: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    accepts: frozenset[str]
    builder: Callable[..., nn.Module]
    description: str
    default_interaction: str
    hparams: dict = field(default_factory=dict)


_INTERACTIONS: dict[str, InteractionEntry] = {}
_MODELS: dict[str, ModelEntry] = {}


def _first_doc_line(obj) -> str:
    doc = (obj.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def register_interaction(name: str, output: str, tolerance: tuple[float, float] | None = None):
    """Register an `nn.Module` class (or factory) built as `builder(num_fields)`; `tolerance` declares
    a looser (forward, gradient) equality bound for a reduced-precision implementation."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")

    def decorate(builder):
        if name in _INTERACTIONS:
            raise ValueError(f"interaction {name!r} is already registered")
        _INTERACTIONS[name] = InteractionEntry(name, output, builder, _first_doc_line(builder), tolerance)
        builder.registry_name = name
        builder.output = output
        return builder

    return decorate


def register_model(name: str, accepts: set[str], default_interaction: str, hparams: dict | None = None):
    """Register a model class built as `builder(field_dims, interaction=..., **hparams)`.

    `hparams` documents the tunable constructor arguments: {name: (default, one-line meaning)}.
    """

    def decorate(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelEntry(name, frozenset(accepts), builder, _first_doc_line(builder),
                                   default_interaction, dict(hparams or {}))
        builder.registry_name = name
        return builder

    return decorate


def _filter(names, pattern: str | None) -> list[str]:
    names = sorted(names)
    return names if pattern in (None, "", "*") else [n for n in names if fnmatch.fnmatch(n, pattern)]


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a shell wildcard (`list_models("*fm")`)."""
    return _filter(_MODELS, pattern)


def list_interactions(pattern: str | None = None, model: str | None = None) -> list[str]:
    """Registered interaction names; with `model`, only those that model can use."""
    names = _filter(_INTERACTIONS, pattern)
    if model is not None:
        accepts = model_entry(model).accepts
        names = [n for n in names if _INTERACTIONS[n].output in accepts]
    return names


def available_pairs(model_pattern: str | None = None, interaction_pattern: str | None = None):
    """Every valid (model, interaction) pair, in a stable order."""
    return [(m, i) for m in list_models(model_pattern)
            for i in list_interactions(interaction_pattern, model=m)]


def model_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def interaction_entry(name: str) -> InteractionEntry:
    try:
        return _INTERACTIONS[name]
    except KeyError:
        raise ValueError(f"unknown interaction {name!r}; known interactions: "
                         f"{', '.join(list_interactions())}") from None


def check_pair(model: str, interaction: str) -> None:
    """Raise a ValueError naming the valid choices if `model` cannot use `interaction`."""
    accepts = model_entry(model).accepts
    entry = interaction_entry(interaction)
    if entry.output not in accepts:
        raise ValueError(
            f"model {model!r} cannot use interaction {interaction!r} (it outputs {entry.output!r}; "
            f"{model!r} accepts {sorted(accepts)}); valid interactions for {model!r}: "
            f"{', '.join(list_interactions(model=model))}")


def build_interaction(spec: str | nn.Module, num_fields: int, accepts: frozenset[str], model: str) -> nn.Module:
    """An interaction module from a registered name, or an already built module (used by tests)."""
    if isinstance(spec, nn.Module):
        output = getattr(spec, "output", None)
        if output not in accepts:
            raise ValueError(f"interaction module {type(spec).__name__} outputs {output!r}; "
                             f"{model!r} accepts {sorted(accepts)}")
        return spec
    check_pair(model, spec)
    return _INTERACTIONS[spec].builder(num_fields)


def create_model(name: str, field_dims, interaction: str | nn.Module | None = None, **hparams) -> nn.Module:
    """Build model `name` for fields of sizes `field_dims` with the given pairwise-product implementation."""
    entry = model_entry(name)
    interaction = entry.default_interaction if interaction is None else interaction
    if isinstance(interaction, str):
        check_pair(name, interaction)
    unknown = set(hparams) - set(entry.hparams)
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)} for model {name!r}; "
                         f"known: {sorted(entry.hparams)}")
    return entry.builder(field_dims, interaction=interaction, **hparams)


def running_backend(model: nn.Module, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> str:
    """The name of the code that actually computes `model`'s pairwise product on `device`.

    An implementation that can fall back (afm_kernel off the CPU or without a compiler) defines
    `backend(device, dtype, embed_dim, attn_dim) -> str` naming what will run; any other one runs
    itself. Records and benchmarks store this, so a fallback's numbers are never filed under the
    name of the implementation that did not run. Device and dtype default to the model's own.
    """
    interaction = getattr(model, "interaction", None)
    if interaction is None:
        return type(model).__name__
    name = getattr(interaction, "registry_name", type(interaction).__name__)
    resolve = getattr(interaction, "backend", None)
    if resolve is None:
        return name
    parameter = next(model.parameters())
    device = torch.device(device) if device is not None else parameter.device
    embed_dim = model.embedding.embedding.embedding_dim if hasattr(model, "embedding") else None
    attention = getattr(model, "attention", None)
    attn_dim = attention.hidden.out_features if attention is not None else None
    return resolve(device, dtype or parameter.dtype, embed_dim, attn_dim)
