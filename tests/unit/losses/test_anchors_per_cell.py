"""Several anchors per cell (A = cells x 9, RetinaNet): the views' layout, PGD's per-cell masks, CrossKD's cross-head
flattening and BCKD's matching of heads with different anchors per cell."""

import torch
from dense_models import tiny_retinanet
from loss_inputs import targets_for

from yolokd.heads import StageRecorder, adapter_for
from yolokd.losses.bckd import BCKDLoss, BCKDParams, bckd_cls_loss
from yolokd.losses.common import cell_predictions
from yolokd.losses.crosskd import CrossKDLoss, CrossKDParams
from yolokd.losses.pgd import prediction_guided_weights
from yolokd.views import HeadSpec, View, cell_max, flatten_anchors

K = 9


def test_flatten_anchors_keeps_a_cells_anchors_together():
    """(B, k*C, H, W) anchor-major channels -> (B, C, H*W*k): element [c, (h*W + w)*k + a] is channel a*C + c."""
    out = torch.arange(1 * K * 2 * 2 * 3, dtype=torch.float32).view(1, K * 2, 2, 3)
    flat = flatten_anchors(out, K)
    assert flat.shape == (1, 2, 6 * K)
    for a, c, h, w in ((0, 0, 0, 0), (4, 1, 0, 2), (8, 1, 1, 1)):
        assert flat[0, c, (h * 3 + w) * K + a] == out[0, a * 2 + c, h, w]
    assert torch.equal(flatten_anchors(out, 1), out.flatten(2))


def test_cell_max_takes_each_cells_best_anchor():
    """(..., cells*k) -> (..., cells): the largest of each cell's k values."""
    values = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.0, 0.5]])
    assert torch.equal(cell_max(values, 3), torch.tensor([[0.9, 0.5]]))


def _view(logits, boxes, per_cell, cells_per_side=2, stride=8.0):
    """A one-level view of cells_per_side² cells with per_cell anchors each."""
    points = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(2.0), indexing="xy"), -1).view(-1, 2) + 0.5
    return View(
        feats=[torch.zeros(1, 4, cells_per_side, cells_per_side)],
        cls_logits=logits,
        box_output=torch.zeros(*logits.shape[:2], 4),
        boxes=boxes,
        anchors=points.repeat_interleave(per_cell, 0),
        strides=torch.full((points.shape[0] * per_cell, 1), stride),
        reg_max=1,
        anchors_per_cell=per_cell,
    )


def test_cell_predictions_pick_the_most_confident_anchor():
    """A cell's logits are the max over its 9 anchors per class; its box is that of the anchor with the top logit."""
    logits = torch.full((1, 4 * K, 2), -5.0)
    logits[0, 3, 1] = 2.0  # cell 0, anchor 3: the cell's most confident
    logits[0, 5, 0] = 1.0  # cell 0, anchor 5: best for class 0
    boxes = torch.arange(4 * K, dtype=torch.float32).view(1, -1, 1).expand(1, -1, 4)
    cell_logits, cell_boxes = cell_predictions(_view(logits, boxes, K))
    assert cell_logits.shape == (1, 4, 2) and cell_logits[0, 0].tolist() == [1.0, 2.0]
    assert cell_boxes[0, 0].tolist() == [3.0] * 4 and cell_boxes[0, 1].tolist() == [9.0] * 4


def test_pgd_masks_are_per_cell_from_the_best_anchor():
    """GT [0, 0, 16, 16] over 2x2 cells of 8 px, 9 anchors each, K = 1: the cell whose best anchor has the highest
    quality gets weight 1, every other cell 0; the mask has one entry per cell."""
    scores = torch.full((1, 4 * K, 1), 0.1)
    scores[0, 2 * K + 4, 0] = 0.9  # cell 2 (x 4, y 12), anchor 4
    boxes = torch.tensor([0.0, 0.0, 16.0, 16.0]).expand(1, 4 * K, 4)
    points = _view(scores, boxes, K).anchors * 8
    weights = prediction_guided_weights(
        scores,
        boxes,
        points,
        torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]),
        torch.zeros(1, 1, dtype=torch.long),
        torch.ones(1, 1, dtype=torch.bool),
        k=1,
        xi=0.8,
        anchors_per_cell=K,
    )
    assert weights.tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_crosskd_cross_head_on_the_teachers_own_features_is_its_own_prediction():
    """The teacher's tail on its own stage-1 pre-activations (student = teacher), flattened in the 9-anchor layout,
    reproduces its class logits and deltas anchor for anchor, so both CrossKD terms are ~0 at a teacher's own cut."""
    model = tiny_retinanet().eval()
    adapter = adapter_for(model)
    loss = CrossKDLoss.from_heads(CrossKDParams(stage=1, aligner_fit=False), adapter, adapter)  # identity on twins
    recorder = StageRecorder(adapter, ("one2many",), loss.stage_parts)
    with torch.no_grad(), adapter.raw_outputs(), recorder.recording():
        view = adapter.build_view(model(torch.rand(2, 3, 64, 64)), recorder.stages("one2many"))
    cross = loss.cross_head_outputs(view, view)
    assert cross["cls"].shape == (2, 756, 3) and cross["box"].shape == (2, 756, 4)
    assert torch.allclose(cross["cls"], view.cls_logits, atol=1e-3)
    assert torch.allclose(cross["box"], view.box_output, atol=1e-3)


def _spec(per_cell):
    shapes = ((4.0, 4.0),) * per_cell if per_cell > 1 else ()
    return HeadSpec(
        "test",
        2,
        (8.0,),
        1,
        ("one2many",),
        (4,),
        {"box": 4, "cls": 4},
        2,
        anchors_per_cell=per_cell,
        anchor_shapes=shapes,
    )


def test_bckd_matches_cells_when_anchors_per_cell_differ():
    """A 1-anchor teacher and a 9-anchor student: BCKD's cls term is the binary KD between the teacher's cell and
    the student's most confident anchor of the cell, / N_pos; with the same layout it runs anchor by anchor (0 at
    teacher == student)."""
    torch.manual_seed(0)
    student_logits = torch.randn(1, 4 * K, 2)
    teacher_logits = torch.randn(1, 4, 2)
    boxes = torch.tensor([0.0, 0.0, 8.0, 8.0]).expand(1, 4 * K, 4)
    student, teacher = _view(student_logits, boxes, K), _view(teacher_logits, boxes[:, :4], 1)
    targets = targets_for(torch.zeros(1, 4 * K, dtype=torch.bool))
    terms = BCKDLoss(BCKDParams(), _spec(1), _spec(K))(student, teacher, targets)
    expected = bckd_cls_loss(cell_predictions(student)[0].reshape(-1, 2), teacher_logits.reshape(-1, 2))
    assert torch.allclose(terms["bckd_cls"], expected)
    same = BCKDLoss(BCKDParams(), _spec(K), _spec(K))(student, student, targets)
    assert same["bckd_loc"] == 0 and same["bckd_cls"] == 0 < terms["bckd_cls"]
