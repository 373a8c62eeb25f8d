"""The leaderboard's figures (matplotlib, PNG beside leaderboard.md)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")              # files only; no display needed
import matplotlib.pyplot as plt    # noqa: E402

from .files import save_figure  # noqa: E402


def _layer_series(benchmarks: list[dict], value) -> dict[str, list[tuple[int, float]]]:
    """{interaction: [(F, value)]} for eager train-mode AFM-pooling layer cells at the most common (E, B)."""
    layers = [b for b in benchmarks if b.get("extra_info", {}).get("cell") == "layer"
              and b["extra_info"]["mode"] == "train" and b["extra_info"].get("pooling") == "afm"
              and not b["extra_info"].get("compile")]
    if not layers:
        return {}
    shapes = [(b["extra_info"]["embed_dim"], b["extra_info"]["batch"]) for b in layers]
    embed_dim, batch = max(set(shapes), key=shapes.count)
    series = defaultdict(list)
    for bench in layers:
        info = bench["extra_info"]
        if (info["embed_dim"], info["batch"]) == (embed_dim, batch):
            series[info["interaction"]].append((info["num_fields"], value(bench)))
    return {name: sorted(points) for name, points in sorted(series.items())}, (embed_dim, batch)


def _line_plot(path: Path, series, title: str, ylabel: str) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        ax.plot([f for f, _ in points], [v for _, v in points], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    fields = sorted({f for points in series.values() for f, _ in points})
    ax.set_xticks(fields, [str(f) for f in fields])
    ax.set_xlabel("fields F")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _auc_plot(path: Path, records: list[dict]) -> Path | None:
    by_dataset = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.get("kind") == "run":
            by_dataset[record["dataset"]][record["model"]].append(record["test"]["auc"])
    if not by_dataset:
        return None
    fig, axes = plt.subplots(1, len(by_dataset), figsize=(4.5 * len(by_dataset), 4), squeeze=False)
    for ax, (dataset, models) in zip(axes[0], sorted(by_dataset.items())):
        names = sorted(models)
        means = [statistics.fmean(models[m]) for m in names]
        errors = [statistics.stdev(models[m]) if len(models[m]) > 1 else 0.0 for m in names]
        ax.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(f"{dataset}: test AUC (mean ± std over runs)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_plots(results_dir: Path, records: list[dict], benchmarks: list[dict]) -> list[Path]:
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    throughput = _layer_series(benchmarks, lambda b: b["extra_info"]["batch"] / b["stats"]["median"])
    if throughput:
        series, (embed_dim, batch) = throughput
        written.append(_line_plot(results_dir / "throughput_vs_fields.png", series,
                                  f"AFM pooling, forward+backward (E={embed_dim}, A=16, B={batch})", "samples/s"))
        memory, _ = _layer_series(benchmarks, lambda b: max(b["extra_info"]["saved_activation_bytes"], 1) / 2**20)
        written.append(_line_plot(results_dir / "memory_vs_fields.png", memory,
                                  f"AFM pooling: saved activations (E={embed_dim}, A=16, B={batch})", "MiB"))
    auc = _auc_plot(results_dir / "auc_by_model.png", records)
    if auc:
        written.append(auc)
    return written
