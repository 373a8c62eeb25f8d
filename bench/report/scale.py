"""Scale: the vocabulary axis measured alone (`ctrbench measure embedding_scale`) and data larger than
memory (`ctrbench measure data_scale`), each file read by the reader beside its writer in ctrbench.measure."""
from __future__ import annotations

from pathlib import Path

from ctrbench.measure import data_scale, embedding_scale

from .markdown import GiB, table
from .provenance import code_label
from .speed import VOCAB_NOTE, vocab_tables


def embedding_scale_section(results_dir: Path, problems: list[str]) -> list[str]:
    """The stand-alone vocabulary measurement (`ctrbench measure embedding_scale`), one part per
    results/embedding_scale/*.json; nothing when there is none."""
    lines = []
    for source in sorted((Path(results_dir) / "embedding_scale").glob("*.json")):
        try:
            document = embedding_scale.read(source)
            settings, env = document.get("settings") or {}, document.get("environment") or {}
            cells = [{**c, "peak_bytes": c.get("cuda_peak_bytes", c.get("peak_rss_rise_bytes"))}
                     for c in document["cells"] if c.get("outcome") == "ok"]
            skipped = [f"{c['model']} at {c['rows']:,} rows with {c['embedding_optimizer']}: {c.get('reason', '?')}"
                       for c in document["cells"] if c.get("outcome") != "ok"]
            goals = [f"{s['model']}: best at {s['largest_rows']:,} rows is {s['best_at_largest']}, its step ×"
                     f"{s['best_ratio']:.2f} its own at {s['smallest_rows']:,}" for s in document.get("summary") or []
                     if s.get("best_ratio") is not None]
            part = vocab_tables(cells, "CUDA peak" if any("cuda_peak_bytes" in c for c in cells) else "peak RSS rise")
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as error:
            problems.append(f"{source}: unreadable embedding_scale file ({error!r})")
            continue
        lines += [f"### Measured alone: `{source.relative_to(results_dir).as_posix()}`", "",
                  f"`{settings.get('command', 'ctrbench measure embedding_scale')}` on "
                  f"{env.get('device_name') or env.get('device', '?')}, {settings.get('threads', '?')} thread(s), "
                  f"median of {settings.get('rounds', '?')} rounds of {settings.get('calls', '?')} steps per cell, "
                  f"every cell of a model timed interleaved in one process, {code_label(env)}.", ""]
        lines += [f"- {goal}" for goal in goals] + ([""] if goals else [])
        lines += [f"- skipped: {s}" for s in skipped] + ([""] if skipped else [])
        lines += part
    if not lines:
        return []
    return ["## Vocabulary size and embedding updates, measured alone", "", VOCAB_NOTE, ""] + lines


def data_scale_section(document: dict | None) -> list[str]:
    """'Data at scale': rows/s and peak RSS of preprocessing a generated Criteo-layout file and of one FM
    epoch from its memory-mapped cache, each stage in its own process, as data_scale.json has them."""
    if not document:
        return []
    file, env, goals = document.get("file") or {}, document.get("environment") or {}, document.get("goals") or {}

    def per_cpu_s(stage: dict) -> str:
        if stage.get("rows_per_cpu_s") is not None:
            return f"{stage['rows_per_cpu_s']:,.0f}"
        rows, cpu = stage.get("rows_seen", stage.get("rows")), stage.get("cpu_seconds")
        return f"{rows / cpu:,.0f}" if rows and cpu else "–"

    def met(flag) -> str:
        return {True: "yes", False: "no"}.get(flag, "–")

    rows = []
    for label, key in (("preprocess", "preprocess"),):
        stage = document.get(key)
        if stage:
            rows.append([label, f"{stage['rows']:,}", f"{stage['rows_per_s']:,.0f}", per_cpu_s(stage),
                         f"{stage['peak_rss_bytes'] / GiB:.2f}",
                         f"≥ {goals['preprocess_rows_per_s_min']:,} rows/s"
                         if "preprocess_rows_per_s_min" in goals else "–",
                         met(stage["rows_per_s"] >= goals["preprocess_rows_per_s_min"])
                         if "preprocess_rows_per_s_min" in goals else "–",
                         f"{stage['loadavg_1m_around']:.1f}" if stage.get("loadavg_1m_around") is not None else "–"])
    train = document.get("train")
    if train:
        rows.append([f"one {train.get('model', 'fm')} epoch", f"{train.get('rows_seen', train.get('train_rows', 0)):,}",
                     f"{train['rows_per_s']:,.0f}", per_cpu_s(train), f"{train['peak_rss_bytes'] / GiB:.2f}",
                     f"≤ {goals['train_peak_rss_bytes_max'] / 1e9:.1f} GB"
                     if "train_peak_rss_bytes_max" in goals else "–",
                     met(goals.get("train_peak_rss_met")),
                     f"{train['loadavg_1m']:.1f}" if train.get("loadavg_1m") is not None else "–"])
    lines = ["## Data at scale: a Criteo-layout file larger than the training's memory", "",
             f"`{document.get('command', 'ctrbench measure data_scale')}`, {document.get('when', '?')}: "
             f"{file.get('rows', 0):,} rows, {file.get('bytes', 0) / GiB:.2f} GiB of text"
             + (" (generated)" if file.get("generated") else "")
             + f", on {env.get('cpus', '?')} CPU(s) with {env.get('memory_bytes', 0) / GiB:.1f} GiB of memory. "
             "Each stage runs in its own process; peak RSS is that process's whole life. The epoch reads the "
             "memory-mapped cache in shuffled blocks"
             + (f" through `{train['path']}`" if train and train.get("path") else "")
             + (f", batches of {train['batch_size']:,}, {train.get('threads', '?')} thread(s)"
                if train and train.get("batch_size") else "") + ".", ""]
    if rows:
        lines += [table(rows, ["stage", "rows", "rows/s", "rows per CPU-second", "peak RSS GiB", "goal", "met",
                               "load average (1 min)"]), ""]
    if env.get("loadavg_1m") is not None:
        lines += [f"- load average (1 min) at the end: {env['loadavg_1m']:.1f} on {env.get('cpus', '?')} CPU(s): "
                  "wall-clock rows/s on a loaded machine are lower bounds; rows per CPU-second are the process's own."]
    return lines + [""]




def scale_page(results_dir: Path, problems: list[str]) -> list[str]:
    """The scale page: the vocabulary axis alone, and data larger than memory; [] when neither was measured."""
    try:
        document = data_scale.read(Path(results_dir) / "data_scale.json")
    except ValueError as error:
        problems.append(str(error))
        document = None
    body = embedding_scale_section(results_dir, problems) + data_scale_section(document)
    return (["# Scale: large embedding tables and data larger than memory", ""] + body) if body else []
