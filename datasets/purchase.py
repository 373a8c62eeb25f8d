"""purchase: the embedded default, a seeded generator faithful to the article's private purchase log.

Ten categorical fields (user side 0-6, item side 7-9) with 72 features in all; brand and category are
folded into fixed bucket counts by hashing raw ids, as the article did. Positives are purchases drawn
from a ground-truth propensity with planted pairwise interactions; negatives are random (user, item)
pairs. An optional hot spot gives a few items of particular brand x origin combinations many extra
purchases, the effect the article suspects put brand x origin (pair 44) on top of AFM's attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctrbench.pairs import num_pairs, pair_number

from .core import Dataset, FieldCodebook, field_offsets, make_splits
from .registry import register_dataset

AGE = ["<18", "18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
GENDER = ["F", "M"]
MEMBER_YEARS = ["<1", "1", "2", "3", "4", "5+"]
REGION = ["north", "northeast", "east", "south", "central", "southwest", "northwest", "overseas"]
VIP_LEVEL = ["V0", "V1", "V2", "V3", "V4"]
FREQUENCY = ["very low", "low", "medium", "high", "very high"]
ORDER_VALUE = ["<50", "50-100", "100-200", "200-500", "500+"]
ORIGIN = ["domestic", "JP", "KR", "US", "EU", "other"]
CATEGORY_BUCKETS = 12
BRAND_BUCKETS = 16

FIELD_NAMES = ["age", "gender", "member_years", "region", "vip_level", "purchase_frequency",
               "avg_order_value", "category_l2", "brand", "origin"]
USER_FIELDS = 7   # fields 0..6 come from the user, 7..9 from the item
NUM_FIELDS = len(FIELD_NAMES)
CODEBOOKS = [FieldCodebook(AGE), FieldCodebook(GENDER), FieldCodebook(MEMBER_YEARS), FieldCodebook(REGION),
             FieldCodebook(VIP_LEVEL), FieldCodebook(FREQUENCY), FieldCodebook(ORDER_VALUE),
             FieldCodebook([], "hash bucket "), FieldCodebook([], "hash bucket "), FieldCodebook(ORIGIN)]
FIELD_DIMS = [7, 2, 6, 8, 5, 5, 5, CATEGORY_BUCKETS, BRAND_BUCKETS, 6]
assert sum(FIELD_DIMS) == 72

# Planted pairs (i, j) -> strength: the std of that pair's interaction term in the log-odds, before
# `signal` scales everything. Pair numbers for 10 fields: (2,8)=22, (4,8)=33, (0,7)=6.
DEFAULT_PLANTED = ((2, 8, 0.75), (4, 8, 0.55), (0, 7, 0.4))
# Hot items take these (brand bucket, origin) combinations; each brand is hot with one origin only,
# so the effect lives in the pair, not in brand or origin alone.
HOT_COMBOS = ((3, 2), (11, 1), (6, 4))
HOT_PAIR = pair_number(8, 9, NUM_FIELDS)     # brand × origin, 44: the pair the hot spot lives in
DEFAULT_HOT_SHARE = 0.05


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A fixed 64-bit integer mix (uint64 -> uint64), so hash binning is the same on every machine."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclass
class Population:
    """Users (n_users, 7) and items (n_items, 3) as local ids per field, and the true propensity."""
    users: np.ndarray
    items: np.ndarray
    main_effects: list[np.ndarray]          # per field: (field_dim,) log-odds contribution
    pair_tables: dict[tuple[int, int], np.ndarray]   # (i, j) -> (dim_i, dim_j), scaled by strength
    hot_items: np.ndarray                  # item indices that get the extra purchases (may be empty)


def _categorical(rng, probs, size) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    return rng.choice(len(probs), size=size, p=probs / probs.sum()).astype(np.int64)


def _make_users(rng, n_users: int) -> np.ndarray:
    """(n_users, 7) local ids; vip level and order value lean on membership and frequency, as in life."""
    age = _categorical(rng, [5, 18, 30, 22, 13, 8, 4], n_users)
    gender = _categorical(rng, [55, 45], n_users)
    member_years = _categorical(rng, [20, 20, 18, 15, 12, 15], n_users)
    region = _categorical(rng, [12, 10, 20, 18, 14, 10, 8, 8], n_users)
    vip = np.clip(np.round(member_years * 0.5 + rng.normal(0, 1.0, n_users)), 0, 4).astype(np.int64)
    frequency = _categorical(rng, [25, 25, 25, 15, 10], n_users)
    order_value = np.clip(np.round(vip * 0.6 + rng.normal(1.0, 1.0, n_users)), 0, 4).astype(np.int64)
    return np.stack([age, gender, member_years, region, vip, frequency, order_value], axis=1)


def _make_items(rng, n_items: int, n_raw_categories: int, n_raw_brands: int) -> np.ndarray:
    """(n_items, 3) local ids: category_l2 and brand are raw ids folded by hash into fixed buckets;
    origin belongs to the raw brand."""
    # Zipf-like popularity of raw categories and brands among the catalogue.
    cat_weights = 1.0 / np.arange(1, n_raw_categories + 1) ** 0.8
    brand_weights = 1.0 / np.arange(1, n_raw_brands + 1) ** 0.9
    raw_category = _categorical(rng, cat_weights, n_items)
    raw_brand = _categorical(rng, brand_weights, n_items)
    brand_origin = _categorical(rng, [40, 15, 12, 13, 12, 8], n_raw_brands)
    category = (splitmix64(raw_category + (1 << 32)) % np.uint64(CATEGORY_BUCKETS)).astype(np.int64)
    brand = (splitmix64(raw_brand + (2 << 32)) % np.uint64(BRAND_BUCKETS)).astype(np.int64)
    return np.stack([category, brand, brand_origin[raw_brand]], axis=1)


def _interaction_table(rng, dim_i: int, dim_j: int) -> np.ndarray:
    """(dim_i, dim_j) pure interaction: zero row and column means, unit std."""
    table = rng.normal(size=(dim_i, dim_j))
    table -= table.mean(axis=0, keepdims=True)
    table -= table.mean(axis=1, keepdims=True)
    return table / table.std()


def make_population(seed: int, n_users: int, n_items: int, planted, signal: float, main_scale: float,
                    hot_spot: float, hot_items_per_combo: int) -> Population:
    rng = np.random.default_rng([seed, 0xB0B])
    users = _make_users(rng, n_users)
    items = _make_items(rng, n_items, n_raw_categories=300, n_raw_brands=1200)
    main_effects = [rng.normal(0, main_scale * signal, dim) for dim in FIELD_DIMS]
    pair_tables = {(i, j): strength * signal * _interaction_table(rng, FIELD_DIMS[i], FIELD_DIMS[j])
                   for i, j, strength in planted}
    hot_items = np.zeros(0, dtype=np.int64)
    if hot_spot > 0:
        hot_items = np.arange(len(HOT_COMBOS) * hot_items_per_combo, dtype=np.int64)
        for k, (brand, origin) in enumerate(HOT_COMBOS):
            chosen = hot_items[k * hot_items_per_combo:(k + 1) * hot_items_per_combo]
            items[chosen, 1] = brand
            items[chosen, 2] = origin
    return Population(users, items, main_effects, pair_tables, hot_items)


def _log_odds(pop: Population, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """(n,) true purchase log-odds of (user, item) pairs, before the base rate."""
    values = np.concatenate([pop.users[user], pop.items[item]], axis=1)   # (n, 10)
    logit = np.zeros(len(user))
    for f, effect in enumerate(pop.main_effects):
        logit += effect[values[:, f]]
    for (i, j), table in pop.pair_tables.items():
        logit += table[values[:, i], values[:, j]]
    return logit


def _draw_purchases(rng, pop: Population, count: int, base_logit: float) -> tuple[np.ndarray, np.ndarray]:
    """`count` purchases: random (user, item) offers kept with probability sigmoid(base + log-odds)."""
    users, items, have = [], [], 0
    while have < count:
        offers = max(1024, int((count - have) * 3))
        user = rng.integers(0, len(pop.users), offers)
        item = rng.integers(0, len(pop.items), offers)
        keep = rng.random(offers) < 1.0 / (1.0 + np.exp(-(base_logit + _log_odds(pop, user, item))))
        users.append(user[keep])
        items.append(item[keep])
        have += int(keep.sum())
    return np.concatenate(users)[:count], np.concatenate(items)[:count]


def generate(rows: int = 100_000, seed: int = 0, positive_rate: float = 1 / 3, hot_spot: bool | float = True,
             signal: float = 1.0, main_scale: float = 0.26, planted=DEFAULT_PLANTED,
             n_users: int = 20_000, n_items: int = 5_000, hot_items_per_combo: int = 2,
             base_logit: float = -1.0, chunk_rows: int = 1_000_000) -> tuple[np.ndarray, np.ndarray, dict]:
    """X int64 (rows, 10) global ids, y float32 (rows,), truth dict. Chunked, so 10M rows need ~1 GB.

    hot_spot: False/0 = off; True = DEFAULT_HOT_SHARE; a float in (0, 1) = the share of positives that are
    purchases of the hot items (uniform users), on top of the propensity-driven ones.
    """
    hot_share = DEFAULT_HOT_SHARE if hot_spot is True else float(hot_spot or 0.0)
    if not 0.0 <= hot_share < 1.0:
        raise ValueError(f"hot_spot share must be in [0, 1), got {hot_spot}")
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    planted = tuple((int(i), int(j), float(s)) for i, j, s in planted)
    pop = make_population(seed, n_users, n_items, planted, signal, main_scale, hot_share, hot_items_per_combo)
    offsets = field_offsets(FIELD_DIMS)
    X = np.empty((rows, len(FIELD_DIMS)), dtype=np.int64)
    y = np.empty(rows, dtype=np.float32)
    rng = np.random.default_rng([seed, 0xC0FFEE])
    for start in range(0, rows, chunk_rows):
        n = min(chunk_rows, rows - start)
        label = rng.random(n) < positive_rate
        user = rng.integers(0, n_users, n)            # negatives: random (user, item) pairs
        item = rng.integers(0, n_items, n)
        positives = np.flatnonzero(label)
        hot = rng.random(len(positives)) < hot_share if len(pop.hot_items) else np.zeros(len(positives), bool)
        organic = positives[~hot]
        user[organic], item[organic] = _draw_purchases(rng, pop, len(organic), base_logit)
        item[positives[hot]] = rng.choice(pop.hot_items, int(hot.sum())) if hot.any() else item[positives[hot]]
        X[start:start + n, :USER_FIELDS] = pop.users[user] + offsets[:USER_FIELDS]
        X[start:start + n, USER_FIELDS:] = pop.items[item] + offsets[USER_FIELDS:]
        y[start:start + n] = label
    pair_strength = np.zeros(num_pairs(NUM_FIELDS))
    for i, j, strength in planted:
        pair_strength[pair_number(i, j, NUM_FIELDS)] = strength * signal
    truth = {
        "pair_strength": pair_strength,
        "planted_pairs": [(i, j) for i, j, _ in planted],
        "planted_pair_numbers": [pair_number(i, j, NUM_FIELDS) for i, j, _ in planted],
        "pair_tables": {pair_number(i, j, NUM_FIELDS): t for (i, j), t in pop.pair_tables.items()},
        "main_effects": pop.main_effects,
        "hot_share": hot_share,
        "hot_pair": (8, 9) if hot_share > 0 else None,
        "hot_pair_number": HOT_PAIR if hot_share > 0 else None,
        "hot_combos": [tuple(c) for c in HOT_COMBOS] if hot_share > 0 else [],
        "hot_feature_ids": [(int(offsets[8] + b), int(offsets[9] + o)) for b, o in HOT_COMBOS] if hot_share > 0 else [],
        # What an analysis of learned pair importances needs to read this truth (ctrbench.attention.analysis):
        # the pair to follow beside the planted ones, with the hot spot on or off (the article guessed
        # the hot spot pushes brand × origin up), what a strength means, and what the condition is.
        "watched_pair": HOT_PAIR,
        "pair_strength_meaning": "the std of the pair's term in the true log-odds",
        "note": (f"Hot spot on: {hot_share:.0%} of the positives are purchases of a few hot items whose brand × "
                 f"origin combinations are fixed, an effect of pair {HOT_PAIR} that is not planted."
                 if hot_share > 0 else "Hot spot off."),
        "users": pop.users,
        "items": pop.items,
    }
    return X, y, truth


@register_dataset("purchase")
def load_purchase(data_dir=None, seed: int = 0, rows: int = 100_000, hot_spot: bool | float = True,
                  signal: float = 1.0, positive_rate: float = 1 / 3, planted=DEFAULT_PLANTED,
                  n_users: int = 20_000, n_items: int = 5_000, main_scale: float = 0.26) -> Dataset:
    """The purchase log, generated (no files): same seed, same rows, same split."""
    planted = [[int(i), int(j), float(s)] for i, j, s in planted]
    X, y, truth = generate(rows=rows, seed=seed, positive_rate=positive_rate, hot_spot=hot_spot, signal=signal,
                           main_scale=main_scale, planted=planted, n_users=n_users, n_items=n_items)
    options = {"rows": rows, "seed": seed, "hot_spot": hot_spot, "signal": signal, "positive_rate": positive_rate,
               "planted": planted, "n_users": n_users, "n_items": n_items, "main_scale": main_scale}
    return Dataset(name="purchase", X=X, y=y, field_names=list(FIELD_NAMES), field_dims=list(FIELD_DIMS),
                   splits=make_splits(rows, seed), options=options, codebooks=list(CODEBOOKS), truth=truth,
                   item_fields=tuple(range(USER_FIELDS, len(FIELD_DIMS))))
