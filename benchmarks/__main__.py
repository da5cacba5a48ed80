"""rcnn_lab vs torchvision, side by side: ``python -m benchmarks`` (or ``make bench``).

Every case runs both implementations in one process, with the same inputs and (for models) the
same state_dict: one counted call each (aten ops, host syncs), a parity check of their outputs,
one call each for peak memory, then alternating timed runs; medians are reported.

    python -m benchmarks [--device cpu|cuda] [--quick] [--only nms roi_align ...]
                         [--repeats R] [--threads T] [--nms-path auto|dense]
                         [--out benchmarks/results] [--name NAME]

Results are merged into ``<out>/<name>.json`` (by case name) and the whole file is written as a
markdown table to ``<out>/<name>.md`` and stdout. ``--quick`` uses tiny sizes and 3 repeats (ops:
seconds; the models still take a minute to build) and, by default, a name ending in ``-quick``.

Finer grids of single ops, on the same timing helper (:mod:`benchmarks.timing`):
``python -m benchmarks.bench_nms``, ``.bench_nms_adversarial``, ``.bench_roi_align``,
``.bench_roi_pool``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import rcnn_lab
from benchmarks import report
from benchmarks.case import run_case
from benchmarks.cases_fast_path import FAST_PATH_FACTORIES
from benchmarks.cases_models import MODEL_FACTORIES
from benchmarks.cases_ops import OP_FACTORIES
from benchmarks.timing import machine_info

FACTORIES = {**OP_FACTORIES, **MODEL_FACTORIES, **FAST_PATH_FACTORIES}
RESULTS = Path(__file__).parent / "results"
QUICK_REPEATS = 3


def _selected(key: str, only: list[str] | None) -> bool:
    return not only or any(key.startswith(o) or o.startswith(key) for o in only)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    description = __doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="case names starting with...")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-count", action="store_true", help="skip the op and sync counts")
    parser.add_argument(
        "--nms-path",
        choices=["auto", "dense"],
        default="auto",
        help="dense: run rcnn_lab's accelerator NMS path on every device (to count its syncs "
        "on a CPU); results get a name ending in -dense-nms",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file name (default: the machine)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_info(device)
    name = args.name or report.machine_name(info) + ("-quick" if args.quick else "")
    if args.nms_path == "dense":
        # the set of devices that take the blocked NMS path; emptied, every device goes dense
        rcnn_lab.ops.boxes._BLOCKED_DEVICES.clear()
        info["nms_path"] = "dense"
        name = args.name or name + "-dense-nms"
    repeats = args.repeats or (QUICK_REPEATS if args.quick else None)
    records = []
    for key, factory in FACTORIES.items():
        if not _selected(key, args.only):
            continue
        for case in factory(device, args.quick):
            if args.only and not any(case.name.startswith(o) for o in args.only):
                continue
            record = run_case(case, device, repeats, count=not args.no_count)
            records.append(record)
            print(
                f"{case.name:<28} {record['ms']['rcnn_lab']:10.2f} ms "
                f"{record['ms']['torchvision']:10.2f} ms  {record['speed']:.2f}x",
                file=sys.stderr,
                flush=True,
            )
    path, table = report.write(args.out, name, info, records)
    print(table)
    print(f"written: {path}", file=sys.stderr)
    return {"path": path, "records": records}


if __name__ == "__main__":
    main()
