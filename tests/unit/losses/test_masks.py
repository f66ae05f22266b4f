"""GT-box masks and Gaussian point weights on small hand-made tensors (yolokd/losses/masks.py)."""

import math

import pytest
import torch

from yolokd.losses.masks import box_scale_mask, gaussian_fit_weights, normalize_per_image, points_in_boxes


def test_points_in_boxes_uses_x_for_columns_and_y_for_rows():
    """A wide, short box holds a point displaced along x but not one displaced along y (no x/y swap)."""
    boxes = torch.tensor([[[0.0, 10.0, 100.0, 20.0]]])  # x 0-100, y 10-20
    points = torch.tensor([[80.0, 15.0], [15.0, 80.0]])
    inside = points_in_boxes(points, boxes, torch.ones(1, 1, dtype=torch.bool))
    assert inside.tolist() == [[[True, False]]]


def test_points_in_boxes_edges_and_padding_rows():
    """Points on an edge are outside (strict test, as Ultralytics' TAL); padding rows contain nothing."""
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]]])
    points = torch.tensor([[4.0, 4.0], [8.0, 4.0]])
    inside = points_in_boxes(points, boxes, torch.tensor([[True, False]]))
    assert inside.tolist() == [[[True, False], [False, False]]]


def test_gaussian_single_point_weight_is_one():
    """One valid point (a GT with one candidate): Σ = 0 is regularised and the point's weight is exactly 1."""
    points = torch.tensor([[[3.0, 7.0], [50.0, 50.0]]])
    weights = gaussian_fit_weights(points, torch.tensor([[True, False]]))
    assert weights.tolist() == [[1.0, 0.0]]


def test_gaussian_weight_at_mean_is_one_and_known_value_off_it():
    """A 3x3 grid of spacing 1, no ridge: weight 1 at the centre and exp(-1.5) at a corner (MLE Σ = 2/3 I)."""
    ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(3.0), indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten()], dim=-1).unsqueeze(0)  # (1, 9, 2)
    weights = gaussian_fit_weights(points, torch.ones(1, 9, dtype=torch.bool), ridge=0.0, relative_ridge=0.0)
    assert weights[0, 4].item() == pytest.approx(1.0, abs=1e-6)
    assert weights[0, 0].item() == pytest.approx(math.exp(-1.5), rel=1e-5)


def test_gaussian_collinear_points_are_finite_and_depend_on_the_spread_along_the_line():
    """Points on a diagonal line (Σ singular): finite weights equal to the 1-D Gaussian along the line."""
    t = torch.arange(5.0) * 8
    points = torch.stack([100 + t, 200 + t], dim=-1).unsqueeze(0)  # on y = x + 100
    weights = gaussian_fit_weights(points, torch.ones(1, 5, dtype=torch.bool))
    along = (t - t.mean()) * math.sqrt(2)
    expected = torch.exp(-0.5 * along.pow(2) / along.pow(2).mean())
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights[0], expected, rtol=2e-2, atol=1e-4)


def test_gaussian_invalid_points_do_not_move_the_fit():
    """Adding invalid far-away points changes neither the valid weights nor gives the invalid ones weight."""
    points = torch.tensor([[[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0]]])
    reference = gaussian_fit_weights(points, torch.ones(1, 4, dtype=torch.bool))
    padded = torch.cat([points, torch.tensor([[[500.0, 500.0], [-90.0, 3.0]]])], dim=1)
    weights = gaussian_fit_weights(padded, torch.tensor([[True] * 4 + [False] * 2]))
    assert torch.allclose(weights[0, :4], reference[0]) and weights[0, 4:].tolist() == [0.0, 0.0]


def test_box_scale_mask_known_values():
    """A box over 3 columns x 2 rows (stride 8) gives 1/6 on exactly those cells (x = columns, y = rows)."""
    boxes = torch.tensor([[[8.0, 0.0, 32.0, 16.0]]])  # columns 1-3, rows 0-1
    mask = box_scale_mask(boxes, torch.ones(1, 1, dtype=torch.bool), height=4, width=5, stride=8.0)
    expected = torch.zeros(1, 4, 5)
    expected[0, 0:2, 1:4] = 1 / 6
    assert torch.allclose(mask, expected)


def test_box_scale_mask_counts_partially_covered_cells_and_sums_to_one():
    """A box with fractional edges covers every cell it overlaps; an isolated box's mask sums to 1."""
    boxes = torch.tensor([[[4.0, 4.0, 13.0, 30.0]]])  # columns 0-1, rows 0-3 at stride 8
    mask = box_scale_mask(boxes, torch.ones(1, 1, dtype=torch.bool), height=6, width=6, stride=8.0)
    assert (mask > 0).sum().item() == 8 and mask.sum().item() == pytest.approx(1.0)


def test_box_scale_mask_matches_loop_oracle():
    """The vectorised mask equals a per-box loop (max of 1/(h w) over boxes), padding rows ignored."""
    torch.manual_seed(0)
    xy = torch.rand(2, 5, 2) * 60
    boxes = torch.cat([xy, xy + 1 + torch.rand(2, 5, 2) * 40], dim=-1).clamp(max=64)
    box_mask = torch.tensor([[True, True, True, False, True], [True, False, False, False, False]])
    mask = box_scale_mask(boxes, box_mask, height=8, width=8, stride=8.0)
    expected = torch.zeros(2, 8, 8)
    for b in range(2):
        for m in range(5):
            if not box_mask[b, m]:
                continue
            x1, y1, x2, y2 = (boxes[b, m] / 8).tolist()
            c0, c1 = math.floor(x1), min(math.ceil(x2), 8)
            r0, r1 = math.floor(y1), min(math.ceil(y2), 8)
            region = expected[b, r0:r1, c0:c1]
            region.copy_(region.clamp(min=1 / ((r1 - r0) * (c1 - c0))))
    assert torch.allclose(mask, expected)


def test_box_scale_mask_without_boxes_is_zero():
    """No GT rows at all (M = 0) gives an all-zero mask of the grid's shape."""
    mask = box_scale_mask(torch.zeros(3, 0, 4), torch.zeros(3, 0, dtype=torch.bool), height=2, width=7, stride=8.0)
    assert mask.shape == (3, 2, 7) and mask.abs().sum() == 0


def test_normalize_per_image_divides_by_non_zero_count():
    """Each image is divided by its own count of non-zero cells; an empty image stays zero."""
    mask = torch.tensor([[[0.5, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    normalised = normalize_per_image(mask)
    assert torch.allclose(normalised[0], mask[0] / 2) and normalised[1].abs().sum() == 0
