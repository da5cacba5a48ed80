"""Where the time goes and how it grows: ``python -m benchmarks.scaling``.

Three measurements of ``fasterrcnn_resnet50_fpn`` (random weights made realistic, the same
state_dict in every model, see :func:`benchmarks.cases_models.build_pair`), each on rcnn_lab's
exact path, rcnn_lab's fast path (:func:`rcnn_lab.optimize_for_inference`) and torchvision:

- ``stages``: one 800 x 1066 image, the time of each stage of the forward (transform, trunk,
  FPN, RPN, RoI heads; "other" is the rest: post-processing, the channels-last conversion),
  measured with forward hooks, medians of alternating runs; plus the FLOPs of each stage
  (``torch.utils.flop_counter``) and this machine's float32 matmul rate, a rough ceiling.
- ``image_size``: end-to-end time vs image size, short side 320..1000 (long side up to 1333),
  the transform set to leave each image unscaled.
- ``proposals``: the RoI heads alone (MultiScaleRoIAlign, box head, post-processing) on the
  800 x 1066 image's features with K = 100..2000 proposals.

Results go to ``benchmarks/results/<machine>-scaling.json`` (read by chapter 13). With one
thread the whole run takes a few minutes; ``--quick`` runs tiny sizes in seconds (smoke test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import rcnn_lab
from benchmarks import report, scenes
from benchmarks.cases_models import build_pair
from benchmarks.timing import machine_info, sync, time_alternating

RESULTS = Path(__file__).parent / "results"
BUILDER = "fasterrcnn_resnet50_fpn"
STAGE_SIZE = (800, 1066)
SHORT_SIDES = (320, 480, 640, 800, 1000)  # long side 4/3 of it: 427 .. 1333 px
PROPOSALS = (100, 250, 500, 1000, 2000)
QUICK_SHORT_SIDES, QUICK_PROPOSALS, QUICK_STAGE_SIZE = (48, 64), (50, 100), (64, 85)
#: stage name -> submodule of a FasterRCNN (rcnn_lab's and torchvision's have the same names)
STAGES = {
    "transform": "transform",
    "trunk": "backbone.body",
    "fpn": "backbone.fpn",
    "rpn": "rpn",
    "roi_heads": "roi_heads",
}
MATMUL_SIDE = 1024  # a float32 matmul this large runs near the CPU's peak rate


def three_models(device: torch.device, quick: bool) -> dict[str, nn.Module]:
    """rcnn_lab's exact and fast paths and torchvision's model, with the same weights."""
    ours, theirs = build_pair(BUILDER, str(device), quick)
    fast = rcnn_lab.optimize_for_inference(ours)
    return {"rcnn_lab": ours, "rcnn_lab fast path": fast, "torchvision": theirs}


class StageTimer:
    """Forward hooks that record each stage's milliseconds during one model call."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.ms: dict[str, float] = {}
        self.handles = []
        for stage, path in STAGES.items():
            module = model.get_submodule(path)
            self.handles.append(module.register_forward_pre_hook(self._start(stage, device)))
            self.handles.append(module.register_forward_hook(self._stop(stage, device)))
        self.started: dict[str, float] = {}

    def _start(self, stage: str, device: torch.device):
        def hook(module, args):
            sync(device)
            self.started[stage] = time.perf_counter()

        return hook

    def _stop(self, stage: str, device: torch.device):
        def hook(module, args, output):
            sync(device)
            self.ms[stage] = (time.perf_counter() - self.started[stage]) * 1e3

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def stage_profile(models: dict, images: list, device: torch.device, repeats: int) -> dict:
    """Median ms of every stage and of the whole call, per model, alternating the models."""
    samples = {name: [] for name in models}
    timers = {name: StageTimer(model, device) for name, model in models.items()}
    names = list(models)
    for name in names:
        models[name](images)  # warm-up
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            models[name](images)
            sync(device)
            total = (time.perf_counter() - start) * 1e3
            stages = dict(timers[name].ms)
            stages["other"] = total - sum(stages.values())
            samples[name].append({**stages, "total": total})
    for timer in timers.values():
        timer.remove()
    keys = [*STAGES, "other", "total"]
    return {
        name: {k: statistics.median(s[k] for s in rows) for k in keys}
        for name, rows in samples.items()
    }


@torch.no_grad()
def stage_flops(model: nn.Module, images: list) -> dict[str, int]:
    """FLOPs (a multiply-add counts 2) of each stage in one call, from aten's formulas."""
    with FlopCounterMode(display=False) as counter:
        model(images)
    per_module = counter.get_flop_counts()
    flops = {}
    for stage, path in STAGES.items():
        # the counter names modules by their attribute path below the root ("backbone.body")
        key = next((k for k in per_module if k.endswith(path)), None)
        flops[stage] = int(sum(per_module[key].values())) if key else 0
    flops["total"] = int(sum(per_module["Global"].values()))
    return flops


def matmul_gflops(device: torch.device, repeats: int = 5) -> float:
    """This machine's float32 matmul rate in GFLOP/s on square matrices: a rough ceiling."""
    a = torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device)
    times = time_alternating({"mm": lambda: a @ a}, device, repeats, warmup=1)["mm"]
    return 2 * MATMUL_SIDE**3 / (statistics.median(times) * 1e-3) / 1e9


def interleaved_ms(settings: list, impls_for, device, repeats: int) -> list[dict[str, float]]:
    """Median ms of each implementation at each setting, the settings interleaved.

    ``impls_for(setting)`` gives {name: call}. Every round times every setting once (the
    implementations alternating as in :func:`benchmarks.timing.time_alternating`), so that a
    burst of load from other processes hits one round of every setting, not every run of one.
    """
    samples = [{name: [] for name in impls_for(setting)} for setting in settings]
    for setting in settings:  # warm-up
        for call in impls_for(setting).values():
            call()
    for r in range(repeats):
        for setting, times in zip(settings, samples):
            impls = impls_for(setting)
            for name in list(impls) if r % 2 == 0 else list(impls)[::-1]:
                sync(device)
                start = time.perf_counter()
                impls[name]()
                sync(device)
                times[name].append((time.perf_counter() - start) * 1e3)
    return [{name: statistics.median(t) for name, t in times.items()} for times in samples]


@torch.no_grad()
def image_size_scaling(models: dict, sides, device, repeats: int) -> list[dict]:
    """End-to-end ms per model at each size, every image left unscaled by the transform."""
    saved = {name: (m.transform.min_size, m.transform.max_size) for name, m in models.items()}
    shapes = [(side, round(side * 4 / 3)) for side in sides]
    images = {shape: scenes.images(1, *shape, device=device) for shape in shapes}

    def impls_for(shape):
        h, w = shape
        for model in models.values():
            model.transform.min_size, model.transform.max_size = (h,), max(w, 1333)
        return {name: (lambda m=model: m(images[shape])) for name, model in models.items()}

    medians = interleaved_ms(shapes, impls_for, device, repeats)
    for name, model in models.items():
        model.transform.min_size, model.transform.max_size = saved[name]
    rows = [
        {"height": h, "width": w, "pixels": h * w, "ms": ms} for (h, w), ms in zip(shapes, medians)
    ]
    print(f"image sizes: {rows}", file=sys.stderr, flush=True)
    return rows


@torch.no_grad()
def proposal_scaling(models: dict, ks, size, device, repeats: int) -> list[dict]:
    """RoI heads alone: ms per model for K proposals on one image's features."""
    theirs = models["torchvision"]
    images = scenes.images(1, *size, device=device)
    image_list, _ = theirs.transform(images)
    sizes = image_list.image_sizes
    features = theirs.backbone(image_list.tensors)
    proposals = {k: [scenes.proposals(sizes[0], k, seed=k, device=device)] for k in ks}
    heads = {name: m.roi_heads for name, m in models.items() if name != "rcnn_lab fast path"}

    def impls_for(k):  # the fast path's RoI heads are the exact path's
        return {
            name: (lambda h=head: h(features, proposals[k], sizes)) for name, head in heads.items()
        }

    medians = interleaved_ms(list(ks), impls_for, device, repeats)
    rows = [{"proposals": k, "ms": ms} for k, ms in zip(ks, medians)]
    print(f"proposals: {rows}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> Path:
    """Run the three measurements; write and return the JSON file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="default: <machine>-scaling")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device)
    name = args.name or report.machine_name(info) + ("-quick" if args.quick else "") + "-scaling"
    models = three_models(device, args.quick)
    size = QUICK_STAGE_SIZE if args.quick else STAGE_SIZE
    images = scenes.images(1, *size, device=device)
    results = {
        "machine": info,
        "model": BUILDER,
        "stage_image": list(size),
        "stages_ms": stage_profile(models, images, device, args.repeats),
        "stage_flops": stage_flops(models["rcnn_lab"], images),
        "matmul_gflops": matmul_gflops(device),
        "image_size": image_size_scaling(
            models, QUICK_SHORT_SIDES if args.quick else SHORT_SIDES, device, args.repeats
        ),
        "proposals": proposal_scaling(
            models, QUICK_PROPOSALS if args.quick else PROPOSALS, size, device, args.repeats
        ),
    }
    path = report.write_json(args.out, name, results)
    print(f"written: {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
