"""The pandas layer: documented columns and their types, filters, session medians, the baseline
join and its speedup interval, Pareto."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from harness.report import frame
from harness.results import RESULT_COLUMNS, RESULT_FIELDS
from harness.store import Store
from tests.conftest import loaded_after_import
from tests.test_report_synthetic import add_job, demo_store, lognormal_ns, sessions_ns


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, pd.DataFrame]:
    store, run = demo_store(tmp_path_factory.mktemp("frame") / "x.db")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    return store, run, df


def _row(df: pd.DataFrame, device: str, model: str) -> pd.Series:
    rows = df[(df["device"] == device) & (df["model"] == model)]
    assert len(rows) == 1
    return rows.iloc[0]


def _session_medians(store: Store, job_id: str) -> np.ndarray:
    return np.array([np.median(s) / 1e6 for s in store.session_samples(job_id)])


def test_frame_has_the_documented_columns_and_keeps_missing_apart_from_zero(demo) -> None:
    store, run, _ = demo
    df = frame.results_frame(store, [run])
    assert list(df.columns) == list(RESULT_FIELDS)
    mobilenet = _row(df, "pi5", "mobilenet_v3")
    assert pd.isna(mobilenet["accuracy_top1"])  # latency-only: n/a, never 0
    assert _row(df, "pi5", "resnet_18&v2")["accuracy_top1"] == pytest.approx(0.70)
    expected = {"int": "Int64", "real": "float64", "bool": "boolean", "json": "object"}
    for column in RESULT_COLUMNS:
        if column.kind in expected:
            assert str(df[column.name].dtype) == expected[column.kind], column.name
    assert isinstance(mobilenet["device_fingerprint"], dict)
    assert _row(df, "pi5", "mobilenet_v3-fp16")["flags"] == ["high_between_session_spread"]
    assert pd.isna(_row(df, "pi5", "mobilenet_v3-int8")["stable"])  # failed: not "unstable"


def test_frame_does_not_import_compare() -> None:
    # compare reads the frame; the other way round would make the two one tangle again
    assert loaded_after_import("harness.report.frame", ("harness.report.compare",)) == []


def test_session_reader_gives_the_medians_of_ok_sessions_by_number(demo) -> None:
    store, _, df = demo
    reader = frame.SessionReader(store)
    job = _row(df, "jetson", "resnet_18&v2")["job_id"]
    medians = reader.medians(job)
    assert list(medians.index) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(medians.to_numpy(), _session_medians(store, job), rtol=1e-12)
    # the headline is their geometric mean
    assert np.exp(np.log(medians).mean()) == pytest.approx(
        _row(df, "jetson", "resnet_18&v2")["latency_median_ms"], rel=1e-12
    )
    failed = _row(df, "pi5", "mobilenet_v3-int8")["job_id"]
    assert reader.medians(failed).empty  # its one session failed: no median to count
    assert reader.medians(float("nan")).empty  # a missing baseline
    samples = reader.samples_ms(job)
    assert samples.size == 1000 and samples[0] == store.session_samples(job)[0][0] / 1e6


def test_select_filters_by_each_field(demo) -> None:
    _, run, df = demo
    assert set(frame.select(df, device="jetson")["device"]) == {"jetson"}
    assert len(frame.select(df, run=run, device="pi5", model=["mobilenet_v3", "x"])) == 1
    assert set(frame.select(df, technique="int8")["model"]) == {
        "resnet_18&v2-int8",
        "mobilenet_v3-int8",
    }
    assert frame.select(df, runtime="tflite").empty
    assert len(frame.select(df, status="failed")) == 1


def test_speedup_and_its_paired_interval_match_a_direct_computation(demo) -> None:
    store, _, df = demo
    variant = _row(df, "pi5", "resnet_18&v2-int8")
    base = _row(df, "pi5", "resnet_18&v2")
    assert variant["baseline_job_id"] == base["job_id"]
    # Session k of both ran back to back: the interval comes from the per-session log ratios.
    d = np.log(_session_medians(store, base["job_id"])) - np.log(
        _session_medians(store, variant["job_id"])
    )
    half = scipy_stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    assert variant["speedup_paired"]
    assert variant["speedup"] == pytest.approx(math.exp(d.mean()), rel=1e-9)
    assert variant["speedup_ci95_low"] == pytest.approx(math.exp(d.mean() - half), rel=1e-9)
    assert variant["speedup_ci95_high"] == pytest.approx(math.exp(d.mean() + half), rel=1e-9)
    # The population medians are 20 ms and 8 ms: the interval must cover 2.5.
    assert variant["speedup_ci95_low"] < 2.5 < variant["speedup_ci95_high"]
    assert variant["speedup_ci95_high"] / variant["speedup_ci95_low"] < 1.2


def test_speedup_is_paired_on_the_sessions_both_ran(tmp_path: Path) -> None:
    """Found in an audit: a variant one session short of its baseline (a failed session, or a
    round `--max-sessions` added for one side alone) lost the pairing for Welch's interval over
    all sessions, which covers 91% with 2 sessions against 5. Session k of each still ran back
    to back: the speedup is paired on the sessions both have."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", samples_ns=sessions_ns(10, sessions=5, seed=1))
    add_job(store, run, "net-int8", baseline="net", samples_ns=sessions_ns(5, sessions=4, seed=2))
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    variant = df[df["model"] == "net-int8"].iloc[0]
    lv = np.log(_session_medians(store, variant["job_id"]))
    lb = np.log(_session_medians(store, variant["baseline_job_id"]))[:4]  # sessions 0-3
    d = lb - lv
    half = scipy_stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert variant["speedup_paired"]
    assert variant["speedup"] == pytest.approx(math.exp(d.mean()), rel=1e-9)
    assert variant["speedup_ci95_low"] == pytest.approx(math.exp(d.mean() - half), rel=1e-9)
    assert variant["speedup_ci95_high"] == pytest.approx(math.exp(d.mean() + half), rel=1e-9)


def test_speedup_interval_is_welch_when_fewer_than_two_sessions_pair() -> None:
    variant = pd.Series([5.0, 5.2], index=pd.Index([3, 4], name="session"))
    baseline = pd.Series([10.0, 10.4, 9.7], index=pd.Index([0, 1, 2], name="session"))
    ci = frame.speedup_interval(variant, baseline)
    lv, lb = np.log(variant.to_numpy()), np.log(baseline.to_numpy())
    va, vb = lv.var(ddof=1) / lv.size, lb.var(ddof=1) / lb.size
    dof = (va + vb) ** 2 / (va**2 / (lv.size - 1) + vb**2 / (lb.size - 1))
    half = scipy_stats.t.ppf(0.975, dof) * math.sqrt(va + vb)
    diff = lb.mean() - lv.mean()
    assert not ci.paired
    assert (ci.low, ci.high) == pytest.approx((math.exp(diff - half), math.exp(diff + half)))


def test_size_ratio_and_accuracy_delta_come_from_the_baseline_on_the_same_device(demo) -> None:
    _, _, df = demo
    pruned = _row(df, "jetson", "resnet_18&v2-pruned50")
    assert pruned["size_ratio"] == pytest.approx(23 / 46)
    assert pruned["accuracy_top1_delta"] == pytest.approx(0.66 - 0.70)
    base = _row(df, "jetson", "resnet_18&v2")
    assert base["is_baseline"] and base["speedup"] == 1.0 and base["size_ratio"] == 1.0
    assert pd.isna(base["speedup_ci95_low"])
    # Latency-only family: speedup yes, accuracy delta n/a.
    fp16 = _row(df, "jetson", "mobilenet_v3-fp16")
    assert fp16["speedup"] > 1 and pd.isna(fp16["accuracy_top1_delta"])
    failed = _row(df, "pi5", "mobilenet_v3-int8")
    assert pd.isna(failed["speedup"]) and pd.isna(failed["speedup_ci95_low"])
    assert failed["size_ratio"] == pytest.approx(0.4)


def test_baseline_join_needs_same_run_device_runtime_and_threads(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", samples_ns=lognormal_ns(10, seed=1), threads=4)
    add_job(store, run, "net-int8", baseline="net", samples_ns=lognormal_ns(5, seed=2), threads=4)
    add_job(store, run, "net-int8", baseline="net", samples_ns=lognormal_ns(6, seed=3), threads=1)
    add_job(
        store, run, "net-int8", baseline="net", samples_ns=lognormal_ns(4, seed=4), runtime="tflite"
    )
    add_job(
        store, run, "net-int8", baseline="net", samples_ns=lognormal_ns(4, seed=5), device="jetson"
    )
    other = store.begin_run("t", None, ["pi5"])
    add_job(store, other, "net-int8", baseline="net", samples_ns=lognormal_ns(5, seed=6))
    df = frame.with_baselines(frame.results_frame(store), store)
    joined = df[df["speedup"].notna() & ~df["is_baseline"]]
    assert len(joined) == 1
    assert joined.iloc[0]["threads"] == 4 and joined.iloc[0]["runtime"] == "onnxruntime"
    assert joined.iloc[0]["speedup"] == pytest.approx(2.0, rel=0.02)
    assert df["speedup"].isna().sum() == 4  # threads 1, tflite, jetson, other run


def test_without_sessions_speedup_is_the_ratio_of_headlines_without_an_interval(demo) -> None:
    store, run, with_sessions = demo
    df = frame.with_baselines(frame.results_frame(store, [run]))
    variant = _row(df, "pi5", "resnet_18&v2-int8")
    base = _row(df, "pi5", "resnet_18&v2")
    assert variant["speedup"] == base["latency_median_ms"] / variant["latency_median_ms"]
    assert pd.isna(variant["speedup_ci95_low"]) and pd.isna(variant["speedup_paired"])
    # with the sessions the figure is their estimate, the ratio of the geometric means of the
    # session medians, which are the headlines: the same figure, now with an interval
    other = _row(with_sessions, "pi5", "resnet_18&v2-int8")
    assert other["speedup"] == pytest.approx(variant["speedup"], rel=1e-12)
    assert other["speedup_paired"] and other["speedup_ci95_low"] < other["speedup"]


def test_failed_baseline_gives_no_speedup(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", status="failed")
    add_job(store, run, "net-int8", baseline="net", samples_ns=lognormal_ns(5, seed=2))
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    assert df["speedup"].isna().all()


def test_pareto_front_on_a_hand_made_set() -> None:
    points = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "latency": [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 3.0, np.nan],
            "accuracy": [0.50, 0.60, 0.55, 0.60, 0.80, 0.80, 0.70, 0.99],
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )
    front = frame.pareto_front(points, "latency", "accuracy")
    # a: fastest; b: best at 2 ms; g: better than b; e: best accuracy, fastest at it.
    # c loses to b, d to b (tie on accuracy, slower) and g, f to e, h has no latency.
    assert front.index.equals(points.index)
    assert sorted(points.loc[front, "name"]) == ["a", "b", "e", "g"]


def test_pareto_front_matches_the_definition_on_random_sets() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        pts = pd.DataFrame(
            {"x": rng.integers(0, 6, 12).astype(float), "y": rng.integers(0, 6, 12).astype(float)}
        )
        front = frame.pareto_front(pts, "x", "y")
        for i, p in pts.iterrows():
            dominated = any(
                q.x <= p.x and q.y >= p.y and (q.x < p.x or q.y > p.y)
                for j, q in pts.iterrows()
                if j != i
            )
            assert front[i] == (not dominated)
