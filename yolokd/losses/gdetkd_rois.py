"""RoIs for G-DetKD on a dense student: sample the student's own predicted boxes, assign levels, pool features.

Yao et al., "G-DetKD: Towards General Distillation Framework for Object Detectors via Contrastive and
Semantic-guided Feature Imitation", ICCV 2021, https://arxiv.org/abs/2108.07482, §4.3.2 "RoI Extraction".

The paper, analogous to an RPN, matches the student's predicted boxes to the GT, labels IoU > 0.5 positive and
samples them 1:3 positive:negative (its mmdetection setup: ``RandomSampler(pos_fraction=0.25,
add_gt_as_proposals=True)``). Here, per image and without any loop over boxes or images:

- candidates = the student's ``candidates_per_image`` highest-scoring predicted boxes (max class logit; the RPN's
  top-k proposals, without NMS: NMS has data-dependent output sizes) plus the image's GT boxes, all clipped to the
  image;
- positive = max IoU with a GT > ``positive_iou``; every other valid candidate is a negative (a GT box is always
  positive);
- sampling = a uniformly random subset through random keys + ``topk``: up to ``positive_fraction`` of the budget
  positives, negatives fill the rest of ``rois_per_image``, as mmdetection's RandomSampler does. With enough of
  both that is exactly 1:3. GT boxes join the positive pool (so an image with GT always has positives) and are
  sampled like any positive. Images without GT give ``rois_per_image`` negatives (still contrastive negatives and
  imitation regions, as in the paper's sampler).

Outputs are padded tensors with a validity mask (a slot is invalid only when an image has fewer candidates than the
budget). :class:`RoiBatch` flattens them sorted by pyramid level; its per-level counts are the one host sync per
step (the same data-dependent split as ``torchvision.ops.MultiScaleRoIAlign``; YOLO's levels differ in width, so
each level is pooled and adapted on its own RoIs).

CKD's RoI bookkeeping lives here too: the in-batch negative mask (``ckd_negative_mask``) and the memory queue of
teacher RoI representations (``RepresentationQueue``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch import distributed as dist
from torchvision.ops import box_iou, roi_align

# RoIAlign points per bin side: the bin centre. Fixed, so the cost per RoI is too (mmdetection's adaptive count grows
# with the RoI). torchvision's default 2 cost +0.06-0.09x floor at 16 RoIs/image on CPU, where RoIAlign's backward
# is a scalar loop per point (benchmarks/README.md).
SAMPLING_RATIO = 1


def batched_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair, per image.

    Args:
        boxes1: (B, N, 4) boxes, xyxy.
        boxes2: (B, M, 4) boxes, xyxy, same units.

    Returns:
        (B, N, M) IoU in [0, 1]; 0 where both boxes are empty.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    bottom_right = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


@dataclass
class RoiSample:
    """Sampled RoIs per image (padded).

    Attributes:
        boxes: (B, R, 4) RoI boxes, xyxy, pixels, inside the image.
        valid: (B, R) bool, real RoIs (False only when an image has fewer candidates than the budget).
        positive: (B, R) bool, RoIs with IoU > ``positive_iou`` to a GT (GT boxes included).
    """

    boxes: Tensor
    valid: Tensor
    positive: Tensor


def _random_top(eligible: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Uniformly random ``count`` eligible indices per row ((B, K) bool), eligible first; (B, k) index + eligible."""
    keys = torch.rand(eligible.shape, device=eligible.device).masked_fill(~eligible, -1.0)
    index = keys.topk(min(count, eligible.shape[1]), dim=1).indices
    return index, eligible.gather(1, index)


def sample_rois(
    pred_boxes: Tensor,
    pred_scores: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    image_size: Tensor,
    rois_per_image: int,
    positive_fraction: float = 0.25,
    positive_iou: float = 0.5,
    candidates_per_image: int = 0,
) -> RoiSample:
    """Sample RoIs from the student's predictions (see the module docstring).

    Args:
        pred_boxes: (B, A, 4) student predicted boxes, xyxy, pixels (detached here).
        pred_scores: (B, A) ranking score of each prediction (e.g. max class logit), for ``candidates_per_image``.
        gt_boxes: (B, M, 4) GT boxes padded per image, xyxy, pixels.
        gt_mask: (B, M) bool, real GT rows.
        image_size: (2,) tensor (H, W) of the network input, pixels.
        rois_per_image: R, RoI budget per image.
        positive_fraction: largest share of positives in the budget (0.25 = the paper's 1:3).
        positive_iou: a candidate is positive when its max IoU with a GT is above this.
        candidates_per_image: keep the top-k predictions by score before matching; 0 keeps all A.

    Returns:
        RoiSample with min(R, positive slots + negative slots) RoIs per image, valid ones first.
    """
    anchors = pred_boxes.shape[1]
    pred_boxes = pred_boxes.detach()
    if 0 < candidates_per_image < anchors:
        top = pred_scores.detach().topk(candidates_per_image, dim=1).indices
        pred_boxes = pred_boxes.gather(1, top[..., None].expand(-1, -1, 4))
    num_pred = pred_boxes.shape[1]
    height, width = image_size.to(pred_boxes)
    limit = torch.stack((width, height, width, height))
    candidates = torch.cat((pred_boxes, gt_boxes.to(pred_boxes)), 1).clamp(min=0).minimum(limit)
    is_gt = torch.zeros(candidates.shape[:2], dtype=torch.bool, device=candidates.device)
    is_gt[:, num_pred:] = gt_mask
    valid = torch.cat((torch.ones_like(is_gt[:, :num_pred]), gt_mask), 1)
    if gt_boxes.shape[1]:
        iou = batched_box_iou(candidates, candidates[:, num_pred:]).masked_fill(~gt_mask[:, None, :], 0.0)
        positive = valid & ((iou.amax(dim=2) > positive_iou) | is_gt)
    else:
        positive = is_gt
    negative = valid & ~positive

    pos_index, pos_valid = _random_top(positive, round(rois_per_image * positive_fraction))
    neg_index, neg_valid = _random_top(negative, rois_per_image)
    room = rois_per_image - pos_valid.sum(1, keepdim=True)  # negatives fill what positives leave
    neg_valid = neg_valid & (torch.arange(neg_index.shape[1], device=room.device) < room)
    index = torch.cat((pos_index, neg_index), 1)
    slot_valid = torch.cat((pos_valid, neg_valid), 1)
    slot_positive = torch.cat((pos_valid, torch.zeros_like(neg_valid)), 1)
    keep = min(rois_per_image, index.shape[1])
    order = torch.sort((~slot_valid).to(torch.uint8), dim=1, stable=True).indices[:, :keep]  # valid slots first
    index = index.gather(1, order)
    return RoiSample(
        boxes=candidates.gather(1, index[..., None].expand(-1, -1, 4)),
        valid=slot_valid.gather(1, order),
        positive=slot_positive.gather(1, order),
    )


def roi_levels(boxes: Tensor, finest_scale: float, num_levels: int) -> Tensor:
    """Pyramid level of each RoI by its scale: ``clamp(⌊log2(√(wh) / finest_scale)⌋, 0, L - 1)``.

    The FPN rule in mmdetection's RoI-extractor form (level 0 = the finest level, P3 here): with
    ``finest_scale = 24`` px, RoIs below 48 px go to P3, 48-96 px to P4, above 96 px (COCO's "large") to P5.

    Args:
        boxes: (N, 4) RoIs, xyxy, pixels.
        finest_scale: s0 in pixels.
        num_levels: L.

    Returns:
        (N,) long level index, 0 = P3.
    """
    scale = ((boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)).sqrt()
    level = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return level.clamp(0, num_levels - 1).long()


@dataclass
class RoiBatch:
    """Every image's RoIs in one flat list sorted by pyramid level (level 0 first).

    Attributes:
        rois: (N, 5) ``(image index, x1, y1, x2, y2)``, pixels: the ``torchvision.ops.roi_align`` format.
        valid: (N,) bool.
        positive: (N,) bool.
        level: (N,) long, the level the RoI's scale assigns (``roi_levels``).
        counts: RoIs per level (host ints): level l holds rows ``sum(counts[:l])`` to ``sum(counts[:l+1])``.
    """

    rois: Tensor
    valid: Tensor
    positive: Tensor
    level: Tensor
    counts: tuple[int, ...]

    @classmethod
    def from_sample(cls, sample: RoiSample, finest_scale: float, num_levels: int) -> RoiBatch:
        """Flatten and sort by level; reading the per-level counts is the one host sync."""
        batch, per_image, _ = sample.boxes.shape
        image = torch.arange(batch, device=sample.boxes.device).repeat_interleave(per_image)
        boxes = sample.boxes.reshape(-1, 4)
        level = roi_levels(boxes, finest_scale, num_levels)
        order = torch.argsort(level, stable=True)
        rois = torch.cat((image[order, None].to(boxes.dtype), boxes[order]), 1)
        counts = tuple(torch.bincount(level, minlength=num_levels).tolist())
        return cls(rois, sample.valid.reshape(-1)[order], sample.positive.reshape(-1)[order], level[order], counts)

    @property
    def boxes(self) -> Tensor:
        """(N, 4) xyxy, pixels."""
        return self.rois[:, 1:]

    @property
    def image_index(self) -> Tensor:
        """(N,) long image of each RoI."""
        return self.rois[:, 0].long()

    def level_slices(self) -> list[slice]:
        """Row range of each level (empty slices included)."""
        ends = [sum(self.counts[: level + 1]) for level in range(len(self.counts))]
        return [slice(end - count, end) for end, count in zip(ends, self.counts, strict=True)]


def pool_rois(
    feat: Tensor, rois: Tensor, stride: float, output_size: int, sampling_ratio: int = SAMPLING_RATIO
) -> Tensor:
    """RoIAlign of pixel-space RoIs on one level: ``roi_align(..., spatial_scale=1/stride, aligned=True)``.

    ``aligned=True`` puts cell ``i`` at pixel ``(i + 0.5) * stride``, where YOLO puts its anchor points.

    Args:
        feat: (B, D, H, W) feature of one level.
        rois: (N, 5) ``(image index, x1, y1, x2, y2)``, pixels.
        stride: pixels per cell of this level.
        output_size: S, the pooled grid side.
        sampling_ratio: bilinear points per bin side.

    Returns:
        (N, D, S, S).
    """
    return roi_align(feat, rois, output_size, 1.0 / stride, sampling_ratio, aligned=True)


def ckd_negative_mask(boxes: Tensor, image_index: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """In-batch CKD negatives: other valid RoIs, minus those of the same image overlapping by IoU > threshold.

    Args:
        boxes: (N, 4) RoIs, xyxy, pixels.
        image_index: (N,) image of each RoI.
        valid: (N,) bool, real RoIs.
        iou_threshold: overlap above which a same-image RoI is not a negative.

    Returns:
        (N, N) bool, True where RoI j is a negative of RoI i (never on the diagonal).
    """
    same_image = image_index[:, None] == image_index[None, :]
    overlapping = same_image & (box_iou(boxes, boxes) > iou_threshold)
    itself = torch.eye(len(boxes), dtype=torch.bool, device=boxes.device)
    return valid[None, :] & ~overlapping & ~itself


def gather_from_ranks(representations: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Under DDP, every rank's (N_r, D) representations and (N_r,) validity, concatenated in rank order (all ranks get
    the same result); outside DDP the inputs as they are.

    Ranks may hold different N_r (a smaller last batch): each is padded to the largest with invalid rows, which the
    queue stores as invalid (never a negative). One small all-gather of the sizes (a host sync), one of the rows.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return representations, valid
    world = dist.get_world_size()
    count = torch.tensor([len(valid)], device=valid.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded_reps = representations.new_zeros(longest, representations.shape[1])
    padded_reps[: len(valid)] = representations
    padded_valid = valid.new_zeros(longest, dtype=torch.uint8)  # bool all-gather is not on every backend
    padded_valid[: len(valid)] = valid.to(torch.uint8)
    all_reps = [torch.empty_like(padded_reps) for _ in range(world)]
    all_valid = [torch.empty_like(padded_valid) for _ in range(world)]
    dist.all_gather(all_reps, padded_reps.contiguous())
    dist.all_gather(all_valid, padded_valid)
    return torch.cat(all_reps), torch.cat(all_valid).bool()


class RepresentationQueue(nn.Module):
    """FIFO memory of teacher RoI representations; buffers only, saved with the KD state.

    Under DDP each push stores the teacher representations of every rank (:func:`gather_from_ranks`), so the
    queue holds the same negatives on every rank, as MoCo enqueues the keys it all-gathers.

    Args:
        size: Q entries (0 = no queue).
        channels: width of a stored representation.
    """

    def __init__(self, size: int, channels: int) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("representations", torch.zeros(size, channels))
        self.register_buffer("valid", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, representations: Tensor, valid: Tensor) -> None:
        """Write (N, D) representations and their (N,) validity over the oldest entries (the last Q if N > Q)."""
        if self.size == 0:
            return
        representations, valid = gather_from_ranks(representations, valid)
        representations, valid = representations[-self.size :], valid[-self.size :]
        index = (self.pointer + torch.arange(len(valid), device=valid.device)) % self.size
        self.representations[index] = representations.to(self.representations.dtype)
        self.valid[index] = valid
        self.pointer.copy_((self.pointer + len(valid)) % self.size)


__all__ = [
    "RepresentationQueue",
    "RoiBatch",
    "RoiSample",
    "batched_box_iou",
    "ckd_negative_mask",
    "gather_from_ranks",
    "pool_rois",
    "roi_levels",
    "sample_rois",
]
