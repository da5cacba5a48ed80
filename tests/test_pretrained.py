"""The shipped ShapesDataset detector: it loads offline, is small, and detects."""

from __future__ import annotations

import pytest
import torch

from rcnn_lab.builders import SMALL_NUM_CLASSES
from rcnn_lab.data import ShapesDataset
from rcnn_lab.engine import evaluate
from rcnn_lab.engine.checkpoint import load_checkpoint
from rcnn_lab.pretrained import SHAPES_MODEL, SHAPES_MODEL_CARD, load_shapes_model

#: The issue's size limit for the shipped checkpoint.
MAX_BYTES = 8 * 2**20
#: Held-out images of the quick check (the test split, which training never sees).
SAMPLE_IMAGES = 48
#: The shipped model measures AP50 0.93 on 500 held-out images of each of two seeds
#: (shapes_small.md); the issue asks for 0.9 on a small held-out sample.
MIN_AP50 = 0.9


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)  # small convolutions: one thread is faster on a busy 2-core box
    return load_shapes_model()


def test_checkpoint_is_shipped_small_and_training_free():
    assert SHAPES_MODEL.is_file() and SHAPES_MODEL_CARD.is_file()
    assert SHAPES_MODEL.stat().st_size <= MAX_BYTES
    state = load_checkpoint(SHAPES_MODEL)
    assert "optimizer" not in state and "rng" not in state
    assert state["architecture"]["builder"] == "fasterrcnn_small_fpn"
    assert "rcnn-lab" in SHAPES_MODEL_CARD.read_text()  # the command that produced it


def test_loads_in_eval_mode_with_class_names(model):
    assert not model.training
    assert list(model.class_names) == list(ShapesDataset.CLASSES)
    assert len(model.class_names) == SMALL_NUM_CLASSES


def test_detects_held_out_scenes(model):
    data = ShapesDataset("test", size=SAMPLE_IMAGES, seed=7)
    result = evaluate(model, data, batch_size=8, progress=False)
    assert result["ap50"] >= MIN_AP50, result["summary"]
