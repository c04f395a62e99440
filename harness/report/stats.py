"""The statistics of edgebench's figures on the host: combining sessions, intervals, comparisons.

A measurement is several sessions (fresh agent processes, interleaved with the other artifacts of
the run). Iterations within one process hang together and processes differ from each other by
more than any within-process interval shows, so the session, not the iteration, is the unit:

- the headline is the geometric mean of the session medians (each session's median latency,
  combined over sessions in logs); its 95% interval is a Student t interval on those logs
  (latency is a positive, right-skewed scale where effects multiply), so it widens honestly with
  the spread between processes and with few sessions, and the figure always lies inside it. The
  median of the session medians did not: sessions at two speeds (six at 10 ms, four at 11) put it
  at 10.0 ms beside an interval of 10.03-10.76, and every ratio was of geometric means already;
- a comparison of two measurements is the ratio of their geometric-mean session medians with a
  Welch t interval on the difference of log medians; when both come from one run, session k of
  A and session k of B ran back to back, so the interval is paired by session (drift cancels);
- two runs differ by more than their sessions show: the sessions of one run see minutes of the
  device's life, two runs see different minutes. Comparing runs therefore adds a run-to-run
  component, estimated from earlier runs of the same artifact on the same device where there are
  MIN_HISTORY_RUNS or more (their spread as it is, never a robust one that would take a device
  switching between two speeds for a quiet one), and otherwise taken as RUN_SD_FRACTION of the
  between-session spread but never less than RUN_SD_FLOOR (both what the calibration benchmark
  measured on the development machine);
- a verdict has three answers besides "not measured": slower or faster by more than T when the
  whole interval of the ratio is beyond 1 +/- T, no change beyond T when it lies inside, and
  inconclusive otherwise. Noise alone almost never gives the first two for one ratio; the ratios
  of one comparison are judged together (`verdicts_together`, Holm's rule), so that it stays so
  however many are compared.

numpy and scipy only (no pandas), so the runner can combine sessions as they arrive. The agent's
own per-session figures are in `harness/agent/measure.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CONFIDENCE = 0.95
# Default practical threshold T of a comparison: changes smaller than this are "no change".
THRESHOLD = 0.05

# Without history, the run-to-run log-sd is taken as this fraction of the between-session log-sd:
# benchmarks/compare_calibration.py measured 0.45 and 0.55 on the 2-core development machine.
RUN_SD_FRACTION = 0.5
# ... and never less than this. The sessions of one run share that run's conditions (another job
# on the board, three loopback "devices" sharing two cores in a nightly), so when they agree
# closely their spread says little about the next run: two quick nightlies of the same model 37%
# apart with two tight sessions each were once called "slower" without it. compare_calibration
# measured the run-to-run log-sd at 0.03-0.07 on the development machine.
RUN_SD_FLOOR = 0.05
MIN_HISTORY_RUNS = 4
# A run of the history more than this factor slower or faster than the history's median level is
# a step (the device in another state, a regression a gate reported), not run-to-run noise.
RUN_STEP = 2.0

SLOWER = "slower"
FASTER = "faster"
NO_CHANGE = "no change"
INCONCLUSIVE = "inconclusive"

# Top-1 of two runs of a model on the same images. A deterministic runtime gives the same answer
# on the same file, images, threads and instruction set, so any change is what the device
# computes; a change is judged only beyond TOP1_THRESHOLD_POINTS as well, so that a tie broken
# the other way by a GPU's non-deterministic kernels (a few images in 50 000) is not a regression.
LOWER_TOP1 = "lower top-1"
HIGHER_TOP1 = "higher top-1"
SAME_TOP1 = "same top-1"
TOP1_THRESHOLD_POINTS = 0.1

# Flags of a measurement, and what raises them.
HIGH_BETWEEN_COV = 0.05  # session medians spread more than 5% (log-sd)
HIGH_WITHIN_COV = 0.25  # iterations within a session spread more than 25% (median over sessions)
FLAG_BETWEEN = "high_between_session_spread"
FLAG_WITHIN = "high_cov"
FLAG_LOADED = "loaded"  # others kept the CPUs busy during a session's timed window (`loaded`)
# ... during the measurement's profile session (`bench --profile`): its operators' times
FLAG_PROFILE_LOADED = "profile_loaded"
LOADED_OTHERS_CPUS = 0.5  # CPUs' worth of others' work, on average over the window
FLAG_THROTTLED = "throttled"
FLAG_CAPPED = "capped"  # a session's window was cut at max_duration_s
FLAG_FEW_SESSIONS = "single_session"  # no between-session interval possible
# an ok session's median latency was 0, negative or not a number (a timer too coarse for the
# model, a broken result): it has no logarithm, so the session is left out of every figure
FLAG_UNUSABLE_SESSION = "unusable_session"
# top-1 on the device differs from the build host's on the same images (`top1_verdict`)
FLAG_TOP1_HOST = "top1_differs_from_host"
# ... on other images than the host's (another count): outside the host's Wilson interval
FLAG_ACCURACY = "accuracy_outside_host_interval"
# part or all of the model ran on the CPU where the profile asked for an accelerator
FLAG_CPU_FALLBACK = "cpu_fallback"
# sessions of one measurement ran on devices or runtimes that differ (`results.mixed_sessions`)
FLAG_MIXED = "mixed_sessions"
# its power and energy are RAPL's: the CPU package(s), other processes and idle power included
FLAG_PACKAGE_ENERGY = "cpu_package_energy"
SPREAD_FLAGS = frozenset({FLAG_BETWEEN, FLAG_WITHIN, FLAG_LOADED, FLAG_THROTTLED, FLAG_CAPPED})


def _t(df: float, confidence: float = CONFIDENCE) -> float:
    # imported here: the CLI imports this module through the store and should start fast; the
    # special function is what scipy.stats.t.ppf computes, without importing all of scipy.stats
    # (a second of a report's time)
    from scipy.special import stdtrit

    return float(stdtrit(df, 0.5 + confidence / 2))


def log_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE
                 ) -> tuple[float, float] | None:
    """Student t interval of the geometric mean of positive `values` (session medians); None
    with fewer than two."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    if logs.size < 2 or not np.all(np.isfinite(logs)):
        return None
    half = _t(logs.size - 1, confidence) * float(logs.std(ddof=1)) / math.sqrt(logs.size)
    centre = float(logs.mean())
    return math.exp(centre - half), math.exp(centre + half)


def log_sd(values: Sequence[float] | np.ndarray) -> float | None:
    """Standard deviation of the logs: the between-session coefficient of variation."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    return float(logs.std(ddof=1)) if logs.size >= 2 else None


@dataclass(frozen=True)
class RatioCI:
    """B / A with its confidence interval; NaN bounds when it cannot be computed."""

    ratio: float
    low: float
    high: float
    paired: bool = False
    run_sd: float = 0.0  # the run-to-run log-sd the interval allows for
    se: float = math.nan  # standard error of the log ratio
    df: float = math.nan  # degrees of freedom of its t distribution


def run_level_sd(runs: Sequence[Sequence[float]]) -> tuple[float, int] | None:
    """The spread between runs beyond what their sessions show, as a log-sd, from the session
    medians of earlier runs of one artifact; with the number of runs it rests on.

    The variance of the runs' mean logs, less what their sessions already explain: a typical
    run's sampling variance of its mean (the median over the runs, so that a run or two of wild
    sessions cannot explain away the spread between the others; with the mean, one run of
    bimodal sessions on this VM set the estimate to 0 and two tight runs of one file 19% apart
    were called faster). Deliberately not a robust spread of the runs' levels: a device whose
    runs switch between two speeds (a board that lands in a slow mode one run in three) has runs
    that mostly agree, and the median difference of consecutive runs, used before, took it for a
    quiet device and called the unchanged model slower or faster in a quarter of comparisons
    (simulated; a user's nightlies of one file were called 0.62x and 1.45x). A real step in the
    history now counts as spread until it leaves the window of runs: the comparison is less
    sensitive for a while, never more alarming. But a run more than RUN_STEP times slower or
    faster than the median level of the runs is left out: such a step is no noise, and one slow
    night (38x, a board's nightly gone wrong) made the spread so wide that the same slowdown was
    inconclusive for the next ten nights. None with fewer than MIN_HISTORY_RUNS runs of two
    sessions or more left.
    """
    groups = [np.log(np.asarray(r, dtype=np.float64)) for r in runs if len(r) >= 2]
    if groups:
        centre = float(np.median([g.mean() for g in groups]))
        groups = [g for g in groups if abs(g.mean() - centre) <= math.log(RUN_STEP)]
    if len(groups) < MIN_HISTORY_RUNS:
        return None
    between = float(np.var([g.mean() for g in groups], ddof=1))
    within = float(np.median([g.var(ddof=1) / g.size for g in groups]))
    return math.sqrt(max(0.0, between - within)), len(groups)


def default_run_sd(*session_medians: Sequence[float]) -> float:
    """The run-to-run log-sd assumed when there is no history: RUN_SD_FRACTION of the pooled
    between-session log-sd of the measurements compared, and at least RUN_SD_FLOOR."""
    logs = [np.log(np.asarray(m, dtype=np.float64)) for m in session_medians if len(m) >= 2]
    if not logs:
        return RUN_SD_FLOOR
    pooled = sum(float(x.var(ddof=1)) * (x.size - 1) for x in logs) / sum(x.size - 1
                                                                         for x in logs)
    return max(RUN_SD_FLOOR, RUN_SD_FRACTION * math.sqrt(pooled))


def ratio_interval(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                   paired: bool = False, confidence: float = CONFIDENCE, run_sd: float = 0.0,
                   run_df: float | None = None) -> RatioCI:
    """Ratio of geometric means of session medians B / A with a t interval on the logs.

    `paired`: session i of A and of B ran back to back (one run, interleaved), so the interval
    comes from the per-session log ratios. Otherwise Welch's unequal-variance interval, widened
    by `run_sd` (the run-to-run log-sd, for A and B from different runs) and with at most
    `run_df` degrees of freedom (those of the run_sd estimate).
    """
    la = np.log(np.asarray(a, dtype=np.float64))
    lb = np.log(np.asarray(b, dtype=np.float64))
    nan = math.nan
    if la.size == 0 or lb.size == 0:
        return RatioCI(nan, nan, nan, paired)
    diff = float(lb.mean() - la.mean())
    if paired and la.size == lb.size and la.size >= 2:
        d = lb - la
        se = float(d.std(ddof=1)) / math.sqrt(d.size)
        half = _t(d.size - 1, confidence) * se
        return RatioCI(math.exp(diff), math.exp(diff - half), math.exp(diff + half), True,
                       se=se, df=d.size - 1)
    if la.size < 2 or lb.size < 2:
        return RatioCI(math.exp(diff), nan, nan, False, run_sd)
    va, vb = la.var(ddof=1) / la.size, lb.var(ddof=1) / lb.size
    se = math.sqrt(va + vb + 2 * run_sd ** 2)
    if se == 0:
        return RatioCI(math.exp(diff), math.exp(diff), math.exp(diff), False, run_sd, 0.0,
                       math.inf)
    if run_sd > 0 and run_df is None:
        # the run-to-run term is assumed (`default_run_sd`) from the sessions' pooled spread:
        # it knows what their pooled degrees of freedom know. Welch's, which the assumed term
        # outweighs, swung between 1 and 2 with two sessions a side (a t of 12.7 or 4.3) and
        # missed a model twice as slow one time in three.
        df: float = la.size + lb.size - 2
    else:
        # Welch-Satterthwaite, capped by the degrees of freedom of the run-to-run estimate (an
        # estimate of 0 is as uncertain as any other)
        df = (va + vb) ** 2 / (va ** 2 / (la.size - 1) + vb ** 2 / (lb.size - 1)) \
            if va + vb > 0 else math.inf
        if run_df is not None:
            df = min(df, run_df)
    half = _t(df, confidence) * se
    return RatioCI(math.exp(diff), math.exp(diff - half), math.exp(diff + half), False, run_sd,
                   se, df)


def verdict(ci: RatioCI, threshold: float = THRESHOLD) -> str:
    """slower / faster by more than T, no change beyond T, or inconclusive (latency B / A)."""
    if math.isnan(ci.low) or math.isnan(ci.high):
        return INCONCLUSIVE
    if ci.low > 1 + threshold:
        return SLOWER
    if ci.high < 1 - threshold:
        return FASTER
    if ci.low >= 1 - threshold and ci.high <= 1 + threshold:
        return NO_CHANGE
    return INCONCLUSIVE


def p_beyond(ci: RatioCI, threshold: float = THRESHOLD) -> tuple[float, float]:
    """One-sided p-values that B / A is beyond 1 + T (slower) and below 1 - T (faster): the
    level at which the interval's lower (upper) end would just reach 1 + T (1 - T). The verdict
    of one ratio is slower exactly when the first is below (1 - CONFIDENCE) / 2. NaN where the
    ratio has no interval."""
    from scipy.special import stdtr

    if not (math.isfinite(ci.se) and ci.ratio > 0 and not math.isnan(ci.df)):
        return math.nan, math.nan
    d = math.log(ci.ratio)
    up, down = d - math.log1p(threshold), d - math.log1p(-threshold)
    if ci.se == 0:
        return float(up <= 0), float(down >= 0)
    return float(stdtr(ci.df, -up / ci.se)), float(stdtr(ci.df, down / ci.se))


def holm(pvalues: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down rule: which hypotheses are rejected with a chance of at most `alpha`
    of rejecting any true one among them all, whatever their dependence. NaN: not tested."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    rejected = [False] * len(pvalues)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - rank):
            break
        rejected[i] = True
    return rejected


def verdicts_together(alone: Sequence[str], p_slower: Sequence[float],
                      p_faster: Sequence[float]) -> list[str]:
    """The verdicts of ratios judged together (one comparison of runs, one nightly), from each
    one's verdict alone (`verdict`) and its `p_beyond` (NaN: not judged on its speed): slower
    or faster only where Holm's rule over all of them rejects "within 1 + T" or "within 1 - T"
    at the one-sided level of one interval, (1 - CONFIDENCE) / 2. Judged alone, each of 50
    unchanged models had a small chance of a false "slower", and a nightly of 50 a chance of
    15 to 20% (simulated, on a noisy device); together the chance that any unchanged one is
    called slower stays within that of one. A ratio slower or faster alone but not together is
    inconclusive. With one ratio, its verdict alone."""
    alpha = (1 - CONFIDENCE) / 2
    slower, faster = holm(p_slower, alpha), holm(p_faster, alpha)
    return [INCONCLUSIVE if (v == SLOWER and not s) or (v == FASTER and not f) else v
            for v, s, f in zip(alone, slower, faster, strict=True)]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def has_log(value: object) -> bool:
    """Whether `value` is a latency a log scale can take: a finite number above 0."""
    return (isinstance(value, (int, float, np.floating, np.integer))
            and not isinstance(value, bool) and math.isfinite(value) and float(value) > 0)


def geometric_mean(values: Sequence[float | None]) -> float | None:
    """exp of the mean log of the values a log can take (`has_log`); None when there are none.
    The headline of a measurement's session medians."""
    kept = np.asarray([float(v) for v in values if v is not None and has_log(v)])
    if kept.size == 0:
        return None
    # equal values (one session, a timer's steps) are their own mean to the last bit, which
    # exp(log) is not: 10.000000000000002 for one session of 10 ms
    return float(kept[0]) if np.all(kept == kept[0]) else float(np.exp(np.log(kept).mean()))


def combine_sessions(sessions: Sequence[dict[str, Any]], samples_ms: Sequence[np.ndarray],
                     confidence: float = CONFIDENCE,
                     wall_medians_ms: Sequence[float | None] | None = None) -> dict[str, Any]:
    """The measurement's latency figures from its ok sessions.

    `sessions` are the agent's per-session latency dicts (`measure.session_statistics`),
    `samples_ms` their raw samples, `wall_medians_ms` (optional) their medians by the host clock
    where the samples are a GPU's own; pooled figures come from all samples together. The
    headline and its interval are on the logs of the session medians, so a session whose median
    has no log (`has_log`: 0 from a timer too coarse for the model, or not a number) is left out
    of every figure, pooled ones too, and counted in `sessions_unusable`: the count, the headline
    and the pooled figures rest on the same sessions.
    """
    used = [i for i, s in enumerate(sessions) if s and has_log(s.get("median_ms"))]
    unusable = sum(1 for s in sessions if s and s.get("median_ms") is not None) - len(used)
    medians = [float(sessions[i]["median_ms"]) for i in used]
    kept = [np.asarray(samples_ms[i], dtype=np.float64) for i in used]
    pooled = np.concatenate(kept) if kept else np.empty(0)
    out: dict[str, Any] = {"sessions": len(medians), "sessions_unusable": unusable}
    if not medians or pooled.size == 0:
        return out
    ci = log_interval(medians, confidence)
    mean = float(pooled.mean())
    std = float(pooled.std(ddof=1)) if pooled.size > 1 else 0.0
    p50, p90, p95, p99 = (float(v) for v in np.percentile(pooled, [50, 90, 95, 99]))
    chosen = [sessions[i] for i in used]
    walls = [wall_medians_ms[i] for i in used] if wall_medians_ms is not None else []
    # The wall-clock rate counts what the median leaves out (the loop between calls, time the
    # process waited for a CPU), so on a loaded machine it moves where the median does not: it
    # gets the headline's estimator and an interval of its own, not a bare median.
    rates = [float(s["throughput_wall_ips"]) for s in chosen
             if has_log(s.get("throughput_wall_ips"))]
    rate_ci = log_interval(rates, confidence)
    out.update(
        n=int(pooled.size),
        median_ms=geometric_mean(medians),
        wall_median_ms=geometric_mean(walls),
        ci95_low_ms=ci[0] if ci else None,
        ci95_high_ms=ci[1] if ci else None,
        p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99,
        mean_ms=mean, std_ms=std,
        min_ms=float(pooled.min()), max_ms=float(pooled.max()),
        cov=std / mean if mean > 0 else None,
        cov_within=_median([s.get("cov") for s in chosen]),
        cov_between=log_sd(medians),
        lag1_autocorrelation=_median([s.get("lag1_autocorrelation") for s in chosen]),
        throughput_wall_ips=geometric_mean(rates),
        throughput_ci95_low_ips=rate_ci[0] if rate_ci else None,
        throughput_ci95_high_ips=rate_ci[1] if rate_ci else None,
    )
    return out


def latency_flags(combined: dict[str, Any]) -> list[str]:
    """The spread flags a combined measurement earns by its figures alone."""
    flags = []
    if combined.get("sessions", 0) == 1:
        flags.append(FLAG_FEW_SESSIONS)
    if combined.get("sessions_unusable"):
        flags.append(FLAG_UNUSABLE_SESSION)
    if (combined.get("cov_between") or 0) > HIGH_BETWEEN_COV:
        flags.append(FLAG_BETWEEN)
    if (combined.get("cov_within") or 0) > HIGH_WITHIN_COV:
        flags.append(FLAG_WITHIN)
    return flags


def top1_changed(before: float, after: float, n: float | None) -> bool:
    """True when two runs' top-1 differ by one image or more. The same images go through the
    same file each run, so any such difference is a change of what the device computes, not
    sampling noise (a Wilson interval speaks of other images). Without `n`, any difference."""
    images = n if n is not None and n > 0 and math.isfinite(n) else 1e9
    return abs(after - before) * images >= 0.5


def top1_verdict(before: float, after: float, n: float | None,
                 threshold_points: float = TOP1_THRESHOLD_POINTS) -> str:
    """Top-1 of the same images in two runs: lower or higher when they differ by one image or
    more (`top1_changed`) and by more than `threshold_points` percentage points; else the same.
    "More than" up to rounding: one image of 1000 is 0.10000000000000009 points from 0.700 to
    0.699, which failed a nightly's gate at the default 0.1."""
    points = abs(after - before) * 100
    if top1_changed(before, after, n) and points > threshold_points * (1 + 1e-9):
        return LOWER_TOP1 if after < before else HIGHER_TOP1
    return SAME_TOP1


def check_top1_threshold(points: float) -> None:
    """A top-1 threshold must be a number of percentage points in [0, 100)."""
    from harness.errors import EdgebenchError

    if not (isinstance(points, (int, float)) and 0 <= points < 100):
        raise EdgebenchError(f"--top1-threshold {points} must be percentage points in [0, 100), "
                             "e.g. 0.1")


def relative_half_width(low: float | None, high: float | None, centre: float | None
                        ) -> float | None:
    """Half the width of an interval relative to its centre: the precision of a headline."""
    if low is None or high is None or not centre:
        return None
    return (high - low) / 2 / centre


def interval_coverage(*, sessions: int, between_sd: float, within_rho: float,
                      within_sd: float = 0.1, iterations: int = 200, trials: int = 2000,
                      slow_share: float = 0.0, slow_factor: float = 1.0, seed: int = 0) -> float:
    """Share of simulated measurements whose headline interval covers the true headline.

    Each session draws its own level (log-normal, `between_sd`; with probability `slow_share`
    times `slow_factor`, a device that lands in a slow mode now and then) and then `iterations`
    samples with AR(1) autocorrelation `within_rho` around it, as measured on real devices; the
    truth is the geometric mean of the distribution the session medians come from, which without
    a slow mode is its median.
    """
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    levels = rng.normal(0.0, between_sd, (trials, sessions, 1))
    if slow_share:  # drawn only then, so that the one-mode simulation stays what it was
        levels += math.log(slow_factor) * (rng.random((trials, sessions, 1)) < slow_share)
    e = rng.normal(0.0, within_sd, (trials, sessions, iterations))
    # AR(1) with unit stationary variance scale: x_i = rho x_{i-1} + sqrt(1 - rho^2) e_i
    noise = lfilter([math.sqrt(1 - within_rho ** 2)], [1.0, -within_rho], e, axis=-1)
    medians = np.median(np.exp(levels + noise), axis=-1)
    # a session median's log is its level plus the median of symmetric noise: its mean is the
    # mean level
    truth = slow_share * math.log(slow_factor)
    covered = 0
    for row in medians:
        ci = log_interval(row)
        if ci is not None and ci[0] <= math.exp(truth) <= ci[1]:
            covered += 1
    return covered / trials


def loaded(others_cpus: float | None, loadavg_1m: float | None = None,
           cpu_count: int | None = None) -> bool:
    """Whether something else ran during a session: others did more than LOADED_OTHERS_CPUS
    CPUs' worth of work in its timed window (the machine's busy time less the agent's own). An
    agent that could not tell (no /proc/stat, or an edgebench from before) leaves the 1-minute
    load average above the CPU count before the session, which also counts the benchmark's own
    previous sessions and lags a minute."""
    if others_cpus is not None:
        return others_cpus > LOADED_OTHERS_CPUS
    return loadavg_1m is not None and bool(cpu_count) and loadavg_1m > (cpu_count or 0)

