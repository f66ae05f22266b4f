"""Seed statistics for studies: mean ± std per row, and whether a change from the baseline exceeds seed noise.

The noise rule (:data:`NOISE_RULE`): the runs of one seed are paired (same initial student, data order and
augmentation), d_s = method_s - baseline_s. The gain is mean(d); its standard error is SE = std(d) / sqrt(n), with
the sample std (ddof=1) over the n seeds both rows have. With n >= 2 the method is *better* when mean(d) > 2 SE,
*worse* when mean(d) < -2 SE (a loss beyond noise is marked as plainly as a gain), and within *noise* otherwise.
That is a screen, not a test: with 2 seeds SE rests on one degree of freedom, and a one-sided 95 %
t-test would need mean(d) > 6.31 SE (2.92 SE with 3 seeds, 2.13 with 5); :func:`t_critical_95` gives that bar.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NOISE_RULE = (
    "gain = mean over seeds of (method - baseline) mAP50-95, runs of the same seed paired; SE = sample std of "
    "those per-seed differences / sqrt(n seeds); with n >= 2 the verdict is 'better' when gain > 2 x SE, 'WORSE' "
    "when gain < -2 x SE and 'noise' otherwise, each with the gain in SE units"
)
NOISE_FACTOR = 2.0
# One-sided 95 % Student t quantiles by degrees of freedom (1-10); a normal 1.645 beyond.
_T95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812)


def t_critical_95(degrees_of_freedom: int) -> float:
    """One-sided 95 % Student t quantile: the SE multiple a gain needs to pass a paired t-test."""
    if degrees_of_freedom < 1:
        return math.nan
    return _T95[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T95) else 1.645


@dataclass
class SeedSummary:
    """Mean and sample std (ddof=1; NaN with fewer than 2 values) of one row's metric over seeds."""

    mean: float
    std: float
    n: int


def summarize(values: Sequence[float]) -> SeedSummary:
    """Mean and sample std of `values` (NaN for both when empty)."""
    if not values:
        return SeedSummary(math.nan, math.nan, 0)
    if any(math.isnan(value) for value in values):  # statistics.stdev raises on NaN; a missing metric stays NaN
        return SeedSummary(math.nan, math.nan, len(values))
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return SeedSummary(statistics.fmean(values), std, len(values))


@dataclass
class PairedGain:
    """A method's gain over the baseline from seed-paired differences.

    Attributes:
        mean: mean of method - baseline over the shared seeds.
        std: sample std of those differences (NaN with one seed).
        se: std / sqrt(n) (NaN with one seed).
        n: number of seeds both rows have.
        exceeds_noise: mean > 2 SE (:data:`NOISE_RULE`); None when it cannot be judged (n < 2).
        hurts: mean < -2 SE, a loss beyond seed noise; None when it cannot be judged (n < 2).
        t_bar: the SE multiple a one-sided 95 % paired t-test would need at n - 1 degrees of freedom.
    """

    mean: float
    std: float
    se: float
    n: int
    exceeds_noise: bool | None
    hurts: bool | None
    t_bar: float

    @property
    def verdict(self) -> str:
        """``better (+3.1 SE)`` / ``WORSE (-4.0 SE)`` / ``noise (+0.7 SE)`` / ``n/a (1 seed)`` for a table cell."""
        if self.exceeds_noise is None:
            return f"n/a ({self.n} seed{'s' if self.n != 1 else ''})"
        in_se = f"{self.mean / self.se:+.1f} SE" if self.se > 0 else "SE = 0"
        if self.exceeds_noise:
            return f"better ({in_se})"
        return f"WORSE ({in_se})" if self.hurts else f"noise ({in_se})"


def paired_gain(method: Mapping[int, float], baseline: Mapping[int, float]) -> PairedGain:
    """Gain of `method` over `baseline` (both: seed -> metric) on the seeds they share, with the 2 SE verdict."""
    seeds = sorted(set(method) & set(baseline))
    differences = [method[seed] - baseline[seed] for seed in seeds]
    summary = summarize(differences)
    se = summary.std / math.sqrt(summary.n) if summary.n > 1 else math.nan
    exceeds = None if summary.n < 2 else bool(summary.mean > NOISE_FACTOR * se)
    hurts = None if summary.n < 2 else bool(summary.mean < -NOISE_FACTOR * se)
    return PairedGain(summary.mean, summary.std, se, summary.n, exceeds, hurts, t_critical_95(summary.n - 1))
