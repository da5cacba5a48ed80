"""Worst cases of rcnn_lab.ops.nms / batched_nms, timed side by side with torchvision.ops.

Two inputs that stress an NMS which decides boxes in blocks:

- **chain** (:func:`benchmarks.scenes.chain_boxes`): each box overlaps its neighbour above the
  threshold but not the one after, so greedy NMS keeps every other box and each decision
  depends on the one before it: the longest possible chain of suppressions.
- **many classes**: ``batched_nms`` over random boxes spread over many categories, so that
  every block of score-sorted boxes straddles several categories.

Runs alternate in one process (:func:`benchmarks.timing.time_alternating`), after a check that
both keep exactly the same indices; each cell is the median of ``--repeats`` runs. "speed" is
torchvision's time / rcnn_lab's time (above 1 = rcnn_lab faster). Prints a markdown table.

    python -m benchmarks.bench_nms_adversarial [--chain 50000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torchvision

from benchmarks import scenes
from benchmarks.timing import median_ms, time_alternating
from rcnn_lab.ops import batched_nms, nms

IOU_THRESHOLD = 0.5


def bench(ours: Callable, theirs: Callable, device, repeats: int) -> tuple[float, float, int]:
    """Median seconds of ours and theirs over alternating runs, and how many boxes are kept."""
    kept = ours()
    if not torch.equal(kept, theirs()):
        raise AssertionError("rcnn_lab and torchvision disagree")
    ms = median_ms(time_alternating({"ours": ours, "theirs": theirs}, device, repeats, warmup=0))
    return ms["ours"] / 1e3, ms["theirs"] / 1e3, len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--chain", type=int, nargs="+", default=[50_000])
    parser.add_argument("--boxes", type=int, default=20_000, help="boxes of the batched case")
    parser.add_argument("--classes", type=int, nargs="+", default=[80, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {device}, "
        f"{torch.get_num_threads()} threads, IoU threshold {IOU_THRESHOLD}, "
        f"median of {args.repeats} alternating runs\n"
    )
    print("| case | N | kept | rcnn_lab s | torchvision s | speed (tv / ours) |")
    print("|---|---:|---:|---:|---:|---:|")
    tv = torchvision.ops
    rows = []  # (name, N, rcnn_lab's function, torchvision's, inputs before the threshold)
    for n in args.chain:
        for dtype in (torch.float32, torch.float64):
            name = f"chain, {str(dtype).removeprefix('torch.')}"
            rows.append((name, n, nms, tv.nms, scenes.chain_boxes(n, dtype, device)))
    for classes in args.classes:
        inputs = scenes.class_boxes(args.boxes, classes, args.boxes + classes, device)
        name = f"batched_nms, {classes} classes"
        rows.append((name, args.boxes, batched_nms, tv.batched_nms, inputs))
    for name, n, ours_fn, theirs_fn, inputs in rows:
        ours, theirs, kept = bench(
            lambda fn=ours_fn, inputs=inputs: fn(*inputs, IOU_THRESHOLD),
            lambda fn=theirs_fn, inputs=inputs: fn(*inputs, IOU_THRESHOLD),
            device,
            args.repeats,
        )
        print(f"| {name} | {n} | {kept} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
