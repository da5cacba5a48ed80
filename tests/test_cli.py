"""The command line: --version, info, help, each subcommand end to end and its bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

import rcnn_lab
import rcnn_lab.cli
from rcnn_lab.cli import info, main
from rcnn_lab.data import ShapesDataset
from rcnn_lab.engine import build_model, checkpoint_state, load_checkpoint, save_checkpoint

CLASSES = ShapesDataset.CLASSES


def test_version_flag():
    out = subprocess.run(
        [sys.executable, "-m", "rcnn_lab", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"rcnn-lab {rcnn_lab.__version__}"


def test_info_names_versions(capsys):
    import torch

    assert main(["info"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == info()
    assert torch.__version__ in printed


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: rcnn-lab" in capsys.readouterr().out


# --- subcommands -------------------------------------------------------------------------------

TINY = {"widths": [4, 8, 8, 8, 8], "fpn_channels": 8, "representation_size": 16,
        "min_size": 64, "max_size": 64}  # fmt: skip
SHAPES_64 = ["--image-size", "64", "--train-size", "4", "--val-size", "2"]
QUIET = ["--batch-size", "2", "--warmup-iters", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the tiny models gain nothing from more, and lose much on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """An untrained tiny checkpoint, a PNG, a file that is not an image, and bad configs."""
    folder = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = build_model("fasterrcnn_small_fpn", num_classes=7, **TINY)
    save_checkpoint(checkpoint_state(model, class_names=list(CLASSES)), folder / "model.pt")
    odd = ["__background__", "a", "b", "c", "d", "e", "f"]
    save_checkpoint(checkpoint_state(model, class_names=odd), folder / "odd.pt")
    Image.new("RGB", (80, 64), "white").save(folder / "scene.png")
    (folder / "notes.png").write_text("not an image")
    (folder / "broken.json").write_text("{iterations: 3")
    (folder / "unknown.json").write_text(json.dumps({"iterations": 3, "learning_rate": 0.1}))
    return folder


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``main(argv)``, argparse's exits included."""
    try:
        status = main(argv)
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("command", ["info", "train", "evaluate", "predict", "export-shapes", "demo"])  # fmt: skip  # noqa: E501
def test_every_subcommand_has_help(command, capsys):
    status, out, _ = run_main([command, "--help"], capsys)
    assert status == 0 and f"usage: rcnn-lab {command}" in out


BAD_INPUT = [
    (["bogus"], 2, "invalid choice: 'bogus'"),
    (["--threads", "0", "export-shapes", "{d}/x"], 2, "--threads must be >= 1, got 0"),
    (["train", "--lr", "fast"], 2, "argument --lr: invalid float value: 'fast'"),
    (["train", "--epochs", "1", "--iterations", "2"], 2, "not allowed with argument"),
    (["train", "--coco", "{d}/ann.json"], 1, "--coco needs --images DIR"),
    (["train", "--coco", "{d}/ann.json", "--images", "{d}"], 1, "ann.json"),
    (["train", "--config", "{d}/broken.json"], 1, "broken.json: not valid JSON"),
    (["train", "--config", "{d}/unknown.json"], 1, "unknown TrainConfig field(s): learning_rate"),
    (["train", "--model-kwargs", "{{nope"], 1, "--model-kwargs is not valid JSON"),
    (["train", "--model-kwargs", '{{"bogus": 1}}'], 1, "unexpected keyword argument 'bogus'"),
    (["train", "--iterations", "0"], 1, "iterations must be a positive integer, got 0"),
    (["train", "--resume", "{d}/missing.pt"], 1, "no checkpoint file at"),
    (["evaluate", "{d}/missing.pt"], 1, "no checkpoint file at"),
    (["evaluate", "{d}/unknown.json"], 1, "is not a readable checkpoint"),
    (["evaluate", "{d}/odd.pt", "--size", "1"], 1, "the dataset's classes ['circle'"),
    (["predict", "{d}/model.pt", "{d}/scene.png", "--classes", "star,hexagon"], 1,
     "unknown class name 'hexagon'; the model knows circle, ellipse, square"),
    (["predict", "{d}/model.pt", "{d}/missing.png"], 1, "no image file at"),
    (["predict", "{d}/model.pt", "{d}/notes.png"], 1, "cannot read"),
    (["predict", "{d}/model.pt", "{d}/scene.png", "--score-thresh", "2"], 1, "must be in [0, 1]"),
    (["export-shapes", "{d}/x", "--split", "dev"], 2, "invalid choice: 'dev'"),
    (["export-shapes", "{d}/x", "--size", "-1"], 1, "size must be a non-negative integer"),
    (["demo"], 1, "the shipped model rcnn_lab/pretrained/shapes_small.pt is not installed"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "status", "message"), BAD_INPUT, ids=lambda x: str(x)[:40])
def test_bad_input_is_one_line(argv, status, message, files, capsys, monkeypatch):
    monkeypatch.setattr(rcnn_lab.cli, "SHIPPED_MODEL", files / "not_shipped.pt")
    argv = [a.format(d=files) for a in argv]
    code, _, err = run_main(argv, capsys)
    assert code == status
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_error_exits_cleanly_from_a_real_process(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "rcnn_lab", "evaluate", str(tmp_path / "none.pt")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"rcnn-lab evaluate: error: no checkpoint file at {tmp_path}/none.pt"
    )  # noqa: E501


def test_train_resume_evaluate_predict(tmp_path, files, capsys):
    out = tmp_path / "run"
    common = ["train", *SHAPES_64, *QUIET, "--iterations", "2", "--out", str(out)]
    assert (
        run_main([*common, "--model-kwargs", json.dumps(TINY), "--stop-after", "1"], capsys)[0] == 0
    )  # noqa: E501
    assert load_checkpoint(out / "last.pt")["iteration"] == 1
    assert run_main([*common, "--resume", str(out / "last.pt")], capsys)[0] == 0  # arch from it
    assert load_checkpoint(out / "last.pt")["iteration"] == 2 and (out / "best.pt").is_file()

    status, printed, _ = run_main(
        ["evaluate", str(out / "best.pt"), "--image-size", "64", "--size", "2", "--no-progress",
         "--json", str(tmp_path / "m.json")], capsys)  # fmt: skip
    assert status == 0 and printed.startswith("COCO bbox metrics over 2 images")
    assert set(json.loads((tmp_path / "m.json").read_text())) >= {"ap", "voc_ap50", "per_class"}

    argv = ["predict", str(out / "last.pt"), str(files / "scene.png"), "--out", str(tmp_path / "p")]
    assert run_main([*argv, "--score-thresh", "0", "--classes", "circle"], capsys)[0] == 0
    (record,) = json.loads((tmp_path / "p" / "detections.json").read_text())
    assert (record["width"], record["height"]) == (80, 64)
    assert {d["class"] for d in record["detections"]} <= {"circle"}
    assert (tmp_path / "p" / "predict.png").stat().st_size > 0


def test_export_shapes_then_train_on_coco(tmp_path, capsys):
    status, printed, _ = run_main(
        ["export-shapes", str(tmp_path / "coco"), "--size", "3", "--image-size", "64"], capsys
    )
    ann = tmp_path / "coco" / "annotations.json"
    assert status == 0 and printed.strip() == f"wrote {ann}"
    assert len(json.loads(ann.read_text())["images"]) == 3
    coco = ["--coco", str(ann), "--images", str(tmp_path / "coco" / "images")]
    val = ["--val-coco", str(ann), "--val-images", str(tmp_path / "coco" / "images")]
    argv = ["train", *coco, *val, *QUIET, "--iterations", "1", "--out", str(tmp_path / "run"),
            "--model-kwargs", json.dumps(TINY)]  # fmt: skip
    assert run_main(argv, capsys)[0] == 0
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["class_names"] == list(CLASSES) and state["val_metrics"]["num_images"] == 3


def test_demo_draws_the_shipped_model(tmp_path, files, capsys, monkeypatch):
    monkeypatch.setattr(rcnn_lab.cli, "SHIPPED_MODEL", files / "model.pt")
    monkeypatch.setitem(sys.modules, "rcnn_lab.pretrained", None)  # read the file directly
    argv = ["demo", "--num-images", "2", "--score-thresh", "0", "--out", str(tmp_path)]
    status, printed, _ = run_main(argv, capsys)
    assert status == 0 and (tmp_path / "demo.png").is_file()
    records = json.loads((tmp_path / "detections.json").read_text())
    assert [r["image"] for r in records] == ["test scene 0", "test scene 1"]
