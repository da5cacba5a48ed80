"""Does ``torch.compile`` take the detector? ``python -m benchmarks.compile_check``.

For rcnn_lab's shipped small detector (``fasterrcnn_small_fpn``, 160 px scenes) and for
``fasterrcnn_resnet50_fpn`` at a small size, rcnn_lab's model and torchvision's (same weights):

- ``torch._dynamo.explain`` on one inference call: how many graphs dynamo captured, how many
  graph breaks, and their reasons (deduplicated, the first line of each);
- ``torch.compile(model, backend=...)`` run three times, its detections compared with eager
  mode; the first call's time includes compiling (the second may recompile, with dynamic
  shapes).

Results go to ``benchmarks/results/<machine>-compile.json``. Inductor compiles C++ on the CPU,
which takes minutes (about two for the small model on a 2-core CPU), so ResNet-50-FPN is
compiled with dynamo's ``eager`` backend by default: its graphs are captured and run as they
are, which checks that compiling works without generating code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch._dynamo

from benchmarks import report, scenes
from benchmarks.cases_models import build_pair, compare_detections
from benchmarks.timing import machine_info

RESULTS = Path(__file__).parent / "results"
SMALL_SIZE = (160, 160)
RESNET_SIZE = (64, 85)  # benchmarks.cases_models' quick size: a small graph to trace


def small_model() -> dict[str, torch.nn.Module]:
    """The shipped small detector (rcnn_lab's own: torchvision has no such builder)."""
    from rcnn_lab.pretrained import load_shapes_model

    return {"rcnn_lab": load_shapes_model("cpu").eval()}


def explain(model: torch.nn.Module, images: list) -> dict:
    """Graphs, graph breaks and their reasons for one inference call under dynamo."""
    torch._dynamo.reset()
    with torch.no_grad():
        result = torch._dynamo.explain(model)(images)
    reasons = Counter(str(b.reason).splitlines()[0][:160] for b in result.break_reasons)
    return {
        "graphs": result.graph_count,
        "graph_breaks": result.graph_break_count,
        "ops_in_graphs": result.op_count,
        "break_reasons": dict(reasons.most_common()),
    }


def compiled_run(model: torch.nn.Module, images: list, backend: str) -> dict:
    """Compile, call three times, compare with eager: {"runs", each call's s, parity}."""
    torch._dynamo.reset()
    with torch.no_grad():
        expected = model(images)
        start = time.perf_counter()
        model(images)
        eager = time.perf_counter() - start
        compiled = torch.compile(model, backend=backend)
        try:
            start = time.perf_counter()
            compiled(images)
            first = time.perf_counter() - start
            start = time.perf_counter()
            compiled(images)
            second = time.perf_counter() - start
            start = time.perf_counter()
            got = compiled(images)
            third = time.perf_counter() - start
        except Exception as error:  # noqa: BLE001 - reported, not raised: this is a survey
            return {"runs": False, "error": f"{type(error).__name__}: {error}"[:300]}
    return {
        "runs": True,
        "backend": backend,
        "eager_call_s": eager,
        "first_call_s": first,
        "second_call_s": second,
        "third_call_s": third,
        "parity": compare_detections(got, expected),
    }


def main(argv: list[str] | None = None) -> Path:
    """Survey both models; write and return the JSON file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_check", description=__doc__)
    parser.add_argument("--backend", default="inductor", help="for the small model")
    parser.add_argument(
        "--resnet-backend",
        default="eager",
        help="for ResNet-50-FPN (eager: dynamo's graphs run as captured, no code generation)",
    )
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="default: <machine>-compile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    models = {"fasterrcnn_small_fpn": (small_model(), SMALL_SIZE, args.backend)}
    if not args.skip_resnet:
        ours, theirs = build_pair("fasterrcnn_resnet50_fpn", "cpu", True)
        pair = {"rcnn_lab": ours, "torchvision": theirs}
        models["fasterrcnn_resnet50_fpn"] = (pair, RESNET_SIZE, args.resnet_backend)
    results = {"machine": info, "models": {}}
    for builder, (impls, size, backend) in models.items():
        images = scenes.images(1, *size)
        entry = {"image": list(size)}
        for impl, model in impls.items():
            entry[impl] = {"explain": explain(model, images)}
            print(
                f"{builder} {impl}: {entry[impl]['explain']['graph_breaks']} breaks",
                file=sys.stderr,
            )
            entry[impl]["compile"] = compiled_run(model, images, backend)
            print(f"{builder} {impl}: {entry[impl]['compile']}", file=sys.stderr, flush=True)
        results["models"][builder] = entry
    name = args.name or report.machine_name(info) + "-compile"
    path = report.write_json(args.out, name, results)
    print(f"written: {path}", file=sys.stderr)
    return path


if __name__ == "__main__":
    main()
