"""Small shared pieces of the results pages: a Markdown table, mean ± std, a paired t-test's text, sizes."""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from tabulate import tabulate

MiB = 2 ** 20
GiB = 2 ** 30
SIGNIFICANT = 0.05


def table(rows, headers) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def settings_table(settings: dict) -> str:
    """A heading's settings as a two-column table (setting, value): never a JSON dict in a heading."""
    return table([[name, value] for name, value in settings.items()], ["setting", "value"])


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def mib(value) -> str:
    return "–" if value is None else f"{value / MiB:,.1f}"


def slug(text: str) -> str:
    """A file-name-safe form of a name: 'NVIDIA H200' -> 'nvidia-h200'."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "unnamed"


@dataclass(frozen=True)
class PairedTest:
    """Two per-seed AUC lists, paired by seed: the mean of first - second over the seeds, and a paired t-test."""
    seeds: int
    mean_difference: float
    p_value: float | None        # None: too few seeds, a constant gap or identical runs (see text)
    text: str

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANT or self.text == "p=0 (constant gap)"


def paired_test(first: list[float], second: list[float], too_few: str = "n/a (<2 seeds)") -> PairedTest:
    """A paired t-test of two per-seed AUC lists (same seeds, same order); `text` is what a table shows: the
    p-value (`*`: p < 0.05), or why there is none (too few seeds, a constant gap, identical runs)."""
    difference = statistics.fmean(a - b for a, b in zip(first, second)) if first else 0.0
    if len(first) < 2:
        return PairedTest(len(first), difference, None, too_few)
    gaps = {a - b for a, b in zip(first, second)}
    if len(gaps) == 1:
        gap = gaps.pop()
        return PairedTest(len(first), difference, None, "p=0 (constant gap)" if gap else "identical")
    from scipy import stats as scipy_stats  # ~1 s to import; only paired comparisons need it
    p_value = float(scipy_stats.ttest_rel(first, second).pvalue)
    return PairedTest(len(first), difference, p_value,
                      f"p={p_value:.3f}" + (" *" if p_value < SIGNIFICANT else ""))


def paired_t(first: list[float], second: list[float], too_few: str = "n/a (<2 seeds)") -> str:
    """The text of `paired_test`."""
    return paired_test(first, second, too_few).text
