"""Worst cases of rcnn_lab.ops.nms / batched_nms, timed side by side with torchvision.ops.

Two inputs that stress an NMS which decides boxes in blocks:

- **chain**: N boxes ``[i * STEP, 0, i * STEP + SIDE, SIDE]`` with decreasing scores. Each box
  overlaps its neighbour above the threshold (IoU 8/12) but not the one after (IoU 6/14), so
  greedy NMS keeps every other box and each decision depends on the one before it: the longest
  possible chain of suppressions.
- **many classes**: ``batched_nms`` over random boxes spread over many categories, so that
  every block of score-sorted boxes straddles several categories.

Runs alternate (rcnn_lab, torchvision, rcnn_lab, ...) in one process, after a check that both
keep exactly the same indices; each cell is the median of ``--repeats`` runs. "speed" is
torchvision's time / rcnn_lab's time (above 1 = rcnn_lab faster). Prints a markdown table.

    python benchmarks/bench_nms_adversarial.py [--chain 50000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from rcnn_lab.ops import batched_nms, nms

IOU_THRESHOLD = 0.5
SIDE, STEP = 10.0, 2.0  # neighbours: IoU (10-2)/(10+2) = 0.67; next but one: 6/14 = 0.43
IMAGE = 1000.0
MIN_SIDE, MAX_SIDE = 10.0, 100.0


def chain_boxes(n: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, 4] boxes sliding right by STEP, and [n] decreasing scores."""
    x = torch.arange(n, dtype=dtype, device=device) * STEP
    zeros = torch.zeros_like(x)
    boxes = torch.stack([x, zeros, x + SIDE, zeros + SIDE], dim=1)  # [n, 4]
    return boxes, torch.linspace(1, 0, n, dtype=dtype, device=device)


def class_boxes(n: int, classes: int, device) -> tuple[torch.Tensor, ...]:
    """[n, 4] uniformly placed boxes (sides 10..100 px), [n] scores and [n] categories."""
    g = torch.Generator().manual_seed(n + classes)
    xy = torch.rand(n, 2, generator=g) * IMAGE
    wh = MIN_SIDE + torch.rand(n, 2, generator=g) * (MAX_SIDE - MIN_SIDE)
    idxs = torch.randint(0, classes, (n,), generator=g)
    scores = torch.rand(n, generator=g)
    return torch.cat([xy, xy + wh], 1).to(device), scores.to(device), idxs.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(ours: Callable, theirs: Callable, device, repeats: int) -> tuple[float, float, int]:
    """Median seconds of ours and theirs over alternating runs, and how many boxes are kept."""
    kept = ours()
    if not torch.equal(kept, theirs()):
        raise AssertionError("rcnn_lab and torchvision disagree")
    times: dict[Callable, list[float]] = {ours: [], theirs: []}
    for _ in range(repeats):
        for fn in (ours, theirs):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[fn].append(time.perf_counter() - start)
    return statistics.median(times[ours]), statistics.median(times[theirs]), len(kept)


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
    for n in args.chain:
        for dtype in (torch.float32, torch.float64):
            b, s = chain_boxes(n, dtype, device)
            ours, theirs, kept = bench(
                lambda b=b, s=s: nms(b, s, IOU_THRESHOLD),
                lambda b=b, s=s: tv.nms(b, s, IOU_THRESHOLD),
                device,
                args.repeats,
            )
            name = f"chain, {str(dtype).removeprefix('torch.')}"
            print(f"| {name} | {n} | {kept} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |")
    for classes in args.classes:
        b, s, i = class_boxes(args.boxes, classes, device)
        ours, theirs, kept = bench(
            lambda b=b, s=s, i=i: batched_nms(b, s, i, IOU_THRESHOLD),
            lambda b=b, s=s, i=i: tv.batched_nms(b, s, i, IOU_THRESHOLD),
            device,
            args.repeats,
        )
        name = f"batched_nms, {classes} classes"
        print(
            f"| {name} | {args.boxes} | {kept} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.2f}x |"
        )


if __name__ == "__main__":
    main()
