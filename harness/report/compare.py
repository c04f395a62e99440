"""Whether run B is slower or faster than run A, measurement by measurement: `edgebench compare`
and the nightly trend.

Measurements of the two runs are paired by what they measured (JOB_KEYS: device, model, format,
runtime, threads, batch) and judged on their session medians, the unit of a measurement: the
ratio B / A of their geometric means with a Welch t interval (the two runs are separate in time,
so their sessions are not paired), and `stats.verdict` with a practical threshold T. A pair is
slower or faster only when the whole 95% interval lies beyond 1 +/- T, no change when it lies
within, inconclusive otherwise; noise alone almost never gives the first two. A pair measured
on CPUs with different instruction sets (the `isa` of its fingerprint) gets "different
instruction set" and never a speed verdict: other kernels ran. Runs whose device fingerprints
differ are refused unless allowed, in the spirit of pyperf's refusal to mix incompatible
benchmarks. The rich table of the comparison is in `console.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from harness.errors import EdgebenchError
from harness.report import stats
from harness.report.frame import JOB_KEYS, SessionReader, flatten, results_frame

if TYPE_CHECKING:
    from harness.store import Store

SLOWER = stats.SLOWER
FASTER = stats.FASTER
NO_CHANGE = stats.NO_CHANGE
INCONCLUSIVE = stats.INCONCLUSIVE
NEWLY_FAILING = "newly failing"
FIXED = "fixed"
ONLY_A = "only in A"
ONLY_B = "only in B"
NOT_MEASURED = "not measured"
DIFFERENT_ISA = "different instruction set"
# Verdicts that fail the nightly gate (--fail-on-regression): a confident regression beyond T,
# or a measurement that ran before and fails now.
FAILING_VERDICTS = frozenset({SLOWER, NEWLY_FAILING})

# Fingerprint keys that describe the moment rather than the machine; a difference in them does
# not make two runs incomparable.
_MOMENTARY_KEY_PARTS = ("temp", "cur_freq", "freq_cur", "uptime", "time", "load", "free", "avail")


def judge(
    a_medians: pd.Series | Any,
    b_medians: pd.Series | Any,
    *,
    threshold: float = stats.THRESHOLD,
    isa_a: str | None = None,
    isa_b: str | None = None,
) -> tuple[stats.RatioCI, str]:
    """The ratio B / A of two measurements of different runs from their session medians (ms),
    with its interval and verdict. Instruction sets are compared only when both are known
    (a database upgraded from schema 1 did not record them)."""
    ci = stats.ratio_interval(list(a_medians), list(b_medians), paired=False)
    if isa_a and isa_b and isa_a != isa_b:
        return ci, DIFFERENT_ISA
    if len(a_medians) == 0 or len(b_medians) == 0:
        return ci, NOT_MEASURED
    return ci, stats.verdict(ci, threshold)


def _flat(fingerprint: Any) -> dict[str, Any]:
    return {
        k: v
        for k, v in flatten(fingerprint).items()
        if not any(part in k.rsplit(".", 1)[-1].lower() for part in _MOMENTARY_KEY_PARTS)
    }


def fingerprint_differences(pairs: pd.DataFrame) -> dict[str, list[str]]:
    """Per device, the fingerprint keys whose values differ between paired jobs of A and B.

    Jobs are compared pairwise, not device against device, because a fingerprint also names the
    job's runtime version: an ONNX Runtime job and a LiteRT job of one run legitimately differ.
    """
    diffs: dict[str, set[str]] = {}
    both = pairs[pairs["_merge"] == "both"]
    for device, fp_a, fp_b in zip(
        both["device"], both["device_fingerprint_a"], both["device_fingerprint_b"], strict=True
    ):
        fa, fb = _flat(fp_a), _flat(fp_b)
        if not fa or not fb:  # a job that failed before probing the device says nothing
            continue
        keys = {k for k in set(fa) | set(fb) if repr(fa.get(k)) != repr(fb.get(k))}
        if keys:
            diffs.setdefault(str(device), set()).update(keys)
    return {device: sorted(keys) for device, keys in sorted(diffs.items())}


@dataclass(frozen=True)
class RunComparison:
    run_a: str
    run_b: str
    table: pd.DataFrame  # one row per job key, see COMPARISON_COLUMNS
    fingerprint_differences: dict[str, list[str]]
    threshold: float

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"].isin(FAILING_VERDICTS)]


COMPARISON_COLUMNS = (
    *JOB_KEYS,
    "isa_a",
    "isa_b",
    "job_id_a",
    "job_id_b",
    "status_a",
    "status_b",
    "sessions_a",
    "sessions_b",
    "median_a_ms",  # the headlines: median of session medians
    "median_b_ms",
    "ratio",  # B / A of the geometric means of session medians (> 1: B is slower)
    "ratio_ci95_low",
    "ratio_ci95_high",
    "verdict",
)


# What a pair's verdict and its table row need of each side.
_PAIR_COLUMNS = ("job_id", "status", "isa", "latency_median_ms", "device_fingerprint")


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    threshold: float = stats.THRESHOLD,
    allow_different_devices: bool = False,
) -> RunComparison:
    """Pair the measurements of runs A and B and judge each pair; A is the reference (old)."""
    a_id, b_id = store.resolve_run(run_a), store.resolve_run(run_b)
    both = results_frame(store, [a_id, b_id])
    a = both[both["run_id"] == a_id]
    b = both[both["run_id"] == b_id]
    keys = list(JOB_KEYS)
    kept = [*keys, *_PAIR_COLUMNS]
    pairs = a.drop_duplicates(keys)[kept].merge(
        b.drop_duplicates(keys)[kept],
        on=keys,
        how="outer",
        suffixes=("_a", "_b"),
        indicator=True,
        sort=False,
    )
    diffs = fingerprint_differences(pairs)
    if diffs and not allow_different_devices:
        what = "; ".join(f"{dev}: {', '.join(names)}" for dev, names in diffs.items())
        raise EdgebenchError(
            f"runs {a_id} and {b_id} were measured on different devices or software ({what}"
            " differ); pass --allow-different-devices to compare them anyway"
        )
    sessions = SessionReader(store)
    sessions.prefetch([*a["job_id"], *b["job_id"]])
    rows = [_judge_pair(sessions.medians, row, threshold) for _, row in pairs.iterrows()]
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    return RunComparison(a_id, b_id, table, diffs, threshold)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _judge_pair(
    medians: Callable[[str], pd.Series], row: pd.Series, threshold: float
) -> dict[str, Any]:
    out: dict[str, Any] = {k: row[k] for k in JOB_KEYS}
    for name in ("isa", "job_id", "status"):
        for side in ("a", "b"):
            out[f"{name}_{side}"] = _text(row.get(f"{name}_{side}"))
    nan = math.nan
    a_medians, b_medians = medians(out["job_id_a"]), medians(out["job_id_b"])
    out.update(
        sessions_a=len(a_medians),
        sessions_b=len(b_medians),
        median_a_ms=row.get("latency_median_ms_a", nan),
        median_b_ms=row.get("latency_median_ms_b", nan),
        ratio=nan,
        ratio_ci95_low=nan,
        ratio_ci95_high=nan,
    )
    if row["_merge"] == "left_only":
        out["verdict"] = ONLY_A
        return out
    if row["_merge"] == "right_only":
        out["verdict"] = ONLY_B
        return out
    # A failure is news whatever the instruction set: it is judged before the speed.
    ok_a, ok_b = out["status_a"] == "ok", out["status_b"] == "ok"
    if not (ok_a and ok_b):
        out["verdict"] = NEWLY_FAILING if ok_a else FIXED if ok_b else NOT_MEASURED
        return out
    ci, verdict = judge(
        a_medians, b_medians, threshold=threshold, isa_a=out["isa_a"], isa_b=out["isa_b"]
    )
    out.update(
        ratio=ci.ratio,
        ratio_ci95_low=ci.low,
        ratio_ci95_high=ci.high,
        verdict=verdict,
    )
    return out


def verdicts_over_runs(
    history: pd.DataFrame,
    medians: Callable[[str], pd.Series],
    *,
    threshold: float = stats.THRESHOLD,
) -> pd.Series:
    """For each ok row of `history` (several runs, with `run_started_at`), its verdict against the
    same measurement (JOB_KEYS) in the previous run that measured it; "" for its first run.

    The nightly view of `compare_runs`, by the same rule (`judge`).
    """
    verdicts = pd.Series("", index=history.index, dtype=object)
    ok = history[history["status"] == "ok"].sort_values(["run_started_at", "run_id"])
    for _, series in ok.groupby(list(JOB_KEYS), dropna=False, sort=False):
        rows = list(series[["job_id", "isa"]].itertuples())
        for prev, cur in zip(rows, rows[1:], strict=False):
            _, verdicts[cur.Index] = judge(
                medians(prev.job_id),
                medians(cur.job_id),
                threshold=threshold,
                isa_a=_text(prev.isa),
                isa_b=_text(cur.isa),
            )
    return verdicts
