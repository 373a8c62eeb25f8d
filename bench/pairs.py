"""Field-pair numbering, the article's: pair p is (field_i, field_j), i < j, in row-major order.

For 10 fields pair 0 = (0, 1), 1 = (0, 2), ..., 22 = (2, 8), 33 = (4, 8), 44 = (8, 9). Models name
their pairs with it and the purchase generator plants its truth with it, so it lives below both:
this module imports nothing, and models/ and datasets/ may each import it without knowing the other.
"""
from __future__ import annotations


def num_pairs(num_fields: int) -> int:
    """P = F(F-1)/2 field pairs of F fields."""
    return num_fields * (num_fields - 1) // 2


def pair_fields(num_fields: int) -> list[tuple[int, int]]:
    """(field_i, field_j) of each pair number: [(0, 1), (0, 2), ..., (F-2, F-1)]."""
    return [(i, j) for i in range(num_fields) for j in range(i + 1, num_fields)]


def pair_number(i: int, j: int, num_fields: int) -> int:
    """The number of the pair of fields i and j (either order): the inverse of `pair_fields`."""
    i, j = min(i, j), max(i, j)
    if not 0 <= i < j < num_fields:
        raise ValueError(f"no pair ({i}, {j}) among {num_fields} fields: need two different fields below {num_fields}")
    return i * num_fields - i * (i + 1) // 2 + (j - i - 1)
