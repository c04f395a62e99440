"""A bench's run: its plan recorded when it begins, so that `bench --resume RUN_ID` takes it up.

A bench's run id is chosen before it begins and its jobs' ids are derived from it
(`resume.job_id`), as a nightly's are, so the same command with `--resume RUN_ID` plans the very
same jobs and finds their stored sessions (harness/resume.py): only the sessions not stored yet
are measured, and each measurement's row comes out as if the run had never stopped.

What the sessions are measured with is recorded in `runs.plan` when the run begins: the suite
(with the file's sha256) or the model file, the command's options, and each measurement's
device, model, runtime, file sha256 and setup (`runner.job_setup`: runtime options, protocol
settings, tuning, input shape). A resume whose command differs in any of them is refused, in one
line naming the run and what differs: one measurement's figures would mix sessions measured with
other settings, threads or sessions planned (pyperf refuses to mix incompatible runs alike). A
model file rebuilt since (another sha256) is refused too, rather than measured from scratch: the
run would then hold two measurements under one name, of two files, one of them cut short.
A run whose measurements still to be measured have stored sessions with their raw samples pruned
(`edgebench db prune`) is refused too: their rows could not pool every session's samples.

The plan also names the process measuring the run (host and pid), so that a run still being
measured on this host is not taken up by a second process too. The checks come in two steps:
what the stored run and the command line say (`check_run`), before anything is built; then the
planned measurements (`check_jobs`), once the artifacts are known. A suite edited since is
refused in the first step by its sha256, so the build in between reuses the unchanged artifacts
and builds nothing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import resume
from harness.artifacts import Artifact, file_sha256
from harness.errors import EdgebenchError, StoreError
from harness.report.console import db_option
from harness.runner import BenchOptions, PlannedJob, StoredSession, job_setup, plan_jobs
from harness.store import RunInfo, Store

PLAN_VERSION = 1

# The options a resume must repeat, in the order they are checked, with the flag that sets each:
# --quick comes before the session count it implies.
OPTION_FLAGS = {"quick": "--quick", "sessions": "--sessions", "max_sessions": "--max-sessions",
                "threads": "--threads", "force_threads": "--force-threads",
                "timed_scope": "--timed-scope", "runtimes": "--runtime", "profile": "--profile",
                "input_shape": "--input-shape"}


@dataclass(frozen=True)
class BenchPlan:
    run_id: str
    jobs: tuple[PlannedJob, ...]
    options: BenchOptions
    record: dict[str, Any]  # what runs.plan holds


@dataclass(frozen=True)
class ResumeState:
    """What a resumed run holds and still needs."""

    todo: list[PlannedJob]
    stored: dict[str, list[StoredSession]]
    profiled: set[str]
    # the profile sessions stored of the measurements in `todo`, as agent results: a row
    # rebuilt from stored sessions takes its placement from its profile, as it did
    profiles: dict[str, dict[str, Any]]
    sessions_stored: int
    sessions_left: int
    sessions_total: int
    sessions_dropped: int  # planned, but their measurement failed at its first session
    profiles_left: int


def what_record(suite: Path | None, model: Path | None) -> dict[str, Any]:
    """The suite (resolved, with its sha256) or model file (resolved) a bench measures."""
    if suite is not None:
        path = suite.resolve()
        return {"suite": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    assert model is not None
    return {"model": str(model.resolve())}


def options_record(options: BenchOptions, input_shape: Sequence[int] | None) -> dict[str, Any]:
    return {"quick": options.quick, "sessions": options.session_count,
            "max_sessions": options.max_sessions, "threads": options.threads,
            "force_threads": options.force_threads,
            "timed_scope": options.settings.get("timed_scope"),
            "runtimes": sorted(options.runtimes), "profile": options.profile,
            "input_shape": list(input_shape) if input_shape else None}


def plan_bench(artifacts: Sequence[Artifact], devices: Sequence[Any], options: BenchOptions,
               run_id: str, what: dict[str, Any], input_shape: Sequence[int] | None
               ) -> BenchPlan:
    jobs = tuple(dataclasses.replace(j, job_id=resume.job_id(run_id, j))
                 for j in plan_jobs(artifacts, devices, options))
    return BenchPlan(run_id, jobs, options, plan_record(jobs, options, what, input_shape))


def plan_record(jobs: Sequence[PlannedJob], options: BenchOptions, what: dict[str, Any],
                input_shape: Sequence[int] | None) -> dict[str, Any]:
    """What `runs.plan` holds of a run (a bench's, a nightly's) as it begins."""
    return {
        "version": PLAN_VERSION, "what": what, "options": options_record(options, input_shape),
        "process": this_process(),
        "jobs": [{"job_id": j.job_id, "device": j.device.name, "model": j.artifact.name,
                  "runtime": j.runtime, "sha256": j.artifact.sha256,
                  "setup": _as_json(job_setup(j, options))} for j in jobs]}


def check_options(run: str, recorded: dict[str, Any], options: dict[str, Any]) -> None:
    """One line naming the first option (`options_record`'s) whose value differs from the one
    `run` ("run X", "nightly X") recorded, with both values; nothing if none does."""
    for key in OPTION_FLAGS:
        then, now = recorded.get(key), options.get(key)
        if then != now:
            raise EdgebenchError(f"{run} was measured with {_flag(key, then)}; this command "
                                 f"gives {_flag(key, now)}; resume it with the options it "
                                 "began with")


def setup_difference(recorded: dict[str, Any], job: PlannedJob, options: BenchOptions
                     ) -> str | None:
    """How `job` would be set up otherwise than its recorded plan entry says (`job_setup`:
    "options.threads: 1 then, 2 now"), or None."""
    return _first_difference(recorded["setup"], _as_json(job_setup(job, options)))


def check_run(store: Store, run: str, what: dict[str, Any], devices: Sequence[str],
              options: dict[str, Any]) -> RunInfo:
    """The run `--resume RUN` names, if this command can take it up; else one line why not."""
    try:
        run_id = store.resolve_run(run)
    except StoreError as err:
        raise StoreError(f"--resume {run}: {err}") from err
    info = store.run(run_id)
    assert info is not None
    if info.is_nightly:
        raise EdgebenchError(f"run {run_id} is a nightly; it resumes with `edgebench nightly "
                             f"--id {run_id}{db_option(store.path)}` and its farm and suite")
    plan = info.plan
    if plan is None:
        raise EdgebenchError(f"run {run_id} cannot be resumed: it was begun by an edgebench "
                             "that recorded no plan (before --resume); bench anew")
    if info.status == "finished":
        raise EdgebenchError(f"run {run_id} finished: every session it planned is stored; "
                             "nothing to resume")
    if info.status == "running" and _alive(plan.get("process") or {}):
        raise EdgebenchError(f"run {run_id} is still being measured by process "
                             f"{plan['process']['pid']} on this host; stop it first (Ctrl-C), "
                             "then resume")
    if plan.get("version") != PLAN_VERSION:
        raise EdgebenchError(f"run {run_id} recorded a plan of version {plan.get('version')}, "
                             f"this edgebench resumes version {PLAN_VERSION}")
    check_samples_kept(store, run_id, plan)
    was = plan["what"]
    if set(was) != set(what) or was.get("suite", was.get("model")) != what.get(
            "suite", what.get("model")):
        raise EdgebenchError(f"run {run_id} measured {_what(was)}; this command gives "
                             f"{_what(what)}")
    if was.get("sha256") != what.get("sha256"):
        raise EdgebenchError(f"run {run_id}: suite {what['suite']} changed since the run began "
                             f"(sha256 {_short(was.get('sha256'))} then, "
                             f"{_short(what.get('sha256'))} now); bench it anew without --resume")
    if sorted(info.devices) != sorted(devices):
        raise EdgebenchError(f"run {run_id} ran on {', '.join(info.devices)}; this command gives "
                             f"{', '.join(devices)}")
    check_options(f"run {run_id}", plan["options"], options)
    return info


def check_samples_kept(store: Store, run_id: str, plan: dict[str, Any], *,
                       name: str = "run", anew: str = "bench it anew without --resume") -> None:
    """A measurement still to be measured gets its row again from all its sessions, and the
    pooled figures of that row (n, p50 to p99, mean, std) are of every sample: a stored session
    whose samples were pruned (`edgebench db prune`) cannot give them, and a row of the new
    sessions' samples beside the median of all would contradict its own sessions. Such a run is
    refused (`name` and `anew`: how the message names the run and what to do instead);
    measurements that are complete keep their rows and do not matter."""
    jobs = {j["job_id"]: j for j in plan.get("jobs") or ()}
    if not jobs or not store.pruned_sessions(list(jobs)):
        return
    options = plan.get("options") or {}
    rows = resume.sessions_by_job(store, list(jobs))
    profiled = {p["job_id"] for p in store.profiles(list(jobs))} if options.get("profile") \
        else set()
    lost = []
    for job_id, job in jobs.items():
        done = rows.get(job_id, [])
        unfinished = not resume.complete(done, int(options.get("sessions") or 0),
                                         options.get("max_sessions")) or (
            options.get("profile") and job_id not in profiled
            and any(r["status"] == "ok" for r in done))
        pruned = store.pruned_sessions([job_id]) if unfinished else 0
        if pruned:
            lost.append((_job((job["device"], job["model"], job["runtime"])), pruned))
    if lost:
        (what, count), others = lost[0], len(lost) - 1
        raise EdgebenchError(
            f"{name} {run_id} cannot be resumed: the raw samples of {count} stored session"
            f"{'s' if count != 1 else ''} of {what}"
            + (f" (and of {others} other measurement{'s' if others != 1 else ''})"
               if others else "")
            + " were pruned (`edgebench db prune`), and a measurement's pooled figures (n, "
            f"percentiles, mean) need every session's samples; {anew}")


def check_jobs(info: RunInfo, plan: BenchPlan) -> None:
    """The measurements planned now are the run's, of the same files, set up the same way."""
    assert info.plan is not None
    was = {(j["device"], j["model"], j["runtime"]): j for j in info.plan["jobs"]}
    now = {(j.device.name, j.artifact.name, j.runtime): j for j in plan.jobs}
    for key in was:
        if key not in now:
            raise EdgebenchError(f"run {info.run_id} planned {_job(key)}, which this command "
                                 "does not (a suite entry that no longer builds?); it cannot "
                                 "resume that run")
    for key, job in now.items():
        if key not in was:
            raise EdgebenchError(f"this command plans {_job(key)}, which run {info.run_id} did "
                                 "not; it cannot resume that run")
        then = was[key]
        if then["sha256"] != job.artifact.sha256:
            raise EdgebenchError(
                f"run {info.run_id}: model {job.artifact.name} changed since the run measured it "
                f"(sha256 {_short(then['sha256'])} then, {_short(job.artifact.sha256)} now, "
                f"{job.artifact.path}); a rebuilt model is measured anew: bench without --resume")
        difference = setup_difference(then, job, plan.options)
        if difference:
            raise EdgebenchError(f"run {info.run_id}: {_job(key)} would be measured otherwise "
                                 f"than it was ({difference}); was the device profile changed?")


def begin(store: Store, plan: BenchPlan, command: str, suite: str | None, resuming: bool
          ) -> None:
    """Begin the run, recording its plan; or take it up again as it was recorded."""
    devices = list(dict.fromkeys(j.device.name for j in plan.jobs))
    store.begin_run(command, suite, devices, run_id=plan.run_id,
                    plan=None if resuming else plan.record)
    if resuming:  # the run's plan as it began, now measured by this process
        info = store.run(plan.run_id)
        assert info is not None and info.plan is not None
        store.set_run_plan(plan.run_id, {**info.plan, "process": this_process()})


def unfinished(store: Store, plan: BenchPlan) -> list[PlannedJob]:
    """The planned measurements that still lack sessions, or a profile asked for."""
    ids = [j.job_id for j in plan.jobs]
    profiled = {p["job_id"] for p in store.profiles(ids)} if plan.options.profile else set()
    return _unfinished(plan, resume.sessions_by_job(store, ids), profiled)


def _unfinished(plan: BenchPlan, rows: dict[str, list[dict[str, Any]]], profiled: set[str]
                ) -> list[PlannedJob]:
    """`unfinished`, of the session rows (by job) and profiled jobs read already."""
    options = plan.options
    left = {j.job_id for j in resume.missing_among(rows, plan.jobs, options.session_count,
                                                   options.max_sessions, options.precision)}
    if options.profile:
        left |= {j.job_id for j in plan.jobs if j.job_id not in profiled
                 and any(r["status"] == "ok" for r in rows.get(j.job_id, ()))}
    return [j for j in plan.jobs if j.job_id in left]  # in plan order


def resume_state(store: Store, plan: BenchPlan) -> ResumeState:
    """Forget the sessions lost with a device's connection, then what is stored and left; the
    stored sessions and profiles are read once."""
    ids = [j.job_id for j in plan.jobs]
    rows = resume.forget_retryable_rows(store, resume.sessions_by_job(store, ids))
    profile_rows = store.profiles(ids) if plan.options.profile else []
    profiled = {p["job_id"] for p in profile_rows}
    todo = _unfinished(plan, rows, profiled)
    planned = plan.options.session_count
    stored = left = dropped = 0
    todo_ids = {j.job_id for j in todo}
    for job in plan.jobs:
        done = min(len({r["session"] for r in rows.get(job.job_id, ())}), planned)
        stored += done
        if job.job_id in todo_ids:
            left += planned - done
        else:
            dropped += planned - done
    profiles_left = sum(1 for j in todo if plan.options.profile and j.job_id not in profiled)
    profiles = resume.stored_profiles(store, [p for p in profile_rows if p["job_id"] in todo_ids])
    return ResumeState(todo, resume.stored_sessions(store, plan.run_id, todo, rows), profiled,
                       profiles, stored, left, planned * len(plan.jobs), dropped, profiles_left)


def describe(state: ResumeState, run_id: str) -> str:
    text = (f"resuming run {run_id}: {state.sessions_stored} of {state.sessions_total} sessions "
            f"stored, measuring {state.sessions_left}")
    if state.profiles_left:
        text += f" and {state.profiles_left} profile{'s' if state.profiles_left > 1 else ''}"
    if state.sessions_dropped:
        text += (f" ({state.sessions_dropped} others are not: their measurement failed at its "
                 "first session)")
    return text


def finish(store: Store, plan: BenchPlan) -> str:
    """Close the run: finished when every planned session (and profile) is stored."""
    status = "incomplete" if unfinished(store, plan) else "finished"
    store.finish_run(plan.run_id, status)
    return status


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(process: dict[str, Any]) -> bool:
    """Whether the edgebench process that last measured a run still runs (on this host: another
    host's processes cannot be seen, and a killed run is what --resume is for)."""
    pid = process.get("pid")
    if process.get("host") != socket.gethostname() or not isinstance(pid, int) or \
            pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False  # gone (or no /proc: not known to run)
    return b"harness" in cmdline or b"edgebench" in cmdline  # not a reused pid


def _as_json(value: Any) -> Any:
    """As it reads back from the store (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True))


def _first_difference(then: Any, now: Any, path: str = "") -> str | None:
    if isinstance(then, dict) and isinstance(now, dict):
        for key in sorted(set(then) | set(now)):
            found = _first_difference(then.get(key), now.get(key), f"{path}.{key}" if path
                                      else key)
            if found:
                return found
        return None
    if then != now:
        return f"{path}: {json.dumps(then)} then, {json.dumps(now)} now"
    return None


def _flag(key: str, value: Any) -> str:
    flag = OPTION_FLAGS[key]
    if key == "sessions":
        return f"{value} sessions per measurement"
    if value is True:
        return flag
    if value is None or value is False or value == []:
        return f"no {flag}"
    if key == "input_shape":
        return f"{flag} {','.join(map(str, value))}"
    if isinstance(value, list):
        return " ".join(f"{flag} {v}" for v in value)
    return f"{flag} {value}"


def _what(what: dict[str, Any]) -> str:
    return f"--suite {what['suite']}" if "suite" in what else f"--model {what['model']}"


def _job(key: tuple[str, str, str]) -> str:
    device, model, runtime = key
    return f"{model} on {runtime} on {device}"


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"
