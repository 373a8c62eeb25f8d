"""The leaderboard's figures (matplotlib, PNG beside leaderboard.md)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")              # files only; no display needed
import matplotlib.pyplot as plt    # noqa: E402

from ctrbench.files import save_figure  # noqa: E402


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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")


def _line_plot(path: Path, series, title: str, ylabel: str) -> Path:
    """One line per series. Series can coincide (a fallback measures what it falls back to, two
    implementations can save the same tensors): each has its own marker and dash, drawn smaller the
    later it comes, and the legend says which earlier series it lies on."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn: list[tuple[str, list]] = []
    for k, (name, points) in enumerate(series.items()):
        same = next((other for other, earlier in drawn if earlier == points), None)
        label = f"{name} (= {same})" if same else name
        ax.plot([f for f, _ in points], [v for _, v in points], marker=MARKERS[k % len(MARKERS)],
                linestyle=LINE_STYLES[k % len(LINE_STYLES)], markersize=max(3, 8 - k // 2), label=label)
        drawn.append((name, points))
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


def _auc_plot(path: Path, records: list[dict], group_of) -> Path | None:
    """Test AUC per model for each dataset, from one comparable group of runs only (`group_of(record)`
    -> (key, label): the leaderboard's own grouping), the group with the most runs; never pooled
    across devices or training settings."""
    groups = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))   # dataset -> key -> model -> AUCs
    labels = {}
    for record in records:
        if record.get("kind") == "run":
            key, labels[key] = group_of(record)
            groups[record["dataset"]][key][record["model"]].append(record["test"]["auc"])
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for ax, (dataset, by_key) in zip(axes[0], sorted(groups.items())):
        key, models = max(by_key.items(), key=lambda item: sum(map(len, item[1].values())))
        names = sorted(models)
        means = [statistics.fmean(models[m]) for m in names]
        errors = [statistics.stdev(models[m]) if len(models[m]) > 1 else 0.0 for m in names]
        ax.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(f"{dataset}: test AUC (mean ± std over runs)\n{labels[key]}", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_plots(results_dir: Path, records: list[dict], benchmarks: list[dict], group_of) -> list[Path]:
    """group_of(record) -> (key, label): which runs may share a point of the AUC plot."""
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
    auc = _auc_plot(results_dir / "auc_by_model.png", records, group_of)
    if auc:
        written.append(auc)
    return written
