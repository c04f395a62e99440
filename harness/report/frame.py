"""Results as pandas DataFrames: the one layer every table, plot and comparison reads from.

`results_frame` turns store rows into a frame with exactly the documented result columns, typed
from the schema in `harness.results` (nullable integer and boolean dtypes, so "not measured" stays
distinct from 0 or False). `SessionReader` reads what lies below a measurement row, once: the
session medians that every interval and verdict is computed from, each session's memory peaks,
and the raw samples the distribution plots draw. `with_baselines` joins each compressed artifact
to its fp32 parent measured in the same run, on the same device, with the same format, runtime
and thread count, so that speedup (with its 95% interval from the session medians), size ratio
and accuracy delta are columns; `with_memory_ranges` adds the range of each memory peak over the
sessions. `pareto_front` marks the artifacts no other one beats on both latency and accuracy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.report import stats
from harness.results import RESULT_COLUMNS, Column

if TYPE_CHECKING:
    from harness.store import Store

_DTYPES = {"real": "float64", "int": "Int64", "bool": "boolean"}

# What pairs an artifact with its baseline within a run (the model differs, by definition).
PAIR_KEYS = ("device", "format", "runtime", "threads")
# What pairs a measurement with itself across runs (compare, the nightly's gate, trends); the
# instruction set is not a key but a verdict: another ISA is paired and not judged on speed.
JOB_KEYS = ("device", "model", "format", "runtime", "threads", "batch")

DERIVED_COLUMNS = (
    "is_baseline",
    "baseline_job_id",
    "baseline_latency_median_ms",
    "speedup",
    "speedup_ci95_low",
    "speedup_ci95_high",
    "speedup_paired",
    "size_ratio",
    "accuracy_top1_delta",
    "accuracy_top5_delta",
)


def frame_from_rows(rows: Sequence[dict[str, Any]],
                    schema: Sequence[Column] = RESULT_COLUMNS) -> pd.DataFrame:
    """Store rows as a frame with every column of `schema` (the results' unless given), in its
    order and dtypes."""
    raw = pd.DataFrame(list(rows), columns=[c.name for c in schema])
    columns: dict[str, pd.Series] = {}
    for column in schema:
        values = raw[column.name]
        if column.kind in ("real", "int"):
            values = pd.to_numeric(values).astype(_DTYPES[column.kind])
        elif column.kind == "bool":
            values = values.astype(_DTYPES[column.kind])
        elif column.kind == "json":
            # lists and dicts as they are, not strings, and never coerced to a numeric dtype
            values = values.astype(object)
        columns[column.name] = values
    # built at once: a hundred columns assigned one by one leave a fragmented frame
    return pd.DataFrame(columns, index=raw.index)


def results_frame(store: Store, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    return frame_from_rows(store.results(run_ids))


def distinct(df: pd.DataFrame, column: str) -> list[str]:
    """The different non-empty values of a text column, sorted ([] when the frame lacks it):
    the ISAs or GPUs a device's figures were measured on."""
    if column not in df:
        return []
    return sorted({str(v) for v in df[column].dropna() if str(v)})


def flatten(data: Any) -> dict[str, Any]:
    """A nested dict (fingerprint, device state) as dotted keys; {} for anything else."""
    if not isinstance(data, dict) or not data:
        return {}
    return dict(pd.json_normalize(data).iloc[0].to_dict())


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


_EMPTY_MEDIANS = pd.Series([], index=pd.Index([], dtype="int64", name="session"), dtype="float64")
# The memory peaks of a session that the report shows a spread of: the process's (the tables'
# Peak RSS) and the timed window's.
SESSION_PEAKS = ("peak_rss_mb", "timed_peak_rss_mb")


class SessionReader:
    """The sessions below measurement rows, read from the store once.

    `medians(job_id)`: the medians (ms) of the measurement's ok sessions (those a log can
    take), by session number: the unit of every interval and verdict. Session rows are small
    and kept; `prefetch` reads those of many measurements in one query. `samples_ms(job_id)`:
    all raw samples, in ms, for the distribution plots; a bounded cache, because trends over 30
    nightly runs of a large suite would not fit in memory at once, and they are read pairwise,
    run after run. `peaks(job_id)`: the memory peaks (`SESSION_PEAKS`, MiB) of its ok sessions,
    the ones its row's medians are of, by session number.
    """

    def __init__(self, store: Store, max_cached_samples: int = 256) -> None:
        self._store = store
        self._medians: dict[str, pd.Series] = {}
        self._peaks: dict[str, pd.DataFrame] = {}
        self.samples_ms = functools.lru_cache(maxsize=max_cached_samples)(self._read_samples)

    def prefetch(self, job_ids: Iterable[str]) -> None:
        todo = sorted({j for j in job_ids if isinstance(j, str) and j not in self._medians})
        if not todo:
            return
        found: dict[str, dict[int, float]] = {j: {} for j in todo}
        peaks: dict[str, dict[int, list[float]]] = {j: {} for j in todo}
        for row in self._store.sessions(todo):
            if row["status"] != "ok":
                continue
            peaks[row["job_id"]][int(row["session"])] = [
                math.nan if row[name] is None else float(row[name]) for name in SESSION_PEAKS]
            # as the headline: a session whose median has no log (0, NaN) is left out
            if stats.has_log(row["median_ms"]):
                found[row["job_id"]][int(row["session"])] = float(row["median_ms"])
        for job_id, by_session in peaks.items():
            self._peaks[job_id] = pd.DataFrame.from_dict(
                by_session, orient="index", columns=list(SESSION_PEAKS), dtype="float64"
            ).rename_axis("session").sort_index()
        for job_id, medians in found.items():
            self._medians[job_id] = (
                pd.Series(medians, dtype="float64").rename_axis("session").sort_index()
                if medians
                else _EMPTY_MEDIANS
            )

    def medians(self, job_id: object) -> pd.Series:
        if not isinstance(job_id, str):  # a missing job (None, NaN from a join): no sessions
            return _EMPTY_MEDIANS
        if job_id not in self._medians:
            self.prefetch([job_id])
        return self._medians[job_id]

    def peaks(self, job_id: object) -> pd.DataFrame:
        if not isinstance(job_id, str):
            return pd.DataFrame(columns=list(SESSION_PEAKS), dtype="float64")
        if job_id not in self._peaks:
            self.prefetch([job_id])
        return self._peaks[job_id]

    def _read_samples(self, job_id: str) -> np.ndarray:
        return np.asarray(self._store.samples(job_id), dtype=np.float64) / 1e6


def in_run_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of several runs in the order the runs were begun: by `run_order` (their place in
    `Store.runs`, which a history adds) where there is one, else by `run_started_at` and run id.
    Not by the clock alone: a host whose clock was set back dated its run before the others."""
    keys = ["run_order"] if "run_order" in df else ["run_started_at", "run_id"]
    return df.sort_values(keys, kind="stable")


def speedup_interval(
    variant: pd.Series, baseline: pd.Series, *, confidence: float = stats.CONFIDENCE
) -> stats.RatioCI:
    """Speedup (baseline / variant, > 1 is faster) of two measurements of one run from their
    session medians, indexed by session.

    Paired by session: session k of every artifact ran back to back, so drift over the run
    cancels in the per-session ratios. Paired on the sessions both have when they share two or
    more: a session one side lost (failed, pruned) or a round `--max-sessions` added for one side
    alone is left out, where it used to drop the pairing for Welch's interval over all sessions
    (which covered 91% with 2 sessions against 5). Otherwise Welch's interval.
    """
    shared = variant.index.intersection(baseline.index)
    if len(shared) >= 2:
        return stats.ratio_interval(variant[shared].to_numpy(), baseline[shared].to_numpy(),
                                    paired=True, confidence=confidence)
    return stats.ratio_interval(
        variant.to_numpy(), baseline.to_numpy(), paired=False, confidence=confidence
    )


def with_baselines(
    df: pd.DataFrame,
    store: Store | None = None,
    *,
    sessions: SessionReader | None = None,
    confidence: float = stats.CONFIDENCE,
) -> pd.DataFrame:
    """`df` plus the derived columns (DERIVED_COLUMNS), one row per input row, same order.

    speedup: how many times faster than its baseline a row ran (> 1 is faster); size_ratio =
    size / baseline size; accuracy deltas are differences of fractions (multiply by 100 for
    percentage points). A baseline row has speedup and size ratio 1 by definition; a row whose
    baseline is missing or did not measure gets NaN, never a made-up number.

    With the sessions (a `store`, or a `SessionReader` of it to share its cache), speedup is the
    ratio of the geometric means of the session medians, baseline over variant, with its 95%
    interval (`speedup_interval`), so that the figure and its interval are one estimate, paired
    on the sessions both ran: where both ran the same ones, the ratio of the two headlines (each
    the geometric mean of its session medians). Without the sessions, or for a measurement
    without session rows, it is the ratio of the headlines and has no interval
    (`tables.SPEEDUP_DEFINITION` is what the report says).
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
    out["speedup_paired"] = pd.array([pd.NA] * len(out), dtype="boolean")
    if sessions is None and store is not None:
        sessions = SessionReader(store)
    if sessions is not None:
        _fill_speedup_ci(out, sessions, confidence=confidence)
    return out


def _fill_speedup_ci(out: pd.DataFrame, sessions: SessionReader, *, confidence: float) -> None:
    todo = out.index[~out["is_baseline"] & out["speedup"].notna()]
    sessions.prefetch([*out.loc[todo, "job_id"], *out.loc[todo, "baseline_job_id"]])
    for i in todo:
        variant = sessions.medians(out.at[i, "job_id"])
        baseline = sessions.medians(out.at[i, "baseline_job_id"])
        if variant.empty or baseline.empty:
            continue  # no session rows: keep the ratio of the headlines, without an interval
        ci = speedup_interval(variant, baseline, confidence=confidence)
        out.at[i, "speedup"] = ci.ratio
        out.at[i, "speedup_paired"] = ci.paired
        if not (math.isnan(ci.low) or math.isnan(ci.high)):
            out.at[i, "speedup_ci95_low"] = ci.low
            out.at[i, "speedup_ci95_high"] = ci.high


def with_memory_ranges(df: pd.DataFrame, sessions: SessionReader) -> pd.DataFrame:
    """`df` plus `<peak>_min_mb` and `<peak>_max_mb` for each of `SESSION_PEAKS`: the lowest
    and highest of the measurement's sessions, whose median its row holds. A range, not an
    interval: a memory peak is nearly the same from one fresh process to the next, a t
    interval over the three to five sessions of a run would be wide for want of sessions
    (12.7 times the spread with two), and the range says what was seen. NaN where fewer than
    two sessions recorded the peak: one session has no spread."""
    out = df.copy()
    sessions.prefetch(out["job_id"])
    for name in SESSION_PEAKS:
        low, high = [], []
        for job_id in out["job_id"]:
            values = sessions.peaks(job_id)[name].dropna()
            enough = values.size >= 2
            low.append(float(values.min()) if enough else math.nan)
            high.append(float(values.max()) if enough else math.nan)
        stem = name.removesuffix("_mb")
        out[f"{stem}_min_mb"] = np.asarray(low, dtype="float64")
        out[f"{stem}_max_mb"] = np.asarray(high, dtype="float64")
    return out


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
