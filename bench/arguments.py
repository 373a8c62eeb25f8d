"""Argument types shared by the command-line subcommands."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ctrbench.datasets import list_datasets


def comma_list(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return items


def seed_list(text: str) -> list[int]:
    """'5' means seeds 0..4; '0,3,7' names them."""
    try:
        if "," in text:
            return [int(s) for s in comma_list(text)]
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes a count (5) or a list (0,3,7), got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("--seeds needs at least one seed")
    return list(range(count))


def key_value(text: str) -> tuple[str, object]:
    """name=value, the value read as JSON when it parses (numbers, lists), else as a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    name, value = text.split("=", 1)
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


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
