"""Speed and memory from the suite's benchmark JSON (pytest-benchmark's, or a session's per-cell file when
it was killed before writing it): the latest run of each device class, so every ratio in a table was
measured in one run; per device a page of speed, cost, vocabulary and data sections, and for the front
page the fastest AFM implementation per shape and every model's fastest implementation beside its default."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ctrbench.measure import suite_cells
from ctrbench.measure.cells import config_text
from ctrbench.models import model_entry
from ctrbench.models.peers import ours_of
from ctrbench.store.environment import is_loaded

from .markdown import mib, slug, table
from .provenance import LOADED_MARK, LOADED_NOTE, code_label, load_text, machine_label

SPEED_REFERENCE = "loop_gather"
MiB = 2 ** 20


@dataclass
class BenchmarkRun:
    """One stored benchmark session: its file (relative to the results folder), pytest-benchmark's document
    (or a per-cell file in its shape), its benchmarks, the environment it recorded and its device class."""
    source: Path
    run: dict
    benchmarks: list[dict]
    environment: dict
    device: tuple[str, str]        # ("cpu", "AMD EPYC (AVX-512)") or ("cuda", "NVIDIA H200")

    @property
    def title(self) -> str:
        return self.device[1] if self.device[0] == "cpu" else f"{self.device[1]} (GPU)"

    @property
    def page(self) -> str:
        return f"speed-{self.device[0] if self.device[0] == 'cpu' else 'gpu'}-{slug(self.device[1])}.md"

    @property
    def date(self) -> str:
        return str(self.run.get("datetime") or self.environment.get("date") or "?")


def cells_as_run(document: dict) -> dict:
    """A per-cell file (benchmark_cells/, rewritten after every cell) in the shape of pytest-benchmark's
    JSON: what a session killed before its end leaves to render."""
    env = document.get("environment") or {}
    commit = str(env.get("git_commit") or "?")
    return {"benchmarks": [c["benchmark"] for c in document["cells"] if c.get("status") == "ok" and c.get("benchmark")],
            "machine_info": {"cpu": {"brand_raw": env.get("cpu_model", "?"), "count": env.get("cpu_count", "?")},
                             "python_version": env.get("python", "?")},
            "commit_info": {"id": commit.removesuffix("+dirty"), "dirty": commit.endswith("+dirty")},
            "datetime": document.get("started", "?"), "partial": not document.get("complete"),
            "ctrbench": {key: document.get(key) for key in ("session", "device", "device_name", "environment",
                                                             "profile", "compile", "budget_s", "stopped", "cells")}}


def isa_from_flags(flags) -> str | None:
    flags = set(flags or ())
    return next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
                None)


def run_environment(run: dict, benchmarks: list[dict]) -> dict:
    """The environment a session recorded; for one older than that, what its JSON's machine and commit
    info say (the ISA from the CPU's flags, the commit with its dirty mark)."""
    suite = run.get("ctrbench") or {}
    environment = dict(suite.get("environment") or {})
    cpu = (run.get("machine_info") or {}).get("cpu") or {}
    info = benchmarks[0].get("extra_info", {}) if benchmarks else {}
    commit = run.get("commit_info") or {}
    environment.setdefault("cpu_model", cpu.get("brand_raw") or suite.get("device_name") or "?")
    environment.setdefault("cpu_count", cpu.get("count"))
    environment.setdefault("device", suite.get("device") or info.get("device") or "cpu")
    environment.setdefault("threads", info.get("threads"))
    environment.setdefault("torch", info.get("torch"))
    if not environment.get("cpu_isa"):
        environment["cpu_isa"] = isa_from_flags(cpu.get("flags"))
    if "git_commit" not in environment and commit.get("id"):
        environment["git_commit"] = commit["id"] + ("+dirty" if commit.get("dirty") else "")
    return environment


def benchmark_device(run: dict, benchmarks: list[dict], environment: dict) -> tuple[str, str]:
    """("cpu", "AMD EPYC (AVX-512)") or (device type, GPU name): the device class a session measured on."""
    suite = run.get("ctrbench") or {}
    infos = [b.get("extra_info", {}) for b in benchmarks]
    device = suite.get("device") or next((i["device"] for i in infos if i.get("device")), "cpu")
    kind = str(device).split(":")[0]
    if kind == "cpu":
        return ("cpu", machine_label({**environment, "device": "cpu"}))
    return (kind, suite.get("device_name") or next((i["device_name"] for i in infos if i.get("device_name")), "?"))


def benchmark_runs(results_dir: Path, problems: list[str]) -> list[BenchmarkRun]:
    """Every stored session, oldest first: pytest-benchmark's JSON under benchmarks/, or the per-cell file of
    a session that never wrote one."""
    results_dir = Path(results_dir)
    found, finished = [], set()
    for path in sorted((results_dir / "benchmarks").glob("*/*.json")):
        try:
            run = json.loads(path.read_text())
            benchmarks = run.get("benchmarks", [])
        except (OSError, ValueError) as error:
            problems.append(f"{path}: unreadable benchmark JSON ({error})")
            continue
        finished.add((run.get("ctrbench") or {}).get("session"))
        found.append((path, run, benchmarks))
    for path in sorted((results_dir / "benchmark_cells").glob("*.json")):
        try:
            document = suite_cells.read(path)
            if document.get("session") in finished:
                continue
            run = cells_as_run(document)
        except (ValueError, AttributeError, KeyError, TypeError) as error:
            problems.append(f"{path}: unreadable suite cell file ({error})")
            continue
        found.append((path, run, run["benchmarks"]))
    runs = []
    for path, run, benchmarks in sorted(found, key=lambda r: (str(r[1].get("datetime") or ""), r[0].name)):
        environment = run_environment(run, benchmarks)
        runs.append(BenchmarkRun(path.relative_to(results_dir), run, benchmarks, environment,
                                 benchmark_device(run, benchmarks, environment)))
    return runs


# A session with fewer cells than this (a `-k` look at a few cells) stands for its device class only where
# the class has no larger session.
MIN_SESSION_CELLS = 10


def latest_benchmark_runs(results_dir: Path, problems: list[str]) -> list[BenchmarkRun]:
    """The latest session of each device class, CPUs first: every ratio a page shows was measured in one run."""
    return latest_of(benchmark_runs(results_dir, problems))


def latest_of(runs: list[BenchmarkRun]) -> list[BenchmarkRun]:
    """Of sessions oldest first (`benchmark_runs`), the one that stands for each device class."""
    latest: dict[tuple[str, str], BenchmarkRun] = {}
    for run in runs:
        held = latest.get(run.device)
        if run.benchmarks and (held is None or len(run.benchmarks) >= MIN_SESSION_CELLS
                               or len(held.benchmarks) < MIN_SESSION_CELLS):
            latest[run.device] = run
    return [latest[device] for device in sorted(latest, key=lambda d: (d[0] != "cpu", d))]


def environment_lines(run: BenchmarkRun) -> list[str]:
    machine, environment = run.run.get("machine_info", {}), run.environment
    suite = run.run.get("ctrbench") or {}
    lines = ["## Environment", "",
             f"- source: `{run.source.as_posix()}` ({len(run.benchmarks)} benchmarks, {run.date})",
             f"- CPU: {environment.get('cpu_model', '?')}"
             + (f" ({environment['cpu_isa']})" if environment.get("cpu_isa") else "")
             + f", {environment.get('cpu_count', '?')} logical cores; torch threads {environment.get('threads', '?')}; "
             f"device {environment.get('device', '?')}",
             f"- torch {environment.get('torch', '?')}, Python {machine.get('python_version', '?')}; "
             + code_label(environment),
             f"- load: {load_text(environment.get('load_avg'))}"]
    gpu = environment.get("gpu")
    if gpu:
        lines.append(f"- GPU: {gpu.get('name', '?')} (compute capability {gpu.get('capability', '?')}, "
                     f"{gpu.get('memory_bytes', 0) / 2**30:,.0f} GiB), CUDA {gpu.get('cuda_runtime', '?')}, "
                     f"driver {gpu.get('driver') or '?'}")
    if suite:
        lines.append(f"- profile {suite.get('profile', '?')}, compiled cells: {suite.get('compile', '?')}"
                     + (f", time budget {suite['budget_s']:g} s" if suite.get("budget_s") else ""))
    if run.run.get("partial"):
        lines.append("- **partial**: the session ended before pytest-benchmark wrote its JSON; these are the "
                     "cells its per-cell file holds")
    return lines + [""]


def by_cell(benchmarks: list[dict], cell: str, configured: bool = False) -> list[dict]:
    """The benchmarks of one kind of cell. A model cell with a `config` (ctrbench's model configured as a
    peer's) only with `configured`: it is read beside its peer, not as the model's own row."""
    return [b for b in benchmarks if b.get("extra_info", {}).get("cell") == cell
            and (configured or not b["extra_info"].get("config"))]


def is_compiled(bench: dict) -> bool:
    return bool(bench["extra_info"].get("compile"))


def fallback(bench: dict) -> str | None:
    """The implementation that ran instead of the one named (afm_kernel off the CPU, afm_triton on it)."""
    ran = str(bench["extra_info"].get("backend") or bench["extra_info"]["interaction"]).split(" ")[0]
    return None if ran == bench["extra_info"]["interaction"] else ran


def speed_section(benchmarks: list[dict], where: str = "", reference: str = SPEED_REFERENCE) -> list[str]:
    lines = []
    compiled_note = (" Rows marked `compiled`: the same cells under `torch.compile` (compiled before timing); "
                     "their bracket is the speed-up over the eager cell of the row above."
                     if any(is_compiled(b) for b in benchmarks) else "")
    layers = by_cell(benchmarks, "layer")
    if layers:
        lines += [f"## Speed: the pairwise product alone{where}", "",
                  f"Samples/s (batch / median time) and, in brackets, speed-up over `{reference}` "
                  "in the same run and shape. `train` is forward + backward. `product`: the implementation's "
                  "own output (pair products, or their sum); `AFM pooling`: pair products, attention net "
                  "(A=16) and weighted sum, or one fused implementation of all three. A dash: not measured "
                  "(skipped for memory, or not in the profile). `[name]`: the implementation fell back to "
                  "that code on this device." + compiled_note, ""]
        layout = lambda b: (b["extra_info"].get("pooling", "product"), b["extra_info"]["mode"],  # noqa: E731
                            b["extra_info"]["embed_dim"], b["extra_info"]["batch"])
        for pooling, mode, embed_dim, batch in sorted({layout(b) for b in layers}):
            cells = [b for b in layers if layout(b) == (pooling, mode, embed_dim, batch)]
            title = "AFM pooling" if pooling == "afm" else "product"
            lines += [f"### {title}, {mode}, E={embed_dim}, B={batch}{where}", "",
                      wide_table(cells, "interaction", "num_fields", "F", reference), ""]
    models = [b for b in by_cell(benchmarks, "model") if not is_vocab_cell(b)]   # those have their own section
    if models:
        lines += [f"## Speed: whole models{where}", "",
                  f"Train step = forward, backward and Adam step. Samples/s and speed-up over the same model with "
                  f"`{reference}`, same run. `[name]`: the implementation fell back to that code on this device."
                  + compiled_note, ""]
        for shape, mode, batch in sorted({(b["extra_info"]["shape"], b["extra_info"]["mode"], b["extra_info"]["batch"])
                                          for b in models}):
            cells = [b for b in models if (b["extra_info"]["shape"], b["extra_info"]["mode"], b["extra_info"]["batch"])
                     == (shape, mode, batch)]
            lines += [f"### {shape} shape ({cells[0]['extra_info']['num_fields']} fields), {mode}, B={batch}{where}",
                      "", wide_table(cells, "model", "interaction", "", reference), ""]
    return lines


def peer_speed_section(benchmarks: list[dict], where: str = "") -> list[str]:
    """Each peer library's model (`pip install -e ".[peers]"`) against ctrbench's model it is compared with,
    whole-model cells of one session: the peer's samples/s, then ctrbench's default implementation's, its
    fastest one's (of the implementations that ran their own code) and, where the peer's algebra differs and
    a setting of ours can match it, ctrbench's model so configured, each with its speed over the peer's; then
    the FLOPs of ours over the peer's, and under the table how each differing peer differs."""
    eager = [b for b in by_cell(benchmarks, "model", configured=True)
             if not is_vocab_cell(b) and not is_compiled(b) and not fallback(b)]
    models = [b for b in eager if not b["extra_info"].get("config")]
    where_of = lambda b: (b["extra_info"]["shape"], b["extra_info"]["mode"], b["extra_info"]["batch"])  # noqa: E731
    rows, differences = [], {}
    for peer in sorted((b for b in models if ours_of(b["extra_info"]["model"])),
                       key=lambda b: (where_of(b), ours_of(b["extra_info"]["model"]), b["extra_info"]["model"])):
        base, name = ours_of(peer["extra_info"]["model"]), peer["extra_info"]["model"]
        ours = [b for b in models if b["extra_info"]["model"] == base and where_of(b) == where_of(peer)]
        if not ours:
            continue
        batch, peer_median = peer["extra_info"]["batch"], peer["stats"]["median"]
        default = next((b for b in ours if b["extra_info"]["interaction"] == model_entry(base).default_interaction),
                       None)
        fastest = min(ours, key=lambda b: b["stats"]["median"])
        matched = peer["extra_info"].get("ours_as_peer")
        as_peer = next((b for b in eager if matched and b["extra_info"]["model"] == base
                        and where_of(b) == where_of(peer) and b["extra_info"].get("config") == matched), None)
        if peer["extra_info"].get("difference"):
            differences[name] = peer["extra_info"]["difference"]
        shape, mode, _ = where_of(peer)
        rows.append([f"{shape} ({peer['extra_info']['num_fields']} fields), {mode}, B={batch}", base,
                     name + (f" {DIFFERS_MARK}" if name in differences else ""),
                     f"{batch / peer_median:,.0f}{cell_marks(peer)}", _versus(default, peer_median),
                     _versus(fastest, peer_median), _versus(as_peer, peer_median, config=True),
                     _flops_over(peer, default, as_peer)])
    if not rows:
        return []
    notes = [f"- `{name}`: {text}." for name, text in sorted(differences.items())]
    return [f"## Speed: ctrbench against the peers{where}", "",
            "The peers' own models (torchfm, DeepCTR-Torch: `pip install -e \".[peers]\"`) fed the same ids, "
            "against ctrbench's model of the same name (`dcnv2` for the DCNs) with its default implementation and "
            "with its fastest one, in the same session and shape: samples/s, and in brackets ctrbench's speed over "
            "the peer's (above 1: ctrbench faster). Eager steps; the train step is forward, backward and Adam step. "
            f"`{DIFFERS_MARK}`: the peer's algebra or cost differs from ctrbench's default configuration (how: "
            "below the table); where a setting of ours matches it, `as the peer` is ctrbench's model so configured "
            "(same session). `FLOPs ours/peer`: the train or inference step's FLOPs as torch's FlopCounterMode "
            "counts them (matrix products and convolutions; not elementwise work or norms), ctrbench's default "
            "over the peer's, then as the peer over the peer's: a deterministic check on how much each "
            "computes.", "",
            table(rows, ["shape, mode", "model", "peer", "peer samples/s", "ctrbench default (× peer)",
                         "ctrbench fastest (× peer)", "ctrbench as the peer (× peer)", "FLOPs ours/peer"]), ""] + (
        ["How the marked peers differ from ctrbench's default configuration:", "", *notes, ""] if notes else [])


DIFFERS_MARK = "≠"


def _versus(bench: dict | None, peer_median: float, config: bool = False) -> str:
    """'implementation: samples/s (× its speed over the peer's)' of one of ctrbench's cells; with `config`, the
    cell's settings in place of its implementation."""
    if bench is None:
        return "–"
    info, median = bench["extra_info"], bench["stats"]["median"]
    label = config_text(info["config"]) if config else info["interaction"]
    return f"{label}: {info['batch'] / median:,.0f} (×{peer_median / median:.2f}){trust_marks(bench)}"


def _flops_over(peer: dict, default: dict | None, as_peer: dict | None) -> str:
    """'ours/peer FLOPs' of ctrbench's default cell, then of its as-the-peer cell: "23.01 / 0.89"; "–" where
    the peer's count is missing or 0 (FM's sum of squares has no matrix product)."""
    peer_flops = peer["extra_info"].get("flops")
    if not peer_flops:
        return "–"
    ratios = [f"{b['extra_info']['flops'] / peer_flops:.2f}" if b and b["extra_info"].get("flops") is not None else "–"
              for b in ([default, as_peer] if as_peer else [default])]
    return " / ".join(ratios)


def wide_table(cells: list[dict], row_key: str, column_key: str, column_label: str,
               reference: str = SPEED_REFERENCE) -> str:
    """Rows by `row_key` (a compiled row below its eager one), columns by `column_key`, each cell
    'samples/s (×speed-up)': over `reference` eager in an eager row, over the eager cell in a compiled one."""
    columns = sorted({c["extra_info"][column_key] for c in cells}, key=lambda v: (isinstance(v, str), v))
    rows = sorted({(c["extra_info"][row_key], is_compiled(c)) for c in cells})
    medians = {(c["extra_info"][row_key], is_compiled(c), c["extra_info"][column_key]): c["stats"]["median"]
               for c in cells}
    fallbacks = {(c["extra_info"][row_key], is_compiled(c), c["extra_info"][column_key]): fallback(c) for c in cells}
    extras = {(c["extra_info"][row_key], is_compiled(c), c["extra_info"][column_key]): cell_marks(c) for c in cells}
    batch = cells[0]["extra_info"]["batch"]

    def reference_median(row, compiled, column):
        if compiled:
            return medians.get((row, False, column))
        if row_key == "interaction":
            return medians.get((reference, False, column))
        return medians.get((row, False, reference))

    body = []
    for row, compiled in rows:
        line = [f"{row} · compiled" if compiled else row]
        for column in columns:
            median = medians.get((row, compiled, column))
            if median is None:
                line.append("–")
                continue
            base = reference_median(row, compiled, column)
            speedup = f" (×{base / median:.2f})" if base else ""
            ran = fallbacks[row, compiled, column]
            line.append(f"{batch / median:,.0f}{speedup}" + (f" [{ran}]" if ran else "")
                        + extras[row, compiled, column])
        body.append(line)
    return table(body, [row_key] + [f"{column_label}={c}" if column_label else str(c) for c in columns])


def cell_marks(bench: dict) -> str:
    """What a speed cell adds to its samples/s: the achieved GFLOP/s and its fraction of the machine's measured
    peak (where the suite recorded them), then `trust_marks`."""
    info, text = bench["extra_info"], ""
    if info.get("gflops") is not None:
        text += f", {info['gflops']:,.1f} GFLOP/s"
        if info.get("peak_fraction") is not None:
            text += f" ({info['peak_fraction']:.0%} of peak)"
    return text + trust_marks(bench)


# Above this interquartile range of the rounds over their median, a cell is marked noisy.
NOISY_SPREAD = 0.2
NOISY_MARK = "≈"
NOISY_NOTE = (f"{NOISY_MARK}: a noisy cell, its rounds' interquartile range above {NOISY_SPREAD:.0%} of their "
              "median (short steps on a shared machine): its ratios are rough.")


def trust_marks(bench: dict) -> str:
    """The marks of a cell measured on a busy machine and of a noisy one ("" for neither)."""
    info, text = bench["extra_info"], ""
    if is_loaded(info.get("load_avg"), info.get("threads")):
        text += f" {LOADED_MARK}"
    if is_noisy(bench):
        text += f" {NOISY_MARK}"
    return text


def is_noisy(bench: dict | None) -> bool:
    stats = (bench or {}).get("stats", {})
    return stats.get("iqr") is not None and stats["median"] > 0 and stats["iqr"] / stats["median"] > NOISY_SPREAD


def cost_section(benchmarks: list[dict], where: str = "") -> list[str]:
    """Per train cell: saved activations and FLOPs (eager only), peak RSS rise on the CPU, CUDA's peak
    allocation on a GPU, compile time of compiled cells."""
    on_gpu = any("cuda_peak_bytes" in b["extra_info"] for b in benchmarks)
    rows = []
    models = [b for b in by_cell(benchmarks, "model") if not is_vocab_cell(b)]     # those have their own section
    for bench in sorted(by_cell(benchmarks, "layer") + models,
                        key=lambda b: (b["extra_info"]["cell"], b["group"], b["extra_info"].get("model", ""),
                                       b["extra_info"]["interaction"])):
        info = bench["extra_info"]
        if info["mode"] != "train":
            continue
        compile_s = info.get("compile_s")
        row = [bench["group"], info.get("model", "–"),
               info["interaction"] + (f" [{fallback(bench)}]" if fallback(bench) else ""),
               mib(info.get("saved_activation_bytes"))]
        if on_gpu:
            row.append(mib(info.get("cuda_peak_bytes")))
        else:
            row += [mib(info.get("peak_rss_rise_bytes")),
                    "–" if info.get("flops") is None else f"{info['flops'] / 1e9:,.3f}"]
        rows.append(row + ["–" if compile_s is None else f"{compile_s:,.1f}"])
    if not rows:
        return []
    memory = (["CUDA peak MiB"] if on_gpu else ["peak RSS rise MiB", "GFLOP"])
    return [f"## Memory and FLOPs of one train step{where}", "",
            "Saved activations: bytes of the distinct storages autograd keeps for backward (deterministic; eager "
            "cells only, a compiled graph's kernels are not torch's operators). "
            + ("CUDA peak: `torch.cuda.max_memory_allocated()` over one step above what was allocated before it "
               "(weights, optimizer state and inputs excluded). " if on_gpu else
               "Peak RSS rise: the kernel's high-water mark over the step's starting resident set. GFLOP: torch's "
               "flop counter, which counts matrix-class operations only (gathers and elementwise products read 0, "
               "and so does all of `afm_kernel`, a C++ kernel outside torch's operators). ")
            + "Compile s: the first call of a compiled cell (compilation and one step). `[name]`: the code that "
              "ran where the implementation fell back to it.",
            "", table(rows, ["cell", "model", "interaction", "saved activations MiB", *memory, "compile s"]), ""]


def outcome_lines(run: dict, where: str = "") -> list[str]:
    """Cells of the run that did not give a number, and why: out of memory, not compiling, an error, or
    the time budget; nothing when every cell ran (or the run predates this record)."""
    cells = (run.get("ctrbench") or {}).get("cells") or []
    failed = [c for c in cells if c.get("status") in ("oom", "compile_error", "error")]
    budget = [c for c in cells if c.get("status") == "budget"]
    if not failed and not budget:
        return []
    lines = [f"## Cells without a number{where}", ""]
    if failed:
        rows = [[c["nodeid"].split("::")[-1], c["status"], " ".join(str(c.get("reason") or "").split())[:300]]
                for c in failed]
        lines += [table(rows, ["cell", "status", "reason"]), ""]
    if budget:
        lines += [f"{len(budget)} cells not run: {(run.get('ctrbench') or {}).get('stopped') or 'time budget spent'}.",
                  ""]
    return lines


def is_vocab_cell(bench: dict) -> bool:
    """A cell of the vocabulary axis: a table size of its own, or tables updated by another strategy than Adam."""
    info = bench["extra_info"]
    return info.get("rows") is not None or info.get("embedding_optimizer", "adam") != "adam"


def vocab_rows_of(benchmarks: list[dict]) -> list[dict]:
    """The vocabulary cells as flat dicts, with the dense-Adam cells of the same model, implementation, table
    size and batch (the Criteo shape's own cell beside the quick profile's one extra strategy)."""
    flat = [{"model": b["extra_info"]["model"], "interaction": b["extra_info"]["interaction"],
             "vocab_rows": b["extra_info"].get("vocab_rows"), "batch": b["extra_info"]["batch"],
             "embedding_optimizer": b["extra_info"].get("embedding_optimizer", "adam"),
             "median_s": b["stats"]["median"],
             "optimizer_state_bytes": b["extra_info"].get("optimizer_state_bytes"),
             "peak_bytes": b["extra_info"].get("cuda_peak_bytes", b["extra_info"].get("peak_rss_rise_bytes")),
             "vocab": is_vocab_cell(b)}
            for b in by_cell(benchmarks, "model") if b["extra_info"]["mode"] == "train" and not is_compiled(b)]
    wanted = {(c["model"], c["interaction"], c["vocab_rows"], c["batch"]) for c in flat if c["vocab"]}
    return [c for c in flat if (c["model"], c["interaction"], c["vocab_rows"], c["batch"]) in wanted]


def vocab_tables(cells: list[dict], peak_label: str) -> list[str]:
    """Per (model, implementation, batch): a row per strategy, a column per table size; each cell is
    samples/s, the step time over the strategy's own at the smallest table, optimizer state and peak memory."""
    lines = []
    for model, interaction, batch in sorted({(c["model"], c["interaction"], c["batch"]) for c in cells}):
        mine = [c for c in cells if (c["model"], c["interaction"], c["batch"]) == (model, interaction, batch)]
        sizes = sorted({c["vocab_rows"] for c in mine})
        found = {(c["embedding_optimizer"], c["vocab_rows"]): c for c in mine}
        rows = []
        for strategy in sorted({c["embedding_optimizer"] for c in mine}, key=lambda s: (s != "adam", s)):
            smallest = next((found[strategy, s] for s in sizes if (strategy, s) in found), None)
            line = [strategy]
            for size in sizes:
                cell = found.get((strategy, size))
                if cell is None:
                    line.append("–")
                    continue
                text = f"{batch / cell['median_s']:,.0f}/s"
                if smallest is not None and cell is not smallest:
                    text += f" (step ×{cell['median_s'] / smallest['median_s']:.2f})"
                if cell.get("optimizer_state_bytes") is not None:
                    text += f", state {mib(cell['optimizer_state_bytes'])}"
                if cell.get("peak_bytes") is not None:
                    text += f", {peak_label} {mib(cell['peak_bytes'])}"
                line.append(text)
            rows.append(line)
        lines += [f"#### {model} ({interaction}), B={batch}", "",
                  table(rows, ["tables updated by"] + [f"{size:,} rows" for size in sizes]), ""]
    return lines


VOCAB_NOTE = ("Whole-model train steps (forward, backward, update) on Criteo's 39-field layout with the embedding "
              "tables at each size, per embedding-update strategy (`ctrbench.training.embedding_updates`; the dense "
              "layers keep Adam): samples/s, in brackets the step time over the same strategy's at the smallest "
              "table, `state`: MiB of optimizer state (the bytes of its tensors), then the step's peak memory rise "
              "in MiB. Ids are drawn uniformly over each field (every step touches ~B×F distinct rows: the worst "
              "case for a large table's caches).")


def vocab_section(benchmarks: list[dict], where: str = "") -> list[str]:
    cells = vocab_rows_of(benchmarks)
    if not cells:
        return []
    on_gpu = any("cuda_peak_bytes" in b["extra_info"] for b in benchmarks)
    return ([f"## Vocabulary size and embedding updates{where}", "", VOCAB_NOTE, ""]
            + vocab_tables(cells, "CUDA peak" if on_gpu else "peak RSS rise"))



def data_section(benchmarks: list[dict]) -> list[str]:
    cells = by_cell(benchmarks, "data")
    preprocess = sorted((b["extra_info"] for b in cells if b["extra_info"].get("kind") == "preprocess"),
                        key=lambda info: (info["rows"], info["mode"]))
    feeding = [b["extra_info"] for b in cells if b["extra_info"].get("kind") == "feeding"]
    lines = []
    if preprocess:
        lines += ["## Data: preprocessing a Criteo-layout TSV", "",
                  "End to end, no cache: parse, bucket the integers, encode the categoricals, write arrays. "
                  "`raw parse` is pyarrow's streaming reader alone on the same file in the same test.", "",
                  table([[info["mode"], f"{info['rows']:,}", f"{info['rows_per_s']:,.0f}",
                          f"{info['raw_parse_rows_per_s']:,.0f}", f"{info['fraction_of_raw']:.2f}",
                          f"{info['peak_rss_bytes'] / MiB:,.0f}" if info.get("peak_rss_bytes") else "–"]
                         for info in preprocess],
                        ["categoricals", "rows", "rows/s", "raw parse rows/s", "fraction of raw", "peak RSS MiB"]), ""]
    if feeding:
        lines += ["## Data: feeding training", "",
                  table([[f"{info['iteration_seconds'] * 1e3:,.1f}", f"{info['fm_epoch_seconds']:,.2f}",
                          f"{info['ratio']:.2%}"] for info in feeding],
                        ["one epoch of batches alone, ms", "one FM epoch, s", "iteration / training"]), ""]
    return lines


GiB = 2 ** 30



# ------------------------------------------------------------------------------------ front page

FRONT_REFERENCE = "triu_index"       # torchfm's algorithm: what a user writes first
AFM = "afm"


@dataclass
class FastestStep:
    """At one shape of one session: AFM's fastest train step over every implementation that ran its own code."""
    num_fields: int
    batch: int
    name: str
    samples_per_s: float
    over_reference: float | None          # × triu_index's eager step
    over_compiled: float | None           # × torch.compile of the triu_index model, where the run compiled it
    peak_bytes: int | None                # CPU: the step's peak RSS rise; GPU: its CUDA peak allocation
    reference_peak_bytes: int | None
    gflops: float | None = None
    peak_fraction: float | None = None
    loaded: bool = False
    peer: str | None = None               # the fastest peer library's AFM at this shape (peers extra), if timed
    over_peer: float | None = None        # × that peer's eager step
    # which of the cells behind the figures were noisy (is_noisy): "fastest", "triu_index", "compiled", "peer"
    noisy: frozenset = frozenset()


def _fields_and_batch(bench: dict) -> tuple[int, int]:
    return bench["extra_info"]["num_fields"], bench["extra_info"]["batch"]


def fastest_steps(run: BenchmarkRun) -> list[FastestStep]:
    """AFM's whole-model train cells of a session, one FastestStep per (F, B): eager cells whose code is the
    implementation named (a fallback never counts as itself), beside the fastest peer's AFM where one ran."""
    train_steps = [b for b in by_cell(run.benchmarks, "model") if b["extra_info"]["mode"] == "train"
                   and not is_vocab_cell(b)]
    cells = [b for b in train_steps if b["extra_info"].get("model") == AFM]
    peers = [b for b in train_steps if ours_of(b["extra_info"].get("model", "")) == AFM and not is_compiled(b)]
    found = []
    for num_fields, batch in sorted({_fields_and_batch(b) for b in cells}):
        here = [b for b in cells if _fields_and_batch(b) == (num_fields, batch)]
        eager = [b for b in here if not is_compiled(b) and not fallback(b)]
        if not eager:
            continue
        best = min(eager, key=lambda b: b["stats"]["median"])
        reference = next((b for b in eager if b["extra_info"]["interaction"] == FRONT_REFERENCE), None)
        compiled = next((b for b in here if is_compiled(b) and b["extra_info"]["interaction"] == FRONT_REFERENCE), None)
        peer = min((b for b in peers if _fields_and_batch(b) == (num_fields, batch)),
                   key=lambda b: b["stats"]["median"], default=None)
        peak_key = "cuda_peak_bytes" if run.device[0] != "cpu" else "peak_rss_rise_bytes"
        info = best["extra_info"]
        name = info["interaction"] + (f" ({info['kernel_isa']} build)" if info.get("kernel_isa") else "")
        found.append(FastestStep(
            num_fields, batch, name, batch / best["stats"]["median"],
            reference["stats"]["median"] / best["stats"]["median"] if reference else None,
            compiled["stats"]["median"] / best["stats"]["median"] if compiled else None,
            info.get(peak_key), reference["extra_info"].get(peak_key) if reference else None,
            info.get("gflops"), info.get("peak_fraction"), bool(is_loaded(info.get("load_avg"), info.get("threads"))),
            peer["extra_info"]["model"] if peer else None,
            peer["stats"]["median"] / best["stats"]["median"] if peer else None,
            frozenset(name for name, cell in (("fastest", best), (FRONT_REFERENCE, reference), ("compiled", compiled),
                                              ("peer", peer)) if is_noisy(cell))))
    return found


@dataclass
class ModelChoice:
    """At one shape of one session, one of ctrbench's models: the step of its fastest implementation (eager,
    running its own code) beside its default implementation's and the fastest peer library's model of that
    name."""
    model: str
    num_fields: int
    batch: int
    default: str | None                   # the registry's default implementation (None: model not registered)
    fastest: str
    samples_per_s: float
    over_default: float | None            # None where the default did not run its own code in the session
    peer: str | None = None
    over_peer: float | None = None
    peer_differs: bool = False            # the peer declared that its algebra or cost differs from ours
    # which of the cells behind the figures were noisy (is_noisy): "fastest", "default", "peer"
    noisy: frozenset = frozenset()


def model_choices(run: BenchmarkRun, mode: str = "train") -> list[ModelChoice]:
    """Every ctrbench model's whole-model cells of a session in `mode`, one ModelChoice per (model, F, B),
    sorted by model, then F, then B."""
    cells = [b for b in by_cell(run.benchmarks, "model") if b["extra_info"]["mode"] == mode
             and not is_vocab_cell(b) and not is_compiled(b) and not fallback(b)]
    where = lambda b: (b["extra_info"]["model"], *_fields_and_batch(b))  # noqa: E731
    found = []
    for model, num_fields, batch in sorted({where(b) for b in cells if not ours_of(b["extra_info"]["model"])}):
        here = [b for b in cells if where(b) == (model, num_fields, batch)]
        try:
            default_name = model_entry(model).default_interaction
        except ValueError:          # a stored model no longer registered: no default to set it beside
            default_name = None
        best = min(here, key=lambda b: b["stats"]["median"])
        default = next((b for b in here if b["extra_info"]["interaction"] == default_name), None)
        peer = min((b for b in cells if ours_of(b["extra_info"]["model"]) == model
                    and _fields_and_batch(b) == (num_fields, batch)), key=lambda b: b["stats"]["median"], default=None)
        median = best["stats"]["median"]
        found.append(ModelChoice(
            model, num_fields, batch, default_name, best["extra_info"]["interaction"], batch / median,
            default["stats"]["median"] / median if default else None,
            peer["extra_info"]["model"] if peer else None, peer["stats"]["median"] / median if peer else None,
            bool(peer and peer["extra_info"].get("difference")),
            frozenset(name for name, cell in (("fastest", best), ("default", default), ("peer", peer))
                      if is_noisy(cell))))
    return found


def speed_page(run: BenchmarkRun) -> list[str]:
    """A device class's page: its latest session's environment, speed, costs, vocabulary and data sections."""
    reference = SPEED_REFERENCE if run.device[0] == "cpu" else FRONT_REFERENCE
    lines = [f"# Speed and memory on {run.title}", "",
             "One benchmark session (`pytest bench/ --benchmark-only`), the latest stored for this device class: "
             "every ratio below was measured in this one run. " + LOADED_NOTE + " " + NOISY_NOTE, ""]
    lines += environment_lines(run)
    lines += (speed_section(run.benchmarks, "", reference) + peer_speed_section(run.benchmarks)
              + cost_section(run.benchmarks)
              + vocab_section(run.benchmarks) + data_section(run.benchmarks) + outcome_lines(run.run))
    return lines
