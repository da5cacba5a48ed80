"""Checkpoints: weights_only round trip, atomic writes, clear mismatch errors, RNG states."""

from __future__ import annotations

import random
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch

from rcnn_lab.engine import (
    CheckpointError,
    CheckpointMismatchError,
    build_model,
    checkpoint_state,
    load_checkpoint,
    load_model_state,
    model_from_checkpoint,
    save_checkpoint,
)
from rcnn_lab.engine import checkpoint as ckpt

# a 17k-parameter fasterrcnn_small_fpn for 64 px images
TINY = {
    "widths": (4, 8, 8, 8, 8),
    "fpn_channels": 8,
    "representation_size": 16,
    "min_size": 64,
    "max_size": 64,
}


def tiny_model(num_classes: int = 7, seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model("fasterrcnn_small_fpn", num_classes=num_classes, **{**TINY, **changes})


def test_round_trip_with_weights_only(tmp_path):
    model = tiny_model()
    names = ["__background__", "a", "b", "c", "d", "e", "f"]
    path = save_checkpoint(
        checkpoint_state(model, class_names=names, rng=[ckpt.rng_state()]), tmp_path / "m.pt"
    )
    torch.load(path, weights_only=True)  # loads without allow-listing anything
    state = load_checkpoint(path)
    assert state["architecture"] == {"builder": "fasterrcnn_small_fpn", "num_classes": 7,
                                     "kwargs": TINY}  # fmt: skip
    assert state["class_names"] == names
    rebuilt = model_from_checkpoint(path)
    assert rebuilt.class_names == names and not rebuilt.training
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _write_half_then_fail(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a zip file")
    raise OSError("No space left on device")


@pytest.mark.parametrize("failing", ["torch.save", "os.replace"])
def test_failed_write_leaves_the_old_checkpoint_loadable(tmp_path, monkeypatch, failing):
    old = tiny_model(seed=0)
    path = save_checkpoint(checkpoint_state(old, iteration=10), tmp_path / "last.pt")
    new = checkpoint_state(tiny_model(seed=1), iteration=20)
    if failing == "torch.save":
        monkeypatch.setattr(ckpt.torch, "save", _write_half_then_fail)
    else:
        monkeypatch.setattr(ckpt.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("EIO")))
    with pytest.raises(OSError):
        save_checkpoint(new, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["iteration"] == 10
    weights = old.state_dict()
    assert all(torch.equal(state["model"][k], v) for k, v in weights.items())
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_other_num_classes_is_named(tmp_path):
    path = save_checkpoint(checkpoint_state(tiny_model(num_classes=7)), tmp_path / "m.pt")
    with pytest.raises(CheckpointMismatchError, match="checkpoint has num_classes=7, model has 4"):
        load_model_state(tiny_model(num_classes=4), load_checkpoint(path))


def test_other_architecture_is_named(tmp_path):
    state = checkpoint_state(tiny_model())
    state["architecture"] = {**state["architecture"], "builder": "fasterrcnn_resnet50_fpn"}
    with pytest.raises(CheckpointMismatchError, match="a fasterrcnn_resnet50_fpn model, the model is a fasterrcnn_small_fpn"):  # fmt: skip  # noqa: E501
        load_model_state(tiny_model(), state)


def test_other_builder_keywords_are_named():
    state = checkpoint_state(tiny_model())
    with pytest.raises(CheckpointMismatchError, match="fpn_channels=8.*model: .*fpn_channels=16"):
        load_model_state(tiny_model(fpn_channels=16), state)


def test_model_without_architecture_gets_key_counts():
    state = checkpoint_state(tiny_model())
    model = tiny_model(fpn_channels=16)
    del model.architecture
    with pytest.raises(CheckpointMismatchError, match=r"0 missing, 0 unexpected, \d+ reshaped"):
        load_model_state(model, state)


def test_unreadable_files_say_why(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not an rcnn_lab checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "path": PurePosixPath("a")}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="WeightsUnpickler"):
        load_checkpoint(tmp_path / "x.pt")


def test_rng_state_round_trip(tmp_path):
    state = ckpt.rng_state()
    path = save_checkpoint({"format": ckpt.CHECKPOINT_FORMAT, "rng": state}, tmp_path / "r.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    ckpt.set_rng_state(load_checkpoint(path)["rng"])
    assert (torch.rand(3), random.random(), np.random.rand())[1:] == expected[1:]
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])


def test_build_model_rejects_unknown_names_and_objects():
    with pytest.raises(ValueError, match="unknown model 'yolo'"):
        build_model("yolo", num_classes=3)
    with pytest.raises(TypeError, match="not a plain value"):
        build_model("fasterrcnn_small_fpn", num_classes=3, rpn_head=torch.nn.Identity())
