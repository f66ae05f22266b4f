"""Seed statistics: mean ± std per row and the paired-gain noise rule, on hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from yolokd.evaluation.stats import paired_gain, summarize, t_critical_95


def test_summarize_uses_sample_std():
    """std is the sample std (ddof=1): [1, 2, 3] -> mean 2, std 1; one value -> std NaN."""
    assert (summarize([1.0, 2.0, 3.0]).mean, summarize([1.0, 2.0, 3.0]).std) == (2.0, 1.0)
    assert math.isnan(summarize([0.5]).std) and summarize([]).n == 0


def test_gain_above_two_standard_errors():
    """Differences 0.02, 0.04, 0.03: mean 0.03, std 0.01, SE 0.01/sqrt(3) = 0.00577; 0.03 > 2 SE -> exceeds."""
    gain = paired_gain({0: 0.12, 1: 0.14, 2: 0.13}, {0: 0.10, 1: 0.10, 2: 0.10})
    assert gain.mean == pytest.approx(0.03) and gain.se == pytest.approx(0.01 / math.sqrt(3))
    assert gain.exceeds_noise is True and gain.hurts is False and gain.t_bar == pytest.approx(2.920)
    assert gain.verdict == "better (+5.2 SE)"  # 0.03 / 0.00577 = 5.196


def test_gain_within_noise():
    """Differences +0.03, -0.01: mean 0.01, std 0.02828, SE 0.02; -0.04 < 0.01 < 0.04 -> noise, +0.5 SE."""
    gain = paired_gain({0: 0.13, 1: 0.09}, {0: 0.10, 1: 0.10})
    assert gain.se == pytest.approx(0.02) and gain.exceeds_noise is False and gain.hurts is False
    assert gain.verdict == "noise (+0.5 SE)"


def test_loss_beyond_two_standard_errors_reads_worse():
    """Differences -0.05, -0.07, -0.06: mean -0.06, SE 0.00577; -0.06 < -2 SE -> WORSE (-10.4 SE), not a bare 'no'."""
    gain = paired_gain({0: 0.05, 1: 0.03, 2: 0.04}, {0: 0.10, 1: 0.10, 2: 0.10})
    assert gain.mean == pytest.approx(-0.06) and gain.se == pytest.approx(0.01 / math.sqrt(3))
    assert gain.exceeds_noise is False and gain.hurts is True and gain.verdict == "WORSE (-10.4 SE)"


def test_pairs_only_shared_seeds_and_one_seed_is_not_judged():
    """Only seeds both rows ran are paired; with one shared seed there is no verdict."""
    gain = paired_gain({0: 0.2, 5: 0.9}, {0: 0.1, 1: 0.0})
    assert gain.n == 1 and gain.mean == pytest.approx(0.1) and gain.exceeds_noise is None and gain.hurts is None
    assert gain.verdict == "n/a (1 seed)" and math.isnan(t_critical_95(0))


def test_summary_of_a_missing_metric_is_nan_not_a_crash():
    """A run without a COCO AP (NaN) makes its row's summary NaN instead of crashing the whole report."""
    summary = summarize([0.1, float("nan"), 0.2])
    assert math.isnan(summary.mean) and math.isnan(summary.std) and summary.n == 3
