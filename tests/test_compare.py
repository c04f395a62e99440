"""`edgebench compare`: ratio of medians with a bootstrap CI, Mann-Whitney U, and the verdict."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.errors import EdgebenchError, StoreError
from harness.report import run_compare
from harness.report.compare import (
    IMPROVEMENT,
    NEWLY_FAILING,
    NO_CHANGE,
    ONLY_A,
    ONLY_B,
    REGRESSION,
    classify,
    compare_runs,
    median_ratio,
)
from harness.store import Store
from tests.test_report_synthetic import FINGERPRINT, add_job, lognormal_ns


def test_median_ratio_matches_numpy_and_covers_the_true_ratio() -> None:
    a = lognormal_ns(10.0, n=300, seed=1) / 1e6
    b = lognormal_ns(11.0, n=300, seed=2) / 1e6
    r = median_ratio(a, b)
    assert r.ratio == pytest.approx(np.median(b) / np.median(a), rel=1e-12)
    assert r.low < 1.1 < r.high
    assert r.low < r.ratio < r.high


def test_bootstrap_ci_has_close_to_nominal_coverage() -> None:
    # 60 independent experiments with a known true ratio of 1.2: a 95% interval should miss
    # about 3 times; a broken one (too narrow, or centred wrong) misses far more often.
    misses = 0
    for k in range(60):
        a = lognormal_ns(5.0, n=120, sigma=0.1, seed=1000 + k) / 1e6
        b = lognormal_ns(6.0, n=120, sigma=0.1, seed=2000 + k) / 1e6
        r = median_ratio(a, b, n_resamples=500, seed=k)
        misses += not (r.low <= 1.2 <= r.high)
    assert misses <= 8


def test_degenerate_samples_give_nan_not_a_crash() -> None:
    assert np.isnan(median_ratio([], [1.0]).ratio)
    single = median_ratio([2.0], [4.0])
    assert single.ratio == 2.0 and np.isnan(single.low)


@pytest.mark.parametrize(
    ("ratio", "p", "verdict"),
    [
        (1.10, 0.001, REGRESSION),
        (0.90, 0.001, IMPROVEMENT),
        (1.10, 0.20, NO_CHANGE),  # large but not significant
        (1.02, 1e-9, NO_CHANGE),  # significant but below the threshold
        (0.97, 1e-9, NO_CHANGE),
        (float("nan"), 0.0, NO_CHANGE),
    ],
)
def test_classify(ratio: float, p: float, verdict: str) -> None:
    assert classify(ratio, p, threshold=0.05, alpha=0.05) == verdict


def _two_runs(tmp_path: Path, shifts: dict[str, float], fingerprint_b=None, n: int = 400):
    """Run A: three models at 10/20/5 ms; run B: the same, each scaled by shifts[model]."""
    store = Store(tmp_path / "x.db")
    medians = {"alpha": 10.0, "beta": 20.0, "gamma": 5.0}
    run_a = store.begin_run("a", None, ["pi5"])
    for i, (model, med) in enumerate(medians.items()):
        add_job(store, run_a, model, samples_ns=lognormal_ns(med, n=n, seed=i))
    store.finish_run(run_a)
    run_b = store.begin_run("b", None, ["pi5"])
    for i, (model, med) in enumerate(medians.items()):
        add_job(
            store,
            run_b,
            model,
            fingerprint=fingerprint_b,
            samples_ns=lognormal_ns(med * shifts.get(model, 1.0), n=n, seed=50 + i),
        )
    store.finish_run(run_b)
    return store, run_a, run_b


def test_no_shift_means_no_significant_change(tmp_path: Path) -> None:
    store, a, b = _two_runs(tmp_path, {})
    result = compare_runs(store, a, b)
    assert list(result.table["verdict"]) == [NO_CHANGE] * 3
    assert result.regressions.empty
    for row in result.table.itertuples():
        assert row.ratio_ci95_low < 1.0 < row.ratio_ci95_high


def test_a_real_shift_is_called_and_only_there(tmp_path: Path) -> None:
    store, a, b = _two_runs(tmp_path, {"alpha": 1.12, "gamma": 0.85, "beta": 1.02})
    table = compare_runs(store, a, b).table.set_index("model")
    assert table.loc["alpha", "verdict"] == REGRESSION
    assert table.loc["gamma", "verdict"] == IMPROVEMENT
    # 2% slower with 400 samples each is detectable but below the 5% threshold.
    assert table.loc["beta", "verdict"] == NO_CHANGE
    assert table.loc["beta", "p_value"] < 0.05
    alpha_a = np.asarray(store.samples(table.loc["alpha", "job_id_a"]), float)
    alpha_b = np.asarray(store.samples(table.loc["alpha", "job_id_b"]), float)
    assert table.loc["alpha", "ratio"] == pytest.approx(np.median(alpha_b) / np.median(alpha_a))
    expected_p = stats.mannwhitneyu(alpha_a, alpha_b, alternative="two-sided").pvalue
    assert table.loc["alpha", "p_value"] == pytest.approx(expected_p)
    assert table.loc["alpha", "ratio_ci95_low"] > 1.05


def test_threshold_decides_what_counts(tmp_path: Path) -> None:
    store, a, b = _two_runs(tmp_path, {"alpha": 1.12})
    table = compare_runs(store, a, b, threshold=0.2).table.set_index("model")
    assert table.loc["alpha", "verdict"] == NO_CHANGE


def test_fail_on_regression_sets_the_exit_code(tmp_path: Path, capsys) -> None:
    store, a, b = _two_runs(tmp_path, {"alpha": 1.15})
    store.close()
    db = tmp_path / "x.db"
    assert run_compare(db, a, b) == 0
    assert run_compare(db, a, b, fail_on_regression=True) == 1
    out = capsys.readouterr().out
    assert "regression" in out and "alpha" in out and a in out and b in out
    assert run_compare(db, a, a, fail_on_regression=True) == 0


def test_jobs_in_one_run_only_and_new_failures(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    a = store.begin_run("a", None, ["pi5"])
    add_job(store, a, "kept", samples_ns=lognormal_ns(10, seed=1))
    add_job(store, a, "dropped", samples_ns=lognormal_ns(10, seed=2))
    add_job(store, a, "breaks", samples_ns=lognormal_ns(10, seed=3))
    b = store.begin_run("b", None, ["pi5"])
    add_job(store, b, "kept", samples_ns=lognormal_ns(10, seed=4))
    add_job(store, b, "added", samples_ns=lognormal_ns(10, seed=5))
    add_job(store, b, "breaks", status="failed")
    result = compare_runs(store, a, b)
    verdicts = dict(zip(result.table["model"], result.table["verdict"], strict=True))
    assert verdicts == {
        "kept": NO_CHANGE,
        "dropped": ONLY_A,
        "breaks": NEWLY_FAILING,
        "added": ONLY_B,
    }
    assert list(result.regressions["model"]) == ["breaks"]


def test_different_fingerprints_are_refused_unless_allowed(tmp_path: Path, capsys) -> None:
    other = copy.deepcopy(FINGERPRINT)
    other["cpu"]["model"] = "Another CPU"
    other["temp_c"] = 55.0  # momentary, not part of what a device is
    store, a, b = _two_runs(tmp_path, {}, fingerprint_b=other)
    with pytest.raises(EdgebenchError, match=r"cpu\.model") as err:
        compare_runs(store, a, b)
    assert a in str(err.value) and b in str(err.value) and "temp" not in str(err.value)
    result = compare_runs(store, a, b, allow_different_devices=True)
    assert result.fingerprint_differences == {"pi5": ["cpu.model"]}
    store.close()
    assert run_compare(tmp_path / "x.db", a, b, allow_different_devices=True) == 0
    assert "differs between the runs" in capsys.readouterr().out


def test_unknown_run_and_missing_database(tmp_path: Path) -> None:
    store, a, _ = _two_runs(tmp_path, {})
    store.close()
    with pytest.raises(StoreError, match="nosuchrun"):
        run_compare(tmp_path / "x.db", a, "nosuchrun")
    with pytest.raises(StoreError, match="missing.db"):
        run_compare(tmp_path / "missing.db", "latest", "latest")
    assert not (tmp_path / "missing.db").exists()


def test_fingerprints_are_compared_job_by_job(tmp_path: Path) -> None:
    """A fingerprint names the job's runtime version, so jobs of one run differ legitimately."""

    def fingerprint(runtime: str, version: str) -> dict:
        return {**FINGERPRINT, "runtimes": {runtime: version}}

    store = Store(tmp_path / "x.db")
    runs = []
    for k, tflite_version in enumerate(("2.3.0", "2.3.0", "2.4.0")):
        run = store.begin_run("t", None, ["pi5"])
        jobs = [
            ("onnxruntime", fingerprint("onnxruntime", "1.32.0"), 10.0),
            ("tflite", fingerprint("tflite", tflite_version), 9.0),
        ]
        for runtime, fp, median in jobs if k != 1 else jobs[::-1]:  # job order must not matter
            add_job(
                store,
                run,
                "net",
                runtime=runtime,
                fingerprint=fp,
                samples_ns=lognormal_ns(median, seed=k),
            )
        add_job(store, run, "broken", status="failed", fingerprint={})
        runs.append(run)
    same = compare_runs(store, runs[0], runs[1])
    assert same.fingerprint_differences == {}
    with pytest.raises(EdgebenchError, match=r"pi5: runtimes\.tflite"):
        compare_runs(store, runs[1], runs[2])


def test_long_runs_are_thinned_for_the_bootstrap_but_not_for_the_ratio() -> None:
    a = lognormal_ns(2.0, n=30_000, seed=3) / 1e6
    b = lognormal_ns(2.2, n=30_000, seed=4) / 1e6
    r = median_ratio(a, b, max_samples=2000)
    assert r.ratio == pytest.approx(np.median(b) / np.median(a), rel=1e-12)
    assert r.low < r.ratio < r.high and r.low < 1.1 < r.high
    # The interval is as wide as that of 2000 samples: thinning is what sets its width.
    full = median_ratio(a[:2000], b[:2000])
    assert (r.high - r.low) == pytest.approx(full.high - full.low, rel=0.3)
    assert median_ratio(a, b, max_samples=2000) == r  # seeded: reproducible
