"""The pandas layer: documented columns, filters, the baseline join and its speedup CI, Pareto."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import frame
from harness.store import RESULT_FIELDS, Store
from tests.test_report_synthetic import add_job, demo_store, lognormal_ns


def _numpy_bootstrap_ratio(a: np.ndarray, b: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """An independent percentile bootstrap of median(b)/median(a), written out with numpy."""
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, size=(n, a.size)), axis=1)
    rb = np.median(rng.choice(b, size=(n, b.size)), axis=1)
    low, high = np.percentile(rb / ra, [2.5, 97.5])
    return float(low), float(high)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str, pd.DataFrame]:
    store, run = demo_store(tmp_path_factory.mktemp("frame") / "x.db")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    return store, run, df


def _row(df: pd.DataFrame, device: str, model: str) -> pd.Series:
    rows = df[(df["device"] == device) & (df["model"] == model)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_frame_has_the_documented_columns_and_keeps_missing_apart_from_zero(demo) -> None:
    store, run, _ = demo
    df = frame.results_frame(store, [run])
    assert list(df.columns) == list(RESULT_FIELDS)
    mobilenet = _row(df, "pi5", "mobilenet_v3")
    assert pd.isna(mobilenet["accuracy_top1"])  # latency-only: n/a, never 0
    assert _row(df, "pi5", "resnet_18&v2")["accuracy_top1"] == pytest.approx(0.70)
    assert str(df["params"].dtype) == "Int64" and str(df["stable"].dtype) == "boolean"
    assert isinstance(mobilenet["device_fingerprint"], dict)


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


def test_speedup_and_its_ci_match_a_direct_computation(demo) -> None:
    store, _, df = demo
    variant = _row(df, "pi5", "resnet_18&v2-int8")
    base = _row(df, "pi5", "resnet_18&v2")
    assert variant["baseline_job_id"] == base["job_id"]
    v_ms = np.asarray(store.samples(variant["job_id"]), float) / 1e6
    b_ms = np.asarray(store.samples(base["job_id"]), float) / 1e6
    assert variant["speedup"] == pytest.approx(np.median(b_ms) / np.median(v_ms), rel=1e-12)
    low, high = _numpy_bootstrap_ratio(v_ms, b_ms, n=4000, seed=123)
    assert variant["speedup_ci95_low"] == pytest.approx(low, rel=0.004)
    assert variant["speedup_ci95_high"] == pytest.approx(high, rel=0.004)
    # The population medians are 20 ms and 8 ms: the interval must cover 2.5 and be tight.
    assert variant["speedup_ci95_low"] < 2.5 < variant["speedup_ci95_high"]
    assert variant["speedup_ci95_high"] - variant["speedup_ci95_low"] < 0.1


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
