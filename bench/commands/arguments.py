"""Argument types shared by the command-line subcommands."""
from __future__ import annotations

import argparse
from pathlib import Path

from ctrbench.commands.values import comma_list, key_value, parse_value, seed_list  # noqa: F401  (the argument types)
from ctrbench.datasets import list_datasets


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--dataset, --data-dir, --data-option: which data, where it lives, how it is built."""
    parser.add_argument("--dataset", default="purchase", help=f"one of {', '.join(list_datasets())} (default purchase)")
    parser.add_argument("--data-dir", type=Path, help="where the dataset files are (default: $CTRBENCH_DATA_DIR, "
                        "../shared/datasets beside the checkout, or the user cache)")
    parser.add_argument("--data-option", type=key_value, action="append", default=[], metavar="NAME=VALUE",
                        help="dataset option, e.g. rows=20000 or hot_spot=false (repeatable)")


def add_machine_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --threads, --results-dir, --quiet: where it runs and where it writes."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice; on a busy "
                                                    "2-core machine 1 is often much faster)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="where records, reports and the leaderboard go (default results/)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_regularizer_arguments(parser: argparse.ArgumentParser) -> None:
    """--embedding-regularizer, --net-regularizer: the protocol's L2 terms (ctrbench.training.regularizers)."""
    parser.add_argument("--embedding-regularizer", type=float, default=0.0, metavar="LAMBDA",
                        help="L2 (λ/2·Σ||w||²) on the embedding rows each batch uses, FuxiCTR's "
                             "embedding_regularizer (default 0: off)")
    parser.add_argument("--net-regularizer", type=float, default=0.0, metavar="LAMBDA",
                        help="L2 (λ/2·Σ||p||²) on every parameter that is not an embedding table, FuxiCTR's "
                             "net_regularizer (default 0: off)")


# The training flags `ctrbench run`, `tune` and `attention` share: each is None unless given, so that the
# command's preset (ctrbench.training.train.PRESETS) fills it.
TRAINING_FLAGS = ("batch_size", "lr", "weight_decay", "patience", "max_epochs", "plateau_lr_factor")


def add_training_arguments(parser: argparse.ArgumentParser, default_preset: str) -> None:
    """--preset and the flags that override its values, with the preset's values in their help."""
    from ctrbench.training.train import PRESETS, preset_config

    def by_preset(name: str, fmt: str = "") -> str:
        value = getattr(preset_config(default_preset), name)
        return f"default {value:{fmt}}" if value is not None else "default off"
    parser.add_argument("--preset", choices=list(PRESETS), default=default_preset,
                        help=f"named training settings (default {default_preset}; see docs/protocol.md); the flags "
                             "below override its values")
    parser.add_argument("--batch-size", type=int, help=f"training batch ({by_preset('batch_size')})")
    parser.add_argument("--lr", type=float, help=f"Adam's learning rate ({by_preset('lr', 'g')})")
    parser.add_argument("--weight-decay", type=float,
                        help=f"Adam's L2 weight decay on every parameter ({by_preset('weight_decay', 'g')})")
    parser.add_argument("--patience", type=int,
                        help=f"epochs without validation-AUC gain before stopping ({by_preset('patience')})")
    parser.add_argument("--max-epochs", type=int,
                        help=f"upper bound on epochs when early stopping does not end a run first "
                             f"({by_preset('max_epochs')})")
    parser.add_argument("--plateau-lr-factor", type=float,
                        help="multiply the lr by this on each epoch without gain (BARS: 0.1 with --patience 2; "
                             f"{by_preset('plateau_lr_factor', 'g')})")
    add_regularizer_arguments(parser)


def training_config(args, **extra):
    """The TrainConfig of a command's --preset and training flags (and `extra` settings)."""
    from ctrbench.training.train import preset_config
    settings = {name: getattr(args, name) for name in TRAINING_FLAGS}
    settings.update(embedding_regularizer=args.embedding_regularizer, net_regularizer=args.net_regularizer, **extra)
    return preset_config(args.preset, **settings)
