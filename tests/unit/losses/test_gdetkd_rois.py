"""G-DetKD's RoI bookkeeping: the dense-student RoI sampler, the level rule, pooling, CKD negatives and queue."""

import pytest
import torch

from yolokd.losses.gdetkd_rois import (
    RepresentationQueue,
    RoiBatch,
    batched_box_iou,
    ckd_negative_mask,
    pool_rois,
    roi_levels,
    sample_rois,
)

IMAGE_SIZE = torch.tensor([100.0, 100.0])


def _sample(pred_boxes, gt_boxes, gt_mask=None, rois_per_image=16, **kwargs):
    """sample_rois with flat scores (every prediction is a candidate unless candidates_per_image says otherwise)."""
    gt_mask = torch.ones(gt_boxes.shape[:2], dtype=torch.bool) if gt_mask is None else gt_mask
    scores = kwargs.pop("scores", torch.zeros(pred_boxes.shape[:2]))
    return sample_rois(pred_boxes, scores, gt_boxes, gt_mask, IMAGE_SIZE, rois_per_image, **kwargs)


def _jittered(box, count, scale):
    """(count, 4) boxes around ``box`` (xyxy), corners moved by up to ``scale`` pixels."""
    return torch.tensor(box).repeat(count, 1) + (torch.rand(count, 4) - 0.5) * 2 * scale


def test_one_to_three_ratio_with_enough_positives_and_negatives():
    """R = 16 from 40 positives and 100 negatives per image: exactly 4 positives and 12 negatives."""
    torch.manual_seed(0)
    gt = torch.tensor([[[10.0, 10.0, 40.0, 40.0], [50.0, 50.0, 90.0, 90.0]]]).repeat(2, 1, 1)
    positives = torch.cat((_jittered([10, 10, 40, 40], 20, 1.0), _jittered([50, 50, 90, 90], 20, 1.0)))
    negatives = torch.cat((torch.rand(100, 2) * 5, torch.rand(100, 2) * 5 + 5), 1)  # small boxes near the origin
    sample = _sample(torch.cat((positives, negatives))[None].repeat(2, 1, 1), gt)
    assert sample.boxes.shape == (2, 16, 4) and sample.valid.all()
    assert sample.positive.sum(1).tolist() == [4, 4]
    iou = batched_box_iou(sample.boxes, gt).amax(2)
    assert torch.equal(iou > 0.5, sample.positive)


def test_negatives_fill_the_budget_when_positives_are_few():
    """One positive (the GT box itself) leaves 15 slots to negatives, as mmdetection's RandomSampler does."""
    torch.manual_seed(0)
    sample = _sample(
        torch.cat((torch.rand(1, 50, 2) * 5, torch.rand(1, 50, 2) * 5 + 5), 2),
        torch.tensor([[[50.0] * 2 + [90.0] * 2]]),
    )
    assert sample.valid.sum().item() == 16 and sample.positive.sum().item() == 1


def test_positive_only_above_the_iou_threshold():
    """IoU 0.6 is positive; 0.5 (the threshold itself) and 0.4 are negatives; the GT box is positive."""
    gt = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    predictions = torch.tensor([[[0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 4.0]]])
    sample = _sample(predictions, gt, rois_per_image=64)
    assert sample.valid.sum().item() == 4  # every candidate sampled
    valid = sample.valid[0]
    flags = zip(sample.boxes[0, valid, 3].tolist(), sample.positive[0, valid].tolist(), strict=True)
    assert dict(flags) == {10.0: True, 6.0: True, 5.0: False, 4.0: False}


@pytest.mark.parametrize("padded", [True, False], ids=["padded-gt-rows", "no-gt-rows"])
def test_images_without_gt_give_only_negatives(padded):
    """No real GT: R negatives, no positive; padded GT rows never become RoIs."""
    torch.manual_seed(0)
    predictions = torch.cat((torch.rand(2, 40, 2) * 40 + 1, torch.rand(2, 40, 2) * 40 + 50), 2)
    gt = torch.zeros(2, 3 if padded else 0, 4)
    sample = _sample(predictions, gt, gt_mask=torch.zeros(gt.shape[:2], dtype=torch.bool))
    assert sample.valid.all() and not sample.positive.any()
    assert (sample.boxes[..., 2:] > 50).all()  # all drawn from the predictions, none is a zero padding row


def test_mixed_batch_keeps_images_apart():
    """An image with GT gets positives, the empty image next to it none."""
    torch.manual_seed(0)
    predictions = _jittered([10, 10, 40, 40], 30, 1.0)[None].repeat(2, 1, 1)
    gt = torch.tensor([[[10.0, 10.0, 40.0, 40.0]], [[0.0, 0.0, 0.0, 0.0]]])
    sample = _sample(predictions, gt, gt_mask=torch.tensor([[True], [False]]))
    assert sample.positive.sum(1).tolist() == [4, 0]


def test_fewer_candidates_than_budget_leaves_invalid_slots_last():
    """3 predictions + 1 GT for a budget of 16: 4 valid RoIs first, the other slots marked invalid."""
    predictions = torch.tensor([[[0.0, 0.0, 5.0, 5.0], [60.0, 60.0, 70.0, 70.0], [80.0, 0.0, 99.0, 9.0]]])
    sample = _sample(predictions, torch.tensor([[[20.0, 20.0, 40.0, 40.0]]]))
    assert sample.valid.sum().item() == 4 and sample.valid[0, :4].all() and not sample.valid[0, 4:].any()


def test_candidates_are_the_top_scoring_predictions():
    """candidates_per_image=2 samples only the 2 best-scoring predictions (plus the GT)."""
    predictions = torch.tensor([[[float(i), 0.0, i + 5.0, 5.0] for i in range(10)]])
    scores = torch.arange(10.0)[None]
    sample = _sample(predictions, torch.tensor([[[50.0, 50.0, 90.0, 90.0]]]), scores=scores, candidates_per_image=2)
    starts = sorted(sample.boxes[0, sample.valid[0], 0].tolist())
    assert starts == [8.0, 9.0, 50.0]


def test_boxes_are_clipped_to_the_image():
    """Predictions reaching outside the image are clipped to it before matching and pooling."""
    sample = _sample(torch.tensor([[[-20.0, -5.0, 150.0, 60.0]]]), torch.zeros(1, 0, 4))
    assert sample.boxes[0, 0].tolist() == [0.0, 0.0, 100.0, 60.0]


def test_roi_levels_follow_the_scale_rule():
    """s0 = 24 px: below 48 px P3, 48-96 px P4, from 96 px P5 (clamped at both ends)."""
    sides = torch.tensor([4.0, 20.0, 47.0, 48.0, 95.0, 96.0, 500.0])
    boxes = torch.stack((torch.zeros(7), torch.zeros(7), sides, sides), 1)
    assert roi_levels(boxes, 24.0, 3).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_roi_batch_is_sorted_by_level_with_counts():
    """Flattened RoIs are grouped by level; counts give the groups; image indices and flags follow their RoI."""
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 10.0, 10.0]], [[0.0, 0.0, 60.0, 60.0], [0, 0, 9, 9]]])
    valid = torch.tensor([[True, False], [True, True]])
    sample = type("Sample", (), {"boxes": boxes, "valid": valid, "positive": valid & False})
    rois = RoiBatch.from_sample(sample, 24.0, 3)
    assert rois.counts == (2, 1, 1) and rois.level.tolist() == [0, 0, 1, 2]
    assert rois.image_index.tolist() == [0, 1, 1, 0] and rois.valid.tolist() == [False, True, True, True]
    assert [(s.start, s.stop) for s in rois.level_slices()] == [(0, 2), (2, 3), (3, 4)]


def test_pool_rois_reads_cells_at_their_centres():
    """aligned RoIAlign in pixels: a RoI over pixels 16-32 of a stride-8 map averages cells 2 and 3 (cell x at x)."""
    feat = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    pooled = pool_rois(feat, torch.tensor([[0.0, 16.0, 0.0, 32.0, 64.0]]), 8.0, output_size=1, sampling_ratio=4)
    assert pooled.item() == pytest.approx(2.5)


def test_ckd_negatives_exclude_same_image_overlaps_only():
    """IoU 0.6 in the same image is excluded; IoU 0.4 in the same image and IoU 1 in another image are kept."""
    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 4.0], [0.0, 0.0, 10.0, 10.0], [0, 0, 5, 5]]
    )
    image = torch.tensor([0, 0, 0, 1, 0])
    valid = torch.tensor([True, True, True, True, False])
    mask = ckd_negative_mask(boxes, image, valid, 0.5)
    assert mask[0].tolist() == [False, False, True, True, False]
    assert not mask.diagonal().any() and not mask[:, 4].any()


def test_queue_fills_then_wraps_fifo():
    """Pushes fill the queue in order; past its size the oldest entries are overwritten first."""
    queue = RepresentationQueue(5, 2)
    queue.push(torch.arange(6.0).view(3, 2), torch.tensor([True, True, False]))
    assert queue.pointer.item() == 3 and queue.valid.tolist() == [True, True, False, False, False]
    queue.push(torch.full((4, 2), 9.0), torch.ones(4, dtype=torch.bool))
    assert queue.pointer.item() == 2 and queue.valid.tolist() == [True, True, False, True, True]
    assert queue.representations[:, 0].tolist() == [9.0, 9.0, 4.0, 9.0, 9.0]


def test_queue_keeps_the_last_entries_of_a_batch_larger_than_itself():
    """Pushing 7 entries into a queue of 3 keeps the last 3."""
    queue = RepresentationQueue(3, 1)
    queue.push(torch.arange(7.0).view(7, 1), torch.ones(7, dtype=torch.bool))
    assert sorted(queue.representations[:, 0].tolist()) == [4.0, 5.0, 6.0] and queue.pointer.item() == 0


def test_queue_survives_a_state_dict_round_trip():
    """Entries, validity flags and the pointer are buffers: a fresh queue loaded from state_dict() is identical."""
    queue = RepresentationQueue(4, 3)
    queue.push(torch.randn(3, 3), torch.tensor([True, False, True]))
    restored = RepresentationQueue(4, 3)
    restored.load_state_dict(queue.state_dict())
    assert set(queue.state_dict()) == {"representations", "valid", "pointer"}
    assert all(
        torch.equal(a, b) for a, b in zip(queue.state_dict().values(), restored.state_dict().values(), strict=True)
    )
