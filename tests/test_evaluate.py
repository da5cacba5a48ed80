"""Evaluation: hand-made cases with known AP, from-scratch AP against COCOeval, evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import Params
from torch import nn
from torch.utils.data import DataLoader

from rcnn_lab.engine import (
    average_precision,
    coco_interpolated_ap,
    evaluate,
    evaluate_detections,
    format_metrics,
    match_detections,
    precision_recall,
)
from rcnn_lab.engine.average_precision import (
    COCO_IOU_THRESHOLDS,
    COCO_RECALL_THRESHOLDS,
    UNMATCHED,
)
from rcnn_lab.engine.coco_eval import (
    COCO_METRIC_NAMES,
    category_ids,
    coco_evaluate,
    coco_ground_truth,
    coco_results,
)
from rcnn_lab.engine.evaluate import collate_detection_batch

EXACT = 1e-12  # pycocotools divides by tp + fp + 2.2e-16: equal to the last few ulps


def gt(boxes, labels, image_id, **extra):
    """A target dict from plain lists."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes,
        "labels": torch.tensor(labels, dtype=torch.int64),
        "image_id": image_id,
        **{k: torch.tensor(v) for k, v in extra.items()},
    }


def det(boxes, labels, scores):
    """A detection dict from plain lists."""
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 60, 20]

# COCO samples the envelope at recall 0, 0.01, ..., 1: a curve that stops at recall 1/2 keeps
# 51 of the 101 levels (0 to 0.50 inclusive), where VOC's area gives exactly 1/2
HALF_RECALL_COCO = 51 / 101


# --- hand-made cases ------------------------------------------------------------------------


def test_perfect_detections_score_one():
    targets = [gt([A, B], [1, 2], 1), gt([C], [1], 2)]
    detections = [det([B, A], [2, 1], [0.8, 0.9]), det([C], [1], [0.7])]
    result = evaluate_detections(detections, targets)
    for key in ("ap", "ap50", "ap75", "ar_1", "ar_10", "ar_100", "voc_ap50"):
        assert result[key] == pytest.approx(1.0, abs=EXACT), key
    assert [row["ap"] for row in result["per_class"]] == pytest.approx([1, 1], abs=EXACT)


def test_one_of_two_missed():
    result = evaluate_detections([det([A], [1], [0.9])], [gt([A, B], [1, 1], 1)])
    assert result["ap50"] == pytest.approx(HALF_RECALL_COCO, abs=EXACT)
    assert result["ap"] == pytest.approx(HALF_RECALL_COCO, abs=EXACT)
    assert result["ar_100"] == pytest.approx(0.5, abs=EXACT)
    assert result["voc_ap50"] == pytest.approx(0.5, abs=EXACT)


def test_duplicate_detection_is_a_false_positive():
    # ranked: A (hit), A again (false positive), B (hit)
    # -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    detections = [det([A, A, B], [1, 1, 1], [0.9, 0.8, 0.7])]
    targets = [gt([A, B], [1, 1], 1)]
    curve = precision_recall(detections, targets, 0.5)
    assert curve.true_positive.tolist() == [True, False, True]
    torch.testing.assert_close(
        curve.precision, torch.tensor([1, 1 / 2, 2 / 3], dtype=torch.float64)
    )
    result = evaluate_detections(detections, targets)
    assert result["voc_ap50"] == pytest.approx(1 / 2 * 1 + 1 / 2 * 2 / 3, abs=EXACT)
    assert result["ap50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=EXACT)


def test_wrong_class_is_no_hit():
    result = evaluate_detections([det([A], [2], [0.9])], [gt([A], [1], 1)])
    by_label = {row["label"]: row for row in result["per_class"]}
    assert by_label[1]["ap"] == 0 and by_label[1]["voc_ap50"] == 0
    assert math.isnan(by_label[2]["ap"]) and math.isnan(by_label[2]["voc_ap50"])
    assert result["ap"] == 0 and result["voc_ap50"] == 0  # class 2 has no ground truth: skipped


def test_mislocalised_detection():
    # IoU 50 / 150 = 1/3: a miss at every threshold
    result = evaluate_detections([det([[5, 0, 15, 10]], [1], [0.9])], [gt([A], [1], 1)])
    assert result["ap"] == 0 and result["ap50"] == 0 and result["voc_ap50"] == 0
    # IoU 100 / 150 = 2/3: a hit at 0.50, 0.55, 0.60, 0.65, a miss from 0.70 on
    result = evaluate_detections([det([[0, 0, 10, 15]], [1], [0.9])], [gt([A], [1], 1)])
    assert result["ap50"] == pytest.approx(1.0, abs=EXACT)
    assert result["ap75"] == 0
    assert result["ap"] == pytest.approx(4 / 10, abs=EXACT)


def test_images_without_detections_or_ground_truth():
    targets = [gt([A], [1], 1), gt([], [], 2), gt([B], [1], 3)]
    detections = [
        det([A], [1], [0.5]),
        det([C], [1], [0.9]),  # on an image without objects: the top-ranked false positive
        det([], [], []),  # B is never found
    ]
    # ranked: false positive, hit -> precision 0, 1/2 at recall 0, 1/2; envelope 1/2 up to 1/2
    result = evaluate_detections(detections, targets)
    assert result["voc_ap50"] == pytest.approx(1 / 2 * 1 / 2, abs=EXACT)
    assert result["ap50"] == pytest.approx(HALF_RECALL_COCO / 2, abs=EXACT)
    assert result["ar_100"] == pytest.approx(0.5, abs=EXACT)
    assert result["num_images"] == 3 and result["num_detections"] == 2


def test_no_detections_at_all():
    result = evaluate_detections([det([], [], [])], [gt([A], [1], 7)])
    assert result["ap"] == 0 and result["ar_100"] == 0 and result["voc_ap50"] == 0


def test_no_ground_truth_at_all_gives_nan():
    result = evaluate_detections([det([A], [1], [0.9])], [gt([], [], 7)])
    assert all(math.isnan(result[key]) for key in COCO_METRIC_NAMES)
    assert math.isnan(result["voc_ap50"])


def test_classes_without_ground_truth_are_skipped():
    names = ["__background__", "cat", "dog", "bird"]
    targets = [gt([A], [1], 1)]
    detections = [det([A, B], [1, 3], [0.5, 0.9])]  # a confident bird where there is none
    result = evaluate_detections(detections, targets, class_names=names)
    rows = {row["name"]: row for row in result["per_class"]}
    assert list(rows) == ["cat", "dog", "bird"]
    assert rows["cat"]["ap"] == pytest.approx(1.0, abs=EXACT)
    assert math.isnan(rows["dog"]["ap"]) and math.isnan(rows["bird"]["ap"])
    assert rows["bird"]["num_detections"] == 1 and rows["bird"]["num_gt"] == 0
    # COCOeval averages over classes with ground truth only: the bird costs nothing
    assert result["ap"] == pytest.approx(1.0, abs=EXACT)
    assert result["voc_ap50"] == pytest.approx(1.0, abs=EXACT)
    table = format_metrics(result)
    assert "bird" in table and "dog" not in table  # no boxes, no detections: no row


def test_crowd_region_absorbs_detections():
    crowd = [100, 100, 200, 200]
    targets = [gt([A, crowd], [1, 1], 1, iscrowd=[0, 1])]
    # two detections inside the crowd region outrank the hit: they count neither way
    detections = [det([A, [110, 110, 130, 130], [150, 150, 170, 170]], [1, 1, 1], [0.5, 0.9, 0.8])]
    result = evaluate_detections(detections, targets)
    assert result["ap"] == pytest.approx(1.0, abs=EXACT)
    assert result["voc_ap50"] == pytest.approx(1.0, abs=EXACT)
    assert result["per_class"][0]["num_gt"] == 1


def test_given_area_decides_the_size_range():
    box = [0, 0, 50, 50]  # 2500 px^2: "medium" by its box
    result = evaluate_detections([det([box], [1], [0.9])], [gt([box], [1], 1)])
    assert result["ap_medium"] == pytest.approx(1.0, abs=EXACT) and math.isnan(result["ap_large"])
    result = evaluate_detections(
        [det([box], [1], [0.9])], [gt([box], [1], 1, area=[100.0**2])]
    )  # e.g. a mask area from the annotation file
    assert result["ap_large"] == pytest.approx(1.0, abs=EXACT) and math.isnan(result["ap_medium"])


def test_max_detections_are_per_image_and_class():
    # maxDets=1 keeps one detection per image AND class: class 1 finds 1 of 2, class 2 its only one
    targets = [gt([A, B, C], [1, 1, 2], 1)]
    detections = [det([A, B, C], [1, 1, 2], [0.9, 0.8, 0.7])]
    result = evaluate_detections(detections, targets)
    assert result["ar_1"] == pytest.approx((1 / 2 + 1) / 2, abs=EXACT)
    curve = precision_recall(detections, targets, 0.5, label=1, max_detections=1)
    assert curve.recall[-1] == 0.5


def test_label_to_category_id_reports_dataset_ids():
    targets = [gt([A, B], [1, 2], 1)]
    detections = [det([A, B], [1, 2], [0.9, 0.8])]
    result = evaluate_detections(
        detections, targets, class_names={1: "person", 2: "cat"}, label_to_category_id={1: 1, 2: 17}
    )
    assert [(r["label"], r["category_id"], r["name"]) for r in result["per_class"]] == [
        (1, 1, "person"),
        (2, 17, "cat"),
    ]
    assert result["ap"] == pytest.approx(1.0, abs=EXACT)
    with pytest.raises(ValueError, match=r"\[2\] are missing"):
        evaluate_detections(detections, targets, label_to_category_id={1: 1})


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="empty dataset"):
        evaluate_detections([], [])
    with pytest.raises(ValueError, match="image_id must be unique"):
        evaluate_detections([det([], [], [])] * 2, [gt([A], [1], 1), gt([B], [1], 1)])
    with pytest.raises(ValueError, match="0 is background"):
        evaluate_detections([det([], [], [])], [gt([A], [0], 1)])
    with pytest.raises(ValueError, match="two labels to one category"):
        evaluate_detections(
            [det([], [], [])], [gt([A, B], [1, 2], 1)], label_to_category_id={1: 5, 2: 5}
        )
    with pytest.raises(ValueError, match="same images"):
        precision_recall([det([], [], [])], [])


def test_coco_conversion_writes_xywh_and_ids_from_one():
    targets = [gt([[10, 20, 40, 60]], [3], 5, iscrowd=[1])]
    data = coco_ground_truth(targets, [5], category_ids([3], {3: 90}), {3: "toothbrush"})
    (annotation,) = data["annotations"]
    assert annotation["bbox"] == [10, 20, 30, 40] and annotation["area"] == 30 * 40
    assert annotation["id"] == 1 and annotation["iscrowd"] == 1 and annotation["category_id"] == 90
    assert data["categories"] == [{"id": 90, "name": "toothbrush"}]
    (result,) = coco_results([det([[10, 20, 40, 60]], [3], [0.5])], [5], {3: 90})
    assert result == {"image_id": 5, "category_id": 90, "bbox": [10, 20, 30, 40], "score": 0.5}


def test_format_metrics_lists_every_number():
    result = evaluate_detections([det([A], [1], [0.9])], [gt([A, B], [1, 1], 1)])
    table = format_metrics(result)
    assert all(key in table for key in (*COCO_METRIC_NAMES, "voc_ap50"))
    assert "0.505" in table and "nan" in table  # ap_large: no large object
    assert "Average Precision" in result["summary"]


# --- the AP functions -----------------------------------------------------------------------


def test_thresholds_are_cocoevals():
    params = Params(iouType="bbox")
    assert COCO_IOU_THRESHOLDS == tuple(params.iouThrs.tolist())
    assert COCO_RECALL_THRESHOLDS == tuple(params.recThrs.tolist())


def test_average_precision_by_hand():
    recall = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    precision = torch.tensor([1.0, 0.5, 2 / 3], dtype=torch.float64)
    assert average_precision(recall, precision) == pytest.approx(5 / 6, abs=EXACT)
    assert coco_interpolated_ap(recall, precision) == pytest.approx(
        (51 + 50 * 2 / 3) / 101, abs=EXACT
    )
    empty = torch.zeros(0, dtype=torch.float64)
    assert average_precision(empty, empty) == 0 and coco_interpolated_ap(empty, empty) == 0
    nan = torch.tensor([math.nan], dtype=torch.float64)
    assert math.isnan(average_precision(nan, nan)) and math.isnan(coco_interpolated_ap(nan, nan))


def test_match_detections_prefers_free_boxes_and_breaks_ties_last():
    boxes = torch.tensor([A, A, A], dtype=torch.float64)
    gt_boxes = torch.tensor([A, A], dtype=torch.float64)  # two identical objects
    assert match_detections(boxes, gt_boxes, 0.5).tolist() == [1, 0, UNMATCHED]
    crowd = torch.tensor([False, True])
    assert match_detections(boxes, gt_boxes, 0.5, crowd).tolist() == [0, 1, 1]


def random_scene(generator: torch.Generator, num_images=5, num_classes=3, crowd=False):
    """Targets and detections with hits, near misses, duplicates and strays (float64)."""

    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    targets, detections = [], []
    for image_id in range(num_images):
        count = int(torch.randint(0, 8, (1,), generator=generator))
        top_left = rand(count, 2) * 200
        gt_boxes = torch.cat([top_left, top_left + 8 + rand(count, 2) * 80], dim=1)  # [G, 4]
        gt_labels = torch.randint(1, num_classes + 1, (count,), generator=generator)
        iscrowd = (rand(count) < 0.2) if crowd else torch.zeros(count, dtype=torch.bool)
        # detections: jittered copies of the objects (some twice), plus strays
        copies = torch.cat([torch.arange(count), torch.randint(0, max(count, 1), (count // 2,))])
        size = (gt_boxes[copies, 2:] - gt_boxes[copies, :2]).repeat(1, 2)  # [D, 4]
        jittered = gt_boxes[copies] + (rand(len(copies), 4) - 0.5) * 0.5 * size
        stray_count = int(torch.randint(0, 4, (1,), generator=generator))
        stray_top_left = rand(stray_count, 2) * 200
        strays = torch.cat([stray_top_left, stray_top_left + 8 + rand(stray_count, 2) * 80], 1)
        det_labels = gt_labels[copies]
        flip = rand(len(copies)) < 0.1  # a few wrong classes
        det_labels = torch.where(flip, det_labels % num_classes + 1, det_labels)
        stray_labels = torch.randint(1, num_classes + 1, (stray_count,), generator=generator)
        targets.append(
            {"boxes": gt_boxes, "labels": gt_labels, "image_id": 10 + image_id, "iscrowd": iscrowd}
        )
        detections.append(
            {
                "boxes": torch.cat([jittered, strays]),
                "labels": torch.cat([det_labels, stray_labels]),
                "scores": rand(len(copies) + stray_count),
            }
        )
    return detections, targets


def run_cocoeval(detections, targets):
    """COCOeval over the scene, and its category ids in order."""
    image_ids = [t["image_id"] for t in targets]
    labels = category_ids(range(1, 4), None)
    coco_eval, _ = coco_evaluate(
        coco_ground_truth(targets, image_ids, labels), coco_results(detections, image_ids, labels)
    )
    return coco_eval


@pytest.mark.parametrize("crowd", [False, True], ids=["plain", "crowd"])
@pytest.mark.parametrize("seed", range(4))
def test_from_scratch_ap_equals_cocoeval(seed, crowd):
    """coco_interpolated_ap(precision_recall(...)) is COCOeval's per-class AP at every IoU."""
    detections, targets = random_scene(torch.Generator().manual_seed(seed), crowd=crowd)
    coco_eval = run_cocoeval(detections, targets)
    precision = coco_eval.eval["precision"]  # [T, R, K, A, M]; area "all", 100 detections
    recall = coco_eval.eval["recall"]  # [T, K, A, M]
    compared = 0
    for k, label in enumerate(coco_eval.params.catIds):
        per_threshold = []
        for t, threshold in enumerate(COCO_IOU_THRESHOLDS):
            curve = precision_recall(detections, targets, threshold, label=label)
            if curve.num_gt == 0:
                assert (precision[t, :, k, 0, -1] == -1).all()  # COCOeval: absent, -1
                continue
            ours = coco_interpolated_ap(curve.recall, curve.precision)
            assert ours == pytest.approx(precision[t, :, k, 0, -1].mean(), abs=EXACT)
            reached = float(curve.recall[-1]) if len(curve.recall) else 0.0
            assert reached == pytest.approx(recall[t, k, 0, -1], abs=EXACT)
            per_threshold.append(ours)
            compared += 1
        if per_threshold:  # AP@[.5:.95] of the class
            expected = precision[:, :, k, 0, -1].mean()
            assert np.mean(per_threshold) == pytest.approx(expected, abs=EXACT)
    assert compared >= 10


def test_per_class_table_is_built_from_the_parts():
    detections, targets = random_scene(torch.Generator().manual_seed(7), crowd=True)
    result = evaluate_detections(detections, targets)
    coco_eval = run_cocoeval(detections, targets)
    for k, row in enumerate(result["per_class"]):
        curve = precision_recall(detections, targets, 0.5, label=row["label"])
        assert row["num_gt"] == curve.num_gt
        assert row["voc_ap50"] == pytest.approx(
            average_precision(curve.recall, curve.precision), nan_ok=True
        )
        assert row["ap50"] == pytest.approx(coco_eval.eval["precision"][0, :, k, 0, -1].mean())


def test_voc_ap_equals_cocoeval_where_the_interpolations_agree():
    """All-point and 101-point AP agree when the envelope is flat: here 1 at every recall."""
    targets = [gt([A, B], [1, 1], 1), gt([C], [1], 2)]
    detections = [det([A, B, C], [1, 1, 1], [0.9, 0.8, 0.1]), det([C], [1], [0.7])]
    curve = precision_recall(detections, targets, 0.5, label=1)
    coco_eval = run_cocoeval(detections, targets)
    coco_ap50 = coco_eval.eval["precision"][0, :, 0, 0, -1].mean()
    assert average_precision(curve.recall, curve.precision) == pytest.approx(coco_ap50, abs=EXACT)
    assert coco_ap50 == pytest.approx(1.0, abs=EXACT)


# --- evaluate() on a fake model ---------------------------------------------------------------


class ImageIdDataset(torch.utils.data.Dataset):
    """Images whose pixels all equal their image_id (so the fake model can tell them apart)."""

    def __init__(self, targets):
        self.targets = targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        target = self.targets[i]
        height, width = 16 + 2 * i, 20  # images of different sizes: no stacking
        return torch.full((3, height, width), float(target["image_id"])), target


class FixedDetector(nn.Module):
    """Returns the stored detections of each image, read off its pixel value."""

    def __init__(self, detections_by_id):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # gives the model a device
        self.detections_by_id = detections_by_id

    def forward(self, images):
        assert not self.training and not torch.is_grad_enabled()
        assert all(image.device == self.weight.device for image in images)
        return [
            {k: v.to(image.device) for k, v in self.detections_by_id[int(image[0, 0, 0])].items()}
            for image in images
        ]


def scene_for_model():
    targets = [gt([A, B], [1, 2], 3), gt([], [], 4), gt([C], [1], 5)]
    detections = [det([A, B], [1, 2], [0.9, 0.6]), det([C], [2], [0.8]), det([], [], [])]
    return targets, detections


@pytest.mark.parametrize("batch_size", [1, 2])
def test_evaluate_runs_a_model_over_a_dataset(batch_size):
    targets, detections = scene_for_model()
    model = FixedDetector({t["image_id"]: d for t, d in zip(targets, detections)}).train()
    result = evaluate(model, ImageIdDataset(targets), batch_size=batch_size, progress=False)
    assert model.training  # restored
    expected = evaluate_detections(detections, targets)
    assert result["summary"] == expected["summary"]
    numbers = [*COCO_METRIC_NAMES, "voc_ap50"]
    assert [result[k] for k in numbers] == pytest.approx(
        [expected[k] for k in numbers], nan_ok=True
    )
    assert result["num_images"] == 3 and result["num_detections"] == 3


def test_evaluate_accepts_a_data_loader():
    targets, detections = scene_for_model()
    model = FixedDetector({t["image_id"]: d for t, d in zip(targets, detections)})
    loader = DataLoader(ImageIdDataset(targets), batch_size=2, collate_fn=collate_detection_batch)
    result = evaluate(model, loader, class_names=["bg", "a", "b"], progress=False)
    assert result["ap50"] == pytest.approx(evaluate_detections(detections, targets)["ap50"])
    assert [row["name"] for row in result["per_class"]] == ["a", "b"]


def test_evaluate_refuses_an_empty_dataset():
    with pytest.raises(ValueError, match="empty dataset"):
        evaluate(FixedDetector({}), ImageIdDataset([]), progress=False)
