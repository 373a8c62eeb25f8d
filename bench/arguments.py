"""Argument types shared by the command-line subcommands."""
from __future__ import annotations

import argparse
import json


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
