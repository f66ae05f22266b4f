"""Export check maths on hand-made predictions: detections matched after NMS (the pass/fail basis), the raw-output
numbers reported beside them, top-box agreement, mAP verdicts."""

from __future__ import annotations

import pytest
import torch

from yolokd.export import checks

NC = 3


def raw_predictions(seed: int = 0, batch: int = 2, anchors: int = 50) -> torch.Tensor:
    """(B, 4 + C, A): xywh pixels in a 64 px image, well-separated class scores."""
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, 2, anchors, generator=generator) * 48 + 8
    wh = torch.rand(batch, 2, anchors, generator=generator) * 12 + 4
    scores = torch.rand(batch, NC, anchors, generator=generator)
    return torch.cat([xy, wh, scores], 1)


def test_identical_outputs_agree_fully():
    """Export == PyTorch: zero differences, cosine 1, every detection matched exactly, no problem at any precision."""
    reference = raw_predictions()
    result = checks.parity(reference, False, reference.clone(), False, NC, imgsz=64)
    assert result["max_abs_diff"] == 0 and result["cosine"] == pytest.approx(1.0)
    found = result["detections"]
    assert found["reference_boxes"] > 0 and found["recall"] == 1.0
    assert found["mean_iou"] == pytest.approx(1.0) and found["score_max_abs"] == 0
    assert checks.parity_problems(result, "fp32") == []


def test_known_differences():
    """+0.5 px on every box, +0.01 on every score: raw differences reported exactly, and an fp32 failure of the
    matched detections naming the IoU and the score difference."""
    reference = raw_predictions()
    exported = reference.clone()
    exported[:, :4] += 0.5
    exported[:, 4:] += 0.01
    result = checks.parity(reference, False, exported, False, NC, imgsz=64)
    assert result["max_abs_diff_boxes_px"] == pytest.approx(0.5, abs=1e-5)
    assert result["max_abs_diff_scores"] == pytest.approx(0.01, abs=1e-6)
    assert result["box_rel"] == pytest.approx(0.5 / 64, abs=1e-6)
    assert result["detections"]["score_mean_abs"] == pytest.approx(0.01, abs=1e-6)
    problems = " ".join(checks.parity_problems(result, "fp32"))
    assert "mean_iou" in problems and "score_mean_abs" in problems and "max_abs_diff" not in problems


def test_int8_background_noise_is_information_not_failure():
    """INT8 moving background scores (+0.16 where the student's are < 0.02) but no detection: the raw max diff is
    0.16 (above the 0.15 the old max-over-all-anchors tolerance allowed), the matched detections are exact: passes."""
    reference = raw_predictions()
    exported = reference.clone()
    background = reference[:, 4:] < 0.02
    exported[:, 4:][background] += 0.16
    result = checks.parity(reference, False, exported, False, NC, 64, margin=checks.TOLERANCES["int8"].score_abs)
    assert result["max_abs_diff_scores"] == pytest.approx(0.16, abs=1e-6)
    assert result["detections"]["recall"] == 1.0 and result["detections"]["score_max_abs"] == 0
    assert checks.parity_problems(result, "int8") == []


def test_near_tied_scores_do_not_break_agreement():
    """Flat scores (a barely trained model) perturbed by 1e-7: NMS may keep other boxes, anchors still agree."""
    reference = raw_predictions()
    reference[:, 4:] = 0.01 + 1e-6 * torch.rand(reference[:, 4:].shape, generator=torch.Generator().manual_seed(1))
    exported = reference + 1e-7 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(2))
    result = checks.parity(reference, False, exported, False, NC, imgsz=64, conf=0.001, tie=1e-3)
    assert result["top_box_agreement"] == 1.0


def test_moved_box_is_a_disagreement():
    """The reference's best box moved by half its width in the export: agreement drops below 1."""
    reference = raw_predictions(batch=1)
    (kept,), (anchors,) = checks.non_max_suppression_with_anchors(reference, NC, 0.001)
    exported = reference.clone()
    exported[0, 0, anchors[0]] += exported[0, 2, anchors[0]] / 2
    agreement, compared = checks.anchor_agreement(reference, exported, NC, 0.001)
    assert compared == min(20, len(kept)) and agreement == pytest.approx(1 - 1 / compared)


def test_detection_outputs_matched_by_iou():
    """(B, N, 6) outputs: same detections are all matched; a wrong class is a miss."""
    detections = torch.tensor([[[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 2]]], dtype=torch.float32)
    wrong = detections.clone()
    wrong[0, 1, 5] = 0
    assert checks.parity(detections, True, detections.clone(), True, NC, 64)["detections"]["recall"] == 1.0
    assert checks.parity(detections, True, wrong, True, NC, 64)["detections"]["recall"] == 0.5


def two_boxes() -> torch.Tensor:
    """Two detections (N, 6): xyxy pixels, score, class."""
    return torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0.0], [20.0, 20.0, 40.0, 40.0, 0.8, 1.0]])


def test_match_identical_detections():
    """Identical detections: recall 1, every IoU 1, score difference 0."""
    found = checks.match_detections([two_boxes()], [two_boxes()])
    assert (found["reference_boxes"], found["exported_boxes"], found["matched"]) == (2, 2, 2)
    assert found["recall"] == 1.0 and found["mean_iou"] == pytest.approx(1.0) and found["score_max_abs"] == 0


def test_match_shifted_box_has_lower_iou():
    """A 10 px box moved 2 px right: IoU 80 / 120 = 2/3 (hand-computed), still matched; mean IoU (1 + 2/3) / 2."""
    exported = two_boxes()
    exported[0, [0, 2]] += 2
    exported[1, 4] = 0.7
    found = checks.match_detections([two_boxes()], [exported])
    assert found["recall"] == 1.0 and found["min_iou"] == pytest.approx(2 / 3)
    assert found["mean_iou"] == pytest.approx((1 + 2 / 3) / 2)
    assert found["score_max_abs"] == pytest.approx(0.1) and found["score_mean_abs"] == pytest.approx(0.05)


def test_match_missing_and_misplaced_boxes_lower_recall():
    """A box the export lost, or moved below IoU 0.5 (5 px on 10 px: 1/3), is a miss: recall 1/2."""
    assert checks.match_detections([two_boxes()], [two_boxes()[1:]])["recall"] == 0.5
    moved = two_boxes()
    moved[0, [0, 2]] += 5
    assert checks.match_detections([two_boxes()], [moved])["recall"] == 0.5


def test_match_empty_images():
    """No reference detection: nothing to measure (None); no export detection: recall 0."""
    empty = torch.zeros(0, 6)
    assert checks.match_detections([empty], [two_boxes()])["recall"] is None
    found = checks.match_detections([two_boxes(), empty], [empty, empty])
    assert found["recall"] == 0.0 and found["mean_iou"] is None and found["reference_boxes"] == 2


def test_match_equals_a_loop_oracle():
    """The vectorised matching equals a per-box loop: best same-class IoU, matched from 0.5."""
    generator = torch.Generator().manual_seed(3)

    def random_detections(count: int) -> torch.Tensor:
        xy = torch.rand(count, 2, generator=generator) * 40
        wh = torch.rand(count, 2, generator=generator) * 20 + 4
        classes = torch.randint(0, 3, (count, 1), generator=generator).float()
        return torch.cat([xy, xy + wh, torch.rand(count, 1, generator=generator), classes], 1)

    reference = [random_detections(30), random_detections(12)]

    def noise(count: int) -> torch.Tensor:  # pixels on the boxes, 0.05 on the scores, classes unchanged
        boxes, scores = torch.randn(count, 4, generator=generator), 0.05 * torch.randn(count, 1, generator=generator)
        return torch.cat([boxes, scores, torch.zeros(count, 1)], 1)

    exported = [r + noise(len(r)) for r in reference]
    exported[1] = exported[1][:7]
    ious, diffs = [], []
    for ref, out in zip(reference, exported, strict=True):
        for box in ref:
            best, best_score = -1.0, None
            for candidate in out:
                if candidate[5] != box[5]:
                    continue
                iou = float(box_iou_loop(box[:4], candidate[:4]))
                if iou > best:
                    best, best_score = iou, float(candidate[4])
            if best >= checks.MATCH_IOU:
                ious.append(best)
                diffs.append(abs(float(box[4]) - best_score))
    found = checks.match_detections(reference, exported)
    assert found["matched"] == len(ious) and found["recall"] == pytest.approx(len(ious) / 42)
    assert found["mean_iou"] == pytest.approx(sum(ious) / len(ious), abs=1e-6)
    assert found["score_mean_abs"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-6)


def box_iou_loop(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two xyxy boxes, written out."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union


def test_int8_map_drop_above_one_point_is_flagged_not_failed():
    """INT8 losing 1.5 mAP points: flagged; fp32 losing 0.5 points: failed (tolerance 0.2)."""
    pytorch = {"metrics/mAP50-95(B)": 0.400, "metrics/mAP50(B)": 0.600}
    int8 = checks.map_comparison(pytorch, {"metrics/mAP50-95(B)": 0.385, "metrics/mAP50(B)": 0.590}, "int8")
    assert int8["flagged"] and not int8["failed"]
    assert int8["delta"]["metrics/mAP50-95(B)"] == pytest.approx(-0.015)
    fp32 = checks.map_comparison(pytorch, {"metrics/mAP50-95(B)": 0.395, "metrics/mAP50(B)": 0.600}, "fp32")
    assert fp32["failed"] and not fp32["flagged"]
    small = checks.map_comparison(pytorch, {"metrics/mAP50-95(B)": 0.395, "metrics/mAP50(B)": 0.6}, "int8")
    assert not small["flagged"]


def two_rotated_boxes() -> torch.Tensor:
    """Two OBB detections (N, 7): xywh pixels, score, class, angle (radians), as rotated NMS returns them."""
    return torch.tensor([[20.0, 20.0, 16.0, 4.0, 0.9, 0.0, 0.3], [40.0, 40.0, 10.0, 10.0, 0.8, 1.0, 0.0]])


def test_match_rotated_detections_by_probiou():
    """OBB detections match by ProbIoU of their xywhr boxes: the same box written turned by pi/2 with w and h swapped
    matches at IoU ~1, and a 16 x 4 box turned by pi/2 about its centre (a cross, same centre, width and height) is
    a miss."""
    same_box = two_rotated_boxes()
    same_box[0, 2:4] = same_box[0, [3, 2]]
    same_box[0, 6] += torch.pi / 2
    found = checks.match_detections([two_rotated_boxes()], [same_box], rotated=True)
    assert found["recall"] == 1.0 and found["min_iou"] == pytest.approx(1.0, abs=1e-3)
    crossed = two_rotated_boxes()
    crossed[0, 6] += torch.pi / 2
    assert checks.match_detections([two_rotated_boxes()], [crossed], rotated=True)["recall"] == 0.5


def test_rotated_parity_runs_rotated_nms():
    """Raw OBB outputs (B, 4 + C + 1, A): identical exports agree fully; the angle channel is part of each detection
    and no anchor-aligned (axis-aligned) agreement is reported."""
    reference = torch.cat([raw_predictions(), torch.rand(2, 1, 50, generator=torch.Generator().manual_seed(3))], 1)
    result = checks.parity(reference, False, reference.clone(), False, NC, imgsz=64, rotated=True)
    found = result["detections"]
    assert found["reference_boxes"] > 0 and found["recall"] == 1.0 and "top_box_agreement" not in result
    assert checks.detections(reference, NC, False, 0.25, rotated=True)[0].shape[1] == 7


def segment_outputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A segment model's two outputs at 64 px: raw (B, 4 + C + P, A) with P = 4 mask coefficients, and prototypes
    (B, P, 16, 16) at 1/4 of the input; each prototype is positive on one quadrant, so a detection's mask is set by
    its coefficients."""
    generator = torch.Generator().manual_seed(seed)
    raw = raw_predictions(seed)
    coefficients = torch.randn(2, 4, raw.shape[2], generator=generator)
    protos = -torch.ones(2, 4, 16, 16)
    for index, (rows, cols) in enumerate(((0, 0), (0, 8), (8, 0), (8, 8))):
        protos[:, index, rows : rows + 8, cols : cols + 8] = 1.0
    return torch.cat([raw, coefficients], 1), protos


def test_segment_parity_compares_prototypes_and_masks():
    """Segment exports are compared on both outputs: identical prototypes and masks pass and are listed under
    ``compared``; prototypes with one channel negated fail twice, on the prototype difference and on the mask IoU of
    the matched detections (their boxes and scores still agree)."""
    reference, protos = segment_outputs()
    same = checks.parity(
        reference, False, reference.clone(), False, NC, 64, reference_protos=protos, exported_protos=protos.clone()
    )
    assert same["prototypes"]["max_abs_diff"] == 0 and same["prototypes"]["shape"] == [2, 4, 16, 16]
    assert same["masks"]["matched"] == same["detections"]["matched"] > 0
    assert same["masks"]["mean_mask_iou"] == pytest.approx(1.0)
    assert any("output1" in item for item in same["compared"]) and checks.parity_problems(same, "fp32") == []
    broken = protos.clone()
    broken[:, 0] = -broken[:, 0]
    result = checks.parity(
        reference, False, reference.clone(), False, NC, 64, reference_protos=protos, exported_protos=broken
    )
    assert result["detections"]["recall"] == 1.0 and result["prototypes"]["relative_max_diff"] == pytest.approx(2.0)
    assert result["masks"]["mean_mask_iou"] < 0.98
    problems = " ".join(checks.parity_problems(result, "fp32"))
    assert "prototypes" in problems and "mean_mask_iou" in problems


def test_matched_task_values_are_reported():
    """The task values a detection carries (here mask coefficients) are compared on the matched pairs."""
    reference, _ = segment_outputs()
    exported = reference.clone()
    exported[:, 4 + NC :] += 0.25
    found = checks.parity(reference, False, exported, False, NC, imgsz=64)["detections"]
    assert found["recall"] == 1.0 and found["task_values_max_abs"] == pytest.approx(0.25)


def test_map_comparison_reads_the_tasks_own_map():
    """A segment export losing 1 mask mAP point, its boxes unchanged, fails at fp32; the mask columns are reported."""
    pytorch = {"metrics/mAP50-95(B)": 0.4, "metrics/mAP50(B)": 0.6, "metrics/mAP50-95(M)": 0.3, "metrics/mAP50(M)": 0.5}
    exported = {**pytorch, "metrics/mAP50-95(M)": 0.29}
    result = checks.map_comparison(pytorch, exported, "fp32")
    assert result["failed"] and result["delta"]["metrics/mAP50-95(M)"] == pytest.approx(-0.01)
    assert list(result["pytorch"]) == list(pytorch) and not checks.map_comparison(pytorch, pytorch, "fp32")["failed"]
