"""The host's statistics: combining sessions, intervals of headlines and ratios, verdicts.

Each figure is checked against a direct computation (scipy's t distribution and t tests), the
intervals against simulation with the autocorrelation and run-to-run spread measured on real
machines, and the verdicts on constructed session medians, including that they can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from harness.agent import measure
from harness.report import stats


def test_log_interval_is_a_t_interval_on_logs() -> None:
    medians = [10.0, 10.4, 9.8, 10.9, 10.1]
    low, high = stats.log_interval(medians)  # type: ignore[misc]
    logs = np.log(medians)
    lo, hi = sps.t.interval(0.95, 4, loc=logs.mean(), scale=sps.sem(logs))
    assert (low, high) == pytest.approx((math.exp(lo), math.exp(hi)))
    assert stats.log_interval([10.0]) is None


def test_ratio_interval_unpaired_is_welch_and_paired_uses_differences() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(np.log(10), 0.05, 5)
    b = rng.lognormal(np.log(11), 0.08, 6)
    ci = stats.ratio_interval(a, b)
    welch = sps.ttest_ind(np.log(b), np.log(a), equal_var=False).confidence_interval(0.95)
    assert (ci.low, ci.high) == pytest.approx((math.exp(welch.low), math.exp(welch.high)))
    assert ci.ratio == pytest.approx(math.exp(np.log(b).mean() - np.log(a).mean()))
    b5 = b[:5]
    paired = stats.ratio_interval(a, b5, paired=True)
    rel = sps.ttest_rel(np.log(b5), np.log(a)).confidence_interval(0.95)
    assert paired.paired and (paired.low, paired.high) == pytest.approx(
        (math.exp(rel.low), math.exp(rel.high)))


def test_pairing_cancels_drift_that_hits_both_variants() -> None:
    """Session k of A and B ran back to back: a drift shared by both widens the unpaired
    interval but not the paired one."""
    drift = np.array([1.0, 1.3, 0.9, 1.2, 1.1])
    a, b = 10 * drift, 11 * drift * np.array([1.0, 1.01, 0.99, 1.0, 1.005])
    assert stats.verdict(stats.ratio_interval(a, b, paired=True)) == stats.SLOWER
    assert stats.verdict(stats.ratio_interval(a, b)) == stats.INCONCLUSIVE


@pytest.mark.parametrize(("a", "b", "expected"), [
    ([10, 10.1, 9.9, 10.05, 9.95], [11.5, 11.6, 11.4, 11.55, 11.45], stats.SLOWER),
    ([10, 10.1, 9.9, 10.05, 9.95], [8.5, 8.6, 8.4, 8.55, 8.45], stats.FASTER),
    ([10, 10.02, 9.98, 10.01, 9.99], [10.1, 10.12, 10.08, 10.11, 10.09], stats.NO_CHANGE),
    ([10, 12, 8, 11, 9], [11, 13, 9, 12, 10], stats.INCONCLUSIVE),
    ([10], [20], stats.INCONCLUSIVE),  # one session each: no between-session spread known
])
def test_verdicts_on_constructed_session_medians(a: list[float], b: list[float],
                                                 expected: str) -> None:
    assert stats.verdict(stats.ratio_interval(a, b)) == expected


def test_threshold_decides_what_counts_as_a_change() -> None:
    a, b = [10, 10.1, 9.9, 10.05, 9.95], [11.5, 11.6, 11.4, 11.55, 11.45]  # +15%
    ci = stats.ratio_interval(a, b)
    assert stats.verdict(ci, threshold=0.05) == stats.SLOWER
    assert stats.verdict(ci, threshold=0.20) == stats.NO_CHANGE


def test_same_model_is_never_called_slower_or_faster() -> None:
    """Noise alone: 500 pairs of 5 sessions from one log-normal (3% between-session spread, as on
    a quiet machine) give no slower/faster verdict; with a real 15% difference most do."""
    rng = np.random.default_rng(11)
    same = [stats.verdict(stats.ratio_interval(rng.lognormal(0, 0.03, 5),
                                               rng.lognormal(0, 0.03, 5)))
            for _ in range(500)]
    assert not {stats.SLOWER, stats.FASTER} & set(same)
    slower = [stats.verdict(stats.ratio_interval(rng.lognormal(0, 0.03, 5),
                                                 rng.lognormal(np.log(1.15), 0.03, 5)))
              for _ in range(500)]
    assert slower.count(stats.SLOWER) / 500 >= 0.8


@pytest.mark.parametrize("sessions", [3, 5, 10])
def test_headline_interval_covers_under_measured_variance(sessions: int) -> None:
    """Coverage of the headline's 95% interval when sessions differ by a log-sd of 0.12 (the
    spread of run medians measured on the 2-core development machine) and iterations within a
    session have lag-1 autocorrelation 0.75 (0.64-0.84 measured)."""
    coverage = stats.interval_coverage(sessions=sessions, between_sd=0.12, within_rho=0.75,
                                       trials=1000)
    assert coverage >= 0.90


def test_pooled_iid_interval_would_not_cover() -> None:
    """The interval edgebench used to store (order statistics of all samples as if independent)
    under the same simulation: far below 90%, which is why the headline's comes from sessions."""
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(300):
        medians = rng.lognormal(0.0, 0.12, 5)
        pooled = np.concatenate([rng.lognormal(np.log(m), 0.1, 200) for m in medians])
        ordered = np.sort(pooled)
        k = int(sps.binom.ppf(0.025, pooled.size, 0.5))
        covered += ordered[k] <= 1.0 <= ordered[pooled.size - k - 1]
    assert covered / 300 < 0.5


def test_combine_sessions_against_direct_computation() -> None:
    rng = np.random.default_rng(5)
    samples = [rng.lognormal(np.log(m), 0.1, 300) for m in (10.0, 10.5, 9.7)]
    per_session = [measure.session_statistics(list((s * 1e6).astype(np.int64)), 10**9)
                   for s in samples]
    ms = [np.asarray(s, dtype=np.int64) / 1e6 for s in ((x * 1e6).astype(np.int64)
                                                        for x in samples)]
    combined = stats.combine_sessions(per_session, ms)  # type: ignore[arg-type]
    medians = [float(np.median(x)) for x in ms]
    pooled = np.concatenate(ms)
    assert combined["sessions"] == 3 and combined["n"] == 900
    assert combined["median_ms"] == pytest.approx(math.exp(np.log(medians).mean()))
    assert combined["p90_ms"] == pytest.approx(np.percentile(pooled, 90))
    assert combined["mean_ms"] == pytest.approx(pooled.mean())
    assert combined["cov_between"] == pytest.approx(np.log(medians).std(ddof=1))
    assert (combined["ci95_low_ms"], combined["ci95_high_ms"]) == pytest.approx(
        stats.log_interval(medians))
    assert stats.latency_flags(combined) == []
    assert stats.FLAG_BETWEEN in stats.latency_flags(dict(combined, cov_between=0.2))


def _constant_sessions(medians: list[float], n: int = 50) -> tuple[list[dict], list[np.ndarray]]:
    """Sessions whose every sample is their median, as the agent reports them."""
    samples = [np.full(n, m) for m in medians]
    return [measure.session_statistics(list((s * 1e6).astype(np.int64)), 10**9)  # type: ignore[misc]
            for s in samples], samples


def test_a_headline_of_sessions_at_two_speeds_lies_inside_its_interval() -> None:
    """Found by an audit: six sessions at 10 ms and four at 11 had the headline 10.0 ms (the
    median of the session medians) beside the interval (10.029, 10.761), which is an interval
    for their geometric mean. The headline is that geometric mean."""
    per_session, samples = _constant_sessions([10.0] * 6 + [11.0] * 4)
    combined = stats.combine_sessions(per_session, samples)
    assert combined["median_ms"] == pytest.approx(10.0 ** 0.6 * 11.0 ** 0.4)
    assert combined["ci95_low_ms"] == pytest.approx(10.029, abs=1e-3)
    assert combined["ci95_high_ms"] == pytest.approx(10.761, abs=1e-3)
    assert combined["ci95_low_ms"] < combined["median_ms"] < combined["ci95_high_ms"]


@pytest.mark.parametrize("sessions", [10, 20])
def test_headline_interval_covers_sessions_at_two_speeds(sessions: int) -> None:
    """A device that lands in a mode 10% slower in four sessions of ten: the interval covers the
    geometric mean the headline estimates (the median of the session medians fell inside it 67%
    of the time with 10 sessions and 15% with 20)."""
    coverage = stats.interval_coverage(sessions=sessions, between_sd=0.01, within_rho=0.75,
                                       slow_share=0.4, slow_factor=1.1, trials=1000)
    assert coverage >= 0.90


@pytest.mark.parametrize("bad", [0.0, math.nan, math.inf])
def test_a_session_median_without_a_log_is_left_out_of_every_figure(bad: float) -> None:
    """Found: a session whose median was 0.0 was dropped from the count (3 ok sessions gave
    `sessions` 1 and the flag single_session) while its samples stayed in the pooled figures;
    a NaN median gave a NaN headline with `sessions` 3, no interval and no flag. Such a session
    has no log: it is left out of the headline, its interval and the pooled figures alike, and
    the flag says so."""
    per_session, samples = _constant_sessions([10.0, 10.4, 9.8])
    per_session[1] = dict(per_session[1], median_ms=bad, cov=9.0, throughput_wall_ips=1e9)
    samples[1] = np.zeros(50) if bad == 0.0 else np.full(50, bad)
    combined = stats.combine_sessions(per_session, samples, wall_medians_ms=[11.0, 99.0, 11.6])
    assert combined["sessions"] == 2 and combined["sessions_unusable"] == 1
    assert combined["n"] == 100 and combined["min_ms"] == 9.8 and combined["max_ms"] == 10.0
    assert combined["median_ms"] == pytest.approx(math.sqrt(10.0 * 9.8))
    assert (combined["ci95_low_ms"], combined["ci95_high_ms"]) == pytest.approx(
        stats.log_interval([10.0, 9.8]))
    assert combined["wall_median_ms"] == pytest.approx(math.sqrt(11.0 * 11.6))
    assert combined["cov_within"] == 0.0 and combined["throughput_wall_ips"] == 50.0
    assert stats.latency_flags(combined) == [stats.FLAG_UNUSABLE_SESSION]
    # two of three: the headline rests on one session, and the flags say both
    per_session[2] = dict(per_session[2], median_ms=0.0)
    one = stats.combine_sessions(per_session, samples)
    assert one["sessions"] == 1 and one["sessions_unusable"] == 2 and one["n"] == 50
    assert one["median_ms"] == 10.0 and one["ci95_low_ms"] is None
    assert stats.latency_flags(one) == [stats.FLAG_FEW_SESSIONS, stats.FLAG_UNUSABLE_SESSION]
    none = stats.combine_sessions([dict(s, median_ms=0.0) for s in per_session], samples)
    assert none == {"sessions": 0, "sessions_unusable": 3}
    assert stats.latency_flags(none) == [stats.FLAG_UNUSABLE_SESSION]


def test_geometric_mean_takes_only_what_has_a_log() -> None:
    assert stats.geometric_mean([2.0, 8.0]) == pytest.approx(4.0)
    assert stats.geometric_mean([2.0, None, 0.0, math.nan, -1.0, 8.0]) == pytest.approx(4.0)
    assert stats.geometric_mean([None, 0.0]) is None
    assert not stats.has_log(True) and stats.has_log(np.float32(0.5)) and stats.has_log(3)


def test_run_to_run_spread_is_estimated_and_takes_every_run_as_it_is() -> None:
    rng = np.random.default_rng(9)
    # 8 runs whose levels wander by a log-sd of 0.05, sessions within a run by 0.01
    levels = rng.normal(0, 0.05, 8)
    runs = [list(np.exp(level + rng.normal(0, 0.01, 5))) for level in levels]
    sd, k = stats.run_level_sd(runs)  # type: ignore[misc]
    assert k == 8 and 0.02 < sd < 0.1
    means = [float(np.log(r).mean()) for r in runs]
    within = np.median([np.log(r).var(ddof=1) / 5 for r in runs])
    assert sd == pytest.approx(math.sqrt(np.var(means, ddof=1) - within))
    assert stats.run_level_sd(runs[:3]) is None  # too few runs to say


# Session medians (ms) of seven benches of models/build/digits_cnn.onnx on the 2-core development
# VM, one after the other (`edgebench bench --model ... --runtime onnxruntime --threads 1`,
# 2026-11-29), as the store held them, rounded to 0.1 us: sessions land in a fast (0.055 ms) or
# a slow (0.075 ms) mode, and the third run has one wild session.
VM_HISTORY = [[0.0727, 0.0748, 0.0713, 0.0721, 0.0775], [0.057, 0.0771, 0.0757, 0.054, 0.0703],
              [0.0789, 0.0556, 0.0755, 0.155, 0.0541], [0.0908, 0.0857, 0.0559, 0.0516, 0.0765],
              [0.0748, 0.0726, 0.0723, 0.0765, 0.0736], [0.0752, 0.072, 0.0832, 0.084, 0.0782]]
VM_LATER = [0.0696, 0.0674, 0.0578, 0.0682, 0.0573]


def test_a_run_of_wild_sessions_does_not_explain_away_the_spread_between_runs() -> None:
    # Found on that history: with the mean of the runs' sampling variances taken off, the third
    # run's wild session set the run-to-run spread to 0, and the later run of the same file
    # (0.81x) was called faster than the sixth.
    sd, k = stats.run_level_sd(VM_HISTORY)  # type: ignore[misc]
    assert sd > 0.02  # the levels of these runs differ, as the runs' means show
    ci = stats.ratio_interval(VM_HISTORY[-1], VM_LATER, run_sd=sd, run_df=k - 1)
    assert stats.verdict(ci) == stats.INCONCLUSIVE


def test_a_device_that_switches_between_two_speeds_is_not_taken_for_a_quiet_one() -> None:
    """Found by a user: a board whose runs land in a mode 40% slower one time in three. Its
    consecutive runs mostly agree, so the median difference between them (the estimate before)
    said the runs did not differ at all, and the unchanged model was called 0.62x and 1.45x.
    Simulated here: 10 runs of history up to A, then B, all of one file."""
    rng = np.random.default_rng(3)

    def run() -> list[float]:
        slow = 0.34 if rng.random() < 1 / 3 else 0.0
        return list(np.exp(slow + rng.normal(0, 0.01) + rng.normal(0, 0.03, 5)))

    alarms = 0
    trials = 400
    for _ in range(trials):
        history = [run() for _ in range(10)]
        found = stats.run_level_sd(history)
        assert found is not None
        ci = stats.ratio_interval(history[-1], run(), run_sd=found[0], run_df=found[1] - 1)
        alarms += stats.verdict(ci) in (stats.SLOWER, stats.FASTER)
    assert alarms / trials < 0.03  # the median-difference estimate: about 0.26


def test_run_to_run_spread_widens_the_interval_and_caps_its_degrees_of_freedom() -> None:
    a, b = [10, 10.1, 9.9, 10.05, 9.95], [11.5, 11.6, 11.4, 11.55, 11.45]
    narrow = stats.ratio_interval(a, b)
    wide = stats.ratio_interval(a, b, run_sd=0.05, run_df=3)
    la, lb = np.log(a), np.log(b)
    se = math.sqrt(la.var(ddof=1) / 5 + lb.var(ddof=1) / 5 + 2 * 0.05**2)
    half = sps.t.ppf(0.975, 3) * se
    diff = lb.mean() - la.mean()
    assert (wide.low, wide.high) == pytest.approx((math.exp(diff - half), math.exp(diff + half)))
    assert wide.low < narrow.low and wide.run_sd == 0.05
    assert stats.verdict(narrow) == stats.SLOWER and stats.verdict(wide) == stats.INCONCLUSIVE
    # without history: half the pooled between-session log-sd, at least the floor
    pooled = math.sqrt((la.var(ddof=1) + lb.var(ddof=1)) / 2)
    assert stats.default_run_sd(a, b) == pytest.approx(max(stats.RUN_SD_FLOOR, 0.5 * pooled))


def test_two_tight_runs_far_apart_are_not_called_slower_without_history() -> None:
    """Two quick nightlies of one model, two sessions each that agree within 4%, the second
    run 37% slower (three loopback devices sharing two cores, measured in the farm's tests):
    the sessions of a run share its conditions, so their spread cannot stand for the run-to-run
    spread, and a verdict without history must not call this slower."""
    a, b = [1.00, 1.04], [1.37, 1.42]
    ci = stats.ratio_interval(a, b, run_sd=stats.default_run_sd(a, b))
    assert ci.ratio == pytest.approx(1.37, abs=0.01)
    assert stats.verdict(ci) == stats.INCONCLUSIVE
    # what the rule said before the floor: half the sessions' tight spread, a confident "slower"
    pooled = math.sqrt((np.log(a).var(ddof=1) + np.log(b).var(ddof=1)) / 2)
    assert stats.verdict(stats.ratio_interval(a, b, run_sd=0.5 * pooled)) == stats.SLOWER
    # a change well beyond what any run-to-run noise measured here explains is still called
    assert stats.verdict(stats.ratio_interval(a, [2.0, 2.06], run_sd=stats.default_run_sd(
        a, [2.0, 2.06]))) == stats.SLOWER


def test_without_history_the_assumed_run_spread_has_the_sessions_pooled_degrees_of_freedom(
        ) -> None:
    """Found in an audit: Welch's degrees of freedom come from the session variances, which the
    assumed run-to-run term outweighs; with two sessions a side they swung between 1 and 2 with
    the chance ratio of the two variances (a t of 12.7 or 4.3), and a model twice as slow was
    inconclusive one time in three."""
    a, b = [1.0, 1.0001], [2.0, 2.04]  # A's sessions agree to 0.01%, B's to 2%: Welch's df ~1
    ci = stats.ratio_interval(a, b, run_sd=stats.default_run_sd(a, b))
    assert ci.df == 2
    la, lb = np.log(a), np.log(b)
    se = math.sqrt(la.var(ddof=1) / 2 + lb.var(ddof=1) / 2 + 2 * stats.RUN_SD_FLOOR ** 2)
    half = sps.t.ppf(0.975, 2) * se
    assert ci.low == pytest.approx(math.exp(lb.mean() - la.mean() - half))
    assert stats.verdict(ci) == stats.SLOWER
    rng = np.random.default_rng(8)
    found = 0
    for _ in range(300):
        a2, b2 = np.exp(rng.normal(0, 0.02, 2)), 2 * np.exp(rng.normal(0, 0.02, 2))
        ci = stats.ratio_interval(a2, b2, run_sd=stats.default_run_sd(a2, b2))
        found += stats.verdict(ci) == stats.SLOWER
    assert found / 300 > 0.97  # Welch's: 0.65


def test_p_beyond_agrees_with_the_verdict_of_one_ratio() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        a = np.exp(rng.normal(0, 0.05, 4))
        b = np.exp(rng.normal(rng.normal(0, 0.15), 0.05, int(rng.integers(2, 6))))
        for ci in (stats.ratio_interval(a, b, run_sd=0.05, run_df=4),
                   stats.ratio_interval(a, b[:1].repeat(4) * np.exp(rng.normal(0, 0.03, 4)),
                                        paired=True)):
            slower, faster = stats.p_beyond(ci)
            assert (slower < 0.025) == (stats.verdict(ci) == stats.SLOWER)
            assert (faster < 0.025) == (stats.verdict(ci) == stats.FASTER)
            assert stats.verdicts_together([stats.verdict(ci)], [slower], [faster]) == \
                [stats.verdict(ci)]


def test_holm_rejects_step_by_step() -> None:
    # alpha 0.05 over 4: 0.001 <= 0.0125, 0.01 <= 0.0167, 0.03 > 0.025 stops (and 0.04 with
    # it, below 0.05 as it is); NaN is not tested
    assert stats.holm([0.04, 0.01, math.nan, 0.03, 0.001], 0.05) == \
        [False, True, False, False, True]
    assert stats.holm([0.2, 0.3], 0.05) == [False, False]
    assert stats.holm([], 0.05) == []


def test_a_nightly_of_many_unchanged_models_is_not_called_slower() -> None:
    """Found in an audit: each measurement judged alone, a nightly of 23 unchanged models with
    10 runs of history on a device whose sessions differ by 15% failed its gate one night in
    12, one of 50 one night in six. Judged together (Holm) it stays near one alone."""
    from harness.report import compare

    rng = np.random.default_rng(7)
    nights, failed_alone, failed_together = 150, 0, 0
    for _ in range(nights):
        alone, p_slower, p_faster = [], [], []
        for _ in range(23):
            levels = rng.normal(0, 0.05, 11)
            runs = [list(np.exp(level + rng.normal(0, 0.15, 5))) for level in levels]
            ci, verdict = compare.judge(runs[9], runs[10],
                                        run_noise=compare.history_noise(runs[:10]))
            alone.append(verdict)
            slower, faster = stats.p_beyond(ci)
            p_slower.append(slower)
            p_faster.append(faster)
        failed_alone += stats.SLOWER in alone
        failed_together += stats.SLOWER in stats.verdicts_together(alone, p_slower, p_faster)
    assert failed_alone / nights > 0.03  # the rule before: about 0.08
    assert failed_together / nights <= 0.01


def test_a_step_in_the_history_is_no_noise() -> None:
    """Found in an audit of a farm: one night 38x slower (and the one after it) stayed in the
    ten runs of history, and the spread it made hid the same slowdown for ten nights
    (`ratio 38.2 [1.2e-06, 1.18e+09]`, inconclusive, exit 0 under --fail-on-regression). A run
    more than twice as slow or fast as the history's median level is left out of the spread."""
    rng = np.random.default_rng(11)

    def run(level: float = 1.0) -> list[float]:
        return list(level * np.exp(rng.normal(0, 0.01) + rng.normal(0, 0.03, 5)))

    history = [run() for _ in range(3)] + [run(38.0), run(38.0)] + [run() for _ in range(5)]
    found = stats.run_level_sd(history)
    assert found is not None and found[0] < 0.1 and found[1] == 8
    ci = stats.ratio_interval(history[-1], run(38.0), run_sd=found[0], run_df=found[1] - 1)
    assert stats.verdict(ci) == stats.SLOWER
    # the spread of all ten runs, as before: nothing could be called
    levels = [np.log(r).mean() for r in history]
    assert math.sqrt(np.var(levels, ddof=1)) > 1.5
    # half the runs at each level: none is the usual one, and the spread is assumed
    assert stats.run_level_sd([run(), run(), run(38.0), run(38.0), run(38.0), run()]) is None


def test_a_top1_change_must_exceed_the_threshold_not_equal_it() -> None:
    """One image of 1000 is 0.1 points, which is not "more than 0.1": in floating point
    0.700 - 0.699 is 0.10000000000000009 points, and a nightly failed on it."""
    assert stats.top1_verdict(0.700, 0.699, 1000) == stats.SAME_TOP1
    assert stats.top1_verdict(0.700, 0.698, 1000) == stats.LOWER_TOP1
    assert stats.top1_verdict(0.699, 0.700, 1000, threshold_points=0.0) == stats.HIGHER_TOP1
    # fewer images: one is a larger step, past the threshold however it rounds
    assert stats.top1_verdict(0.99164, 0.98886, 359) == stats.LOWER_TOP1
    assert stats.top1_verdict(0.5, 0.5 + 1e-7, 1000) == stats.SAME_TOP1  # not an image
