"""The training loop: end to end, exact resume, non-finite losses, AMP, config and schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from rcnn_lab.data import ShapesDataset, train_transforms
from rcnn_lab.engine import (
    CheckpointError,
    NonFiniteLossError,
    NonFiniteWeightsError,
    TrainConfig,
    build_model,
    checkpoint_state,
    evaluate,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    train,
)
from rcnn_lab.engine.config import lr_factor
from rcnn_lab.engine.divergence import first_non_finite

TINY = {"widths": (4, 8, 8, 8, 8), "fpn_channels": 8, "representation_size": 16,
        "min_size": 64, "max_size": 64}  # fmt: skip
FAST = {"batch_size": 2, "lr": 0.01, "warmup_iters": 1, "progress": False, "log_every": 1}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are too small to gain from more, and on a busy CPU
    threads that wait for each other make each iteration 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("fasterrcnn_small_fpn", num_classes=7, **TINY)


def shapes(split: str, size: int, transforms=None) -> ShapesDataset:
    return ShapesDataset(split, size, image_size=64, transforms=transforms)


def read_metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_train_evaluate_and_checkpoints(tmp_path):
    model = tiny_model()
    val = shapes("val", 2)
    result = train(model, shapes("train", 4), val_data=val, iterations=4, eval_every=2,
                   out_dir=tmp_path, **FAST)  # fmt: skip
    assert result.iteration == 4
    assert result.last_checkpoint == tmp_path / "last.pt"
    assert result.best_checkpoint == tmp_path / "best.pt"
    records = read_metrics(tmp_path)
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["iteration"] for r in records if r["kind"] == "val"] == [2, 4]
    losses = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert losses <= set(records[0]) and math.isfinite(records[0]["loss"])
    best = load_checkpoint(result.best_checkpoint)
    assert best["best_ap"] == result.best_ap == max(r["ap"] for r in records if r["kind"] == "val")
    assert best["class_names"] == list(ShapesDataset.CLASSES)
    assert TrainConfig.from_json(tmp_path / "config.json").iterations == 4
    metrics = evaluate(model_from_checkpoint(result.last_checkpoint), val, progress=False)
    assert metrics["ap"] == pytest.approx(result.val_metrics["ap"])


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    # augmentation from the global torch RNG, 3 iterations per epoch: the interruption falls
    # mid-epoch and the run crosses an epoch boundary after it
    data = shapes("train", 6, transforms=train_transforms())
    settings = {"iterations": 5, "checkpoint_every": 100, **FAST}
    straight = tiny_model()
    train(straight, data, out_dir=tmp_path / "a", **settings)
    interrupted = tiny_model()
    train(interrupted, data, out_dir=tmp_path / "b", stop_after=2, **settings)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 2
    resumed = tiny_model(seed=1)  # other initial weights: all must come from the checkpoint
    train(resumed, data, out_dir=tmp_path / "b", resume=tmp_path / "b" / "last.pt", **settings)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key

    def losses(folder):
        return [(r["iteration"], r["loss"]) for r in read_metrics(folder)]

    assert losses(tmp_path / "b") == losses(tmp_path / "a")  # the log is one continuous run


class NaNAt(nn.Module):
    """Wraps a detector; its ``term`` loss is NaN at training call ``at``."""

    def __init__(self, model: nn.Module, at: int, term: str = "loss_box_reg"):
        super().__init__()
        self.model, self.at, self.term, self.calls = model, at, term, 0

    def forward(self, images, targets=None):
        out = self.model(images, targets)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = {**out, self.term: out[self.term] * math.nan}
        return out


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path):
    model = NaNAt(tiny_model(), at=3)
    with pytest.raises(NonFiniteLossError, match="iteration 3: loss_box_reg = nan") as error:
        train(model, shapes("train", 4), iterations=5, checkpoint_every=1, out_dir=tmp_path,
              **FAST)  # fmt: skip
    assert (error.value.iteration, error.value.term) == (3, "loss_box_reg")
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 2
    for name, value in model.state_dict().items():  # no step was taken with the NaN
        assert torch.equal(state["model"][name], value), name


def test_non_finite_loss_leaves_the_model_as_before_that_iteration(tmp_path):
    """A NaN forward pass updates BatchNorm's running statistics before the loss exists: the
    stop must undo that, so the model in memory equals the last checkpoint, buffers included."""
    model = tiny_model()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    calls = []

    def poison_third_call(module, inputs, output):  # NaN features -> NaN statistics and loss
        calls.append(len(calls) + 1)
        return output * math.nan if len(calls) == 3 else output

    first_conv.register_forward_hook(poison_third_call)
    with pytest.raises(NonFiniteLossError, match="iteration 3: "):
        train(model, shapes("train", 4), iterations=5, checkpoint_every=1, out_dir=tmp_path,
              **FAST)  # fmt: skip
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["iteration"] == 2
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(int(m.num_batches_tracked) == 2 for m in norms)
    for name, value in model.state_dict().items():
        assert torch.equal(state["model"][name], value), name


class SqrtAt(nn.Module):
    """Wraps a detector; adds sqrt(p) with p = 0 to the box loss at training call ``at``: a
    finite loss (0) whose gradient is infinite, so the step makes ``p`` -inf."""

    def __init__(self, model: nn.Module, at: int):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))
        self.model, self.at, self.calls = model, at, 0

    def forward(self, images, targets=None):
        out = self.model(images, targets)
        if self.training:
            self.calls += 1
            if self.calls == self.at:
                out = {**out, "loss_box_reg": out["loss_box_reg"] + self.p.sqrt().sum()}
        return out


def test_non_finite_weights_are_never_saved(tmp_path):
    model = SqrtAt(tiny_model(), at=3)
    with pytest.raises(NonFiniteWeightsError, match="after iteration 3: p holds -inf") as error:
        train(model, shapes("train", 4), iterations=5, checkpoint_every=1, out_dir=tmp_path,
              **FAST)  # fmt: skip
    assert isinstance(error.value, NonFiniteLossError)  # one except clause catches both
    assert (error.value.iteration, error.value.term) == (3, "p")
    state = load_checkpoint(tmp_path / "last.pt")  # the last good checkpoint is intact
    assert state["iteration"] == 2
    assert all(
        value.isfinite().all() for value in state["model"].values() if value.is_floating_point()
    )


def test_weights_are_checked_at_the_logging_cadence_too(tmp_path):
    model = SqrtAt(tiny_model(), at=1)  # no checkpoint before iteration 4; a log every one
    with pytest.raises(NonFiniteWeightsError, match="after iteration 1: p holds -inf"):
        train(model, shapes("train", 4), iterations=4, checkpoint_every=4, out_dir=tmp_path,
              **FAST)  # fmt: skip
    assert not (tmp_path / "last.pt").exists()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_trains_on_cpu(amp):
    result = train(tiny_model(), shapes("train", 2), iterations=1, amp=amp, **FAST)
    assert result.iteration == 1 and result.last_checkpoint is None


def test_resume_needs_a_training_checkpoint(tmp_path):
    path = save_checkpoint(checkpoint_state(tiny_model()), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match="weights only: it cannot resume"):
        train(tiny_model(), shapes("train", 2), iterations=1, resume=path, **FAST)


def test_config_round_trips_and_rejects_bad_values(tmp_path):
    config = TrainConfig(iterations=10, milestones=(4, 8), amp="bf16", out_dir=tmp_path)
    config.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == config
    with pytest.raises(ValueError, match="exactly one of epochs or iterations"):
        TrainConfig()
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"iterations": 1, "learning_rate": 0.1})
    with pytest.raises(ValueError, match="amp must be one of"):
        TrainConfig(iterations=1, amp="int8")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        TrainConfig(iterations=1, batch_size=0)


def test_schedule_warms_up_then_decays():
    cosine = TrainConfig(iterations=100, warmup_iters=10, warmup_factor=0.1)
    assert lr_factor(0, cosine, 100) == pytest.approx(0.1)
    assert lr_factor(50, cosine, 100) == pytest.approx(0.5)
    assert lr_factor(100, cosine, 100) == pytest.approx(0.0)
    steps = TrainConfig(iterations=100, warmup_iters=0, schedule="multistep", milestones=(60,))
    assert [lr_factor(i, steps, 100) for i in (59, 60)] == pytest.approx([1.0, 0.1])


def test_metrics_reach_tensorboard_when_it_imports(tmp_path, monkeypatch):
    from rcnn_lab.engine import metrics_log

    scalars = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            scalars.append(("closed", None))

    monkeypatch.setattr(metrics_log, "_summary_writer", lambda folder: FakeWriter())
    train(tiny_model(), shapes("train", 2), iterations=1, out_dir=tmp_path, **FAST)
    assert ("train/loss_classifier", 1) in scalars and scalars[-1] == ("closed", None)


def test_train_puts_an_eval_mode_model_into_training_mode(tmp_path):
    """A model loaded for inference (eval mode) still trains: train() switches the mode."""
    model = tiny_model().eval()
    result = train(model, shapes("train", 4), iterations=2, out_dir=tmp_path, **FAST)
    assert result.iteration == 2 and model.training


def test_checkpoints_are_readable_by_others(tmp_path):
    model = tiny_model()
    train(model, shapes("train", 4), iterations=1, out_dir=tmp_path, **FAST)
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == 0o644


def test_first_non_finite_names_the_tensor_and_ignores_large_finite_sums():
    layer = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert first_non_finite(layer) is None
    with torch.no_grad():
        layer[1].running_var[1] = math.inf
    assert first_non_finite(layer) == ("1.running_var", math.inf)
    with torch.no_grad():
        layer[0].bias[0] = math.nan
    name, value = first_non_finite(layer)
    assert name == "0.bias" and math.isnan(value)
    ones = nn.Linear(256, 512).half()  # fp16 sums past 65504 must not read as overflow
    with torch.no_grad():
        ones.weight.fill_(1.0)
    assert first_non_finite(ones) is None
