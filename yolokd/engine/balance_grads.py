"""Gradient norms of one loss on the student's parameters, for the KD balance (:mod:`yolokd.engine.balance`): the whole
norm, the per-parameter squares (summed over DDP ranks first when asked) and how concentrated a method's pull is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

GradReduce = Callable[[list[Tensor | None], list[nn.Parameter]], list[Tensor]]
SumsReduce = Callable[[dict[str, list[float | None]]], dict[str, list[float | None]]]


def grad_norm(output: Tensor, params: list[nn.Parameter], reduce: GradReduce | None = None) -> float:
    """L2 norm over `params` of d output / d params (0 for parameters the output does not reach)."""
    return float(grad_squares(output, params, reduce).sum().sqrt())


def grad_squares(output: Tensor, params: list[nn.Parameter], reduce: GradReduce | None = None) -> Tensor:
    """(P,) squared L2 norm of d output / d param for each of `params` (0 where the output does not reach it).

    ``reduce`` (DDP, :func:`yolokd.engine.ddp.sum_gradients`) sums each parameter's gradient over the ranks first:
    the norm of the global batch's gradient, as one process on the whole batch measures it. Every rank takes part,
    with no gradient (None) where its `output` does not reach a parameter.
    """
    if output.requires_grad:
        grads = list(torch.autograd.grad(output, params, retain_graph=True, allow_unused=True))
    elif reduce is None:
        return torch.zeros(len(params))
    else:
        grads = [None] * len(params)
    if reduce is not None:
        grads = reduce(grads, params)
    zero = torch.zeros((), device=params[0].device) if params else torch.zeros(())
    return torch.stack([zero if g is None else g.detach().float().pow(2).sum() for g in grads]).cpu()


def layer_concentration(
    method_squares: Tensor, gt_squares: Tensor, is_conv: Tensor, quantile: float = 0.9
) -> float | None:
    """How much more a method pulls on the layers it pulls hardest than on the student as a whole, next to the GT.

    Per conv weight the method reaches, ``r = ||g_method|| / ||g_GT||``, divided by the same ratio over all
    parameters; returns the `quantile` of r (the next higher measured r; None when the method reaches no conv weight).
    About 1 when the method's gradient is spread over the layers as the GT loss's is (methods on the head's outputs);
    much larger when it is concentrated near the layer it reads (methods on intermediate features). A layer the GT
    loss does not reach at all in the measured batches (a head level with no positive) counts as infinitely
    concentrated.

    Args:
        method_squares: (P,) squared gradient norm of the method per parameter, summed over the measured batches.
        gt_squares: (P,) the same for the whole GT loss.
        is_conv: (P,) True for conv weights (parameters of 2 or more dimensions; norms and biases are left out).
    """
    reached = is_conv & (method_squares > 0)
    if not bool(reached.any()) or not float(gt_squares.sum()) > 0:
        return None
    whole = (method_squares.sum() / gt_squares.sum()).sqrt()
    ratios = (method_squares[reached] / gt_squares[reached]).sqrt() / whole  # x / 0 = inf: a layer GT never reaches
    return float(torch.quantile(ratios.double(), quantile, interpolation="higher"))  # "linear" makes inf * 0 = NaN


def layer_pull(method_squares: Tensor, gt_squares: Tensor, is_conv: Tensor, quantile: float = 0.9) -> float | None:
    """How hard a method pulls on the layers it pulls hardest, as a multiple of the GT loss's pull on the same layer.

    Per conv weight that both the method and the GT loss reach, ``||g_method|| / ||g_GT||``; returns the `quantile`
    of those ratios (the next higher measured one). Unlike :func:`layer_concentration` this is not divided by the
    whole-student ratio, so it scales with the method's weight: a method at scale s pulls ``s * layer_pull`` there.
    Layers the GT loss does not reach in the measured batches (a head level with no positive) are left out, since no
    share of a zero pull is defined; None when no conv weight is reached by both.
    """
    reached = is_conv & (method_squares > 0) & (gt_squares > 0)
    if not bool(reached.any()):
        return None
    ratios = (method_squares[reached] / gt_squares[reached]).sqrt()
    return float(torch.quantile(ratios.double(), quantile, interpolation="higher"))


def hardest_pulled(
    method_squares: Tensor, gt_squares: Tensor, is_conv: Tensor, names: list[str], count: int = 3
) -> list[tuple[str, float, float]]:
    """The `count` conv weights where the method's gradient is largest next to the GT loss's: (name, method norm,
    GT norm), hardest first. A GT norm near 0 names a layer the detection loss does not train (a head level where the
    student has no positive): there the method's gradient is the only pull."""
    reached = torch.nonzero(is_conv & (method_squares > 0)).flatten()
    ratios = method_squares[reached] / gt_squares[reached]  # x / 0 = inf: hardest
    order = reached[ratios.argsort(descending=True)][:count].tolist()
    return [(names[i], float(method_squares[i].sqrt()), float(gt_squares[i].sqrt())) for i in order]


__all__ = [
    "GradReduce",
    "SumsReduce",
    "grad_norm",
    "grad_squares",
    "hardest_pulled",
    "layer_concentration",
    "layer_pull",
]
