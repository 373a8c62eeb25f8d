"""`--interactions auto`: each model's fastest implementation of the pairwise product on this machine.

A short calibration times a whole train step (forward, backward, Adam) of every implementation the model
accepts that runs its own code on the device, at the run's field count and batch, after checking each
against the plain loop reference (forward and gradients, float64): one that disagrees is never picked.
The choice is cached per machine signature (CPU model and flags or GPU name, torch, threads), model,
fields, batch and dtype in $CTRBENCH_AUTO_CACHE (default ~/.cache/ctrbench/auto_interaction.json), and
a run's record says what was asked, what was picked and the timings it was picked by.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import torch

from ctrbench.cpu import distinct_cores
from ctrbench.datasets.core import user_cache_root
from ctrbench.files import write_text_atomic
from ctrbench.models import (
    ATTENTION_POOLED,
    BILINEAR,
    CIN,
    PAIRS,
    create_model,
    interaction_entry,
    list_interactions,
    model_entry,
)
from ctrbench.models.interactions.reference import ReferenceAttentionPooling, ReferencePairs, reference_interaction
from ctrbench.probes.memory import synchronize

AUTO = "auto"
CACHE_ENV = "CTRBENCH_AUTO_CACHE"
ROUNDS, WARMUP = 5, 2
TOLERANCE = (1e-6, 1e-5)          # float64: forward and gradient, relative to the largest reference value


def cache_path() -> Path:
    return Path(os.environ.get(CACHE_ENV) or user_cache_root() / "auto_interaction.json").expanduser()


def machine_signature(device: torch.device) -> str:
    """What the fastest implementation depends on besides the code's inputs."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "\n".join(distinct_cores())
    text = f"{where}|{torch.__version__}|{torch.get_num_threads()}|{torch.backends.cpu.get_cpu_capability()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def candidates(model: str, device: torch.device) -> list[str]:
    """The implementations `model` accepts that run their own code on `device` (a fallback is not a choice)."""
    names = []
    for name in list_interactions(model=model):
        devices = getattr(interaction_entry(name).builder, "devices", None)
        if not devices or device.type in devices:
            names.append(name)
    return names


def reference_module(model: str):
    accepts = model_entry(model).accepts
    if PAIRS in accepts:
        return ReferencePairs()
    if ATTENTION_POOLED in accepts:
        return ReferenceAttentionPooling()
    for output in (BILINEAR, CIN):          # FiBiNET's and xDeepFM's products take the model's own weight
        if output in accepts:
            return reference_interaction(output)
    return None


def agrees_with_reference(model: str, interaction: str, num_fields: int) -> bool:
    """The model with `interaction` against the same model on the loop reference: logits and every
    parameter's gradient in float64, dropout off, same weights."""
    reference = reference_module(model)
    if reference is None:
        return False
    field_dims = [3] * num_fields
    torch.manual_seed(0)
    built = create_model(model, field_dims, interaction=interaction).double().eval()
    plain = create_model(model, field_dims, interaction=reference).double().eval()
    plain.load_state_dict(built.state_dict(), strict=False)
    x = torch.randint(0, 3, (8, num_fields)) + torch.arange(num_fields) * 3
    outputs = []
    for net in (built, plain):
        net.zero_grad()
        logits = net(x)
        logits.sum().backward()
        outputs.append((logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (mine, my_grads), (theirs, their_grads) = outputs

    def close(a, b, tolerance):
        return a.shape == b.shape and float((a - b).abs().max()) <= tolerance * max(float(b.abs().max()), 1e-12)
    return (close(mine, theirs, TOLERANCE[0]) and set(my_grads) == set(their_grads)
            and all(close(my_grads[n], their_grads[n], TOLERANCE[1]) for n in my_grads))


def time_train_step(model: str, interaction: str, num_fields: int, batch: int, device: torch.device) -> float:
    """Median seconds of one train step (forward, BCE, backward, Adam) on random ids of 1000 per field."""
    torch.manual_seed(0)
    field_dims = [1000] * num_fields
    net = create_model(model, field_dims, interaction=interaction).to(device).train()
    x = (torch.randint(0, 1000, (batch, num_fields)) + torch.arange(num_fields) * 1000).to(device)
    y = (torch.rand(batch) < 0.3).float().to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()
    times = []
    for number in range(WARMUP + ROUNDS):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if number >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def resolve(model: str, num_fields: int, batch: int, device: torch.device | str = "cpu", log=print) -> dict:
    """{"asked": "auto", "picked": name, "seconds": {name: median step seconds}, "refused": [...], "cached": bool,
    "signature": ...}: the fastest implementation of `model` here that agrees with the reference."""
    device = torch.device(device)
    signature = machine_signature(device)
    key = f"{signature}|{model}|F={num_fields}|B={batch}|float32"
    path = cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    names = candidates(model, device)
    if key in cache and cache[key].get("picked") in names:
        return {**cache[key], "cached": True}
    refused = [name for name in names if not agrees_with_reference(model, name, min(num_fields, 6))]
    timed = {name: time_train_step(model, name, num_fields, batch, device) for name in names if name not in refused}
    if not timed:
        picked = model_entry(model).default_interaction
        log(f"auto: no implementation of {model} could be checked against the reference; using its default {picked}")
    else:
        picked = min(timed, key=timed.get)
    choice = {"asked": AUTO, "picked": picked, "seconds": timed, "refused": refused, "signature": signature,
              "fields": num_fields, "batch": batch, "device": str(device)}
    log(f"auto: {model} at F={num_fields}, B={batch} on this machine: {picked} "
        f"({', '.join(f'{n} {s * 1e3:.1f} ms' for n, s in sorted(timed.items(), key=lambda i: i[1]))})")
    cache[key] = choice
    try:
        write_text_atomic(path, json.dumps(cache, indent=1, sort_keys=True))
    except OSError as error:
        log(f"auto: could not cache the choice in {path} ({error})")
    return {**choice, "cached": False}
