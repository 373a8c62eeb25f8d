"""The table of contents: every model and every pairwise-product implementation, by name.

Models and interactions register themselves with a decorator; `create_model` pairs them. An
interaction declares what it outputs, a model declares what it accepts, and the valid pairs follow.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# What an interaction returns, and therefore which models can use it.
PAIRS = "pairs"                        # (B, F, E) -> (B, P, E): one product per field pair
POOLED = "pooled"                      # (B, F, E) -> (B, E): sum of the pair products
ATTENTION_POOLED = "attention_pooled"  # (B, F, E), PairAttention -> (B, E): AFM's pooling, fused
INNER = "inner_products"               # (B, F, E) -> (B, P): <v_i, v_j> per field pair, IPNN's product layer
# Pairwise products with a weight, which the model holds and passes in; each model file says its contract.
BILINEAR = "bilinear_pairs"            # (B, F, E), W (K, E, E), type -> (B, P, E): FiBiNET's (v_i W) ⊙ v_j
CIN = "cin_layer"                      # (B, H, E), (B, F, E), W (H', H, F) -> (B, H', E): xDeepFM's CIN layer
NONE = "none"                          # no pairwise product (DCNv2, AutoInt, FinalMLP): a pass-through
OUTPUTS = (PAIRS, POOLED, ATTENTION_POOLED, INNER, BILINEAR, CIN, NONE)


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
    # {name: [values]}: what `ctrbench tune` searches (a hyper-parameter or a training setting such as
    # embedding_regularizer); {} where the model declares none.
    search_space: dict = field(default_factory=dict)
    # {training preset: {hyper-parameter: value}}: the architecture a named preset gives the model (`--preset
    # bars`: BARS's best Frappe_x1 configuration); a preset the model does not name leaves its defaults.
    presets: dict = field(default_factory=dict)


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


def register_model(name: str, accepts: set[str], hparams: dict[str, str] | None = None,
                   search_space: dict[str, list] | None = None, presets: dict[str, dict] | None = None):
    """Register a model class built as `builder(field_dims, interaction=..., **hparams)`.

    `search_space` ({name: [values]}, declared beside the model) is what `ctrbench tune` searches: the
    model's hyper-parameters and training settings (the tuner checks the names).

    `hparams` gives each tunable constructor argument its one-line meaning: {name: meaning}. The
    defaults, and the default interaction, are read from the constructor's signature, so they are
    written once; every keyword argument after `interaction` must be given a meaning, and only those.
    The entry's `hparams` is {name: (default, meaning)}.
    """

    def decorate(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        default_interaction, defaults = _signature_defaults(name, builder, dict(hparams or {}))
        for preset, values in (presets or {}).items():
            unknown = sorted(set(values) - set(hparams or {}))
            if unknown:
                raise ValueError(f"model {name!r}: preset {preset!r} sets {unknown}, which are not its "
                                 "hyper-parameters")
        _MODELS[name] = ModelEntry(name, frozenset(accepts), builder, _first_doc_line(builder), default_interaction,
                                   {k: (defaults[k], meaning) for k, meaning in (hparams or {}).items()},
                                   {k: list(v) for k, v in (search_space or {}).items()},
                                   {k: dict(v) for k, v in (presets or {}).items()})
        builder.registry_name = name
        return builder

    return decorate


def _signature_defaults(name: str, builder, meanings: dict[str, str]) -> tuple[str, dict]:
    """(default interaction, {hyper-parameter: default}) from `builder(field_dims, interaction=..., ...)`'s
    signature; ValueError where the signature and the declared meanings disagree."""
    parameters = list(inspect.signature(builder).parameters.values())
    names = [p.name for p in parameters]
    if names[:2] != ["field_dims", "interaction"] or parameters[1].default is inspect.Parameter.empty:
        raise ValueError(f"model {name!r}: the constructor must start (field_dims, interaction=<default name>, ...), "
                         f"got ({', '.join(names)})")
    tunable = {p.name: p.default for p in parameters[2:]}
    undeclared = set(tunable) - set(meanings)
    unknown = set(meanings) - set(tunable)
    no_default = sorted(k for k, v in tunable.items() if v is inspect.Parameter.empty)
    if undeclared or unknown or no_default:
        raise ValueError(f"model {name!r}: hparams and the constructor disagree: without a meaning "
                         f"{sorted(undeclared)}, not in the constructor {sorted(unknown)}, without a default "
                         f"{no_default}")
    return parameters[1].default, tunable


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


def build_interaction(spec: str | nn.Module, num_fields: int, model: nn.Module) -> nn.Module:
    """The interaction of registered `model` (the module being built, which passes itself): from a
    registered name, or an already built module (used by tests), checked against what it accepts."""
    model = type(model).registry_name
    accepts = model_entry(model).accepts
    if isinstance(spec, nn.Module):
        output = getattr(spec, "output", None)
        if output not in accepts:
            raise ValueError(f"interaction module {type(spec).__name__} outputs {output!r}; "
                             f"{model!r} accepts {sorted(accepts)}")
        return spec
    check_pair(model, spec)
    return _INTERACTIONS[spec].builder(num_fields)


def check_hparams(models, hparams) -> None:
    """ValueError naming what is known if a hyper-parameter is known to none of `models` (names).

    With several models (a grid, an analysis and its comparisons) each model later takes the ones
    it knows (`hparams_for`), so a name is an error only when no selected model has it.
    """
    models = [models] if isinstance(models, str) else list(models)
    known = set().union(*(model_entry(m).hparams for m in models))
    unknown = set(hparams) - known
    if unknown:
        who = (f"for model {models[0]!r}; known" if len(models) == 1
               else f"the selected models ({', '.join(models)}) know")
        raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)} {who}: {sorted(known)}")


def preset_hparams(model: str, preset: str) -> dict:
    """The hyper-parameters training preset `preset` gives `model` ({} where it names none)."""
    return dict(model_entry(model).presets.get(preset, {}))


def hparams_for(model: str, hparams) -> dict:
    """The subset of `hparams` that `model` knows."""
    known = model_entry(model).hparams
    return {k: v for k, v in dict(hparams or {}).items() if k in known}


def create_model(name: str, field_dims, interaction: str | nn.Module | None = None, **hparams) -> nn.Module:
    """Build model `name` for fields of sizes `field_dims` with the given pairwise-product implementation."""
    entry = model_entry(name)
    interaction = entry.default_interaction if interaction is None else interaction
    if isinstance(interaction, str):
        check_pair(name, interaction)
    check_hparams(name, hparams)
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
    parameter = next(model.parameters())
    embed_dim = model.embedding.embedding.embedding_dim if hasattr(model, "embedding") else None
    attention = getattr(model, "attention", None)
    attn_dim = attention.hidden.out_features if attention is not None else None
    return interaction_backend(interaction, device if device is not None else parameter.device,
                               dtype or parameter.dtype, embed_dim, attn_dim)


def interaction_backend(interaction: nn.Module, device: torch.device | str, dtype: torch.dtype,
                        embed_dim: int | None, attn_dim: int | None) -> str:
    """The name of the code that runs the implementation `interaction` at these settings: its own
    registered name, or what its `backend(...)` resolves to (see running_backend)."""
    name = getattr(interaction, "registry_name", type(interaction).__name__)
    resolve = getattr(interaction, "backend", None)
    return name if resolve is None else resolve(torch.device(device), dtype, embed_dim, attn_dim)
