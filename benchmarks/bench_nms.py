"""Side-by-side timing of rcnn_lab.ops.nms vs torchvision.ops.nms.

Runs alternate (rcnn_lab, torchvision, rcnn_lab, ...) in one process, so that load from other
processes hits both alike; each cell is the median of ``--repeats`` runs, after a check that both
keep exactly the same indices. "speed" is torchvision's time / rcnn_lab's time (1.0 = as fast,
above 1 = rcnn_lab faster). torchvision's CPU kernel is single-threaded, so by default rcnn_lab
gets the same single core (``--threads 1``); ``--threads 0`` keeps PyTorch's default thread
count (which on a shared, busy machine can be much slower than one thread). Prints a markdown
table.

    python benchmarks/bench_nms.py [--device cpu|cuda] [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from rcnn_lab.ops import nms

SIZES = (1000, 2000, 5000)
IOU_THRESHOLD = 0.5
IMAGE = 1000.0  # boxes live in a 1000 x 1000 image
MIN_SIDE, MAX_SIDE = 10.0, 100.0
CLUSTERS = 20  # objects in the clustered scene; each gets N / 20 jittered guesses on average
JITTER = 0.1  # corner noise as a fraction of the object's side


def uniform_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    """[n, 4] boxes at uniformly random places with sides in [10, 100): few overlaps."""
    xy = torch.rand(n, 2, generator=g) * IMAGE
    wh = MIN_SIDE + torch.rand(n, 2, generator=g) * (MAX_SIDE - MIN_SIDE)
    return torch.cat([xy, xy + wh], dim=1)


def clustered_boxes(n: int, g: torch.Generator) -> torch.Tensor:
    """[n, 4] noisy guesses around 20 objects, as a detector's raw output: most get suppressed."""
    corner = torch.rand(CLUSTERS, 2, generator=g) * (IMAGE - MAX_SIDE)
    size = 3 * MIN_SIDE + torch.rand(CLUSTERS, 2, generator=g) * (MAX_SIDE - 3 * MIN_SIDE)
    which = torch.randint(0, CLUSTERS, (n,), generator=g)
    objects = torch.cat([corner, corner + size], dim=1)[which]  # [n, 4]
    noisy = objects + JITTER * size[which].repeat(1, 2) * torch.randn(n, 4, generator=g)
    return torch.cat([noisy[:, :2].minimum(noisy[:, 2:]), noisy[:, :2].maximum(noisy[:, 2:])], 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_case(boxes: torch.Tensor, scores: torch.Tensor, repeats: int) -> dict:
    """Median ms of both implementations over alternating runs, plus how many boxes survive."""
    impls = {"rcnn_lab": nms, "torchvision": torchvision.ops.nms}
    kept = {name: fn(boxes, scores, IOU_THRESHOLD) for name, fn in impls.items()}  # warm-up
    if not torch.equal(kept["rcnn_lab"], kept["torchvision"]):
        raise AssertionError("rcnn_lab.ops.nms and torchvision.ops.nms disagree")
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            sync(boxes.device)
            start = time.perf_counter()
            fn(boxes, scores, IOU_THRESHOLD)
            sync(boxes.device)
            times[name].append(time.perf_counter() - start)
    ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {"ms": ms, "kept": len(kept["rcnn_lab"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
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
    print("| boxes | N | kept | rcnn_lab ms | torchvision ms | speed (tv / ours) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in (("uniform", uniform_boxes), ("clustered", clustered_boxes)):
        for n in SIZES:
            g = torch.Generator().manual_seed(n)
            boxes = make(n, g).to(device)
            scores = torch.rand(n, generator=g).to(device)
            result = bench_case(boxes, scores, args.repeats)
            ours, theirs = result["ms"]["rcnn_lab"], result["ms"]["torchvision"]
            print(
                f"| {name} | {n} | {result['kept']} | {ours:.2f} | {theirs:.2f} | "
                f"{theirs / ours:.2f}x |"
            )


if __name__ == "__main__":
    main()
