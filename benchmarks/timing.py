"""The one timing helper of every benchmark: alternating runs, medians, peak memory, op counts.

- :func:`time_alternating` runs the implementations in turn (A B, B A, A B, ...) in one process,
  so load from other processes and the order of the calls hit them alike, and returns every
  sample in milliseconds; :func:`median_ms` and :func:`speed` summarise them. speed is
  torchvision's time / rcnn_lab's time: above 1, rcnn_lab is faster.
- :func:`peak_memory_bytes` measures how far memory rose during one call: on CUDA
  ``torch.cuda.max_memory_allocated`` above the memory in use before; on Linux CPUs the rise of
  the process's peak resident set size (``VmHWM`` reset through ``/proc/self/clear_refs`` after
  ``malloc_trim``), which counts pages touched, allocator slack included; elsewhere None.
- :class:`OpCounter` counts the aten ops that one call dispatches and, among them, the ones that
  synchronise with the host or whose output size depends on the data (see :func:`sync_kind`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torchvision
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: aten ops that read device data back to the host (a sync on a GPU) or size their output by it.
SYNC_OPS = {
    "equal",  # torch.equal -> one bool on the host
    "_local_scalar_dense",  # .item(), int(t), float(t), bool(t)
    "is_nonzero",  # bool(t) when it is not decomposed into .item()
    "nonzero",  # also torch.where(cond) with one argument
    "nonzero_numpy",
    "argwhere",
    "masked_select",
    "unique",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "unique_dim_consecutive",
}
#: ops with a device-sized output only for some overloads: indexing with a boolean mask
MASK_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}
#: custom ops counted as syncs by their qualified name
SYNC_CUSTOM_OPS = {"torchvision::nms"}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternating(
    impls: Mapping[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 1,
) -> dict[str, list[float]]:
    """Milliseconds of ``repeats`` runs of each implementation, interleaved, after ``warmup`` each.

    Round r runs the implementations in order when r is even and in reverse when odd, so that
    neither always runs first (after the other's allocations, with its caches warm).
    """
    names = list(impls)
    for _ in range(warmup):
        for name in names:
            impls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            impls[name]()
            sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def median_ms(times: Mapping[str, list[float]]) -> dict[str, float]:
    """Median of each implementation's samples."""
    return {name: statistics.median(samples) for name, samples in times.items()}


def speed(ms: Mapping[str, float], ours: str = "rcnn_lab", theirs: str = "torchvision") -> float:
    """theirs / ours: above 1, ours is faster."""
    return ms[theirs] / ms[ours]


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _can_reset_peak_rss() -> bool:
    return os.access("/proc/self/clear_refs", os.W_OK) and Path("/proc/self/status").exists()


def peak_memory_bytes(call: Callable[[], object], device: torch.device) -> int | None:
    """How far memory rose above its level before ``call`` (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type != "cpu" or not _can_reset_peak_rss():
        return None
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so RSS starts low
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS:")
    call()
    return max(0, _status_bytes("VmHWM:") - before)


def _is_bool_tensor(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.dtype in (torch.bool, torch.uint8)


def sync_kind(func: torch._ops.OpOverload, args: tuple) -> str | None:
    """The name under which ``func(*args)`` counts as a host sync, or None.

    Boolean-mask indexing counts as "index[bool]"; a copy from a device to the CPU as "to_host".
    """
    name = func._overloadpacket.__name__
    if func.namespace != "aten":
        qualified = f"{func.namespace}::{name}"
        return qualified if qualified in SYNC_CUSTOM_OPS else None
    if name in SYNC_OPS:
        return name
    if name in MASK_INDEX_OPS and len(args) > 1 and isinstance(args[1], (list, tuple)):
        if any(_is_bool_tensor(i) for i in args[1]):
            return f"{name}[bool]"
    if name == "repeat_interleave" and len(args) == 1:  # repeats tensor, no output_size
        return name
    if name in ("_to_copy", "copy_") and _crosses_to_host(name, args):
        return "to_host"
    return None


def _crosses_to_host(name: str, args: tuple) -> bool:
    source = args[1] if name == "copy_" else args[0]
    target = args[0] if name == "copy_" else None
    if not isinstance(source, torch.Tensor) or source.device.type == "cpu":
        return False
    return target is None or target.device.type == "cpu"


class _ToListCounter(TorchFunctionMode):
    """Counts ``Tensor.tolist()``, which reads data on the host without dispatching an aten op."""

    def __init__(self, counts: Counter) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.counts["tolist"] += 1
        return func(*args, **(kwargs or {}))


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside its ``with`` block, and the host syncs among them.

    >>> with OpCounter() as counter:
    ...     _ = torch.arange(4)[torch.arange(4) > 1]
    >>> counter.syncs, counter.sync_ops
    (1, {'index[bool]': 1})
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()
        self.sync_counts: Counter = Counter()
        self._tolist = _ToListCounter(self.sync_counts)

    def __enter__(self):
        self._tolist.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        self._tolist.__exit__(*exc)
        return result

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[f"{func.namespace}::{func._overloadpacket.__name__}"] += 1
        kind = sync_kind(func, args)
        if kind is not None:
            self.sync_counts[kind] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """Every op dispatched (aten and custom)."""
        return sum(self.ops.values())

    @property
    def syncs(self) -> int:
        return sum(self.sync_counts.values())

    @property
    def sync_ops(self) -> dict[str, int]:
        return dict(sorted(self.sync_counts.items()))


def count_ops(call: Callable[[], object]) -> dict:
    """Run ``call`` once under an :class:`OpCounter`: {"ops", "syncs", "sync_ops"}."""
    with OpCounter() as counter:
        call()
    return {"ops": counter.total, "syncs": counter.syncs, "sync_ops": counter.sync_ops}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU, cores, threads, library versions and, on CUDA, the GPU: stored with every result."""
    info = {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
        info["tf32_cudnn"] = torch.backends.cudnn.allow_tf32
    return info
