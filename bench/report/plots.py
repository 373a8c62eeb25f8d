"""The leaderboard's figures (matplotlib, PNG beside leaderboard.md)."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from ctrbench.files import save_figure, subplots


def _layer_series(benchmarks: list[dict], value):
    """({series: [(F, value)]}, (E, B)) for eager train-mode AFM-pooling layer cells at the most common (E, B);
    a series whose cells ran other code than their name (afm_triton on a CPU runs afm_fused) says so."""
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
            ran = str(info.get("backend") or info["interaction"]).split(" ")[0]
            name = info["interaction"] + (f" (ran {ran})" if ran != info["interaction"] else "")
            series[name].append((info["num_fields"], value(bench)))
    return {name: sorted(points) for name, points in sorted(series.items())}, (embed_dim, batch)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINE_STYLES = ("-", "--", ":", "-.")


def _line_plot(path: Path, series, title: str, ylabel: str) -> Path:
    """One line per series. Series can coincide (a fallback measures what it falls back to, two
    implementations can save the same tensors): each has its own marker and dash, drawn smaller the
    later it comes, and the legend says which earlier series it lies on."""
    fig, ax = subplots(figsize=(7, 4.5))
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


def _auc_plot(path: Path, groups: list[tuple[str, str, dict[str, list[float]]]]) -> Path | None:
    """Test AUC per model for each dataset: (dataset, setting label, {model: per-seed AUCs}), exactly the
    front page's comparable group for that dataset, never pooled across devices or training settings."""
    if not groups:
        return None
    fig, axes = subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for ax, (dataset, label, models) in zip(axes[0], groups):
        names = sorted(models, key=lambda m: -statistics.fmean(models[m]))
        means = [statistics.fmean(models[m]) for m in names]
        errors = [statistics.stdev(models[m]) if len(models[m]) > 1 else 0.0 for m in names]
        ax.errorbar(range(len(names)), means, yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_title(f"{dataset}: test AUC (mean ± std over seeds)\n{label}", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def write_plots(results_dir: Path, auc_groups: list, benchmarks: list[dict], device: str) -> list[Path]:
    """The front page's figures: AUC per model (`auc_groups`, see _auc_plot) and the AFM pooling layer's
    throughput and saved memory against F from one benchmark session on `device` (named in the titles)."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    throughput = _layer_series(benchmarks, lambda b: b["extra_info"]["batch"] / b["stats"]["median"])
    if throughput:
        series, (embed_dim, batch) = throughput
        written.append(_line_plot(results_dir / "throughput_vs_fields.png", series,
                                  f"AFM pooling, forward+backward (E={embed_dim}, A=16, B={batch}) on {device}",
                                  "samples/s"))
        memory, _ = _layer_series(benchmarks, lambda b: max(b["extra_info"]["saved_activation_bytes"], 1) / 2**20)
        written.append(_line_plot(results_dir / "memory_vs_fields.png", memory,
                                  f"AFM pooling: saved activations (E={embed_dim}, A=16, B={batch}) on {device}",
                                  "MiB"))
    auc = _auc_plot(results_dir / "auc_by_model.png", auc_groups)
    if auc:
        written.append(auc)
    return written
