"""Whether run B is slower or faster than run A, measurement by measurement: `edgebench compare`
and the nightly trend.

Measurements of the two runs are paired by what they measured (JOB_KEYS: device, model, format,
runtime, threads, batch) and judged on their session medians, the unit of a measurement: the
ratio B / A of their geometric means with a Welch t interval (the two runs are separate in time,
so their sessions are not paired), and `stats.verdict` with a practical threshold T. A pair is
slower or faster only when the whole 95% interval lies beyond 1 +/- T, no change when it lies
within, inconclusive otherwise; noise alone almost never gives the first two. The pairs of a
comparison are judged together (`judge_together`): a pair slower or faster on its own is so
only where Holm's rule over all of them agrees, else inconclusive; so are the pairs of each run
of a trend with their previous runs (`verdicts_over_runs`), which the nightly's page and the
rings of `plots.trends_figure` show. A pair measured
on CPUs with different instruction sets (the `isa` of its fingerprint) gets "different
instruction set" and never a speed verdict: other kernels ran; so does a pair whose model ran on
different accelerators (`accelerator`: another GPU, execution provider or delegate, or one on
one side only), "different accelerator"; and a pair computed in different precisions
(`precision`: a torch run at fp16 beside one at fp32 of the same program), "different
precision", since what is compared is then another computation; and a pair timed over
different scopes (`timed_scope`: `bench --timed-scope end_to_end`, numpy in and out, beside the
runtime's own run), "different timed scope": another quantity was measured. Paired measurements
taken under other protocol settings (a `--quick` run beside a full one: other warm-up and window
lengths) are judged, and the comparison says so (`settings_changed`). Runs whose device
fingerprints differ are refused unless allowed, in the spirit of pyperf's refusal to mix
incompatible benchmarks.

Top-1 is judged beside the speed, in `accuracy_verdict`: the same images go through each run, so
a pair on the same instruction set and accelerator (whatever the timed scope: the timer does not
touch the answers) whose top-1 differs by one image or more and
beyond `stats.TOP1_THRESHOLD_POINTS` is "lower top-1" or "higher top-1" (`stats.top1_verdict`).
A regression (`is_regression`, what `--fail-on-regression` and the nightly gate fail on) is
slower, newly failing, or lower top-1. The rich table of the comparison is in `console.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.agent import protocol
from harness.errors import EdgebenchError
from harness.report import stats
from harness.report.frame import JOB_KEYS, SessionReader, in_run_order, results_frame
from harness.results import comparable_fingerprint

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
DIFFERENT_ACCELERATOR = "different accelerator"
DIFFERENT_PRECISION = "different precision"
DIFFERENT_SCOPE = "different timed scope"
# a side whose sessions ran on devices or runtimes that differ (`results.mixed_sessions`): not
# one device's figure, so no verdict on its speed
MIXED = "mixed sessions"
# Verdicts that fail the nightly gate (--fail-on-regression): a confident regression beyond T,
# or a measurement that fails now and did not before (ran ok in A, or was not in A); and of top-1,
# fewer of the same images right (`is_regression`).
FAILING_VERDICTS = frozenset({SLOWER, NEWLY_FAILING})
LOWER_TOP1 = stats.LOWER_TOP1
HIGHER_TOP1 = stats.HIGHER_TOP1
SAME_TOP1 = stats.SAME_TOP1
# the accuracy verdicts that say top-1 changed, the ones counted and shown beside the speed's
TOP1_CHANGES = (LOWER_TOP1, HIGHER_TOP1)
OTHER_IMAGES = "other images"  # top-1 of another dataset or number of images: not compared
# The verdicts of a pair that ran ok on both sides and whose speed is not judged, in the order
# `judge` tests them, each with why in the nightly's words (the meaning of its exit code, which
# counts them as not gated): the sides differ in what ran, or a side has no session median a log
# can take (NOT_MEASURED, also the verdict of a pair failing on both sides). Every list of such
# verdicts is this one.
UNJUDGED = {
    DIFFERENT_ISA: "on another instruction set than its baseline",
    DIFFERENT_ACCELERATOR: "on another accelerator than its baseline",
    DIFFERENT_PRECISION: "in another precision than its baseline",
    DIFFERENT_SCOPE: "timed over another scope than its baseline",
    MIXED: "of mixed sessions (devices or runtimes), or with a baseline of them",
    NOT_MEASURED: "with no usable session median, or a baseline without one",
}
# ... the column whose two sides differ, for those where a column does (`unjudged_sides`)
UNJUDGED_COLUMNS = {DIFFERENT_ISA: "isa", DIFFERENT_ACCELERATOR: "accelerator",
                    DIFFERENT_PRECISION: "precision", DIFFERENT_SCOPE: "timed_scope"}
# ... and those that leave top-1 unjudged too (the speed's reason is the top-1 verdict): another
# ISA, accelerator or precision moves an int8 model's answers with the kernels, and a mixed side
# is no one device's; a timer over another scope, or sessions without a usable median, do not
# touch the answers
TOP1_UNJUDGED = frozenset({DIFFERENT_ISA, DIFFERENT_ACCELERATOR, DIFFERENT_PRECISION, MIXED})


def unjudged_sides(row: Mapping[str, Any], verdict: str) -> tuple[str, str] | None:
    """The two sides' values (A, B; "none" where a side has none) of the column that made
    `verdict` (`UNJUDGED_COLUMNS`); None for a verdict no column makes."""
    column = UNJUDGED_COLUMNS.get(verdict)
    if column is None:
        return None
    return (str(_text(row.get(f"{column}_a")) or "none"),
            str(_text(row.get(f"{column}_b")) or "none"))


def failing_verdicts(row: Mapping[str, Any]) -> list[str]:
    """The verdicts of a comparison row (a record of the table, a nightly's measurement) that
    fail the gate, the speed's (`verdict`) before the top-1's (`accuracy_verdict`); empty when
    it passes."""
    failing = []
    if row.get("verdict") in FAILING_VERDICTS:
        failing.append(str(row["verdict"]))
    if row.get("accuracy_verdict") == LOWER_TOP1:
        failing.append(LOWER_TOP1)
    return failing


def is_regression(row: Mapping[str, Any]) -> bool:
    """Whether a comparison row fails the gate (`failing_verdicts`)."""
    return bool(failing_verdicts(row))


def judge(
    a_medians: pd.Series | Any,
    b_medians: pd.Series | Any,
    *,
    threshold: float = stats.THRESHOLD,
    isa_a: str | None = None,
    isa_b: str | None = None,
    accelerator_a: str | None = None,
    accelerator_b: str | None = None,
    precision_a: str | None = None,
    precision_b: str | None = None,
    scope_a: str | None = None,
    scope_b: str | None = None,
    mixed: bool = False,
    run_noise: tuple[float, int | None] | None = None,
) -> tuple[stats.RatioCI, str]:
    """The ratio B / A of two measurements of different runs from their session medians (ms),
    with its interval and verdict. Instruction sets are compared only when both are known
    (a database upgraded from schema 1 did not record them); accelerators always, as None is
    a model that ran on no accelerator (CPU runtimes, and every run before GPUs were recorded);
    precisions and timed scopes (`timed_scope`) when both are known.
    `mixed`: a side is flagged `mixed_sessions`.
    `run_noise` is the run-to-run log-sd and the degrees of freedom of its estimate (None: no
    history, `stats.default_run_sd` of the between-session spread)."""
    a, b = list(a_medians), list(b_medians)
    run_sd, run_df = run_noise if run_noise is not None else (stats.default_run_sd(a, b), None)
    ci = stats.ratio_interval(a, b, paired=False, run_sd=run_sd, run_df=run_df)
    unjudged = unjudged_verdict(
        isa_a=isa_a, isa_b=isa_b, accelerator_a=accelerator_a, accelerator_b=accelerator_b,
        precision_a=precision_a, precision_b=precision_b, scope_a=scope_a, scope_b=scope_b,
        mixed=mixed, measured=bool(a) and bool(b))
    return ci, unjudged or stats.verdict(ci, threshold)


def unjudged_verdict(
    *,
    isa_a: str | None = None,
    isa_b: str | None = None,
    accelerator_a: str | None = None,
    accelerator_b: str | None = None,
    precision_a: str | None = None,
    precision_b: str | None = None,
    scope_a: str | None = None,
    scope_b: str | None = None,
    mixed: bool = False,
    measured: bool = True,
) -> str | None:
    """Why a pair that ran ok on both sides is not judged on its speed (`UNJUDGED`, the first
    that applies, as `judge` gives it), or None; `measured`: both sides have a session median."""
    found = {
        DIFFERENT_ISA: bool(isa_a and isa_b and isa_a != isa_b),
        DIFFERENT_ACCELERATOR: (accelerator_a or None) != (accelerator_b or None),
        DIFFERENT_PRECISION: bool(precision_a and precision_b and precision_a != precision_b),
        DIFFERENT_SCOPE: bool(scope_a and scope_b and scope_a != scope_b),
        MIXED: mixed,
        NOT_MEASURED: not measured,
    }
    return next((v for v in UNJUDGED if found[v]), None)


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
        fa, fb = comparable_fingerprint(fp_a), comparable_fingerprint(fp_b)
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
    top1_threshold: float = stats.TOP1_THRESHOLD_POINTS  # percentage points

    @property
    def regressions(self) -> pd.DataFrame:
        return self.table[[is_regression(r) for r in self.table.to_dict("records")]]

    def records(self) -> list[dict[str, Any]]:
        """Each pair as a plain dict (COMPARISON_COLUMNS; NaN, NA -> None, numpy -> Python)."""
        return [{k: plain(v) for k, v in rec.items()} for rec in self.table.to_dict("records")]

    def as_dict(self) -> dict[str, Any]:
        """The comparison as `compare --json` prints it: the runs, the rule's thresholds, the
        fingerprint differences, and each pair (COMPARISON_COLUMNS, NaN as null) with whether
        it is a regression."""
        return {
            "run_a": self.run_a, "run_b": self.run_b, "threshold": self.threshold,
            "top1_threshold_points": self.top1_threshold,
            "fingerprint_differences": self.fingerprint_differences,
            "measurements": [{**rec, "regression": is_regression(rec)}
                             for rec in self.records()],
        }


COMPARISON_COLUMNS = (
    *JOB_KEYS,
    "isa_a",
    "isa_b",
    "accelerator_a",  # what ran the model besides the CPU, or None (`results.accelerator_label`)
    "accelerator_b",
    "precision_a",  # what each side computed in (`results.compute_precision`)
    "precision_b",
    "timed_scope_a",  # what the timer covered (`runtime` or `end_to_end`)
    "timed_scope_b",
    "job_id_a",
    "job_id_b",
    "status_a",
    "status_b",
    "sessions_a",
    "sessions_b",
    "median_a_ms",  # the headlines: geometric mean of session medians
    "median_b_ms",
    "ratio",  # B / A of those geometric means, median_b_ms / median_a_ms (> 1: B is slower)
    "ratio_ci95_low",
    "ratio_ci95_high",
    "run_sd",  # the run-to-run log-sd the interval allows for
    "run_sd_from",  # "history (N d.f.)" or "assumed" (too few runs of these files here)
    "verdict",  # judged among every pair of the comparison (`judge_together`)
    "verdict_alone",  # the pair's verdict on its own (`judge`)
    "p_slower",  # one-sided p-values of B / A beyond 1 + T and 1 - T (`stats.p_beyond`);
    "p_faster",  # None where the pair is not judged on its speed
    "top1_a",  # top-1 accuracy, a fraction
    "top1_b",
    "accuracy_verdict",  # lower, higher or same top-1; "other images"; or the speed's reason
    "file_changed",  # both sides measured a file of this name, but not the same file (sha256)
    # the protocol settings (other than the timed scope) that differ, A / B:
    # "duration_s 1 / 0.2, warmup_s 0.5 / 0.05"; "" where they agree or a side has none
    "settings_changed",
)


# What a pair's verdict and its table row need of each side.
_PAIR_COLUMNS = ("job_id", "status", "isa", "accelerator", "precision", "timed_scope",
                 "latency_median_ms", "device_fingerprint", "model_sha256", "accuracy_top1",
                 "accuracy_n", "dataset", "flags", "settings")


def compare_runs(
    store: Store,
    run_a: str,
    run_b: str,
    *,
    threshold: float = stats.THRESHOLD,
    top1_threshold: float = stats.TOP1_THRESHOLD_POINTS,
    allow_different_devices: bool = False,
) -> RunComparison:
    """Pair the measurements of runs A and B and judge each pair; A is the reference (old).
    `top1_threshold` in percentage points (`stats.top1_verdict`)."""
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
    rows = [_judge_pair(sessions.medians, row, threshold, _run_noise(store, sessions, row),
                        top1_threshold)
            for _, row in pairs.iterrows()]
    judge_together(rows)
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    return RunComparison(a_id, b_id, table, diffs, threshold, top1_threshold)


# How many earlier runs of A's file estimate the run-to-run spread: recent enough to describe
# the device as it is now.
HISTORY_RUNS = 10


def history_noise(runs: list[list[float]]) -> tuple[float, int] | None:
    """The run-to-run log-sd and its degrees of freedom from the session medians of the last
    HISTORY_RUNS runs of one file, ending with the reference run A; None with too few. Runs after
    A are left out, so the change being judged cannot pass for noise."""
    found = stats.run_level_sd(runs[-HISTORY_RUNS:])
    return (found[0], found[1] - 1) if found is not None else None


def _run_noise(store: Store, sessions: SessionReader, row: pd.Series
               ) -> tuple[float, int] | None:
    """The run-to-run spread of A's file on this device, from the runs in the store up to A,
    never B (which is before A when the newer run is given first). Only runs timed over A's
    scope count. A run flagged `mixed_sessions` is left out (A too, if it is): its spread is
    that of two devices or runtimes, not this device's from run to run."""
    sha, job_a = row.get("model_sha256_a"), row.get("job_id_a")
    if not isinstance(sha, str) or not isinstance(row.get("isa_a"), str):
        return None
    same = store.find_results(model_sha256=sha, status="ok", isa=row["isa_a"],
                              accelerator=_text(row.get("accelerator_a")),
                              precision=_text(row.get("precision_a")),
                              timed_scope=_text(row.get("timed_scope_a")),
                              **{k: plain(row[k]) for k in JOB_KEYS if k != "model"})
    ids = [r["job_id"] for r in same]
    if job_a not in ids:
        return None
    ids = [r["job_id"] for r in same[:ids.index(job_a) + 1]
           if not _mixed(r.get("flags")) and r["job_id"] != row.get("job_id_b")][-HISTORY_RUNS:]
    sessions.prefetch(ids)
    return history_noise([list(sessions.medians(j)) for j in ids])


def plain(value: Any) -> Any:
    """A frame cell as plain Python, as the store and JSON hold it: NA, NaT and NaN -> None,
    numpy scalars -> int, float, bool."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mixed(flags: Any) -> bool:
    return isinstance(flags, list | tuple) and stats.FLAG_MIXED in flags


def _judge_pair(
    medians: Callable[[str], pd.Series], row: pd.Series, threshold: float,
    run_noise: tuple[float, int] | None = None,
    top1_threshold: float = stats.TOP1_THRESHOLD_POINTS,
) -> dict[str, Any]:
    out: dict[str, Any] = {k: row[k] for k in JOB_KEYS}
    for name in ("isa", "accelerator", "precision", "timed_scope", "job_id", "status"):
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
        run_sd=nan,
        run_sd_from="",
        p_slower=nan,
        p_faster=nan,
        top1_a=row.get("accuracy_top1_a", nan),
        top1_b=row.get("accuracy_top1_b", nan),
        accuracy_verdict="",
        file_changed=_file_changed(row),
        settings_changed=settings_changed(row.get("settings_a"), row.get("settings_b")),
    )
    if row["_merge"] == "left_only":
        out["verdict"] = out["verdict_alone"] = ONLY_A
        return out
    if row["_merge"] == "right_only":
        # new since A: failing, it never ran ok, which is as much news as breaking
        out["verdict"] = out["verdict_alone"] = ONLY_B if out["status_b"] == "ok" \
            else NEWLY_FAILING
        return out
    # A failure is news whatever the instruction set: it is judged before the speed.
    ok_a, ok_b = out["status_a"] == "ok", out["status_b"] == "ok"
    if not (ok_a and ok_b):
        out["verdict"] = out["verdict_alone"] = NEWLY_FAILING if ok_a else FIXED if ok_b \
            else NOT_MEASURED
        return out
    ci, verdict = judge(
        a_medians, b_medians, threshold=threshold, isa_a=out["isa_a"], isa_b=out["isa_b"],
        accelerator_a=out["accelerator_a"], accelerator_b=out["accelerator_b"],
        precision_a=out["precision_a"], precision_b=out["precision_b"],
        scope_a=out["timed_scope_a"], scope_b=out["timed_scope_b"],
        mixed=_mixed(row.get("flags_a")) or _mixed(row.get("flags_b")), run_noise=run_noise,
    )
    out.update(
        ratio=ci.ratio,
        ratio_ci95_low=ci.low,
        ratio_ci95_high=ci.high,
        run_sd=ci.run_sd,
        run_sd_from=f"history ({run_noise[1]} d.f.)" if run_noise else "assumed",
        verdict=verdict,
        verdict_alone=verdict,
        accuracy_verdict=_accuracy_verdict(row, verdict, top1_threshold),
    )
    if verdict in SPEED_VERDICTS:
        out["p_slower"], out["p_faster"] = stats.p_beyond(ci, threshold)
    return out


# The verdicts of a pair judged on its speed, and so judged together with the others.
SPEED_VERDICTS = frozenset({SLOWER, FASTER, NO_CHANGE, INCONCLUSIVE})


def judge_together(rows: list[dict[str, Any]]) -> None:
    """Each row's `verdict` among all of `rows` (one comparison, or every baseline's pairs of
    one nightly) from its `verdict_alone` and p-values, by `stats.verdicts_together`: the more
    measurements compared, the more one of them can look slower by chance, and a nightly of
    50 unchanged models was called slower one night in six. Rows not judged on their speed
    keep their verdict."""
    speed = [r for r in rows if r.get("verdict_alone") in SPEED_VERDICTS]

    def p(row: dict[str, Any], key: str) -> float:
        value = plain(row.get(key))
        return math.nan if value is None else float(value)

    together = stats.verdicts_together([r["verdict_alone"] for r in speed],
                                       [p(r, "p_slower") for r in speed],
                                       [p(r, "p_faster") for r in speed])
    for row, verdict in zip(speed, together, strict=True):
        row["verdict"] = verdict


def _file_changed(row: pd.Series) -> bool:
    """Whether A and B measured different files under one name: a recipe, its code or its
    training changed and the file was rebuilt (the pair is still judged: that is what a nightly
    after a change is for, but it is said)."""
    a, b = _text(row.get("model_sha256_a")), _text(row.get("model_sha256_b"))
    return a is not None and b is not None and a != b


def settings_changed(a: Any, b: Any) -> str:
    """The protocol settings two measurements were timed under that differ, A / B, each with
    the protocol's defaults where it did not say ("duration_s 1 / 0.2, warmup_s 0.5 / 0.05");
    "" where they agree or a side recorded none. The timed scope is left out: a different one is
    the pair's verdict (DIFFERENT_SCOPE), not a caveat."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    full_a = {**protocol.DEFAULT_SETTINGS, **a}
    full_b = {**protocol.DEFAULT_SETTINGS, **b}
    return ", ".join(f"{k} {_setting(full_a.get(k))} / {_setting(full_b.get(k))}"
                     for k in sorted(set(full_a) | set(full_b))
                     if k != "timed_scope" and full_a.get(k) != full_b.get(k))


def _setting(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _accuracy_verdict(row: pd.Series | Mapping[str, Any], verdict: str,
                      threshold_points: float) -> str:
    """Top-1 of a pair that ran ok on both sides: judged on the same images (dataset and their
    number), on the same instruction set, accelerator and precision, each side on one device
    (else the speed's reason, as an int8 model's top-1 moves with the kernels); "" where a side
    has none. A different timed scope leaves top-1 judged: the same images through the same
    model, only the timer covered more or less."""
    a, b = plain(row.get("accuracy_top1_a")), plain(row.get("accuracy_top1_b"))
    if a is None or b is None:
        return ""
    if verdict in TOP1_UNJUDGED:
        return verdict
    n_a, n_b = plain(row.get("accuracy_n_a")), plain(row.get("accuracy_n_b"))
    if n_a != n_b or plain(row.get("dataset_a")) != plain(row.get("dataset_b")):
        return OTHER_IMAGES
    return stats.top1_verdict(a, b, n_b, threshold_points)


# What the trend reads of each row of its history to pair it with its previous run.
_TREND_COLUMNS = ("run_id", "job_id", "isa", "accelerator", "precision", "timed_scope",
                  "model_sha256", "flags", "accuracy_top1", "accuracy_n", "dataset")


def _previous_runs(history: pd.DataFrame) -> Iterator[tuple[Any, Any, list[Any]]]:
    """Each ok row of `history` after the first of its measurement (JOB_KEYS) there, as
    (previous, row, earlier): the measurement's previous ok run in `history` (in the order the
    runs were begun, `frame.in_run_order`), the row, and its ok rows up to that previous one."""
    ok = in_run_order(history[history["status"] == "ok"])
    for _, series in ok.groupby(list(JOB_KEYS), dropna=False, sort=False):
        rows = list(series[list(_TREND_COLUMNS)].itertuples())
        for i in range(1, len(rows)):
            yield rows[i - 1], rows[i], rows[:i]


def verdicts_over_runs(
    history: pd.DataFrame,
    medians: Callable[[str], pd.Series],
    *,
    threshold: float = stats.THRESHOLD,
) -> pd.Series:
    """For each ok row of `history` (several runs, with `run_order` or `run_started_at`), its
    verdict against the same measurement (JOB_KEYS) in the previous run of `history` that
    measured it ok; "" for its first run there.

    The trend's view of `compare_runs`, by the same rule: each pair judged (`judge`), then the
    pairs of each run judged together (`judge_together`, Holm's rule), as the gate judges every
    pair of a nightly, so that a ring or a red "slower" on the nightly's page is a verdict the
    gate would give. It rests on what `history` holds alone, so the two can still differ:
    - the run compared against is the measurement's own previous ok run in `history` (in the
      order the runs were begun, `frame.in_run_order`); the gate's baseline is one run per
      device, or the one given; so the family of a run is its pairs with their own previous
      runs, the gate's its pairs with their baselines;
    - the run-to-run spread comes from the ok rows of `history` up to that run with its file,
      instruction set, accelerator, precision and timed scope, none of mixed sessions, the last
      HISTORY_RUNS of them (`history_noise`; none where its file or ISA is not recorded, as in
      `compare_runs`); `compare_runs` takes them from every run in the store, those outside
      `history` too (older than the trend's window, or of another command), in the order they
      were stored, matching the file by its sha256 whatever the model's name.
    """
    verdicts = pd.Series("", index=history.index, dtype=object)
    families: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for prev, cur, before in _previous_runs(history):
        earlier = [list(medians(r.job_id)) for r in before
                   if _text(r.model_sha256) == _text(prev.model_sha256)
                   and _text(r.isa) == _text(prev.isa)
                   and _text(r.accelerator) == _text(prev.accelerator)
                   and _text(r.precision) == _text(prev.precision)
                   and _text(r.timed_scope) == _text(prev.timed_scope)
                   and not _mixed(r.flags)] \
            if _text(prev.model_sha256) and _text(prev.isa) else []  # as `_run_noise`
        ci, alone = judge(
            medians(prev.job_id),
            medians(cur.job_id),
            threshold=threshold,
            isa_a=_text(prev.isa),
            isa_b=_text(cur.isa),
            accelerator_a=_text(prev.accelerator),
            accelerator_b=_text(cur.accelerator),
            precision_a=_text(prev.precision),
            precision_b=_text(cur.precision),
            scope_a=_text(prev.timed_scope),
            scope_b=_text(cur.timed_scope),
            mixed=_mixed(prev.flags) or _mixed(cur.flags),
            run_noise=history_noise(earlier),
        )
        pair: dict[str, Any] = {"verdict": alone, "verdict_alone": alone}
        if alone in SPEED_VERDICTS:
            pair["p_slower"], pair["p_faster"] = stats.p_beyond(ci, threshold)
        families.setdefault(cur.run_id, []).append((cur.Index, pair))
    for family in families.values():
        judge_together([pair for _, pair in family])
        for index, pair in family:
            verdicts[index] = pair["verdict"]
    return verdicts


def accuracy_over_runs(
    history: pd.DataFrame,
    *,
    top1_threshold: float = stats.TOP1_THRESHOLD_POINTS,
) -> pd.DataFrame:
    """For each ok row of `history`, its top-1 verdict against the same measurement in its
    previous ok run there (the pairs of `verdicts_over_runs`) by the gate's rule
    (`_accuracy_verdict`: the same images, one image or more and beyond `top1_threshold`
    points; "other images", or the speed's reason for another ISA, accelerator, precision or
    mixed sessions), and that run's top-1: columns `accuracy_verdict` ("" in its first run there
    or where a side has no top-1) and `top1_before` (NaN where there is none). What the
    nightly's page and accuracy trend show as a change of top-1."""
    found = pd.DataFrame({"accuracy_verdict": "", "top1_before": math.nan},
                         index=history.index).astype({"accuracy_verdict": object})
    for prev, cur, _ in _previous_runs(history):
        pair = {"accuracy_top1_a": prev.accuracy_top1, "accuracy_top1_b": cur.accuracy_top1,
                "accuracy_n_a": prev.accuracy_n, "accuracy_n_b": cur.accuracy_n,
                "dataset_a": prev.dataset, "dataset_b": cur.dataset}
        reason = unjudged_verdict(
            isa_a=_text(prev.isa), isa_b=_text(cur.isa),
            accelerator_a=_text(prev.accelerator), accelerator_b=_text(cur.accelerator),
            precision_a=_text(prev.precision), precision_b=_text(cur.precision),
            mixed=_mixed(prev.flags) or _mixed(cur.flags))
        found.loc[cur.Index, "accuracy_verdict"] = _accuracy_verdict(
            pair, reason or "", top1_threshold)
        found.loc[cur.Index, "top1_before"] = plain(prev.accuracy_top1)
    return found
