"""The benchmark harness: its helpers by hand, and a --quick run checked for structure.

No test asserts on a time: the machine may be busy. They check that every case gives medians,
a positive speed, integer op and sync counts, and a parity record, in the JSON and the table.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import report
from benchmarks.__main__ import main
from benchmarks.case import Case, compare_identical, run_case
from benchmarks.timing import OpCounter, count_ops, median_ms, speed, time_alternating

OP_CASES = ["nms", "batched_nms", "roi_align", "MultiScaleRoIAlign", "anchors"]


def test_time_alternating_runs_each_implementation_in_turn():
    calls = []
    impls = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = time_alternating(impls, torch.device("cpu"), repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then A B, B A, A B
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}
    ms = median_ms({"rcnn_lab": [1.0, 2.0, 9.0], "torchvision": [4.0, 4.0, 5.0]})
    assert ms == {"rcnn_lab": 2.0, "torchvision": 4.0} and speed(ms) == 2.0


def test_op_counter_counts_host_syncs_by_kind():
    x = torch.arange(6.0)
    with OpCounter() as counter:
        _ = x[x > 2]  # boolean-mask indexing
        _ = torch.where(x > 3)  # one-argument where: a nonzero
        _ = x.sum().item()
        _ = torch.equal(x, x)
        _ = x.tolist()
        _ = x + 1  # no sync
    assert counter.sync_ops == {
        "_local_scalar_dense": 1,
        "equal": 1,
        "index[bool]": 1,
        "nonzero": 1,
        "tolist": 1,
    }
    assert counter.syncs == 5 and counter.total >= 8
    assert count_ops(lambda: x * 2) == {"ops": 1, "syncs": 0, "sync_ops": {}}


def test_run_case_record_has_every_field():
    x = torch.arange(5.0)
    impls = {"rcnn_lab": lambda: x * 2, "torchvision": lambda: x + x}
    case = Case("double", "op", "5 numbers", impls, compare=compare_identical)
    record = run_case(case, torch.device("cpu"), repeats=2)
    assert record["parity"] == {"identical": True}
    assert record["counts"]["rcnn_lab"] == {"ops": 1, "syncs": 0, "sync_ops": {}}
    assert len(record["samples_ms"]["torchvision"]) == 2 and record["speed"] > 0


def check_records(records: list[dict], table: str) -> None:
    for r in records:
        assert r["speed"] > 0 and all(ms > 0 for ms in r["ms"].values())
        for counts in r["counts"].values():
            assert isinstance(counts["ops"], int) and counts["ops"] > 0
            assert isinstance(counts["syncs"], int) and counts["syncs"] >= 0
            assert sum(counts["sync_ops"].values()) == counts["syncs"]
        for peak in r["peak_bytes"].values():
            assert peak is None or (isinstance(peak, int) and peak >= 0)
        assert r["parity"], r["name"]
        assert f"| {r['name']} |" in table


def test_quick_op_cases(tmp_path):
    main(["--quick", "--repeats", "1", "--only", *OP_CASES, "--out", str(tmp_path), "--name", "t"])
    results = json.loads((tmp_path / "t.json").read_text())
    names = [r["name"] for r in results["cases"]]
    for prefix in OP_CASES:
        assert any(name.startswith(prefix) for name in names), prefix
    assert {"cpu", "cores", "torch", "torchvision", "torch_threads"} <= set(results["machine"])
    check_records(results["cases"], (tmp_path / "t.md").read_text())
    nms_parity = [r["parity"] for r in results["cases"] if "nms" in r["name"]]
    assert all(p == {"identical": True} for p in nms_parity)


def test_results_merge_by_case_name(tmp_path):
    main(["--quick", "--repeats", "1", "--only", "anchors", "--out", str(tmp_path), "--name", "t"])
    main(["--quick", "--repeats", "1", "--only", "nms", "--out", str(tmp_path), "--name", "t"])
    main(["--quick", "--repeats", "1", "--only", "anchors", "--out", str(tmp_path), "--name", "t"])
    names = [r["name"] for r in json.loads((tmp_path / "t.json").read_text())["cases"]]
    assert names.count("anchors") == 1 and any(n.startswith("nms") for n in names)


def test_machine_name_is_a_file_name():
    info = {"device": "cuda:0", "cores": 16, "cpu": "AMD EPYC", "gpu": "NVIDIA H200"}
    assert report.machine_name(info) == "cuda-16core-nvidia-h200"


@pytest.mark.slow
def test_quick_model_cases(tmp_path):
    """The model cases in --quick mode (about a minute: two ResNet-50s and two MobileNets)."""
    only = ["rpn", "roi_heads", "resnet50_fpn", "mobilenet", "train"]
    main(["--quick", "--repeats", "1", "--only", *only, "--out", str(tmp_path), "--name", "t"])
    results = json.loads((tmp_path / "t.json").read_text())
    check_records(results["cases"], (tmp_path / "t.md").read_text())
    names = {r["name"] for r in results["cases"]}
    assert {"rpn", "roi_heads", "resnet50_fpn b1", "resnet50_fpn b2", "train step"} <= names
    for r in results["cases"]:
        if r["group"] == "model":
            assert r["parity"]["same_labels"] and r["parity"]["max_box_diff"] < 1e-3


@pytest.mark.slow
def test_quick_fast_path_case(tmp_path):
    """The fast-path case (optimised rcnn_lab vs torchvision) in --quick mode: same labels."""
    main(
        ["--quick", "--repeats", "1", "--only", "fast_path", "--out", str(tmp_path), "--name", "t"]
    )
    results = json.loads((tmp_path / "t.json").read_text())
    check_records(results["cases"], (tmp_path / "t.md").read_text())
    [record] = results["cases"]
    assert record["name"] == "fast_path resnet50_fpn b1"
    assert record["parity"]["same_labels"] and record["parity"]["max_box_diff"] < 1e-2


@pytest.mark.slow
def test_quick_scaling_run(tmp_path):
    """benchmarks.scaling --quick: a stage profile, FLOPs, and both scaling series."""
    from benchmarks import scaling

    path = scaling.main(["--quick", "--repeats", "1", "--out", str(tmp_path), "--name", "s"])
    results = json.loads(path.read_text())
    impls = {"rcnn_lab", "rcnn_lab fast path", "torchvision"}
    assert set(results["stages_ms"]) == impls
    for stages in results["stages_ms"].values():
        assert set(stages) == {*scaling.STAGES, "other", "total"}
        assert stages["total"] > 0 and stages["trunk"] > 0
    flops = results["stage_flops"]
    assert flops["trunk"] > 0 and flops["total"] >= sum(flops[s] for s in scaling.STAGES)
    assert results["matmul_gflops"] > 0
    assert [r["height"] for r in results["image_size"]] == list(scaling.QUICK_SHORT_SIDES)
    assert all(set(r["ms"]) == impls for r in results["image_size"])
    assert [r["proposals"] for r in results["proposals"]] == list(scaling.QUICK_PROPOSALS)
