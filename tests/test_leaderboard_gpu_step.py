"""The leaderboard's sections for results/gpu/afm_gpu_step_*.json and step_gap_*.json, from small
synthetic files: ratios, status cells, which file feeds which section, corrupt files reported."""
import json

from ctrbench.report.gpu import gpu_files
from ctrbench.report.leaderboard import render

MiB = 2 ** 20


def step_cell(impl, num_fields, batch, mode, samples_per_s=None, status="ok", mib=None):
    ok = status == "ok"
    return {"impl": impl, "num_fields": num_fields, "batch": batch, "mode": mode, "status": status,
            "compile": impl.startswith("compile("), "backend": impl if ok else None,
            "median_s": batch / samples_per_s if ok else None, "min_s": batch / samples_per_s if ok else None,
            "samples_per_s": samples_per_s if ok else None,
            "peak_extra_bytes": None if mib is None else int(mib * MiB), "error": None if ok else f"{status}!"}


def gpu_step_document():
    cells = [step_cell("triu_index", 39, 1024, "train", 1e6, mib=100),
             step_cell("afm_fused", 39, 1024, "train", status="oom"),
             step_cell("afm_triton", 39, 1024, "train", 3e6, mib=10),
             step_cell("afm_triton_tf32", 39, 1024, "train", 4e6, mib=10),
             step_cell("fm sum_square", 39, 1024, "train", 8e6, mib=5),
             step_cell("compile(triu_index)", 39, 1024, "train", 2e6, mib=50),
             # A second shape the compiled model never reached, FM failing.
             step_cell("triu_index", 100, 2048, "inference", 5e5),
             step_cell("afm_triton_tf32", 100, 2048, "inference", 1.5e6),
             step_cell("fm sum_square", 100, 2048, "inference", status="error")]
    checks = [{"impl": "afm_triton", "num_fields": 39, "batch": 4133, "backend": "afm_triton",
               "forward_max_rel_error": 1.5e-6, "grad_max_rel_error": 4.5e-7,
               "grad_rel_errors": {"w": 4.5e-7}, "triu_index_float32_forward_error": 3e-7,
               "triu_index_float32_grad_errors": {"w": 2e-7, "b": 3.2e-7}, "tolerance": [1e-5, 1e-4],
               "within_tolerance": True},
              {"impl": "afm_triton_tf32", "num_fields": 39, "batch": 4133,
               "error": "RuntimeError: no kernel", "within_tolerance": False}]
    return {"kind": "afm_gpu_step", "device_name": "NVIDIA Test GPU", "complete": False,
            "stopped": "stopped at the time budget (70 s) after 9 of 12 cells", "started": "2026-01-01T00:00:00+00:00",
            "environment": {"torch": "2.11.0+cu130", "cuda": "13.0", "git_commit": "abcdef"},
            "settings": {"shapes": [[39, 1024], [100, 2048]], "modes": ["train", "inference"],
                         "contenders": ["triu_index", "afm_fused", "afm_triton", "afm_triton_tf32", "fm sum_square",
                                        "compile(triu_index)"], "reps": 7, "warmup": 3, "embed_dim": 16,
                         "attn_dim": 16, "dropout": 0.2, "dtype": "float32"},
            "checks": checks, "cells": cells}


def step_gap_document():
    return {"kind": "step_gap",
            "environment": {"device": "cuda", "device_name": "NVIDIA Test GPU", "git_commit": "abc"},
            "settings": {"dataset": "purchase", "rows": 1000, "batches": [4096], "epochs": 3, "compile": False},
            "cells": [{"model": "fm", "interaction": "sum_square", "batch": 4096, "compile": False,
                       "bare_samples_per_s": 3e6, "protocol_samples_per_s": 2e6},
                      {"model": "afm", "interaction": "triu_index", "batch": 65536, "compile": True,
                       "bare_samples_per_s": 1e6, "protocol_samples_per_s": 1e6}]}


def sweep_document():
    return {"kind": "device_sweep", "device_name": "NVIDIA Sweep GPU", "complete": True, "planned_cells": 1,
            "environment": {}, "settings": {"impls": ["triu_index"], "reps": 5, "warmup": 2},
            "cells": [{"impl": "triu_index", "num_fields": 39, "batch": 1024, "mode": "train", "status": "ok",
                       "median_s": 0.01, "min_s": 0.01, "samples_per_s": 102400.0, "peak_extra_bytes": None}]}


def write(results, name, document):
    (results / "gpu").mkdir(parents=True, exist_ok=True)
    path = results / "gpu" / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def section(markdown, title):
    start = markdown.index(title)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:] if end < 0 else markdown[start:end]


def cells_of(line):
    return [cell.strip() for cell in line.split("|")[1:-1]]


def table_after(text, heading):
    """The rows (not header or rule) of the first table after `heading`."""
    lines = text[text.index(heading):].splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2:]:
        if not line.startswith("|"):
            break
        rows.append(cells_of(line))
    return rows


def test_gpu_step_section_tables_ratios_statuses_and_checks(tmp_path):
    assert "Whole AFM train step on GPU" not in render(tmp_path)[0]
    write(tmp_path, "afm_gpu_step_nvidia-test-gpu.json", gpu_step_document())
    markdown, problems = render(tmp_path)
    assert problems == []
    text = section(markdown, "## Whole AFM train step on GPU (afm_gpu_step)")
    assert "### NVIDIA Test GPU" in text and "`gpu/afm_gpu_step_nvidia-test-gpu.json`" in text
    assert "stopped at the time budget (70 s) after 9 of 12 cells" in text
    assert table_after(text, "#### F=39, B=1,024, train") == [
        ["triu_index", "1.00", "×1.00", "×0.50", "100"],
        ["afm_fused", "oom", "–", "–", "–"],
        ["afm_triton", "3.00", "×3.00", "×1.50", "10"],
        ["afm_triton_tf32", "4.00", "×4.00", "×2.00", "10"],
        ["compile(triu_index)", "2.00", "×2.00", "×1.00", "50"],
        ["fm sum_square", "8.00", "×8.00", "×4.00", "5"]]
    assert "AFM afm_triton_tf32 is 2.00× behind FM sum_square." in text
    inference = table_after(text, "#### F=100, B=2,048, inference")
    assert ["triu_index", "0.50", "×1.00", "–", "n/a"] in inference       # no compiled cell: no ratio to it
    assert ["afm_triton_tf32", "1.50", "×3.00", "–", "n/a"] in inference
    assert ["fm sum_square", "error", "–", "–", "–"] in inference
    assert ["compile(triu_index)", "not run", "–", "–", "–"] in inference
    assert "#### F=100, B=2,048, train" not in text and "#### F=39, B=1,024, inference" not in text
    assert "FM sum_square: not measured" in text
    checks = table_after(text, "#### Checks")
    assert checks[0] == ["afm_triton", "39", "4,133", "1.50e-06", "4.50e-07", "3.00e-07, 3.20e-07",
                         "yes (1e-05, 0.0001)"]
    assert checks[1][:4] == ["afm_triton_tf32", "39", "4,133", "RuntimeError: no kernel"] and checks[1][-1] == "no"


def test_afm_behind_or_ahead_of_fm_follows_the_measured_ratio(tmp_path):
    document = gpu_step_document()
    for cell in document["cells"]:
        if cell["impl"] == "fm sum_square" and cell["status"] == "ok":
            cell["samples_per_s"] = 2e6                    # now half of afm_triton_tf32's 4e6
    write(tmp_path, "afm_gpu_step_x.json", document)
    assert "AFM afm_triton_tf32 is 2.00× ahead of FM sum_square." in render(tmp_path)[0]


def test_step_gap_section_ratios(tmp_path):
    write(tmp_path, "step_gap_nvidia-test-gpu.json", step_gap_document())
    markdown, problems = render(tmp_path)
    assert problems == []
    text = section(markdown, "## Protocol vs bare train step")
    assert "`gpu/step_gap_nvidia-test-gpu.json`" in text
    rows = table_after(text, "## Protocol vs bare train step")
    assert rows == [["fm (sum_square)", "4,096", "NVIDIA Test GPU", "2,000,000", "3,000,000", "1.50"],
                    ["afm (triu_index)", "65,536", "NVIDIA Test GPU, compiled", "1,000,000", "1,000,000", "1.00"]]


def test_each_gpu_file_feeds_only_its_own_section(tmp_path):
    sweep = write(tmp_path, "afm_nvidia-sweep-gpu.json", sweep_document())
    step = write(tmp_path, "afm_gpu_step_nvidia-test-gpu.json", gpu_step_document())
    gap = write(tmp_path, "step_gap_nvidia-test-gpu.json", step_gap_document())
    assert gpu_files(tmp_path, "device_sweep") == [sweep]
    assert gpu_files(tmp_path, "afm_gpu_step") == [step]
    assert gpu_files(tmp_path, "step_gap") == [gap]
    markdown, problems = render(tmp_path)
    assert problems == []                               # the sweep's reader never saw the other two
    pooling = section(markdown, "## AFM pooling on GPU")
    assert "### NVIDIA Sweep GPU" in pooling and "NVIDIA Test GPU" not in pooling
    assert "NVIDIA Sweep GPU" not in section(markdown, "## Whole AFM train step on GPU")


def test_corrupt_gpu_files_are_reported_and_the_rest_renders(tmp_path):
    write(tmp_path, "afm_gpu_step_good.json", gpu_step_document())
    write(tmp_path, "afm_gpu_step_truncated.json", "{\"kind\": \"afm_gpu_step\", \"cells\": [")
    write(tmp_path, "afm_gpu_step_sweep-inside.json", sweep_document())              # wrong kind
    broken = gpu_step_document()
    del broken["cells"][0]["samples_per_s"]
    write(tmp_path, "afm_gpu_step_missing-key.json", broken)
    gap = step_gap_document()
    gap["cells"][1]["protocol_samples_per_s"] = 0
    write(tmp_path, "step_gap_zero.json", gap)
    write(tmp_path, "step_gap_list.json", "[1, 2]")
    markdown, problems = render(tmp_path)
    assert sorted(p.split(": ")[0].rsplit("/", 1)[1] for p in problems) == [
        "afm_gpu_step_missing-key.json", "afm_gpu_step_sweep-inside.json", "afm_gpu_step_truncated.json",
        "step_gap_list.json", "step_gap_zero.json"]
    assert all("unreadable afm_gpu_step file" in p for p in problems if "afm_gpu_step_" in p)
    assert all("unreadable step_gap file" in p for p in problems if "step_gap_" in p)
    assert "AFM afm_triton_tf32 is 2.00× behind FM sum_square." in markdown      # the good file still renders
    assert "## Protocol vs bare train step" not in markdown                     # no readable step_gap file
    assert "## AFM pooling on GPU" not in markdown
