"""One session of the measurement protocol: warm-up, a timed window fixed in advance, statistics.

A measurement is several sessions, each a fresh agent process; the host interleaves them and
combines them (`harness/report/stats.py`). Here is what one session does, modelled on TFLite's
benchmark_model and pyperf: warm up by time AND count, then time each iteration alone with
`perf_counter_ns` for a window whose length (`duration_s` and `min_iterations`) is set before the
first sample, so no look at the data decides when to stop. A model too slow to give
`min_iterations` within `max_duration_s` is cut there and the session says so (`capped`).

Consecutive iterations are not independent (caches, clocks, a neighbour's burst: rank lag-1
autocorrelation of 0.6-0.8 is common), so the within-session interval of the median comes from
batch medians (the batch-means method applied to medians), not from the i.i.d. order-statistic
interval, which was about 20 times too narrow.

Stdlib + numpy only; Python 3.8 syntax.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

# Batches for the within-session interval: enough for a t-interval, each long enough to hold a
# stretch of correlated iterations.
BATCHES = 10
MIN_BATCH = 5

# Two-sided 95% Student t quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df)); the
# agent has no scipy. Past 30 the normal quantile is within 2%.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError("need at least one degree of freedom")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def warm_up(step: Callable[[], Any], warmup_s: float, warmup_min: int,
            clock: Callable[[], int] = time.perf_counter_ns) -> int:
    """Run `step` for at least `warmup_s` seconds and `warmup_min` times; return the count."""
    deadline = clock() + int(warmup_s * 1e9)
    count = 0
    while count < warmup_min or clock() < deadline:
        step()
        count += 1
    return count


def timed_window(step: Callable[[], Any], duration_s: float, min_iterations: int,
                 max_duration_s: float, clock: Callable[[], int] = time.perf_counter_ns
                 ) -> tuple[list[int], int, bool]:
    """Time `step` once per iteration for at least `duration_s` and `min_iterations`.

    Returns the samples (ns), the elapsed wall time of the window (ns) and whether the window was
    cut at `max_duration_s` before `min_iterations` were done. Only the clock is looked at.
    """
    duration_ns = int(duration_s * 1e9)
    max_ns = int(max_duration_s * 1e9)
    samples: list[int] = []
    append = samples.append
    start = clock()
    while True:
        t0 = clock()
        step()
        t1 = clock()
        append(t1 - t0)
        elapsed = t1 - start
        if elapsed >= duration_ns and len(samples) >= min_iterations:
            return samples, elapsed, False
        if elapsed >= max_ns:
            return samples, elapsed, True


# np.percentile and np.median look for masked arrays (np.unique's check, the median's NaN check),
# and the first look imports numpy.ma: 30-90 ms of every session's agent, for a few numbers. The
# two below compute the same values, bit for bit, for the 1-D arrays of finite floats a session
# has (tests/test_measure.py compares them with numpy's).


def median(values: np.ndarray) -> float:
    """`np.median(values)`: the middle value, or the mean of the middle two."""
    ordered = np.sort(values)
    half = ordered.size // 2
    if ordered.size % 2:
        return float(ordered[half])
    return float((ordered[half - 1] + ordered[half]) / 2)


def percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """`np.percentile(values, q)`: the same linear interpolation between the same order
    statistics, in the same float operations."""
    n = values.size
    ordered = np.sort(values)
    virtual = (n - 1) * np.true_divide(np.asarray(q, dtype=np.float64), 100)
    below = np.floor(virtual).astype(np.intp)
    above = below + 1
    last = virtual >= n - 1  # at or past the largest value: both neighbours are the last one
    below[last] = -1
    above[last] = -1
    gamma = virtual - below
    a, b = ordered[below], ordered[above]
    diff = b - a
    result = a + diff * gamma
    # numpy's _lerp: from the upper neighbour when gamma >= 0.5, for monotonicity
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def lag1_rank_autocorrelation(values: np.ndarray) -> float | None:
    """Spearman correlation of each sample with the next: how much iterations hang together."""
    if values.size < 3:
        return None
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable").astype(np.float64)
    a, b = ranks[:-1], ranks[1:]
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def batch_median_ci(values: np.ndarray, batches: int = BATCHES) -> tuple[float, float] | None:
    """95% interval of the median from the spread of the medians of consecutive batches.

    Each batch spans a stretch of correlated iterations, so the batch medians are close to
    independent and their standard error is honest where an i.i.d. one is not.
    """
    b = min(batches, values.size // MIN_BATCH)
    if b < 3:
        return None
    medians = np.array([median(part) for part in np.array_split(values, b)])
    half = t975(b - 1) * float(medians.std(ddof=1)) / math.sqrt(b)
    centre = median(values)
    return centre - half, centre + half


def session_statistics(samples_ns: list[int], elapsed_ns: int | None = None
                       ) -> dict[str, Any] | None:
    """The figures of one session, in milliseconds, from its raw nanosecond samples."""
    if not samples_ns:
        return None
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    n = int(ms.size)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if n > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in percentiles(ms, [50, 90, 95, 99]))
    ci = batch_median_ci(ms)
    elapsed_s = elapsed_ns / 1e9 if elapsed_ns else None
    return {
        "n": n,
        "median_ms": p50,
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "p90_ms": p90,
        "p95_ms": p95,
        "p99_ms": p99,
        "cov": std / mean if mean > 0 else None,
        "ci95_low_ms": ci[0] if ci else None,
        "ci95_high_ms": ci[1] if ci else None,
        "lag1_autocorrelation": lag1_rank_autocorrelation(ms),
        "elapsed_s": elapsed_s,
        # a rate over the wall time of the window, gaps between iterations included
        "throughput_wall_ips": n / elapsed_s if elapsed_s else None,
    }
