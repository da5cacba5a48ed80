"""A benchmark case, and how the harness runs one: counts, a parity check, memory, timings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from benchmarks.timing import (
    OpCounter,
    median_ms,
    peak_memory_bytes,
    speed,
    time_alternating,
)

IMPLS = ("rcnn_lab", "torchvision")


@dataclass
class Case:
    """Two implementations of one workload, called with no arguments, and how to compare them.

    ``compare(ours, theirs)`` receives what the two calls returned and gives a short dict
    (e.g. ``{"identical": True}`` or ``{"max_abs_diff": 3e-7}``) stored with the timings.
    """

    name: str
    group: str  # "op", "module", "model" or "train"
    params: str
    impls: dict[str, Callable[[], object]]
    compare: Callable[[object, object], dict] | None = None
    repeats: int = 7
    warmup: int = 1  # plain calls before the timed ones, after the parity, count and memory calls
    notes: dict = field(default_factory=dict)


def max_abs_diff(ours: object, theirs: object) -> float:
    """Largest |ours - theirs| over tensors, or lists/dicts of tensors, of the same structure."""
    if isinstance(ours, torch.Tensor):
        if ours.shape != theirs.shape:
            return float("inf")
        if ours.numel() == 0:
            return 0.0
        return (ours.double() - theirs.double()).abs().max().item()
    if isinstance(ours, dict):
        return max((max_abs_diff(ours[k], theirs[k]) for k in ours), default=0.0)
    if isinstance(ours, (list, tuple)):
        if len(ours) != len(theirs):
            return float("inf")
        return max((max_abs_diff(a, b) for a, b in zip(ours, theirs)), default=0.0)
    raise TypeError(f"cannot compare {type(ours).__name__}")


def compare_identical(ours: object, theirs: object) -> dict:
    return {"identical": max_abs_diff(ours, theirs) == 0.0}


def compare_close(ours: object, theirs: object) -> dict:
    return {"max_abs_diff": max_abs_diff(ours, theirs)}


def run_case(case: Case, device: torch.device, repeats: int | None, count: bool = True) -> dict:
    """One case's record: median ms, speed, peak memory, op and sync counts, parity."""
    outputs = {name: fn() for name, fn in case.impls.items()}  # warm-up, and the parity check
    counts = {}
    for name, fn in case.impls.items() if count else ():  # counted warm: caches already filled
        with OpCounter() as counter:
            fn()
        counts[name] = {"ops": counter.total, "syncs": counter.syncs, "sync_ops": counter.sync_ops}
    parity = case.compare(*(outputs[n] for n in IMPLS)) if case.compare else {}
    del outputs
    memory = {name: peak_memory_bytes(fn, device) for name, fn in case.impls.items()}
    times = time_alternating(case.impls, device, repeats or case.repeats, case.warmup)
    ms = median_ms(times)
    return {
        "name": case.name,
        "group": case.group,
        "params": case.params,
        "ms": ms,
        "samples_ms": times,
        "speed": speed(ms),
        "peak_bytes": memory,
        "counts": counts,
        "parity": parity,
        **case.notes,
    }
