"""One session of the measurement protocol: the fixed timed window and the session's statistics,
checked against direct computation on known samples."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps
from scipy.signal import lfilter

from harness.agent import measure


def fake_clock(step_ns: Callable[[int], int]) -> tuple[Callable[[], int], Callable[[], None]]:
    """A clock that only a `step` advances: iteration i takes step_ns(i) nanoseconds."""
    now = [0]
    count = [0]

    def clock() -> int:
        return now[0]

    def step() -> None:
        now[0] += step_ns(count[0])
        count[0] += 1

    return clock, step


def test_session_statistics_on_known_samples() -> None:
    samples_ns = [i * 1_000_000 for i in range(1, 101)]  # 1 ms .. 100 ms
    s = measure.session_statistics(samples_ns, elapsed_ns=6_000_000_000)
    assert s is not None
    assert s["n"] == 100
    assert s["median_ms"] == pytest.approx(50.5)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["std_ms"] == pytest.approx(np.sqrt(100 * 101 / 12))  # sample std of 1..100
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["cov"] == pytest.approx(s["std_ms"] / 50.5)
    # throughput is over the wall time of the window (6 s here), not 1 / mean
    assert s["throughput_wall_ips"] == pytest.approx(100 / 6.0)
    # a steadily rising series: each value's rank is followed by the next rank
    assert s["lag1_autocorrelation"] == pytest.approx(1.0)


def test_median_and_percentiles_are_numpys_bit_for_bit() -> None:
    """The session's medians and tail percentiles are numpy's exact values (without its numpy.ma
    import): sizes 1 to 300, ties, constant runs, samples as the agent makes them."""
    rng = np.random.default_rng(7)
    q = [50, 90, 95, 99]
    for trial in range(3000):
        n = int(rng.integers(1, 300))
        x = [rng.lognormal(0.0, 0.3, n),
             rng.integers(1000, 1010, n).astype(np.float64) / 1e6,  # many ties
             np.asarray(rng.integers(10**4, 10**8, n), dtype=np.float64) / 1e6,
             np.full(n, 3.7)][trial % 4]
        assert np.array_equal(measure.percentiles(x, q), np.percentile(x, q)), (trial, n)
        assert measure.median(x) == np.median(x), (trial, n)


def test_batch_median_interval_against_direct_computation() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(0.0, 0.2, 500)
    low, high = measure.batch_median_ci(values)  # type: ignore[misc]
    medians = np.array([np.median(b) for b in np.array_split(values, 10)])
    half = sps.t.ppf(0.975, 9) * medians.std(ddof=1) / np.sqrt(10)
    assert low == pytest.approx(np.median(values) - half, rel=1e-3)
    assert high == pytest.approx(np.median(values) + half, rel=1e-3)
    assert measure.batch_median_ci(values[:10]) is None  # fewer than 3 batches of 5


def test_t_table_matches_scipy() -> None:
    for df in (1, 2, 4, 9, 29, 30, 31, 60, 200):
        assert measure.t975(df) == pytest.approx(sps.t.ppf(0.975, df), rel=0.005)


def test_within_session_interval_allows_for_autocorrelation() -> None:
    """With AR(1) samples (rank lag-1 around 0.8, as measured here), the batch-median interval
    covers the process median about as often as it says; the i.i.d. order-statistic interval,
    what edgebench used to store, covers far less often. The check can fail both ways."""
    rng = np.random.default_rng(7)
    rho, n, trials = 0.9, 1000, 300
    hits_batch = hits_iid = 0
    for _ in range(trials):
        e = rng.standard_normal(n)
        x = np.exp(0.2 * lfilter([np.sqrt(1 - rho**2)], [1, -rho], e))  # true median 1
        low, high = measure.batch_median_ci(x)  # type: ignore[misc]
        hits_batch += low <= 1.0 <= high
        ordered = np.sort(x)
        k = int(sps.binom.ppf(0.025, n, 0.5))
        hits_iid += ordered[k] <= 1.0 <= ordered[n - k - 1]
    assert hits_batch / trials >= 0.85
    assert hits_iid / trials <= 0.6


def test_timed_window_is_fixed_in_advance() -> None:
    # 1 ms iterations: the window ends once both 0.2 s and 10 iterations are reached
    clock, step = fake_clock(lambda i: 1_000_000)
    samples, elapsed, capped = measure.timed_window(step, 0.2, 10, 5.0, clock=clock)
    assert len(samples) == 200 and elapsed == 200_000_000 and not capped
    # whatever the values do (a drift here), the window is the same length
    clock, step = fake_clock(lambda i: 1_000_000 + 10_000 * i)
    samples, elapsed, capped = measure.timed_window(step, 0.2, 10, 5.0, clock=clock)
    assert elapsed >= 200_000_000 and len(samples) < 200 and not capped


def test_slow_model_is_cut_at_max_duration_and_says_so() -> None:
    clock, step = fake_clock(lambda i: 400_000_000)  # 0.4 s an iteration
    samples, elapsed, capped = measure.timed_window(step, 0.2, 10, 1.0, clock=clock)
    assert len(samples) == 3 and capped and elapsed == 1_200_000_000
    # enough iterations before the cap: not capped, even though slow
    samples, _, capped = measure.timed_window(step, 0.2, 2, 1.0, clock=clock)
    assert len(samples) == 2 and not capped


def test_warm_up_by_time_and_count() -> None:
    clock, step = fake_clock(lambda i: 1_000_000)
    assert measure.warm_up(step, 0.05, 3, clock=clock) == 50  # time wins
    clock, step = fake_clock(lambda i: 100_000_000)
    assert measure.warm_up(step, 0.05, 3, clock=clock) == 3  # count wins


# /proc/stat of this development VM (2 vCPUs, Debian, kernel 6.x), 2026-11-28: the first three
# lines, `cpu` being the whole machine (user nice system idle iowait irq softirq steal guest
# guest_nice, in clock ticks).
PROC_STAT = """cpu  4816255 2498 477638 3558082 40287 0 11350 15623 0 0
cpu0 2375438 1149 232617 1815968 23167 0 4615 7996 0 0
cpu1 2440817 1349 245020 1742114 17120 0 6734 7627 0 0
intr 123456 0 0
"""


def test_cpu_ticks_count_steal_as_busy_and_iowait_as_idle() -> None:
    from harness.agent.probes import parse_cpu_ticks

    every = 4816255 + 2498 + 477638 + 3558082 + 40287 + 0 + 11350 + 15623
    assert parse_cpu_ticks(PROC_STAT) == (every - 3558082 - 40287, every)
    assert parse_cpu_ticks("cpu0 1 2 3 4\n") is None  # no whole-machine line


def test_others_load_leaves_the_measured_process_out() -> None:
    """The `loaded` flag's figure: the machine's busy time less the measuring process's own, per
    second of the window (the load average counted both, and lagged). On readings of its own: on
    the machine, any other job of a shared CI host counted as others (the live check failed
    under load)."""
    from harness.agent.probes import OtherLoad

    hz = os.sysconf("SC_CLK_TCK")

    def reads(*moments: tuple[int, float, float]) -> Callable[[], Any]:
        """A reading of each moment in turn: (busy ticks, own CPU seconds, clock)."""
        it = iter(moments)

        def now() -> Any:
            busy, own, t = next(it)
            return (busy, busy + 10 * hz), own, t

        return now

    own = OtherLoad(reads((1000, 5.0, 100.0), (1000 + 2 * hz, 7.0, 102.0)))  # spun 2 CPU-s
    own.start()
    assert own.stop() == 0.0
    others = OtherLoad(reads((1000, 5.0, 100.0), (1000 + 3 * hz, 6.0, 102.0)))
    others.start()
    assert others.stop() == 1.0  # 3 busy seconds, 1 its own, over 2 s
    assert OtherLoad(lambda: (None, 0.0, 0.0)).stop() is None  # no /proc/stat


def test_others_load_sees_a_neighbour() -> None:
    """... and on the machine: a process spinning one CPU beside the window counts (anything
    else running makes that only more so)."""
    from harness.agent.probes import OtherLoad

    # it says when it spins, and spins until killed: a fixed 1.5 s from its own start, begun
    # 0.2 s before the window, could end inside the window (or start late in it) on a loaded
    # machine slow to start an interpreter or to wake the test
    neighbour = subprocess.Popen([sys.executable, "-c", "import time\n"
                                  "print('spinning', flush=True)\n"
                                  "end = time.perf_counter() + 120\n"
                                  "while time.perf_counter() < end: pass"],
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert neighbour.stdout is not None
        assert neighbour.stdout.readline() == "spinning\n"
        others = OtherLoad()
        others.start()
        time.sleep(1.0)
        assert others.stop() > 0.5
    finally:
        neighbour.kill()
        neighbour.communicate(timeout=30)


def test_loaded_is_others_work_in_the_window_else_the_load_average() -> None:
    from harness.report import stats

    assert stats.loaded(0.6) and not stats.loaded(0.4)
    assert not stats.loaded(0.1, loadavg_1m=9.0, cpu_count=2)  # the window says, not the past
    assert stats.loaded(None, loadavg_1m=2.5, cpu_count=2)  # an older agent's sessions
    assert not stats.loaded(None, loadavg_1m=1.5, cpu_count=2)
    assert not stats.loaded(None)
