"""Values as a user types them on a command line or in a settings file: comma lists, seed counts, JSON
or bare bracket lists, name=value pairs: the argument types of every command."""
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


def parse_value(text: str):
    """A value as a user types it: JSON where it parses (numbers, true, [64, 32], ["a", "b"]), a list of
    such values for an unquoted bracket list ([user_id,item_id]), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        inner = stripped[1:-1].strip()
        return [parse_value(item.strip()) for item in inner.split(",")] if inner else []
    return text


def key_value(text: str) -> tuple[str, object]:
    """name=value, the value read by `parse_value`. A dataset option that takes a list also takes
    comma-separated text (categorical=user_id,item_id): `ctrbench.datasets.load` splits it."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    name, value = text.split("=", 1)
    return name.strip(), parse_value(value)
