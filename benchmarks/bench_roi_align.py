"""Side-by-side timing and peak memory of rcnn_lab.ops.roi_align vs torchvision.ops.roi_align.

Runs alternate in one process (:func:`benchmarks.timing.time_alternating`), so that load from
other processes hits both alike; each cell is the median of ``--repeats`` runs. Prints a markdown
table. Peak memory is :func:`benchmarks.timing.peak_memory_bytes` of one call (CPU: the rise of
the peak resident set size; CUDA: of ``max_memory_allocated``).

    python -m benchmarks.bench_roi_align [--device cpu|cuda] [--repeats 7] [--threads 1]

On Linux/glibc, rcnn_lab's forward frees ~60 MB per call (channels-last table, gathered bins,
the contiguous output), more than glibc's default trim threshold, so each call first-touches
fresh pages again; page faults then cost as much as the arithmetic. To see the kernels without
that allocator effect, run with ``MALLOC_MMAP_THRESHOLD_=4294967296
MALLOC_TRIM_THRESHOLD_=4294967296`` in the environment (freed memory is kept and reused).
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from benchmarks.case import max_abs_diff
from benchmarks.report import megabytes
from benchmarks.scenes import make_rois
from benchmarks.timing import median_ms, peak_memory_bytes, time_alternating
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


def run_once(fn, x, rois, sampling_ratio, scale, backward, grad):
    if backward:
        x.grad = None
        fn(x, rois, OUTPUT_SIZE, scale, sampling_ratio).backward(grad)
        return None
    with torch.no_grad():
        return fn(x, rois, OUTPUT_SIZE, scale, sampling_ratio)


def bench_case(shape, mode, device, repeats: int) -> dict:
    _, n, c, h, w, k, scale = shape
    _, sampling_ratio, backward = mode
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device, requires_grad=backward)
    rois = make_rois(n, h, w, k, scale, device)
    grad = torch.randn(k, c, OUTPUT_SIZE, OUTPUT_SIZE, device=device)
    impls = {"rcnn_lab": roi_align, "torchvision": torchvision.ops.roi_align}
    with torch.no_grad():
        outputs = [fn(x, rois, OUTPUT_SIZE, scale, sampling_ratio) for fn in impls.values()]
    diff = max_abs_diff(*outputs)
    calls = {
        name: lambda fn=fn: run_once(fn, x, rois, sampling_ratio, scale, backward, grad)
        for name, fn in impls.items()
    }
    med = median_ms(time_alternating(calls, device, repeats))
    memory = {name: peak_memory_bytes(call, device) for name, call in calls.items()}
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
                f"{megabytes(r['mem']['rcnn_lab'])} | {megabytes(r['mem']['torchvision'])} | "
                f"{r['diff']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
