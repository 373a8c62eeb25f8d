"""GPU measurements under results/gpu/: AFM pooling swept over shapes (`device_sweep`), the whole AFM train
step (`afm_gpu_step`) and the protocol against the bare step (`step_gap`), each file read by the reader
beside its writer; and for the front page the GPU rows of "which implementation"."""
from __future__ import annotations

from pathlib import Path

from ctrbench.measure import afm_gpu_step, device_sweep, step_gap

from .markdown import MiB, table
from .provenance import code_label

READERS = {"device_sweep": device_sweep.read, "afm_gpu_step": afm_gpu_step.read, "step_gap": step_gap.read}

# The device sweep compares with the indexed version: the fastest plain-torch one, and what the
# fused implementations set out to beat.
SWEEP_REFERENCE = "triu_index"


def sweep_cell_text(cell: dict | None, reference: dict | None, memory: bool) -> str:
    """'samples/s (×speed-up)' or 'peak extra MiB (÷memory ratio)' against the reference's cell;
    OOM, — (not tried: too large), error, or 'not run' (the sweep stopped before it)."""
    if cell is None:
        return "not run"
    if cell["status"] != "ok":
        return {"oom": "OOM", "skipped": "—"}.get(cell["status"], "error")
    ok_reference = reference is not None and reference["status"] == "ok"
    if memory:
        extra = cell.get("peak_extra_bytes")
        if extra is None:
            return "n/a"
        ratio = (f" (÷{reference['peak_extra_bytes'] / extra:.1f})"
                 if ok_reference and extra > 0 and reference.get("peak_extra_bytes") is not None else "")
        return f"{extra / MiB:,.1f}{ratio}"
    speedup = f" (×{reference['median_s'] / cell['median_s']:.2f})" if ok_reference else ""
    return f"{cell['samples_per_s']:,.0f}{speedup}"


def sweep_table(cells: list[dict], impls: list[str], memory: bool) -> str:
    """Rows (F, B), columns the implementations; cells of one mode."""
    found = {(c["num_fields"], c["batch"], c["impl"]): c for c in cells}
    rows = sorted({(c["num_fields"], c["batch"]) for c in cells})
    body = [[f, f"{b:,}"] + [sweep_cell_text(found.get((f, b, impl)), found.get((f, b, SWEEP_REFERENCE)), memory)
                             for impl in impls] for f, b in rows]
    return table(body, ["F", "B"] + impls)


def gpu_part_heading(document: dict, source: Path) -> list[str]:
    """A GPU file's part begins with its device, then where and when it was measured, and the file."""
    env = document.get("environment") or {}
    return [f"### {document.get('device_name', '?')}", "",
            f"- torch {env.get('torch', '?')}, CUDA {env.get('cuda') or '–'}, {code_label(env)}, started "
            f"{document.get('started', '?')}; source `{source.as_posix()}`"]


def sweep_lines(sweep: dict, source: Path) -> list[str]:
    settings, cells = sweep.get("settings", {}), sweep["cells"]
    impls = list(settings.get("impls") or dict.fromkeys(c["impl"] for c in cells))
    lines = gpu_part_heading(sweep, source) + [
        f"- measured: median of {settings.get('reps', '?')} steps after {settings.get('warmup', '?')} warm-up "
        f"steps, each between `torch.cuda.synchronize()` calls (on CUDA); samples/s = B / median; memory "
        f"(CUDA only) = `torch.cuda.max_memory_allocated()` over one step minus `memory_allocated()` just "
        f"before it; E={settings.get('embed_dim', '?')}, A={settings.get('attn_dim', '?')}, "
        f"{settings.get('dtype', '?')}"]
    if not sweep.get("complete"):
        planned = sweep.get("planned_cells", "?")
        lines.append(f"- **incomplete**: stopped at the time budget after {len(cells)} of {planned} cells"
                     if sweep.get("stopped") else
                     f"- **incomplete**: ended after {len(cells)} of {planned} cells (killed, or still running)")
    lines.append("")
    for mode in [m for m in ("train", "forward") if any(c["mode"] == m for c in cells)]:
        in_mode = [c for c in cells if c["mode"] == mode]
        lines += [f"#### {mode}: samples/s (×speed-up over `{SWEEP_REFERENCE}`)", "",
                  sweep_table(in_mode, impls, memory=False), ""]
        if any(c.get("peak_extra_bytes") is not None for c in in_mode):
            lines += [f"#### {mode}: peak extra MiB (÷ `{SWEEP_REFERENCE}`'s / this one's)", "",
                      sweep_table(in_mode, impls, memory=True), ""]
    return lines


# results/gpu/ holds three kinds of file, told apart by name: afm_gpu_step_<device>.json, step_gap_<device>.json,
# and device_sweep's afm_<device>.json (every other *.json: a glob afm_*.json would take the first kind too).
GPU_FILE_PREFIXES = {"afm_gpu_step": "afm_gpu_step_", "step_gap": "step_gap_"}
GPU_FILE_LABELS = {"device_sweep": "device sweep", "afm_gpu_step": "afm_gpu_step file", "step_gap": "step_gap file"}


def gpu_files(results_dir: Path, kind: str) -> list[Path]:
    """results/gpu/'s files of one kind (see GPU_FILE_PREFIXES), sorted by name."""
    paths = sorted((Path(results_dir) / "gpu").glob("*.json"))
    if kind == "device_sweep":
        return [p for p in paths if not p.name.startswith(tuple(GPU_FILE_PREFIXES.values()))]
    return [p for p in paths if p.name.startswith(GPU_FILE_PREFIXES[kind])]


def gpu_documents(results_dir: Path, kind: str, problems: list[str]) -> list[tuple[dict, Path]]:
    """(document, path relative to results_dir) of each readable file of `kind`, read by the reader beside
    its writer; the others go to `problems`."""
    documents = []
    for path in gpu_files(results_dir, kind):
        try:
            documents.append((READERS[kind](path), path.relative_to(results_dir)))
        except (ValueError, AttributeError) as error:
            problems.append(f"{path}: unreadable {GPU_FILE_LABELS[kind]} ({error})")
    return documents


# The title and introduction of the sections with one part per file: device sweeps, afm_gpu_step.
GPU_SECTION_TEXT = {
    "device_sweep": (
        "AFM pooling on GPU",
        "AFM's pair products, attention net and weighted sum (train: forward + backward of that layer alone, on "
        "random embeddings), every implementation, one device per part, measured by `ctrbench measure "
        "device_sweep`. OOM: ran out of device memory; —: not tried (an unfused implementation whose "
        "largest tensor × 6 > device memory); not run: the sweep stopped first."),
    "afm_gpu_step": (
        "Whole AFM train step on GPU (afm_gpu_step)",
        "A whole model step (train: forward, BCE, backward, Adam; inference: forward alone) of AFM per "
        "implementation and of FM (`sum_square`) on the same fields and batch, one process per device, measured "
        "by `ctrbench measure afm_gpu_step`. × triu_index and × compile(triu_index): samples/s over the "
        "eager "
        "and the `torch.compile`d triu_index AFM's, same shape and mode. Peak extra: "
        "`torch.cuda.max_memory_allocated()` over one step minus `memory_allocated()` just before it. A cell that "
        "did not run shows its status (oom, error; not run: the budget stopped the run first)."),
}


def gpu_parts(results_dir: Path, kind: str, problems: list[str], part_lines) -> list[str]:
    """GPU_SECTION_TEXT[kind]'s section with one part, `part_lines(document, source)`, per readable
    results/gpu/ file of `kind`; nothing at all when there is none. A file whose part cannot be made goes
    to `problems`."""
    documents = gpu_documents(results_dir, kind, problems)
    if not documents:
        return []
    title, intro = GPU_SECTION_TEXT[kind]
    lines = [f"## {title}", "", intro, ""]
    for document, source in documents:
        try:
            lines += part_lines(document, source)
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as error:
            problems.append(f"{results_dir / source}: unreadable {GPU_FILE_LABELS[kind]} ({error!r})")
    return lines


def device_sweep_section(results_dir: Path, problems: list[str]) -> list[str]:
    """One part per device sweep file (results/gpu/afm_<device>.json); nothing at all when there is none."""
    return gpu_parts(results_dir, "device_sweep", problems, sweep_lines)


# ----------------------------------------------------------------- whole AFM step on GPU (afm_gpu_step)

GPU_STEP_REFERENCE = "triu_index"
GPU_STEP_COMPILED = "compile(triu_index)"
GPU_STEP_ROWS = ("triu_index", "afm_fused", "afm_triton", "afm_triton_tf32", "compile(triu_index)", "fm sum_square")
# The question: how far the fastest AFM step stays behind FM's on the same fields and batch.
GPU_STEP_AFM, GPU_STEP_FM = "afm_triton_tf32", "fm sum_square"
GPU_STEP_FM_NAME = "sum_square"


def gpu_step_ratio(cell: dict | None, reference: dict | None) -> str:
    """×(this cell's samples/s over the reference's), where both ran; – otherwise."""
    if not cell or not reference or cell.get("status") != "ok" or reference.get("status") != "ok":
        return "–"
    return f"×{cell['samples_per_s'] / reference['samples_per_s']:.2f}"


def gpu_step_table(found: dict[str, dict], labels: list[str]) -> str:
    """One (F, B, mode): a row per implementation label; a cell that did not run shows its status."""
    body = []
    for label in labels:
        cell = found.get(label)
        if cell is None:
            body.append([label, "not run", "–", "–", "–"])
        elif cell.get("status") != "ok":
            body.append([label, str(cell.get("status")), "–", "–", "–"])
        else:
            extra = cell.get("peak_extra_bytes")
            body.append([label, f"{cell['samples_per_s'] / 1e6:,.2f}",
                         gpu_step_ratio(cell, found.get(GPU_STEP_REFERENCE)),
                         gpu_step_ratio(cell, found.get(GPU_STEP_COMPILED)),
                         "n/a" if extra is None else f"{extra / MiB:,.0f}"])
    return table(body, ["implementation", "M samples/s", f"× {GPU_STEP_REFERENCE}", f"× {GPU_STEP_COMPILED}",
                        "peak extra MiB"])


def afm_fm_line(found: dict[str, dict]) -> str:
    afm, fm = found.get(GPU_STEP_AFM), found.get(GPU_STEP_FM)
    if not afm or not fm or afm.get("status") != "ok" or fm.get("status") != "ok":
        return (f"AFM {GPU_STEP_AFM} against FM {GPU_STEP_FM_NAME}: not measured ({GPU_STEP_AFM}: "
                f"{(afm or {}).get('status', 'not run')}, {GPU_STEP_FM}: {(fm or {}).get('status', 'not run')}).")
    behind = fm["samples_per_s"] / afm["samples_per_s"]
    return (f"AFM {GPU_STEP_AFM} is {behind:.2f}× behind FM {GPU_STEP_FM_NAME}." if behind >= 1 else
            f"AFM {GPU_STEP_AFM} is {1 / behind:.2f}× ahead of FM {GPU_STEP_FM_NAME}.")


def gpu_step_checks_table(checks: list[dict]) -> str:
    rows = []
    for check in checks:
        head = [check.get("impl", "?"), str(check.get("num_fields", "?")), f"{check.get('batch', '?'):,}"
                if isinstance(check.get("batch"), int) else "?"]
        if check.get("error"):
            rows.append(head + [" ".join(str(check["error"]).split())[:200], "–", "–", "no"])
            continue
        f32_grad = max(check["triu_index_float32_grad_errors"].values())
        rows.append(head + [f"{check['forward_max_rel_error']:.2e}", f"{check['grad_max_rel_error']:.2e}",
                            f"{check['triu_index_float32_forward_error']:.2e}, {f32_grad:.2e}",
                            ("yes" if check["within_tolerance"] else "**no**")
                            + (f" ({check['tolerance'][0]:g}, {check['tolerance'][1]:g})" if check.get("tolerance")
                               else "")])
    return table(rows, ["impl", "F", "B", "forward error", "gradient error",
                        "float32 triu_index's errors (forward, gradient)", "within tolerance (forward, gradient)"])


def gpu_step_lines(document: dict, source: Path) -> list[str]:
    settings, cells = document.get("settings") or {}, document["cells"]
    found = {(c["num_fields"], c["batch"], c["mode"], c["impl"]): c for c in cells}
    seen = list(settings.get("contenders") or []) + [c["impl"] for c in cells]
    labels = [label for label in GPU_STEP_ROWS if label in seen] + [
        label for label in dict.fromkeys(seen) if label not in GPU_STEP_ROWS]
    shapes = sorted({tuple(s) for s in settings.get("shapes") or []} | {(c["num_fields"], c["batch"]) for c in cells})
    modes = list(settings.get("modes") or dict.fromkeys(c["mode"] for c in cells))
    lines = gpu_part_heading(document, source) + [
        f"- median of {settings.get('reps', '?')} steps after {settings.get('warmup', '?')} warm-up steps, each "
        f"between `torch.cuda.synchronize()` calls; E={settings.get('embed_dim', '?')}, "
        f"A={settings.get('attn_dim', '?')}, dropout {settings.get('dropout', '?')}, "
        f"{settings.get('dtype', '?')}, float32 matmul precision {settings.get('float32_matmul_precision', '?')}"]
    if not document.get("complete"):
        lines.append(f"- **incomplete**: {document.get('stopped') or 'ended early (killed, or still running)'}; "
                     f"{len(cells)} cells")
    lines.append("")
    for num_fields, batch in shapes:
        for mode in modes:
            in_table = {label: found.get((num_fields, batch, mode, label)) for label in labels}
            if not any(in_table.values()):
                continue
            in_table = {label: cell for label, cell in in_table.items() if cell is not None}
            lines += [f"#### F={num_fields}, B={batch:,}, {mode}", "", gpu_step_table(in_table, labels), "",
                      afm_fm_line(in_table), ""]
    if document.get("checks"):
        lines += ["#### Checks: each AFM (no dropout) against the triu_index AFM in float64", "",
                  "Largest error of the logits and of any parameter's gradient, relative to the largest exact "
                  "value; beside them the float32 triu_index AFM's own. Within tolerance: no farther from float64 "
                  "than the implementation's declared tolerance (shown) or twice the float32 triu_index's.", "",
                  gpu_step_checks_table(document["checks"]), ""]
    return lines


def gpu_step_section(results_dir: Path, problems: list[str]) -> list[str]:
    """One part per results/gpu/afm_gpu_step_<device>.json; nothing at all when there is none."""
    return gpu_parts(results_dir, "afm_gpu_step", problems, gpu_step_lines)


def step_gap_section(results_dir: Path, problems: list[str]) -> list[str]:
    """One table over the results/gpu/step_gap_<device>.json files; nothing when there is none."""
    rows, sources = [], []
    for document, source in gpu_documents(results_dir, "step_gap", problems):
        try:
            env, settings = document.get("environment") or {}, document.get("settings") or {}
            device = env.get("device_name") or env.get("device") or "?"
            found = []
            for cell in document["cells"]:
                protocol, bare = cell["protocol_samples_per_s"], cell["bare_samples_per_s"]
                found.append([f"{cell['model']} ({cell['interaction']})", f"{cell['batch']:,}",
                              device + (", compiled" if cell.get("compile") else ""), f"{protocol:,.0f}",
                              f"{bare:,.0f}", f"{bare / protocol:.2f}"])
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as error:
            problems.append(f"{results_dir / source}: unreadable step_gap file ({error!r})")
            continue
        rows += found
        sources.append(f"`{source.as_posix()}` ({settings.get('dataset', '?')}, {settings.get('rows', '?')} rows, "
                       f"{settings.get('epochs', '?')} epochs, {code_label(env)})")
    if not rows:
        return []
    return ["## Protocol vs bare train step", "",
            "The protocol's recorded train throughput (`ctrbench.training.protocol.train_and_test`: shuffled batches "
            "gathered from the purchase log, the last one smaller, the loss kept) against the bare whole-model "
            "train step on one fixed batch, same model, batch and device, one process (`ctrbench measure "
            "step_gap`). bare/protocol near 1: the training loop costs nothing beyond the step. "
            f"Source: {'; '.join(sources)}.", "",
            table(rows, ["model", "batch", "device", "protocol samples/s", "bare samples/s", "bare/protocol"]), ""]



def sweep_missing(document: dict) -> list[str]:
    """The AFM implementations that run their own code on a GPU now but that a device sweep did not measure
    (it predates them): such a sweep is superseded and never cited."""
    from ctrbench.measure.cells import implementations
    measured = set((document.get("settings") or {}).get("impls") or {c["impl"] for c in document["cells"]})
    return sorted(set(implementations("afm", "cuda")) - measured)


def gpu_fastest_steps(results_dir: Path, problems: list[str]):
    """From each afm_gpu_step file: (device name, environment, source, [FastestStep per (F, B)]) of the whole
    AFM train step: the fastest AFM implementation, × triu_index, × torch.compile(triu_index), peak extra."""
    from .speed import FastestStep
    found = []
    for document, source in gpu_documents(results_dir, "afm_gpu_step", problems):
        cells = [c for c in document["cells"] if c.get("mode") == "train" and c.get("status") == "ok"
                 and c.get("samples_per_s")]
        steps = []
        for num_fields, batch in sorted({(c["num_fields"], c["batch"]) for c in cells}):
            here = {c["impl"]: c for c in cells if (c["num_fields"], c["batch"]) == (num_fields, batch)}
            afm = {name: c for name, c in here.items() if name not in (GPU_STEP_FM, GPU_STEP_COMPILED)}
            if not afm:
                continue
            name, best = max(afm.items(), key=lambda item: item[1]["samples_per_s"])
            reference, compiled = here.get(GPU_STEP_REFERENCE), here.get(GPU_STEP_COMPILED)
            steps.append(FastestStep(
                num_fields, batch, name, best["samples_per_s"],
                best["samples_per_s"] / reference["samples_per_s"] if reference else None,
                best["samples_per_s"] / compiled["samples_per_s"] if compiled else None,
                best.get("peak_extra_bytes"), reference.get("peak_extra_bytes") if reference else None))
        found.append((document.get("device_name", "?"), document.get("environment") or {}, source, steps))
    return found


def gpu_page(results_dir: Path, problems: list[str]) -> list[str]:
    """The GPU measurement page: whole AFM steps, the protocol against the bare step, and the device sweeps
    that still cover every GPU implementation (a superseded one is named, not shown)."""
    body = gpu_step_section(results_dir, problems) + step_gap_section(results_dir, problems)
    current, superseded = [], []
    for document, source in gpu_documents(results_dir, "device_sweep", problems):
        missing = sweep_missing(document)
        (superseded if missing else current).append((document, source, missing))
    if current or superseded:
        title, intro = GPU_SECTION_TEXT["device_sweep"]
        body += [f"## {title}", "", intro, ""]
        for document, source, _ in current:
            body += sweep_lines(document, source)
        for document, source, missing in superseded:
            body += [f"**Superseded, never cited by the front page**: this sweep predates {', '.join(missing)}, "
                     "which run their own code on a GPU now (`ctrbench results --archive` moves it to the "
                     "archive).", ""] + sweep_lines(document, source)
    return (["# GPU measurements", ""] + body) if body else []
