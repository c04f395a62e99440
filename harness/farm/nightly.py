"""`edgebench nightly`: a suite on every device of a farm, as one run, resumable, gated.

The suite is built once. Each farm device gets a thread of its own: it acquires the device's
labgrid place (waiting up to the farm's `wait_s` for someone else to let go, else the device is
skipped naming the holder), checks the device's health (`devices check`'s agent job), then
measures its queue through the runner into the nightly's run (`run_id` = the nightly's id). A
device that cannot be reached, at the check or during its queue, is tried again after
`backoff_s`, doubling, up to `retries` more times, each time measuring only what is still missing;
then it is reported failed and the others go on. A device whose key or host key is wrong
(`AccessError`: a missing or encrypted key file, a refused key, an unknown or changed host key)
is failed at once: waiting does not fix a profile. The place is released when the device is done,
on errors and on Ctrl-C (SIGTERM too); a place left acquired by a killed nightly is released by
the next (harness/farm/labgrid.py).

Resume: the nightly's id names its run, and its jobs' ids are derived from it
(`resume.job_id`), so the same command with `--id ID` after a crash measures only the sessions
that are not stored yet (harness/resume.py): no duplicate rows, no session measured twice,
and the device's content cache means nothing already pushed is pushed again. On Ctrl-C or
SIGTERM the devices stop storing before their places are released (`run_plan`'s `halt`): a
session under way then is not stored, as in an interrupted bench, rather than stored as the lost
connection that releasing its place causes; the resume measures it.

Afterwards each device's results are compared with its baseline by `compare`'s rule
(`previous_baselines`: for `--baseline previous`, the device's last nightly that measured it ok)
and the trend report, the JSON summary and the JUnit XML are written (`summary.py`,
`harness/report/nightly.py`); a measurement with no baseline measurement is said not gated. A
regression (`compare.is_regression`) is a measurement slower beyond T with confidence, with a
lower top-1 (fewer of the same images right, by one image or more and beyond
`--top1-threshold`), or newly failing: it fails (status not ok) where it ran ok in the baseline,
or it fails with nothing to compare it with (the first nightly, which has no baseline, or a
model new since the baseline), since it never ran ok before: otherwise a model that failed from
its first night on would never fail the gate (failing in both nightlies is no news). The exit
code (`exit_code`): 0 all measured and no regression, 1 a regression (with
`--fail-on-regression`), 3 something was not measured: a device failed or was skipped, or a
suite entry did not build (its regressions said beside it), or the host's disk failed the
nightly (harness/farm/command.py). A result database whose disk fills up or fails
stops every device, as Ctrl-C does (`run_devices` raises its `StorageError`).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import bench, resume
from harness.agent import protocol
from harness.errors import AccessError, EdgebenchError, TransportError
from harness.farm.farmfile import Farm
from harness.report.frame import JOB_KEYS
from harness.results import measured_nothing
from harness.runner import BenchOptions, PlannedJob, job_setup, plan_jobs, run_plan
from harness.signals import raise_if_interrupted
from harness.store import RunInfo, StorageError, Store, new_run_id, storage_error
from harness.transport.base import transport_for

CHECK_TIMEOUT_S = 120.0
WIND_DOWN_S = 5.0  # how long an interrupted nightly waits for its devices to stop
INTERRUPTED_DEVICE = "Ctrl-C or SIGTERM; a session under way is not stored: a resume measures it"
# 3: something planned was not measured (a device failed or was skipped, a suite entry did not
# build); the rest is gated all the same
EXIT_OK, EXIT_REGRESSION, EXIT_NOT_MEASURED = 0, 1, 3
Say = Callable[[str], None]
# What a measurement is, as compare pairs it with a baseline's: the values of frame.JOB_KEYS
# (device, model, format, runtime, threads, batch), in that order.
MeasurementKey = tuple[Any, ...]


@dataclass
class DeviceOutcome:
    name: str
    place: str | None
    status: str = "pending"  # ok | failed | unsupported | skipped | interrupted
    message: str = ""
    attempts: int = 0
    notes: list[str] = field(default_factory=list)
    sessions_run: int = 0
    bytes_pushed: int = 0


@dataclass(frozen=True)
class NightlyPlan:
    nightly_id: str
    jobs: tuple[PlannedJob, ...]
    options: BenchOptions
    suite: str
    command: str
    record: dict[str, Any] = field(default_factory=dict)  # what runs.plan holds


def plan_nightly(farm: Farm, artifacts: Sequence[Any], options: BenchOptions, nightly_id: str,
                 suite: str, command: str) -> NightlyPlan:
    jobs = plan_jobs(artifacts, farm.devices, options)
    jobs = [dataclasses.replace(j, job_id=resume.job_id(nightly_id, j)) for j in jobs]
    record = bench.plan_record(jobs, options, bench.what_record(Path(suite), None), None)
    return NightlyPlan(nightly_id, tuple(jobs), options, suite, command, record)


def check_resume(store: Store, nightly_id: str, suite: str, devices: Sequence[str],
                 options: BenchOptions) -> RunInfo | None:
    """The nightly `--id` names, if it exists and this command can take it up; else one line
    why not: another suite or farm, an edited suite, or other options than it recorded
    (`runs.plan`, as `bench --resume` checks them), since sessions measured otherwise would mix
    in one measurement, or be taken for measured; a nightly still being measured by a process
    that runs on this host (as `bench --resume` refuses it); or stored sessions whose samples
    were pruned (said before any place is reserved, not at the first such measurement). A
    nightly of an edgebench that recorded no plan is taken up unchecked, as before."""
    existing = store.run(nightly_id)
    if existing is None:
        return None
    if not existing.is_nightly:
        raise EdgebenchError(f"{store.path}: run {nightly_id} is not a nightly; give another "
                             "--id")
    if existing.suite != suite or sorted(existing.devices) != sorted(devices):
        raise EdgebenchError(
            f"{store.path}: nightly {nightly_id} ran suite {existing.suite} on "
            f"{', '.join(existing.devices)}; resume it with the same suite and farm, or give "
            "another --id")
    recorded = existing.plan
    process = (recorded or {}).get("process") or {}
    if existing.status == "running" and bench._alive(process):  # bench --resume's rule
        # two nightlies of one id (a manual start while the timer's runs) would measure the
        # same sessions twice, the second failing on them and overwriting the first's report
        raise EdgebenchError(f"nightly {nightly_id} is still being measured by process "
                             f"{process['pid']} on this host; stop it first (Ctrl-C, SIGTERM), "
                             "then resume it, or give another --id")
    if recorded is not None:
        if recorded.get("version") != bench.PLAN_VERSION:
            raise EdgebenchError(f"nightly {nightly_id} recorded a plan of version "
                                 f"{recorded.get('version')}, this edgebench resumes version "
                                 f"{bench.PLAN_VERSION}")
        bench.check_options(f"nightly {nightly_id}", recorded.get("options") or {},
                            bench.options_record(options, None))
        bench.check_samples_kept(store, nightly_id, recorded, name="nightly",
                                 anew="run a new nightly (without --id)")
        was = (recorded.get("what") or {}).get("sha256")
        now = bench.what_record(Path(suite), None)["sha256"]
        if was != now:  # its rebuilt models would be measured beside the old ones in one run
            raise EdgebenchError(
                f"nightly {nightly_id}: suite {suite} changed since the nightly began (sha256 "
                f"{(was or 'none')[:12]} then, {(now or 'none')[:12]} now); run a new nightly "
                "(without --id)")
    return existing


def begin(store: Store, plan: NightlyPlan, farm: Farm) -> bool:
    """Begin the nightly's run, recording its plan, or take it up again; True when resuming.
    A measurement the run planned that would now be set up otherwise (the farm file changed
    its threads, runtime options or tuning) is refused, naming what differs."""
    names = [d.name for d in farm.devices]
    existing = check_resume(store, plan.nightly_id, plan.suite, names, plan.options)
    if existing is not None and existing.plan is not None:
        recorded = {j["job_id"]: j for j in existing.plan.get("jobs") or ()}
        for job in plan.jobs:
            if job.job_id in recorded:
                difference = bench.setup_difference(recorded[job.job_id], job, plan.options)
                if difference:
                    raise EdgebenchError(
                        f"nightly {plan.nightly_id}: {job.artifact.name} on {job.runtime} on "
                        f"{job.device.name} would be measured otherwise than it was "
                        f"({difference}); was the farm file changed?")
    store.begin_run(plan.command, plan.suite, names, run_id=plan.nightly_id, plan=plan.record)
    if existing is not None and existing.plan is not None:  # now measured by this process
        store.set_run_plan(plan.nightly_id, {**existing.plan, "process": bench.this_process()})
    return existing is not None


def check_device(device: Any) -> int:
    """The health check: the agent answers `devices check`'s job (TransportError if not);
    the bytes it pushed (the agent, the first time)."""
    with transport_for(device) as transport:
        run = transport.run_agent(protocol.check_job(device.kind), timeout_s=CHECK_TIMEOUT_S)
        pushed = transport.bytes_pushed
    if run.result.get("status") != protocol.STATUS_OK:
        error = run.result.get("error") or {}
        raise TransportError(f"device {device.name}: health check failed: "
                             f"{error.get('message', 'no answer')}")
    return pushed


def run_device(db: Path, plan: NightlyPlan, device: Any, farm: Farm, outcome: DeviceOutcome,
               stop: threading.Event, say: Say, fatal: list[StorageError] | None = None) -> None:
    """One device's nightly: acquire, check, measure what is missing, retry, release. A result
    database whose disk is full or failing (`StorageError`) is no fault of the device and stops
    every device: it goes into `fatal`, and `stop` is set."""
    from harness.farm.labgrid import PlaceBusy, client_for

    jobs = [j for j in plan.jobs if j.device.name == device.name]
    ids = [j.job_id for j in jobs]
    planned = plan.options.session_count
    client = None
    try:
        with Store(db) as store:
            # The stored sessions, read once: what is left, what to forget, what to rebuild
            # rows from; read again only after this device has stored more.
            stored = resume.sessions_by_job(store, ids)
            if not resume.missing_among(stored, jobs, planned):
                outcome.status, outcome.message = "ok", "everything was measured already"
                if device.labgrid is not None:  # a killed run may still hold the place
                    note = client_for(device.labgrid.coordinator).release_if_stale(
                        device.labgrid.place)
                    if note:
                        outcome.notes.append(note)
                        say(note)
                return
            if device.labgrid is not None:
                client = client_for(device.labgrid.coordinator)
                client.run_id = plan.nightly_id
                lease = client.acquire(  # held until this device is done
                    device.labgrid, on_wait=lambda place, holder, wait_s: say(
                        f"{device.name}: labgrid place {place} is held by {holder}; waiting up "
                        f"to {wait_s:g} s for it, then skipping it"))
                if lease.note:
                    outcome.notes.append(lease.note)
                    say(lease.note)
                say(f"{device.name}: acquired labgrid place {lease.place} "
                    f"({lease.user}@{lease.address}:{lease.port})")
            for attempt in range(farm.retries + 1):
                outcome.attempts = attempt + 1
                if attempt:
                    wait = farm.backoff_s * 2 ** (attempt - 1)
                    say(f"{device.name}: trying again in {wait:g} s "
                        f"({attempt} of {farm.retries}): {outcome.message}")
                    if stop.wait(wait):
                        return
                try:
                    outcome.bytes_pushed += check_device(device)
                except AccessError as err:  # a key or host key to fix: no retry can help
                    outcome.status, outcome.message = "failed", str(err)
                    return
                except TransportError as err:
                    outcome.status, outcome.message = "failed", str(err)
                    continue
                stored = resume.forget_retryable_rows(store, stored)
                todo = resume.missing_among(stored, jobs, planned)
                if todo:
                    _measure(store, plan, todo, stored, outcome, say, stop)
                    if stop.is_set():
                        return
                    stored = resume.sessions_by_job(store, ids)
                left = resume.missing_among(stored, jobs, planned)
                if not left:
                    outcome.status, outcome.message = "ok", ""
                    return
                outcome.status = "failed"
                outcome.message = _why_missing(stored, left)
    except PlaceBusy as err:
        outcome.status = "skipped"
        outcome.message = (f"labgrid place {err.place} is held by {err.holder}; waited "
                           f"{err.waited_s:g} s for it, skipping it")
        if err.note:
            outcome.notes.append(err.note)
            say(err.note)
    except (EdgebenchError, sqlite3.Error) as err:
        disk = err if isinstance(err, StorageError) else storage_error(
            db, err, f"storing {device.name}'s sessions")
        if disk is not None:  # the host's disk: no device can store anything
            outcome.status, outcome.message = "failed", str(disk)
            if fatal is not None:
                fatal.append(disk)
            stop.set()
        elif isinstance(err, EdgebenchError):
            outcome.status, outcome.message = "failed", str(err)
        else:
            outcome.status, outcome.message = "failed", _surprise(err, device.name)
    except Exception as err:  # a bug or a library's surprise: the other devices go on
        outcome.status, outcome.message = "failed", _surprise(err, device.name)
    finally:
        if stop.is_set() and outcome.status != "ok":  # Ctrl-C, SIGTERM: no fault of the device
            outcome.status, outcome.message = "interrupted", INTERRUPTED_DEVICE
        if client is not None and device.labgrid is not None:
            try:
                client.release(device.labgrid.place)
            except TransportError as err:
                outcome.notes.append(f"could not release place {device.labgrid.place}: {err}")
        say(f"{device.name}: {outcome.status}" + (f": {outcome.message}" if outcome.message
                                                   else ""))


def _surprise(err: Exception, device: str) -> str:
    """The device's one-line error for an exception no one foresaw (a bug, a library's
    surprise); its traceback goes to stderr, in one write so that the other devices' threads do
    not cut into it, as the agent writes its own (harness/agent/job.py): the line alone would
    leave a bug nothing to be found by."""
    sys.stderr.write(f"edgebench: unexpected error in {device}'s nightly:\n"
                     + "".join(traceback.format_exception(err)))
    return f"{type(err).__name__}: {err} (on the host, in {device}'s nightly)"


def _measure(store: Store, plan: NightlyPlan, todo: Sequence[PlannedJob],
             rows: dict[str, list[dict[str, Any]]], outcome: DeviceOutcome, say: Say,
             stop: threading.Event) -> None:
    """Measure what `todo` lacks; `rows`: their stored session rows by job, as read. Once
    `stop` is set nothing more is stored: the session under way is measured again on resume."""
    stored = resume.stored_sessions(store, plan.nightly_id, todo, rows)

    # a measurement's row counts the bytes of all its sessions: this run's are the growth
    pushed = {job_id: sum(s.row.get("bytes_pushed") or 0 for s in sessions)
              for job_id, sessions in stored.items()}

    def on_event(kind: str, job: PlannedJob, record: dict[str, Any] | None) -> None:
        outcome.sessions_run += 1
        if record is not None:
            total = record.get("bytes_pushed") or 0
            outcome.bytes_pushed += total - pushed.get(job.job_id, 0)
            pushed[job.job_id] = total
        if record is not None and record["status"] != "ok":
            say(f"{job.device.name}: {job.artifact.name} on {job.runtime}: {record['status']}: "
                f"{record['error_message']}")

    warned: set[str] = set()

    def on_change(job: PlannedJob, changes: list[tuple[str, Any, Any]]) -> None:
        line = resume.change_warning(plan.nightly_id, job, changes)
        if line not in warned:  # once, not for every measurement
            warned.add(line)
            say(line)

    run_plan(store, todo, plan.options, command=plan.command, suite=plan.suite,
             on_event=on_event, run_id=plan.nightly_id, stored=stored, on_change=on_change,
             halt=stop)


def _why_missing(rows: dict[str, list[dict[str, Any]]], left: Sequence[PlannedJob]) -> str:
    for job in left:
        for row in rows.get(job.job_id, ()):
            if resume.retryable(row):
                return str(row.get("error_message") or row.get("error_kind"))
    return f"{len(left)} measurements are missing sessions"


def run_devices(db: Path, plan: NightlyPlan, farm: Farm, say: Say) -> list[DeviceOutcome]:
    """Every device's nightly in parallel; on Ctrl-C or SIGTERM, every place is released, and
    so on a full or failing disk under the result database, which is raised (`StorageError`)."""
    from harness.farm.labgrid import places_released_on_interrupt

    outcomes = [DeviceOutcome(d.name, d.labgrid.place if d.labgrid else None)
                for d in farm.devices]
    stop = threading.Event()
    fatal: list[StorageError] = []
    threads = [threading.Thread(target=run_device, args=(db, plan, d, farm, o, stop, say, fatal),
                                name=f"nightly-{d.name}", daemon=True)
               for d, o in zip(farm.devices, outcomes, strict=True)]
    try:
        with places_released_on_interrupt():
            try:
                for t in threads:
                    t.start()
                for t in threads:
                    while t.is_alive():
                        raise_if_interrupted()  # a Ctrl-C Python lost in a gc callback
                        if fatal:  # every device stops, as on Ctrl-C
                            raise fatal[0]
                        t.join(0.5)
                if fatal:
                    raise fatal[0]
            except BaseException:
                # before the places go: no device starts another job on one, nor stores the
                # session that losing its place cuts short
                stop.set()
                raise
    except BaseException:
        # a moment for each device to stop and say so; one stuck in a job is left behind
        deadline = time.monotonic() + WIND_DOWN_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        raise
    return outcomes


def finish(store: Store, plan: NightlyPlan) -> str:
    """Close the nightly's run: finished when every planned session is stored."""
    left = resume.missing_jobs(store, plan.jobs, plan.options.session_count)
    status = "finished" if not left else "incomplete"
    store.finish_run(plan.nightly_id, status)
    return status


def measurement_keys(jobs: Sequence[PlannedJob], options: BenchOptions,
                     measured: Iterable[dict[str, Any]] = ()) -> set[MeasurementKey]:
    """What each planned measurement is, as a baseline must have measured it for compare to pair
    them (`key`, frame.JOB_KEYS): device, model, format, runtime, threads and batch. Threads are
    those `--threads` or the farm file set; where neither does, the agent takes one per CPU of
    the device, known once measured: from the nightly's own result row (`measured`) if it has
    one, else None, which matches any (`_matches`)."""
    stored = {r["job_id"]: r for r in measured if r.get("threads") is not None}
    return {key(stored[j.job_id]) if j.job_id in stored else key({
        "device": j.device.name, "model": j.artifact.name, "format": j.artifact.format,
        "runtime": j.runtime, "threads": job_setup(j, options)["options"].get("threads"),
        # as results.measurement_row stores it
        "batch": j.artifact.input_shape[0] if j.artifact.input_shape else 1,
    }) for j in jobs}


def key(row: dict[str, Any]) -> MeasurementKey:
    """A result row's MeasurementKey."""
    return tuple(row.get(k) for k in JOB_KEYS)


_DEVICE, _THREADS = JOB_KEYS.index("device"), JOB_KEYS.index("threads")


def _matches(wanted: MeasurementKey, found: MeasurementKey) -> bool:
    """Whether a stored measurement `found` is one `wanted` (threads None: any)."""
    return all(w == f or (i == _THREADS and w is None)
               for i, (w, f) in enumerate(zip(wanted, found, strict=True)))


def _ok_keys(store: Store, run_id: str) -> set[MeasurementKey]:
    return {key(r) for r in store.find_results(run_id=run_id, status="ok")}


def _wanted_among(found: Iterable[MeasurementKey], wanted: set[MeasurementKey]
                  ) -> set[MeasurementKey]:
    """The keys of `found` that are measurements `wanted` (`_matches`)."""
    return {f for f in found if any(_matches(w, f) for w in wanted)}


def previous_baselines(store: Store, nightly_id: str, wanted: set[MeasurementKey]
                       ) -> dict[str, str | None]:
    """Each device's baseline for `--baseline previous`: the latest nightly before this one in
    which that device measured ok something this nightly plans on it (`wanted`, by
    `measurement_keys`: what compare pairs on, frame.JOB_KEYS, threads and batch too: a nightly
    at other threads pairs with nothing); None where there is none. Per device, so that a
    nightly interrupted before it stored anything, or one in which a board failed or was
    skipped, is not the baseline of what it did not measure: the board's measurements are
    compared with its last good night."""
    found: dict[str, str | None] = {d: None for d in sorted({str(k[_DEVICE]) for k in wanted})}
    runs = store.runs()
    order = [r.run_id for r in runs]
    before = runs[:order.index(nightly_id)] if nightly_id in order else runs
    for run in reversed(before):
        left = [d for d, b in found.items() if b is None and d in run.devices]
        if not run.is_nightly or not left:
            continue
        measured = {k[_DEVICE] for k in _wanted_among(_ok_keys(store, run.run_id), wanted)}
        for device in left:
            if device in measured:
                found[device] = run.run_id
        if all(found.values()):
            break
    return found


def latest(store: Store, run_ids: Iterable[str | None]) -> str | None:
    """The latest begun of these runs (the nightly's `baseline` when its devices' differ)."""
    wanted = set(run_ids) - {None}
    return next((r.run_id for r in reversed(store.runs()) if r.run_id in wanted), None)


def check_baseline(store: Store, baseline: str, devices: Sequence[str],
                   planned: set[MeasurementKey] | None = None) -> None:
    """An explicit `--baseline` that could gate nothing of this nightly is refused in one line,
    before anything is measured: one with no ok measurement on these devices (checked before the
    build), or, once the nightly is `planned` (`measurement_keys`), none of a measurement it
    makes. Otherwise every measurement would be "only in B" and the gate would pass."""
    ok = _ok_keys(store, baseline)
    shared = {k for k in ok if k[_DEVICE] in devices}
    if not shared:
        ran = sorted({str(k[_DEVICE]) for k in ok})
        raise EdgebenchError(
            f"--baseline {baseline}: it measured nothing ok on this farm's devices "
            f"({', '.join(devices)}; it measured {', '.join(ran) if ran else 'nothing ok'}), so "
            "it can gate nothing; give a run of these devices, or `previous`")
    if planned is not None and not _wanted_among(shared, planned):
        raise EdgebenchError(
            f"--baseline {baseline}: it has no ok measurement of a model this nightly measures "
            "(same device, model, format, runtime, threads and batch), so it can gate nothing; "
            "give a run of this suite on these devices, or `previous`")


def nightly_ids(store: Store, upto: str) -> list[str]:
    runs = store.runs()
    order = [r.run_id for r in runs]
    return [r.run_id for r in runs[:order.index(upto) + 1] if r.is_nightly]


def mark_measured_nothing(outcomes: Sequence[DeviceOutcome],
                          results: Sequence[dict[str, Any]]) -> None:
    """A device that ran but measured nothing (`results.measured_nothing`) has that as its
    outcome, as a device that could not be reached does, and counts as not measured
    (`exit_code`): the gate said "every device measured" of it, as `bench` exited 0."""
    nothing = measured_nothing(results)
    for outcome in outcomes:
        if outcome.status == "ok" and outcome.name in nothing:
            outcome.status = "unsupported"
            outcome.message = nothing[outcome.name]


def exit_code(outcomes: Sequence[DeviceOutcome], regressions: int, fail_on_regression: bool,
              build_failures: Sequence[str] = (), not_gated: int | Sequence[str] = 0
              ) -> tuple[int, str]:
    """The nightly's exit code and what it means, in words for the report's reader.
    `build_failures`: the suite entries that did not build. What was not measured, on a device
    or for want of its file, is 3 with or without --fail-on-regression, as `bench` fails a suite
    entry that does not build: a gate that passes what it never measured is no gate; the
    regressions of what was measured are said beside it all the same (3 says only that
    something is missing, and a regression must not hide behind a board that was down).
    `not_gated`: measurements that ran ok but could not be judged, each by why in a few words
    (NO_BASELINE, "on another instruction set than its baseline", ...), or their count (all
    for want of a baseline); a caveat the meaning states, not a failure (a first nightly, a
    new model or board has no baseline, a replaced board no comparable one)."""
    missed = [o for o in outcomes if o.status != "ok"]
    what = []
    if build_failures:
        what.append(f"{len(build_failures)} suite "
                    f"{'entry' if len(build_failures) == 1 else 'entries'} did not build "
                    f"({', '.join(build_failures)})")
    if missed:
        devices = ", ".join(f"{o.name} {o.status}" for o in missed)
        what.append(f"{len(missed)} of {_plural(len(outcomes), 'device')} not measured "
                    f"({devices})")
    found = _plural(regressions, "regression")
    fail = "fails" if regressions == 1 else "fail"
    if missed or build_failures:
        gated = "; the rest is stored and gated all the same"
        if regressions:
            gated += (f", with {found}" + ("" if fail_on_regression else
                                          f", which {fail} a run only with --fail-on-regression"))
        return EXIT_NOT_MEASURED, "; ".join(what) + gated + _caveat(not_gated)
    if regressions and fail_on_regression:
        return EXIT_REGRESSION, (f"every device measured; {found}, and --fail-on-regression"
                                 + _caveat(not_gated))
    if regressions:
        return EXIT_OK, (f"every device measured; {found}, which {fail} the run only with "
                         "--fail-on-regression" + _caveat(not_gated))
    return EXIT_OK, "every device measured and no regression" + _caveat(not_gated)


# Why a measurement that ran ok was not gated, when it had no baseline measurement at all.
NO_BASELINE = "with no baseline measurement to compare with"


def _caveat(not_gated: int | Sequence[str]) -> str:
    """"; 3 measurements not gated (2 with no baseline measurement to compare with, 1 on
    another instruction set than its baseline)", or "" when none."""
    reasons = [NO_BASELINE] * not_gated if isinstance(not_gated, int) else list(not_gated)
    if not reasons:
        return ""
    counts = {why: reasons.count(why) for why in dict.fromkeys(reasons)}
    if len(counts) == 1:
        return f"; {_plural(len(reasons), 'measurement')} not gated, {reasons[0]}"
    return (f"; {_plural(len(reasons), 'measurement')} not gated ("
            + ", ".join(f"{n} {why}" for why, n in counts.items()) + ")")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def new_nightly_id() -> str:
    return "nightly-" + new_run_id()

