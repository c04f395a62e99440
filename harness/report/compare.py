"""Statistics that decide whether one measurement differs from another.

Latency samples are skewed and heavy-tailed, so everything here is distribution-free: the effect
is the ratio of medians, its 95% confidence interval is a percentile bootstrap that resamples each
run's raw samples independently (`scipy.stats.bootstrap`), and significance is a two-sided
Mann-Whitney U test (`scipy.stats.mannwhitneyu`). Consecutive samples of one run are not quite
independent (caches, clocks), which makes p-values optimistic; that is why a change is called only
when it is both significant and larger than a practical threshold (default 5%).

`compare_runs` pairs the jobs of two runs (same device, model, format, runtime, threads, batch)
and refuses runs whose device fingerprints differ unless told otherwise, in the spirit of
pyperf's refusal to mix incompatible benchmarks.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from harness.errors import EdgebenchError
from harness.report.frame import JOB_KEYS, results_frame, sample_reader
from harness.store import Store

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no significant change"
NEWLY_FAILING = "newly failing"
FIXED = "fixed"
ONLY_A = "only in A"
ONLY_B = "only in B"
NOT_MEASURED = "not measured"
# Verdicts that fail the nightly gate (--fail-on-regression).
FAILING_VERDICTS = frozenset({REGRESSION, NEWLY_FAILING})

# Largest sample of one job that enters a bootstrap (see median_ratio).
MAX_BOOTSTRAP_SAMPLES = 5000

# Fingerprint keys that describe the moment rather than the machine; a difference in them does
# not make two runs incomparable.
_MOMENTARY_KEY_PARTS = ("temp", "cur_freq", "freq_cur", "uptime", "time", "load", "free", "avail")


@dataclass(frozen=True)
class RatioCI:
    """median(b) / median(a) with a bootstrap confidence interval (NaN when not computable)."""

    ratio: float
    low: float
    high: float


def median_ratio(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    max_samples: int = MAX_BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> RatioCI:
    """Ratio of medians median(b)/median(a) and its percentile-bootstrap confidence interval.

    The two samples are resampled independently (they come from different processes). The ratio
    uses every sample; the interval resamples at most `max_samples` of each, drawn at random: a
    fast model yields 10^5 samples in a minute, whose consecutive values are not independent, and
    an i.i.d. bootstrap of all of them would take seconds per job and give an interval narrower
    than the run-to-run reality. The seed makes a report reproducible.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0:
        return RatioCI(math.nan, math.nan, math.nan)
    ratio = float(np.median(y) / np.median(x))
    if x.size < 2 or y.size < 2 or min(x.min(), y.min()) <= 0:
        return RatioCI(ratio, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    thinned = x.size > max_samples or y.size > max_samples
    if x.size > max_samples:
        x = rng.choice(x, size=max_samples, replace=False)
    if y.size > max_samples:
        y = rng.choice(y, size=max_samples, replace=False)

    def statistic(xs: np.ndarray, ys: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(ys, axis=axis) / np.median(xs, axis=axis)

    res = stats.bootstrap(
        (x, y),
        statistic,
        paired=False,
        vectorized=True,
        n_resamples=n_resamples,
        batch=max(1, 2_000_000 // max(x.size, y.size)),
        confidence_level=confidence,
        method="percentile",
        rng=rng,
    )
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if thinned:
        # Keep the interval's relative width but centre it on the ratio of all the samples.
        scale = ratio / float(np.median(y) / np.median(x))
        low, high = low * scale, high * scale
    return RatioCI(ratio, low, high)


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value; NaN when either sample is empty or all values tie."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size == 0 or y.size == 0 or np.ptp(np.concatenate([x, y])) == 0:
        return math.nan
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def classify(ratio: float, p_value: float, *, threshold: float = 0.05, alpha: float = 0.05) -> str:
    """A latency ratio B/A is a regression or improvement only if significant AND large enough."""
    if math.isnan(ratio) or math.isnan(p_value) or p_value >= alpha:
        return NO_CHANGE
    if ratio > 1 + threshold:
        return REGRESSION
    if ratio < 1 - threshold:
        return IMPROVEMENT
    return NO_CHANGE


@dataclass(frozen=True)
class SampleComparison:
    median_a_ms: float
    median_b_ms: float
    ratio: RatioCI
    p_value: float
    verdict: str


def compare_samples(
    a_ms: Sequence[float] | np.ndarray,
    b_ms: Sequence[float] | np.ndarray,
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    bootstrap: bool = True,
    seed: int = 0,
) -> SampleComparison:
    """Compare two sets of latency samples (ms): ratio B/A with CI, p-value and verdict."""
    x = np.asarray(a_ms, dtype=np.float64)
    y = np.asarray(b_ms, dtype=np.float64)
    if bootstrap:
        ratio = median_ratio(x, y, seed=seed)
    else:
        ratio = RatioCI(
            float(np.median(y) / np.median(x)) if x.size and y.size else math.nan,
            math.nan,
            math.nan,
        )
    p = mann_whitney_p(x, y)
    return SampleComparison(
        median_a_ms=float(np.median(x)) if x.size else math.nan,
        median_b_ms=float(np.median(y)) if y.size else math.nan,
        ratio=ratio,
        p_value=p,
        verdict=classify(ratio.ratio, p, threshold=threshold, alpha=alpha),
    )


def _flat(fingerprint: Any) -> dict[str, Any]:
    if not isinstance(fingerprint, dict) or not fingerprint:
        return {}
    flat = pd.json_normalize(fingerprint).iloc[0].to_dict()
    return {
        k: v
        for k, v in flat.items()
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
    alpha: float

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[self.table["verdict"].isin(FAILING_VERDICTS)]


COMPARISON_COLUMNS = (
    *JOB_KEYS,
    "job_id_a",
    "job_id_b",
    "status_a",
    "status_b",
    "n_a",
    "n_b",
    "median_a_ms",
    "median_b_ms",
    "ratio",
    "ratio_ci95_low",
    "ratio_ci95_high",
    "p_value",
    "verdict",
)


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
    allow_different_devices: bool = False,
    seed: int = 0,
) -> RunComparison:
    """Pair the jobs of runs A and B and judge each pair; A is the reference (old), B the new."""
    a_id, b_id = store.resolve_run(run_a), store.resolve_run(run_b)
    both = results_frame(store, [a_id, b_id])
    a = both[both["run_id"] == a_id]
    b = both[both["run_id"] == b_id]
    keys = list(JOB_KEYS)
    pairs = a.drop_duplicates(keys).merge(
        b.drop_duplicates(keys),
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
    samples = sample_reader(store)
    rows = [
        _judge(samples, row, threshold=threshold, alpha=alpha, seed=seed)
        for _, row in pairs.iterrows()
    ]
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    return RunComparison(a_id, b_id, table, diffs, threshold, alpha)


def _judge(
    samples: Callable[[str], np.ndarray], row: pd.Series, *, threshold: float, alpha: float,
    seed: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {k: row[k] for k in JOB_KEYS}
    out.update(
        job_id_a=row.get("job_id_a"),
        job_id_b=row.get("job_id_b"),
        status_a=row.get("status_a"),
        status_b=row.get("status_b"),
    )
    nan = math.nan
    out.update(
        n_a=0,
        n_b=0,
        median_a_ms=nan,
        median_b_ms=nan,
        ratio=nan,
        ratio_ci95_low=nan,
        ratio_ci95_high=nan,
        p_value=nan,
    )
    if row["_merge"] == "left_only":
        out["verdict"] = ONLY_A
        return out
    if row["_merge"] == "right_only":
        out["verdict"] = ONLY_B
        return out
    ok_a, ok_b = row["status_a"] == "ok", row["status_b"] == "ok"
    if not (ok_a and ok_b):
        out["verdict"] = NEWLY_FAILING if ok_a else FIXED if ok_b else NOT_MEASURED
        return out
    a_ms, b_ms = samples(row["job_id_a"]), samples(row["job_id_b"])
    if a_ms.size == 0 or b_ms.size == 0:
        out["verdict"] = NOT_MEASURED
        return out
    cmp = compare_samples(a_ms, b_ms, threshold=threshold, alpha=alpha, seed=seed)
    out.update(
        n_a=int(a_ms.size),
        n_b=int(b_ms.size),
        median_a_ms=cmp.median_a_ms,
        median_b_ms=cmp.median_b_ms,
        ratio=cmp.ratio.ratio,
        ratio_ci95_low=cmp.ratio.low,
        ratio_ci95_high=cmp.ratio.high,
        p_value=cmp.p_value,
        verdict=cmp.verdict,
    )
    return out


def verdicts_over_runs(
    history: pd.DataFrame,
    samples_ms: Callable[[str], np.ndarray],
    *,
    threshold: float = 0.05,
    alpha: float = 0.05,
) -> pd.Series:
    """For each ok row of `history` (several runs, with `run_started_at`), its verdict against the
    same job (JOB_KEYS) in the previous run that measured it; "" for a job's first run.

    This is the nightly view of `compare_runs`, without the bootstrap (only the call is needed).
    """
    verdicts = pd.Series("", index=history.index, dtype=object)
    ok = history[history["status"] == "ok"].sort_values(["run_started_at", "run_id"])
    for _, series in ok.groupby(list(JOB_KEYS), dropna=False, sort=False):
        ids = series["job_id"].tolist()
        for prev, (index, job_id) in zip(ids, list(series["job_id"].items())[1:], strict=False):
            verdicts[index] = compare_samples(
                samples_ms(prev),
                samples_ms(job_id),
                threshold=threshold,
                alpha=alpha,
                bootstrap=False,
            ).verdict
    return verdicts


_VERDICT_STYLE = {
    REGRESSION: "bold red",
    NEWLY_FAILING: "bold red",
    IMPROVEMENT: "green",
    FIXED: "green",
    NO_CHANGE: "",
    ONLY_A: "dim",
    ONLY_B: "dim",
    NOT_MEASURED: "dim",
}


def _fmt(value: float, spec: str) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (format(value, spec))
    )


def render_comparison(result: RunComparison, console: Any = None) -> None:
    """Print the comparison as a rich table, with the fingerprint warning and a verdict count."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    console.print(
        f"Comparing run [bold]{result.run_b}[/] (B) against [bold]{result.run_a}[/] (A): ratio ="
        f" median B / median A (> 1 is slower); a change is called when p < {result.alpha:g}"
        f" (Mann-Whitney U) and it exceeds {result.threshold:.0%}."
    )
    for device, keys in result.fingerprint_differences.items():
        console.print(
            f"[bold yellow]warning:[/] device {device} differs between the runs "
            f"({', '.join(keys)}); compared anyway because it was allowed explicitly."
        )
    table = Table(show_lines=False, header_style="bold")
    for name, justify in (
        ("Device", "left"),
        ("Model", "left"),
        ("Runtime", "left"),
        ("Thr.", "right"),
        ("A median [ms]", "right"),
        ("B median [ms]", "right"),
        ("B/A [95% CI]", "right"),
        ("p", "right"),
        ("Verdict", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in result.table.itertuples():
        ci = (
            f"{_fmt(row.ratio, '.3f')} [{_fmt(row.ratio_ci95_low, '.3f')}, "
            f"{_fmt(row.ratio_ci95_high, '.3f')}]"
            if not math.isnan(row.ratio)
            else "n/a"
        )
        style = _VERDICT_STYLE.get(row.verdict, "")
        table.add_row(
            str(row.device),
            str(row.model),
            str(row.runtime),
            "" if pd.isna(row.threads) else str(row.threads),
            _fmt(row.median_a_ms, ".3f"),
            _fmt(row.median_b_ms, ".3f"),
            ci,
            _fmt(row.p_value, ".2g"),
            f"[{style}]{row.verdict}[/]" if style else row.verdict,
        )
    console.print(table)
    counts = result.table["verdict"].value_counts()
    console.print(", ".join(f"{n} {v}" for v, n in counts.items()) or "no jobs in either run")
