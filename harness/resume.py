"""What a run already holds: its measurements' stored sessions, read back for a resume.

The nightly (`nightly --id ID` again) and `bench --resume RUN_ID` both resume so. A resumable
run's jobs have ids derived from the run's id, the device, the file's name and sha256 and the
runtime (`job_id`), so the same plan made again for that run finds its jobs' sessions in the
store. A session counts as done when it is stored `ok`, or failed for a reason of the model or
the device's software (a measurement whose first session failed so gets no more sessions); a
session that failed because the device could not be reached (`RETRYABLE_KINDS`) is measured
again. Sessions done are not run again: their agent results are rebuilt from the stored rows
(each session's own figures and device fingerprint; the results row holds what every session
shares: runtime, placement, accuracy of session 0, and the fingerprint of sessions stored before
schema 5), and a stored profile session from its `profiles` row (it gives the row its
placement), so that the measurement's row comes out as if the run had never stopped, and a
device that changed between two resumes, and changed back, still shows in `mixed_sessions`.
A stored session whose raw samples were pruned (`edgebench db prune`) cannot be so rebuilt: the
row's pooled figures are of every sample, so its measurement is refused, not pooled from the new
sessions alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from harness.agent.protocol import RETRYABLE_KINDS
from harness.agent.rapl import SOURCE as RAPL_SOURCE
from harness.errors import EdgebenchError
from harness.report import stats
from harness.results import _MEMORY
from harness.runner import PlannedJob, StoredSession, precise
from harness.store import Store

_LATENCY = ("n", "median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p95_ms",
            "p99_ms", "cov", "ci95_low_ms", "ci95_high_ms", "lag1_autocorrelation",
            "elapsed_s", "throughput_wall_ips")
_SHARED = ("runtime_version", "runtime_options", "threads", "input_shape", "timed_scope",
           "settings", "tune")


def job_id(run_id: str, job: PlannedJob) -> str:
    """The same id for the same measurement of the same run, however often it starts."""
    key = "\0".join((run_id, job.device.name, job.artifact.name, job.artifact.sha256,
                     job.runtime))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def retryable(row: dict[str, Any]) -> bool:
    return row.get("status") != "ok" and row.get("error_kind") in RETRYABLE_KINDS


def sessions_by_job(store: Store, job_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for row in store.sessions(list(job_ids)):
        found.setdefault(row["job_id"], []).append(row)
    return found


def forget_retryable_rows(store: Store, stored: dict[str, list[dict[str, Any]]]
                          ) -> dict[str, list[dict[str, Any]]]:
    """Delete the sessions among `stored` (rows by job, as read) that failed for want of the
    device; the rows that stay, so that they need not be read again."""
    kept: dict[str, list[dict[str, Any]]] = {}
    for job_id_, rows in stored.items():
        bad = [r["session"] for r in rows if retryable(r)]
        if bad:
            store.forget_sessions(job_id_, bad)
        kept[job_id_] = [r for r in rows if not retryable(r)]
    return kept


def complete(rows: Sequence[dict[str, Any]], planned: int, max_sessions: int | None = None,
             precision: float = 0.02) -> bool:
    """Whether a measurement with these stored sessions needs no more; with `max_sessions`,
    one whose interval is still wider than `precision` gets more, as the runner gives them."""
    done = [r for r in rows if not retryable(r)]
    first = next((r for r in done if r["session"] == 0), None)
    if first is not None and first["status"] != "ok":
        return True  # a failed first session ends a measurement
    count = len({r["session"] for r in done})
    if count < planned:
        return False
    if max_sessions is None or count >= max_sessions:
        return True
    return precise([r["median_ms"] for r in done if r["status"] == "ok"], precision)


def missing_jobs(store: Store, jobs: Sequence[PlannedJob], planned: int,
                 max_sessions: int | None = None, precision: float = 0.02) -> list[PlannedJob]:
    """The jobs whose stored sessions are not `complete`."""
    return missing_among(sessions_by_job(store, [j.job_id for j in jobs]), jobs, planned,
                         max_sessions, precision)


def missing_among(stored: dict[str, list[dict[str, Any]]], jobs: Sequence[PlannedJob],
                  planned: int, max_sessions: int | None = None, precision: float = 0.02
                  ) -> list[PlannedJob]:
    """`missing_jobs`, of session rows already read (by job)."""
    return [j for j in jobs
            if not complete(stored.get(j.job_id, []), planned, max_sessions, precision)]


def stored_sessions(store: Store, run_id: str, jobs: Sequence[PlannedJob],
                    stored: dict[str, list[dict[str, Any]]] | None = None,
                    ) -> dict[str, list[StoredSession]]:
    """The done sessions of `jobs` as the runner takes them to resume; `stored`: their session
    rows by job where the caller has read them already."""
    by_job = stored if stored is not None else sessions_by_job(store, [j.job_id for j in jobs])
    records = {r["job_id"]: r for r in store.find_results(run_id=run_id)}
    out: dict[str, list[StoredSession]] = {}
    for job in jobs:
        rows = [r for r in by_job.get(job.job_id, ()) if not retryable(r)]
        record = records.get(job.job_id)
        if not rows or record is None:
            continue
        samples = {session: values for _, session, values
                   in store.iter_session_samples([job.job_id])}
        pruned = [r["session"] for r in rows
                  if r["status"] == "ok" and (r.get("n") or 0) and not samples[r["session"]].size]
        if pruned:  # `bench` refuses such a run up front (`bench.check_run`); a nightly here
            raise EdgebenchError(
                f"run {run_id}: {job.artifact.name} on {job.runtime} on {job.device.name} "
                f"cannot be resumed: the raw samples of its stored session"
                f"{'s' if len(pruned) != 1 else ''} {', '.join(map(str, pruned))} were pruned "
                "(`edgebench db prune`), and its pooled figures need every session's samples")
        out[job.job_id] = [
            StoredSession(row["session"], _result(row, record), row,
                          samples[row["session"]].tolist(), record["started_at"])
            for row in rows]
    return out


def stored_profiles(store: Store, profiles: Iterable[dict[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
    """Stored profile sessions (`profiles` rows) as the agent results that
    `results.measurement_row` takes a measurement's placement from, by job."""
    return {row["job_id"]: {"status": row["status"],
                            "profile": store.profile_data(row["job_id"]) or {}}
            for row in profiles}


def _result(row: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """An agent result, as far as the store keeps it, for one stored session: its own figures
    and device fingerprint (the measurement's for a session stored before schema 5, which kept
    none). What the session rows do not hold is its measurement's, which every session shares:
    the runtime and its settings, and where the model ran (`placement`, the GPU in the
    fingerprint's `accelerator`); where a profile gave the row its placement, the profile is
    restored too (`stored_profiles`) and takes precedence again, as it did."""
    fingerprint = row.get("fingerprint") or record.get("device_fingerprint")
    result: dict[str, Any] = {
        "status": row["status"],
        "latency": {k: row.get(k) for k in _LATENCY} if row["status"] == "ok" else {},
        "memory": {k: row.get(k) for k in (*_MEMORY, "anon_mb", "file_mb", "gpu_mem_mb",
                                           "gpu_process_mb")},
        "power": {"mean_w": row.get("power_w"),
                  "energy_mj_per_inference": row.get("energy_mj_per_inference"),
                  # where the figure came from is kept in the row's flags, not the session's
                  "source": RAPL_SOURCE if stats.FLAG_PACKAGE_ENERGY in (record.get("flags") or ())
                  else None},
        "timer": row.get("timer"),
        "fingerprint": fingerprint,
        "placement": record.get("placement"),
        **{k: record.get(k) for k in _SHARED},
    }
    if isinstance(fingerprint, dict) and fingerprint.get("accelerator"):
        result["accelerator"] = fingerprint["accelerator"]
    if row.get("error_kind"):
        result["error"] = {"kind": row["error_kind"], "message": row.get("error_message")}
    if row["session"] == 0:
        if record.get("accuracy_top1") is not None:
            result["accuracy"] = {
                "top1": record["accuracy_top1"], "top1_low": record.get("accuracy_top1_low"),
                "top1_high": record.get("accuracy_top1_high"),
                "top5": record.get("accuracy_top5"), "top5_low": record.get("accuracy_top5_low"),
                "top5_high": record.get("accuracy_top5_high"),
                "top1_ties": record.get("accuracy_ties"), "n": record.get("accuracy_n"),
                "ref_top1_agreement": record.get("ref_top1_agreement"),
                "ref_max_abs_diff": record.get("ref_max_abs_diff")}
    return result


def change_warning(run_id: str, job: PlannedJob, changes: Sequence[tuple[str, Any, Any]]
                   ) -> str:
    """The line that says, as soon as a resumed session shows it, how the device (or runtime)
    differs from the one the run's stored sessions ran on: `kernel 6.1.0 -> 6.8.0`."""
    keys = {key for key, _, _ in changes}
    what = [f"{job.runtime if key == 'runtime_version' else key} {_value(then)} -> "
            f"{_value(now)}" for key, then, now in changes
            # a runtime's version is in the fingerprint too
            if not (key == f"runtimes.{job.runtime}" and "runtime_version" in keys)]
    return (f"edgebench: warning: {job.device.name} changed since the sessions run {run_id} "
            f"stored ({', '.join(what)}); measurements with sessions from before and after will "
            "be flagged mixed_sessions")


def _value(value: Any) -> str:
    if value is None:
        return "none"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
