"""How the embedding tables are updated: one registered strategy per file in this folder.

A strategy builds the optimizer of a whole model: it decides how the embedding tables (every
`nn.Embedding`) get their gradients (dense or sparse) and how their rows are updated, and gives the
dense layers their own Adam. Every module here is imported, so a new strategy registers itself by
existing: one file with `@register_embedding_update(...)`, no edits elsewhere.
"""
import importlib
import pkgutil

from .registry import (
    DEFAULT,
    EmbeddingUpdate,
    SplitOptimizer,
    build_optimizer,
    embedding_modules,
    embedding_update,
    list_embedding_updates,
    optimizer_state_bytes,
    register_embedding_update,
    split_parameters,
)

__all__ = ["DEFAULT", "EmbeddingUpdate", "SplitOptimizer", "build_optimizer", "embedding_modules", "embedding_update",
           "list_embedding_updates", "optimizer_state_bytes", "register_embedding_update", "split_parameters"]

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")
