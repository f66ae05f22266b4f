"""Export check maths on hand-made predictions: parity numbers, top-box agreement, mAP verdicts."""

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
    """Export == PyTorch: zero differences, cosine 1, every top box found, no problem at any precision."""
    reference = raw_predictions()
    result = checks.parity(reference, False, reference.clone(), False, NC, imgsz=64)
    assert result["max_abs_diff"] == 0 and result["cosine"] == pytest.approx(1.0)
    assert result["top_box_agreement"] == 1.0 and result["reference_boxes"] > 0
    assert checks.parity_problems(result, "fp32") == []


def test_known_differences():
    """+0.5 px on every box, +0.01 on every score: reported exactly, and an fp32 failure naming both."""
    reference = raw_predictions()
    exported = reference.clone()
    exported[:, :4] += 0.5
    exported[:, 4:] += 0.01
    result = checks.parity(reference, False, exported, False, NC, imgsz=64)
    assert result["max_abs_diff_boxes_px"] == pytest.approx(0.5, abs=1e-5)
    assert result["max_abs_diff_scores"] == pytest.approx(0.01, abs=1e-6)
    assert result["box_rel"] == pytest.approx(0.5 / 64, abs=1e-6)
    problems = " ".join(checks.parity_problems(result, "fp32"))
    assert "max_abs_diff_scores" in problems and "box_rel" in problems


def test_near_tied_scores_do_not_break_agreement():
    """Flat scores (a barely trained model) perturbed by 1e-7: NMS may keep other boxes, anchors still agree."""
    reference = raw_predictions()
    reference[:, 4:] = 0.01 + 1e-6 * torch.rand(reference[:, 4:].shape, generator=torch.Generator().manual_seed(1))
    exported = reference + 1e-7 * torch.randn(reference.shape, generator=torch.Generator().manual_seed(2))
    result = checks.parity(reference, False, exported, False, NC, imgsz=64, tie=1e-3)
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
    """(B, N, 6) outputs: same detections agree; a wrong class does not."""
    detections = torch.tensor([[[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 2]]], dtype=torch.float32)
    wrong = detections.clone()
    wrong[0, 1, 5] = 0
    assert checks.parity(detections, True, detections.clone(), True, NC, 64)["top_box_agreement"] == 1.0
    assert checks.parity(detections, True, wrong, True, NC, 64)["top_box_agreement"] == 0.5


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
