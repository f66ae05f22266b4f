"""FGD maths on small hand-made tensors (SPEC §6): focal, attention and global (GcBlock) terms."""

import pytest
import torch
from loss_inputs import feature_view

from yolokd.losses.common import pooled_channel_attention, spatial_attention
from yolokd.losses.fgd import FGDLoss, FGDParams, GcBlock, fgd_focal_loss, fgd_global_loss
from yolokd.views import HeadSpec, Targets

STRIDES = (8.0, 16.0)
SIZES = (4, 2)  # 32 px images


def spec(*channels: int) -> HeadSpec:
    return HeadSpec("test head", 3, STRIDES, 16, ("one2many",), channels, {"box": 16, "cls": 16}, 2)


def targets(boxes: list[list[list[float]]]) -> Targets:
    batch, most = len(boxes), max((len(b) for b in boxes), default=0)
    gt_boxes = torch.zeros(batch, most, 4)
    gt_mask = torch.zeros(batch, most, dtype=torch.bool)
    for i, image_boxes in enumerate(boxes):
        if image_boxes:
            gt_boxes[i, : len(image_boxes)] = torch.tensor(image_boxes)
            gt_mask[i, : len(image_boxes)] = True
    return Targets(
        fg_mask=torch.zeros(batch, 20, dtype=torch.bool),
        gt_index=torch.zeros(batch, 20, dtype=torch.long),
        target_boxes=torch.zeros(batch, 20, 4),
        gt_boxes=gt_boxes,
        gt_labels=torch.zeros(batch, most, dtype=torch.long),
        gt_mask=gt_mask,
        image_size=torch.tensor([32.0, 32.0]),
    )


def random_feats(channels: tuple[int, ...], batch: int = 2, seed: int = 0, requires_grad: bool = False):
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(batch, c, n, n, generator=generator, requires_grad=requires_grad)
        for c, n in zip(channels, SIZES, strict=True)
    ]


BOXES = [[[0.0, 0.0, 16.0, 8.0], [10.0, 10.0, 30.0, 31.0]], [[4.0, 20.0, 9.0, 28.0]]]


def test_attention_maps_sum_to_cells_and_channels():
    """A^S sums to H·W per image; the pooled A^C sums to D per image."""
    feat = torch.randn(3, 7, 4, 5)
    assert torch.allclose(spatial_attention(feat, 0.5).sum(dim=(1, 2)), torch.full((3,), 20.0), atol=1e-4)
    assert torch.allclose(pooled_channel_attention(feat, 0.5).sum(dim=1), torch.full((3,), 7.0), atol=1e-4)


def test_feature_loss_known_value_with_flat_attention():
    """Equal |F_t| everywhere makes both attentions 1, so the term is Σ W (F_t - F_s)²."""
    teacher = torch.ones(1, 2, 2, 2)
    student = torch.zeros(1, 2, 2, 2)
    weights = torch.tensor([[[0.5, 0.0], [0.0, 0.25]]])
    assert fgd_focal_loss(student, teacher, weights, 0.5)["feature"].item() == pytest.approx(2 * 0.75)


def test_relation_term_is_zero_at_initialisation_for_equal_features():
    """GcBlocks start as the identity (last conv zero), so equal features give a zero global term."""
    feat = torch.randn(2, 8, 4, 4)
    student_block, teacher_block = GcBlock(8), GcBlock(8)
    assert torch.equal(student_block(feat), feat)
    assert fgd_global_loss(student_block(feat), teacher_block(feat)).item() == 0.0


def test_all_terms_zero_when_student_equals_teacher():
    """Equal widths and equal neck features: every FGD term is exactly 0 at initialisation."""
    feats = random_feats((8, 16))
    terms = FGDLoss(FGDParams(), spec(8, 16), spec(8, 16))(feature_view(*feats), feature_view(*feats), targets(BOXES))
    assert set(terms) == {"fgd_fg", "fgd_bg", "fgd_att", "fgd_global"}
    assert all(value.item() == 0.0 for value in terms.values())


def test_gradients_reach_student_and_kd_modules_never_teacher():
    """Each term gives the student's features a gradient (through the aligner); teacher tensors get none."""
    student_feats = random_feats((4, 6), requires_grad=True)
    teacher_feats = random_feats((8, 16), seed=1, requires_grad=True)
    loss = FGDLoss(FGDParams(), spec(8, 16), spec(4, 6))
    terms = loss(feature_view(*student_feats), feature_view(*teacher_feats), targets(BOXES))
    for name, value in terms.items():
        grads = torch.autograd.grad(value, student_feats, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads), name
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in loss.aligner.parameters())
    assert all(f.grad is None for f in teacher_feats)


def test_empty_gt_batch_is_finite_with_gradient():
    """No GT box: the foreground term is 0, the others finite with a student gradient."""
    student_feats = random_feats((8, 16), requires_grad=True)
    terms = FGDLoss(FGDParams(), spec(8, 16), spec(8, 16))(
        feature_view(*student_feats), feature_view(*random_feats((8, 16), seed=1)), targets([[], []])
    )
    assert terms["fgd_fg"].item() == 0
    total = sum(terms.values())
    total.backward()
    assert torch.isfinite(total) and student_feats[0].grad.abs().sum() > 0


def test_negative_weight_rejected():
    """A negative weight is a clear ValueError."""
    with pytest.raises(ValueError, match="global_weight"):
        FGDParams(global_weight=-1.0)
