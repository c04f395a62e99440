"""Results as pandas DataFrames: the one layer every table, plot and comparison reads from.

`results_frame` turns store rows into a frame with exactly the documented result columns (nullable
integer and boolean dtypes, so "not measured" stays distinct from 0 or False). `with_baselines`
joins each compressed artifact to its fp32 parent measured in the same run, on the same device,
with the same format, runtime and thread count, so that speedup, size ratio and accuracy delta
are columns; with a store it also bootstraps the 95% confidence interval of each speedup from the
raw samples.
`pareto_front` marks the artifacts no other one beats on both latency and accuracy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.store import JSON_FIELDS, RESULT_COLUMNS, RESULT_FIELDS, Store

INTEGER_FIELDS = tuple(n for n, t in RESULT_COLUMNS if t.startswith("INTEGER"))
REAL_FIELDS = tuple(n for n, t in RESULT_COLUMNS if t.startswith("REAL"))
BOOL_FIELDS = ("stable", "throttled")

# What makes two rows "the same job": within a run it pairs an artifact with its baseline (minus
# the model), across runs it pairs a job with itself.
PAIR_KEYS = ("device", "format", "runtime", "threads")
JOB_KEYS = ("device", "model", "format", "runtime", "threads", "batch")

DERIVED_COLUMNS = (
    "is_baseline",
    "baseline_job_id",
    "baseline_latency_median_ms",
    "speedup",
    "speedup_ci95_low",
    "speedup_ci95_high",
    "size_ratio",
    "accuracy_top1_delta",
    "accuracy_top5_delta",
)


def frame_from_rows(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Store rows as a frame with every documented column, in the documented order and dtypes."""
    df = pd.DataFrame(list(rows), columns=list(RESULT_FIELDS))
    for name in INTEGER_FIELDS:
        if name not in BOOL_FIELDS:
            df[name] = pd.to_numeric(df[name]).astype("Int64")
    for name in REAL_FIELDS:
        df[name] = pd.to_numeric(df[name]).astype("float64")
    for name in BOOL_FIELDS:
        df[name] = df[name].astype("boolean")
    for name in JSON_FIELDS:
        df[name] = df[name].astype(object)
    return df


def results_frame(store: Store, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    return frame_from_rows(store.results(run_ids))


def _as_set(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def select(
    df: pd.DataFrame,
    *,
    run: str | Iterable[str] | None = None,
    device: str | Iterable[str] | None = None,
    model: str | Iterable[str] | None = None,
    technique: str | Iterable[str] | None = None,
    runtime: str | Iterable[str] | None = None,
    status: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Rows matching every filter given; each filter takes one value or several."""
    mask = pd.Series(True, index=df.index)
    for column, wanted in (
        ("run_id", run),
        ("device", device),
        ("model", model),
        ("technique", technique),
        ("runtime", runtime),
        ("status", status),
    ):
        if wanted is not None:
            mask &= df[column].isin(_as_set(wanted))
    return df[mask]


def sample_reader(store: Store) -> Callable[[str], np.ndarray]:
    """Raw samples of a job, in ms, read from the store once. Bounded cache: trends over 30
    nightly runs of a large suite would not fit in memory at once, and they are read pairwise,
    run after run."""

    @functools.lru_cache(maxsize=256)
    def samples_ms(job_id: str) -> np.ndarray:
        return np.asarray(store.samples(job_id), dtype=np.float64) / 1e6

    return samples_ms


def with_baselines(
    df: pd.DataFrame,
    store: Store | None = None,
    *,
    samples: Callable[[str], np.ndarray] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """`df` plus the derived columns (DERIVED_COLUMNS), one row per input row, same order.

    speedup = baseline median / median (> 1 is faster); size_ratio = size / baseline size;
    accuracy deltas are differences of fractions (multiply by 100 for percentage points). A
    baseline row has speedup and size ratio 1 by definition; a row whose baseline is missing or
    did not measure gets NaN, never a made-up number. The speedup CI needs the raw samples, so it
    is filled only when `store` (or a `samples` reader of it, to share its cache) is given.
    """
    out = df.reset_index(drop=True).copy()
    keys = ["run_id", *PAIR_KEYS]
    parents = out.assign(_ok=out["status"].eq("ok"))
    parents = (
        parents.sort_values("_ok", ascending=False, kind="stable")
        .drop_duplicates([*keys, "model"])
        .loc[
            :,
            [
                *keys,
                "model",
                "job_id",
                "latency_median_ms",
                "size_bytes",
                "accuracy_top1",
                "accuracy_top5",
            ],
        ]
        .rename(
            columns={
                "model": "baseline",
                "job_id": "baseline_job_id",
                "latency_median_ms": "baseline_latency_median_ms",
                "size_bytes": "_base_size",
                "accuracy_top1": "_base_top1",
                "accuracy_top5": "_base_top5",
            }
        )
    )
    merged = out.merge(parents, on=[*keys, "baseline"], how="left", validate="many_to_one")
    merged.index = out.index

    is_baseline = out["baseline"].isna()
    out["is_baseline"] = is_baseline
    out["baseline_job_id"] = merged["baseline_job_id"].where(~is_baseline, out["job_id"])
    median = out["latency_median_ms"]
    base_median = merged["baseline_latency_median_ms"].where(~is_baseline, median)
    out["baseline_latency_median_ms"] = base_median
    out["speedup"] = base_median / median
    size = out["size_bytes"].astype("float64")
    base_size = merged["_base_size"].astype("float64").where(~is_baseline, size)
    out["size_ratio"] = size / base_size
    for k in ("top1", "top5"):
        acc = out[f"accuracy_{k}"]
        out[f"accuracy_{k}_delta"] = acc - merged[f"_base_{k}"].where(~is_baseline, acc)
    out["speedup_ci95_low"] = np.nan
    out["speedup_ci95_high"] = np.nan
    if samples is None and store is not None:
        samples = sample_reader(store)
    if samples is not None:
        _fill_speedup_ci(out, samples, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return out


def _fill_speedup_ci(
    out: pd.DataFrame,
    samples: Callable[[str], np.ndarray],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> None:
    from harness.report.compare import median_ratio

    todo = out.index[~out["is_baseline"] & out["speedup"].notna()]
    for i in todo:
        # speedup = median(baseline) / median(variant): the variant is the "a" of the ratio
        ratio = median_ratio(
            samples(out.at[i, "job_id"]),
            samples(out.at[i, "baseline_job_id"]),
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
        out.at[i, "speedup_ci95_low"] = ratio.low
        out.at[i, "speedup_ci95_high"] = ratio.high


def pareto_front(df: pd.DataFrame, x: str, y: str) -> pd.Series:
    """True where no other row has x <= and y >= with one of them strict (lower x, higher y win).

    Rows missing x or y are never on the front. Quadratic, which is fine for the tens of
    artifacts a report holds, and exact for ties (equal points are both on the front).
    """
    valid = df[x].notna() & df[y].notna()
    xs = df.loc[valid, x].to_numpy(dtype=float)
    ys = df.loc[valid, y].to_numpy(dtype=float)
    no_worse = (xs[None, :] <= xs[:, None]) & (ys[None, :] >= ys[:, None])
    better = (xs[None, :] < xs[:, None]) | (ys[None, :] > ys[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = pd.Series(False, index=df.index)
    front[valid[valid].index] = ~dominated
    return front


def variant_label(row: pd.Series) -> str:
    """How an artifact is named in plots: its technique, or fp32 for a baseline."""
    technique = row.get("technique")
    if isinstance(technique, str) and technique:
        return technique
    return "fp32" if pd.isna(row.get("baseline")) else str(row.get("model"))
