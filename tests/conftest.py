from dataclasses import dataclass, field

import numpy as np
import pytest


@dataclass
class TinyDataset:
    """A dataset in the shape `ctrbench.datasets.load` returns, with one planted pair, for protocol tests."""
    X: np.ndarray
    y: np.ndarray
    field_dims: list
    field_names: list
    splits: dict
    name: str = "tiny"
    options: dict = field(default_factory=dict)
    truth: dict | None = None

    def split(self, name):
        index = self.splits[name]
        return self.X[index], self.y[index]


def make_tiny_dataset(rows=3000, field_dims=(4, 5, 3, 6), seed=0) -> TinyDataset:
    rng = np.random.default_rng(seed)
    local = np.stack([rng.integers(0, d, rows) for d in field_dims], axis=1)
    logit = 2.0 * ((local[:, 0] % 2) == (local[:, 1] % 2)) - 1.0 + 0.3 * rng.standard_normal(rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-2 * logit))).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(field_dims)[:-1]])
    order = rng.permutation(rows)
    cut1, cut2 = int(rows * 0.8), int(rows * 0.9)
    return TinyDataset(X=(local + offsets).astype(np.int64), y=y, field_dims=list(field_dims),
                       field_names=[f"f{i}" for i in range(len(field_dims))],
                       splits={"train": order[:cut1], "validation": order[cut1:cut2], "test": order[cut2:]},
                       options={"rows": rows, "seed": seed})


@pytest.fixture
def tiny_dataset():
    return make_tiny_dataset()
