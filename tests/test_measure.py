"""The statistics and the stop rules of the measurement protocol, on known samples."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats as sps

from harness.agent import measure
from harness.agent.protocol import QUICK_SETTINGS


def test_statistics_on_known_samples() -> None:
    samples_ns = [i * 1_000_000 for i in range(1, 101)]  # 1 ms .. 100 ms
    s = measure.statistics(samples_ns)
    assert s is not None
    assert s["n"] == 100
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["std_ms"] == pytest.approx(np.sqrt(100 * 101 / 12))  # sample std of 1..100
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["cov"] == pytest.approx(s["std_ms"] / 50.5)
    # the textbook distribution-free interval for n = 100: 40th and 61st order statistics
    assert (s["ci95_low_ms"], s["ci95_high_ms"]) == (40.0, 61.0)
    assert s["throughput_ips"] == pytest.approx(100 / 5.050)


def reference_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """Independent computation with scipy: widest symmetric order statistics with coverage."""
    alpha = (1 - confidence) / 2
    lo = int(sps.binom.ppf(alpha, n, 0.5))  # smallest k with P(B <= k) >= alpha
    if sps.binom.cdf(lo, n, 0.5) > alpha:
        lo -= 1
    lo += 1  # rank: P(B <= lo - 1) <= alpha
    if lo < 1:
        return 1, n
    return lo, n - lo + 1


@pytest.mark.parametrize("n", [1, 5, 6, 9, 10, 20, 31, 100, 1000, 12345])
def test_median_ci_ranks_match_scipy(n: int) -> None:
    lo, hi = measure.median_ci_ranks(n)
    assert (lo, hi) == reference_ranks(n)
    if lo > 1:
        coverage = 1 - 2 * sps.binom.cdf(lo - 1, n, 0.5)
        assert coverage >= 0.95
        # one rank narrower would lose the coverage: the interval is the tightest valid one
        assert 1 - 2 * sps.binom.cdf(lo, n, 0.5) < 0.95


def test_median_ci_covers_the_true_median() -> None:
    """Coverage check by simulation: about 95% of intervals contain the true median."""
    rng = np.random.default_rng(1)
    true_median = np.log(2)  # exponential(1)
    hits = 0
    trials = 400
    for _ in range(trials):
        sample = rng.exponential(1.0, 51)
        s = measure.statistics((sample * 1e6).astype(np.int64).tolist())
        assert s is not None
        hits += s["ci95_low_ms"] <= true_median <= s["ci95_high_ms"]
    assert 0.92 <= hits / trials <= 0.995


def test_stability_flat_vs_drifting() -> None:
    rng = np.random.default_rng(2)
    flat = (1_000_000 + rng.normal(0, 10_000, 300)).astype(int).tolist()
    assert measure.is_stable(flat)
    # a device heating up: latency creeps up 15% over the run
    drift = (np.linspace(1_000_000, 1_150_000, 300) + rng.normal(0, 5_000, 300)).astype(int)
    assert not measure.is_stable(drift.tolist())
    assert measure.is_stable(drift.tolist(), tolerance=0.20)
    assert not measure.is_stable([1, 1, 1])  # too few samples to judge


class FakeDevice:
    """A clock and a step: each step advances the clock by the next latency, so the loop's
    stopping decisions can be checked exactly, without timing anything real."""

    def __init__(self, latency_ns: Callable[[int], int]) -> None:
        self.now = 0
        self.calls = 0
        self.latency_ns = latency_ns

    def clock(self) -> int:
        return self.now

    def step(self) -> None:
        self.now += self.latency_ns(self.calls)
        self.calls += 1


def test_timed_loop_needs_duration_and_iterations_and_stability() -> None:
    settings = dict(QUICK_SETTINGS)  # 0.5 s and 20 iterations at least
    dev = FakeDevice(lambda i: 1_000_000)  # 1 ms, perfectly steady
    samples, reason = measure.timed_loop(dev.step, settings, clock=dev.clock)
    assert reason == "stable"
    assert sum(samples) >= 0.5e9  # ran at least min_duration
    assert len(samples) >= 20
    assert sum(samples) < 0.5e9 + measure.CHECK_INTERVAL_S * 1e9 + 2e6  # stopped soon after

    slow = FakeDevice(lambda i: 100_000_000)  # 100 ms: duration is met long before 20 runs
    samples, reason = measure.timed_loop(slow.step, settings, clock=slow.clock)
    assert reason == "stable" and len(samples) >= 20


def test_timed_loop_gives_up_on_drift_at_max_duration() -> None:
    settings = dict(QUICK_SETTINGS, max_duration_s=3.0)
    dev = FakeDevice(lambda i: 1_000_000 + i * 2_000)  # keeps getting slower
    samples, reason = measure.timed_loop(dev.step, settings, clock=dev.clock)
    assert reason == "max_duration"
    assert sum(samples) >= 3.0e9
    assert not measure.is_stable(samples)


def test_warm_up_by_time_and_count() -> None:
    dev = FakeDevice(lambda i: 1_000_000)
    assert measure.warm_up(dev.step, 0.1, 3, clock=dev.clock) == 100  # time decides
    dev = FakeDevice(lambda i: 500_000_000)
    assert measure.warm_up(dev.step, 0.1, 3, clock=dev.clock) == 3  # count decides


def test_topk_accuracy() -> None:
    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    assert measure.topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert measure.topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert measure.topk_accuracy(logits, labels, 5) is None  # 3 classes: top-5 is meaningless
