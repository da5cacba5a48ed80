"""Side-by-side timing of rcnn_lab.ops.roi_pool vs torchvision.ops.roi_pool, forward and backward.

Runs alternate in one process (:func:`benchmarks.timing.time_alternating`), so that load from
other processes hits both alike; each cell is the median of ``--repeats`` runs, and the speed-up is
torchvision ms / rcnn_lab ms (above 1: rcnn_lab is faster). Prints a markdown table.

    python -m benchmarks.bench_roi_pool [--device cpu|cuda] [--repeats 7] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from benchmarks.scenes import make_rois
from benchmarks.timing import median_ms, time_alternating
from rcnn_lab.ops.roi_pool import roi_pool

#: (name, N, C, H, W, K RoIs, spatial scale): a P4-like map for 2 images and a P2-like one.
SHAPES = [
    ("2x256x50x68, K=512", 2, 256, 50, 68, 512, 1 / 16),
    ("1x256x200x272, K=1000", 1, 256, 200, 272, 1000, 1 / 4),
]
#: (name, backward?)
MODES = [("forward", False), ("fwd+bwd", True)]
OUTPUT_SIZE = 7


def run_once(fn, x, rois, scale, backward, grad):
    if backward:
        x.grad = None
        fn(x, rois, OUTPUT_SIZE, scale).backward(grad)
        return None
    with torch.no_grad():
        return fn(x, rois, OUTPUT_SIZE, scale)


def bench_case(shape, backward: bool, device, repeats: int) -> dict:
    _, n, c, h, w, k, scale = shape
    torch.manual_seed(0)
    x = torch.randn(n, c, h, w, device=device, requires_grad=backward)
    rois = make_rois(n, h, w, k, scale, device)
    grad = torch.randn(k, c, OUTPUT_SIZE, OUTPUT_SIZE, device=device)
    impls = {"rcnn_lab": roi_pool, "torchvision": torchvision.ops.roi_pool}
    with torch.no_grad():
        ours = roi_pool(x, rois, OUTPUT_SIZE, scale)
        equal = torch.equal(ours, torchvision.ops.roi_pool(x, rois, OUTPUT_SIZE, scale))
    calls = {
        name: lambda fn=fn: run_once(fn, x, rois, scale, backward, grad)
        for name, fn in impls.items()
    }
    return {"ms": median_ms(time_alternating(calls, device, repeats)), "equal": equal}


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
    print("| shape | mode | rcnn_lab ms | torchvision ms | torchvision / rcnn_lab | equal |")
    print("|---|---|---:|---:|---:|---|")
    for shape in SHAPES:
        for mode, backward in MODES:
            r = bench_case(shape, backward, device, args.repeats)
            ours, ref = r["ms"]["rcnn_lab"], r["ms"]["torchvision"]
            print(
                f"| {shape[0]} | {mode} | {ours:.1f} | {ref:.1f} | {ref / ours:.2f}x | "
                f"{r['equal']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
