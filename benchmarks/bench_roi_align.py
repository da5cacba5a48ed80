"""Side-by-side timing and peak memory of rcnn_lab.ops.roi_align vs torchvision.ops.roi_align.

Runs alternate (rcnn_lab, torchvision, rcnn_lab, ...) in one process, so that load from other
processes hits both alike; each cell is the median of ``--repeats`` runs. Prints a markdown table.

Peak memory: on CPU, the rise of the process's peak resident set size (``VmHWM`` after resetting
it through ``/proc/self/clear_refs`` and ``malloc_trim``) during one call; on CUDA,
``torch.cuda.max_memory_allocated`` above the memory in use before the call.

    python benchmarks/bench_roi_align.py [--device cpu|cuda] [--repeats 7] [--threads 1]

On Linux/glibc, rcnn_lab's forward frees ~60 MB per call (channels-last table, gathered bins,
the contiguous output), more than glibc's default trim threshold, so each call first-touches
fresh pages again; page faults then cost as much as the arithmetic. To see the kernels without
that allocator effect, run with ``MALLOC_MMAP_THRESHOLD_=4294967296
MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment (freed memory is kept and reused).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from rcnn_lab.ops import roi_align

#: (name, N, C, H, W, K RoIs, spatial scale): a P4-like map for 2 images and a P2-like one.
SHAPES = [
    ("2x256x50x68, K=512", 2, 256, 50, 68, 512, 1 / 16),
    ("1x256x200x272, K=1000", 1, 256, 200, 272, 1000, 1 / 4),
]
#: (name, sampling_ratio, backward?)
MODES = [
    ("forward, sr=2", 2, False),
    ("fwd+bwd, sr=2", 2, True),
    ("forward, adaptive", -1, False),
    ("fwd+bwd, adaptive", -1, True),
]
OUTPUT_SIZE = 7
#: RoI sides in feature pixels, the range FPN's level mapper sends to one level (2..28 px)
MIN_SIDE, MAX_SIDE = 2.0, 28.0


def make_rois(n: int, height: int, width: int, k: int, scale: float, device, seed: int = 0):
    """[K, 5] RoIs in image pixels; about one in six pokes out of the image."""
    g = torch.Generator().manual_seed(seed)
    side = (MIN_SIDE + torch.rand(k, 2, generator=g) * (MAX_SIDE - MIN_SIDE)) / scale  # [K, 2]
    image = torch.tensor([width, height]) / scale
    xy = torch.rand(k, 2, generator=g) * (image * 1.2) - image * 0.1 - side / 2
    ids = torch.randint(0, n, (k, 1), generator=g).float()
    return torch.cat([ids, xy, xy + side], dim=1).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(fn, x, rois, sampling_ratio, scale, backward, grad):
    if backward:
        x.grad = None
        fn(x, rois, OUTPUT_SIZE, scale, sampling_ratio).backward(grad)
        return None
    with torch.no_grad():
        return fn(x, rois, OUTPUT_SIZE, scale, sampling_ratio)


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def peak_extra_bytes(call: Callable[[], object], device: torch.device) -> int:
    """How far memory rose above its level before ``call`` (see the module docstring)."""
    gc.collect()
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_bytes("VmRSS:")
    call()
    return _status_bytes("VmHWM:") - before


def bench_case(shape, mode, device, repeats: int) -> dict:
    _, n, c, h, w, k, scale = shape
    _, sampling_ratio, backward = mode
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device, requires_grad=backward)
    rois = make_rois(n, h, w, k, scale, device)
    grad = torch.randn(k, c, OUTPUT_SIZE, OUTPUT_SIZE, device=device)
    impls = {"rcnn_lab": roi_align, "torchvision": torchvision.ops.roi_align}
    times: dict[str, list[float]] = {name: [] for name in impls}
    for fn in impls.values():  # warm-up
        run_once(fn, x, rois, sampling_ratio, scale, backward, grad)
    with torch.no_grad():
        diff = (
            (
                roi_align(x, rois, 7, scale, sampling_ratio)
                - torchvision.ops.roi_align(x, rois, 7, scale, sampling_ratio)
            )
            .abs()
            .max()
            .item()
        )
    for _ in range(repeats):
        for name, fn in impls.items():
            sync(device)
            start = time.perf_counter()
            run_once(fn, x, rois, sampling_ratio, scale, backward, grad)
            sync(device)
            times[name].append(time.perf_counter() - start)
    memory = {
        name: peak_extra_bytes(
            lambda fn=fn: run_once(fn, x, rois, sampling_ratio, scale, backward, grad), device
        )
        for name, fn in impls.items()
    }
    med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {"ms": med, "mem": memory, "diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats} alternating runs, "
        f"output {OUTPUT_SIZE}x{OUTPUT_SIZE}\n"
    )
    print(
        "| shape | mode | rcnn_lab ms | torchvision ms | speed-up | "
        "rcnn_lab peak MB | torchvision peak MB | max abs diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        for mode in MODES:
            r = bench_case(shape, mode, device, args.repeats)
            ours, ref = r["ms"]["rcnn_lab"], r["ms"]["torchvision"]
            print(
                f"| {shape[0]} | {mode[0]} | {ours:.1f} | {ref:.1f} | {ref / ours:.1f}x | "
                f"{r['mem']['rcnn_lab'] / 1e6:.0f} | {r['mem']['torchvision'] / 1e6:.0f} | "
                f"{r['diff']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
