"""Results of the harness: one JSON file per machine and a markdown table made from it."""

from __future__ import annotations

import json
import re
from pathlib import Path

MB = 1e6


def machine_name(info: dict) -> str:
    """A stable file name for the machine: device type, cores and CPU (or GPU) model."""
    model = info.get("gpu") or info["cpu"]
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"{info['device'].split(':')[0]}-{info['cores']}core-{slug}"


def merge(path: Path, info: dict, records: list[dict]) -> dict:
    """The stored results of ``path`` with ``records`` replacing same-named cases."""
    stored = json.loads(path.read_text()) if path.exists() else {"cases": []}
    fresh = {r["name"] for r in records}
    kept = [r for r in stored.get("cases", []) if r["name"] not in fresh]
    return {"machine": info, "cases": kept + records}


def megabytes(value: int | None) -> str:
    """Bytes as whole MB, or "n/a" where memory was not measurable."""
    return "n/a" if value is None else f"{value / MB:.0f}"


def _parity(parity: dict) -> str:
    if "identical" in parity:
        return "identical" if parity["identical"] else "DIFFERENT"
    if "same_labels" in parity:
        if not parity["same_labels"]:
            return "labels DIFFER"
        return f"{parity['detections']} dets, boxes {parity['max_box_diff']:.0e} px"
    for key in ("max_abs_diff", "max_loss_diff"):
        if key in parity:
            return f"max diff {parity[key]:.0e}"
    return ""


def _counts(record: dict, key: str) -> str:
    counts = record.get("counts") or {}
    if not counts:
        return "-"
    return f"{counts['rcnn_lab'][key]} / {counts['torchvision'][key]}"


def markdown(results: dict) -> str:
    """Machine line, then one table row per case."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads "
        f"({m['cpu_capability']}), device {m['device']}"
        + (f" ({m['gpu']}, TF32 matmul {m['tf32_matmul']})" if "gpu" in m else "")
        + f"; torch {m['torch']}, torchvision {m['torchvision']}, Python {m['python']}.",
        "",
        *(
            [
                "rcnn_lab's NMS forced onto its accelerator (dense) path on this device: "
                "the sync counts are the accelerator's, the times are not.",
                "",
            ]
            if m.get("nms_path") == "dense"
            else []
        ),
        "speed = torchvision ms / rcnn_lab ms (above 1: rcnn_lab faster), medians of "
        "alternating runs in one process. Peak MB: rise of peak RSS (CPU) or of "
        "max_memory_allocated (CUDA) during one call. Syncs and ops: one call, rcnn_lab / "
        "torchvision.",
        "",
        "| case | params | rcnn_lab ms | torchvision ms | speed | peak MB (ours / tv) "
        "| syncs | aten ops | parity |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results["cases"]:
        ms, peak = r["ms"], r["peak_bytes"]
        peak_mb = f"{megabytes(peak['rcnn_lab'])} / {megabytes(peak['torchvision'])}"
        lines.append(
            f"| {r['name']} | {r['params']} | {ms['rcnn_lab']:.2f} | {ms['torchvision']:.2f} | "
            f"{r['speed']:.2f}x | {peak_mb} | "
            f"{_counts(r, 'syncs')} | {_counts(r, 'ops')} | {_parity(r['parity'])} |"
        )
    return "\n".join(lines) + "\n"


def write_json(out_dir: Path, name: str, results: dict) -> Path:
    """Write ``results`` to ``out_dir/<name>.json`` (creating the folder); return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def write(out_dir: Path, name: str, info: dict, records: list[dict]) -> tuple[Path, str]:
    """Merge ``records`` into ``out_dir/<name>.json``, write ``<name>.md``; return (json, table)."""
    results = merge(out_dir / f"{name}.json", info, records)
    path = write_json(out_dir, name, results)
    table = markdown(results)
    (out_dir / f"{name}.md").write_text(table)
    return path, table
