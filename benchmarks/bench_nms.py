"""Side-by-side timing of rcnn_lab.ops.nms vs torchvision.ops.nms over scene sizes.

Runs alternate in one process (:func:`benchmarks.timing.time_alternating`), after a check that
both keep exactly the same indices; each cell is the median of ``--repeats`` runs. "speed" is
torchvision's time / rcnn_lab's time (above 1 = rcnn_lab faster). torchvision's CPU kernel is
single-threaded, so by default rcnn_lab gets the same single core (``--threads 1``);
``--threads 0`` keeps PyTorch's default. "syncs" counts rcnn_lab's host syncs per call
(:class:`benchmarks.timing.OpCounter`). Prints a markdown table.

    python -m benchmarks.bench_nms [--device cpu|cuda] [--repeats 15] [--threads 1]
        [--sizes 1000 2000 5000]
"""

from __future__ import annotations

import argparse

import torch
import torchvision

from benchmarks import scenes
from benchmarks.timing import OpCounter, median_ms, speed, time_alternating
from rcnn_lab.ops import nms

IOU_THRESHOLD = 0.5
SCENES = {"uniform": scenes.uniform_boxes, "clustered": scenes.clustered_boxes}


def bench_case(boxes: torch.Tensor, scores: torch.Tensor, repeats: int) -> dict:
    """Median ms of both implementations, speed, boxes kept and rcnn_lab's syncs per call."""
    impls = {
        "rcnn_lab": lambda: nms(boxes, scores, IOU_THRESHOLD),
        "torchvision": lambda: torchvision.ops.nms(boxes, scores, IOU_THRESHOLD),
    }
    with OpCounter() as counter:
        kept = impls["rcnn_lab"]()
    if not torch.equal(kept, impls["torchvision"]()):
        raise AssertionError("rcnn_lab.ops.nms and torchvision.ops.nms disagree")
    ms = median_ms(time_alternating(impls, boxes.device, repeats))
    return {"ms": ms, "speed": speed(ms), "kept": len(kept), "syncs": counter.syncs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads, IoU threshold {IOU_THRESHOLD}, "
        f"median of {args.repeats} alternating runs\n"
    )
    print("| boxes | N | kept | syncs | rcnn_lab ms | torchvision ms | speed (tv / ours) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, make in SCENES.items():
        for n in args.sizes:
            r = bench_case(*make(n, n, device), args.repeats)
            ours, theirs = r["ms"]["rcnn_lab"], r["ms"]["torchvision"]
            print(
                f"| {name} | {n} | {r['kept']} | {r['syncs']} | {ours:.2f} | {theirs:.2f} | "
                f"{r['speed']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
