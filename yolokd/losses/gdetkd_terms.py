"""G-DetKD's per-RoI terms: SGFI's level weights, imitation loss and key network ``f_embed`` (§4.1, eq. 1), and
CKD's InfoNCE (§4.2, eq. 2).

Yao et al., ICCV 2021, https://arxiv.org/abs/2108.07482. The RoIs they run on come from
:mod:`yolokd.losses.gdetkd_rois`; the YOLO adaptation (levels, widths, representations) is described in
:mod:`yolokd.losses.gdetkd`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def semantic_level_weights(student_keys: Tensor, teacher_keys: Tensor, temperature: Tensor | float) -> Tensor:
    """SGFI level weights ``α = softmax_l(K_s^l · K_t / τ)``.

    Args:
        student_keys: (N, L, K) embeddings of each RoI's adapted student feature of every level.
        teacher_keys: (N, K) embeddings of each RoI's teacher feature.
        temperature: τ > 0 (a 0-d tensor to train it).

    Returns:
        (N, L) weights; every row sums to 1.
    """
    return (torch.einsum("nlk,nk->nl", student_keys, teacher_keys) / temperature).softmax(dim=1)


def sgfi_loss(adapted_student_rois: Tensor, teacher_rois: Tensor, level_weights: Tensor) -> Tensor:
    """Per-RoI ``MSE(Σ_l α^l f_adapt(S^l), T)``.

    Args:
        adapted_student_rois: (N, L, D, S, S) student RoI features of every level at the teacher's width D.
        teacher_rois: (N, D, S, S) teacher RoI features (detached here).
        level_weights: (N, L) α.

    Returns:
        (N,) mean squared error of each RoI over its D·S·S elements.
    """
    aggregated = torch.einsum("nl,nldhw->ndhw", level_weights, adapted_student_rois)
    return (aggregated - teacher_rois.detach()).pow(2).flatten(1).mean(dim=1)


def ckd_loss(
    student_embed: Tensor, teacher_embed: Tensor, queue_embed: Tensor, negative_mask: Tensor, temperature: float
) -> Tensor:
    """Per-RoI InfoNCE ``-log g(i, i) / (g(i, i) + Σ_{j negative} g(i, j))``, ``g = exp(cos(z_s, z_t) / γ)``.

    Args:
        student_embed: (N, P) projected student representations (any scale: cosine).
        teacher_embed: (N, P) projected teacher representations of the same RoIs (row i = RoI i's positive).
        queue_embed: (Q, P) projected queue representations (Q may be 0).
        negative_mask: (N, N + Q) bool, True where column j (``teacher_embed`` rows, then ``queue_embed`` rows) is a
            negative of RoI i. Column i (the positive) is always counted, whatever the mask says.
        temperature: γ > 0.

    Returns:
        (N,) loss of each RoI.
    """
    student = F.normalize(student_embed, dim=1)
    keys = F.normalize(torch.cat((teacher_embed, queue_embed)), dim=1)
    logits = student @ keys.T / temperature
    positive = torch.eye(*logits.shape, dtype=torch.bool, device=logits.device)
    masked = logits.masked_fill(~(negative_mask | positive), float("-inf"))
    return torch.logsumexp(masked, dim=1) - logits.diagonal()


class RoiKeyEmbedding(nn.Sequential):
    """``f_embed``: Conv3x3/2 -> ReLU -> Conv3x3/2 -> ReLU -> mean over cells; (N, D, S, S) -> (N, K)."""

    def __init__(self, in_channels: int, key_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, key_channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(key_channels, key_channels, kernel_size=3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )


__all__ = ["RoiKeyEmbedding", "ckd_loss", "semantic_level_weights", "sgfi_loss"]
