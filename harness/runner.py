"""From a plan (artifacts x runtimes x devices) to stored results, one session at a time.

A measurement (artifact, runtime, device) is several sessions, each a fresh agent process. Each
device gets its own queue and worker thread (one session at a time per device, devices in
parallel), and its queue is in rounds: session 0 of every artifact, then session 1 of every
artifact, and so on, so drift and neighbours hit every variant alike and session k of two variants
ran close together. Accuracy is measured in session 0 only (it does not change between processes).
A measurement whose first session fails gets no more sessions. With `max_sessions`, measurements
whose headline interval is still wider than `precision` after the planned rounds get more rounds,
up to that cap, in the spirit of MLPerf's early stopping (see README). The main thread alone writes
to the store, one transaction per finished session with its measurement's row brought up to date,
so an interrupted run keeps everything that finished. Whatever goes wrong in a device's worker
becomes a failed row for each of its measurements not yet stored, never a silent gap.

With `profile`, each measurement whose sessions measured gets one more session after all the
timed rounds: the engine's per-operator profiler over a fixed number of iterations, stored in the
profile tables and never among the timed sessions, so profiling overhead touches no latency.
"""

from __future__ import annotations

import bisect
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import results
from harness.agent import protocol
from harness.artifacts import Artifact, file_sha256
from harness.config import DeviceProfile
from harness.errors import EdgebenchError, TransportError, UnknownNameError
from harness.registry import RUNTIMES
from harness.report import stats
from harness.signals import raise_if_interrupted
from harness.store import Store, utc_now
from harness.transport.base import AgentRun, Transport, failed_run, transport_for

# Which runtimes can execute which artifact format, in order of preference.
FORMAT_RUNTIMES: dict[str, tuple[str, ...]] = {
    # TensorRT on a Jetson is ONNX Runtime's TensorRT execution provider, not a runtime of its
    # own: one ONNX file, one measurement per runtime the device lists.
    "onnx": ("onnxruntime",),
    "tflite": ("tflite",),
    "torch": ("torch",),
}


DEFAULT_SESSIONS = 5
QUICK_SESSIONS = 2


@dataclass(frozen=True)
class BenchOptions:
    runtimes: tuple[str, ...] = ()  # empty: every runtime the device profile lists
    threads: int | None = None
    quick: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of protocol settings
    sessions: int | None = None  # None: DEFAULT_SESSIONS, or QUICK_SESSIONS with quick
    # More rounds, up to this many sessions, for measurements whose headline interval is wider
    # than `precision` (relative half-width); None: no more than `sessions`.
    max_sessions: int | None = None
    precision: float = 0.02
    force_threads: bool = False  # allow more than 4 threads per device CPU
    # One extra, untimed session per measurement under the engine's per-operator profiler.
    profile: bool = False
    profile_iterations: int = 20

    def __post_init__(self) -> None:
        if self.max_sessions is not None and self.max_sessions < self.session_count:
            raise EdgebenchError(f"--max-sessions {self.max_sessions} is fewer than the "
                                 f"{self.session_count} sessions every measurement gets "
                                 "(--sessions); it adds rounds up to that many")

    @property
    def session_count(self) -> int:
        if self.sessions is not None:
            return self.sessions
        return QUICK_SESSIONS if self.quick else DEFAULT_SESSIONS


@dataclass(frozen=True)
class PlannedJob:
    job_id: str
    device: DeviceProfile
    artifact: Artifact
    runtime: str


@dataclass(frozen=True)
class SessionDone:
    job: PlannedJob
    session: int
    run: AgentRun
    bytes_pushed: int
    orchestration_s: float
    started_at: str
    profile: bool = False  # the measurement's profile session, not a timed one
    # Set by the main thread once the session is stored: the worker waits for it before the
    # next session, so the host's own work (statistics, SQLite) never overlaps a local session.
    stored: threading.Event = field(default_factory=threading.Event, compare=False)


def plan_jobs(artifacts: Sequence[Artifact], devices: Sequence[DeviceProfile],
              options: BenchOptions) -> list[PlannedJob]:
    """Every (artifact, runtime, device) that makes sense; unknown runtimes are refused."""
    for name in options.runtimes:
        # not RUNTIMES.get, which would import the engine: planning must not need it installed
        if name not in RUNTIMES:
            raise UnknownNameError(RUNTIMES.kind, name, RUNTIMES.names())
    jobs = []
    for device in devices:
        for artifact in artifacts:
            for runtime in FORMAT_RUNTIMES.get(artifact.format, ()):
                if runtime not in device.runtimes:
                    continue
                if options.runtimes and runtime not in options.runtimes:
                    continue
                jobs.append(PlannedJob(uuid.uuid4().hex[:12], device, artifact, runtime))
    if not jobs:
        wanted = ", ".join(options.runtimes) or "the profiles' runtimes"
        formats = ", ".join(sorted({a.format for a in artifacts})) or "none"
        raise EdgebenchError(
            f"nothing to run: no model format ({formats}) runs on {wanted} of "
            f"{', '.join(d.name for d in devices)}"
        )
    return jobs


def job_setup(job: PlannedJob, options: BenchOptions) -> dict[str, Any]:
    """What every session of `job` is measured with, files aside: the runtime's options, the
    protocol settings, tuning and input shape (a resumed bench must find them unchanged)."""
    settings = dict(protocol.QUICK_SETTINGS if options.quick else protocol.DEFAULT_SETTINGS)
    settings.update(options.settings)
    agent_options: dict[str, Any] = dict(job.device.runtime_options.get(job.runtime, {}))
    threads = options.threads or job.device.threads
    if threads:
        agent_options["threads"] = threads
    if options.force_threads:
        agent_options["force_threads"] = True
    if job.device.cpu_affinity:
        agent_options["cpu_affinity"] = list(job.device.cpu_affinity)
    shape = job.artifact.input_shape
    return {"options": agent_options, "settings": settings, "tune": job.device.tune,
            "input_shape": list(shape) if shape else None}


def build_job(job: PlannedJob, transport: Transport, options: BenchOptions, session: int = 0,
              profile: bool = False) -> dict[str, Any]:
    """The agent job for one session of `job`, with its files staged on the device."""
    artifact = job.artifact
    setup = job_setup(job, options)
    dataset = None
    if artifact.dataset is not None and session == 0 and not profile:
        # before the model: the data is small and every model of the suite shares it, so a
        # device cache too small for all the models still holds what those that fit need
        dataset = {part: {"path": transport.stage(path, sha), "sha256": sha}
                   for part, (path, sha) in _dataset_files(artifact).items()}
    model = {"path": transport.stage(artifact.path, artifact.sha256),
             "sha256": artifact.sha256, "format": artifact.format, "name": artifact.name}
    try:
        return protocol.measure_job(
            job.job_id, model, job.runtime, session=session, device_kind=job.device.kind,
            options=setup["options"], settings=setup["settings"], tune=setup["tune"],
            input_shape=setup["input_shape"], dataset=dataset,
            profile_iterations=options.profile_iterations if profile else None)
    except protocol.ProtocolError as err:
        raise EdgebenchError(f"{job.device.name}: {artifact.name}: {err}") from err


def _dataset_files(artifact: Artifact) -> dict[str, tuple[Path, str]]:
    """The files of an artifact's dataset by part, with their sha256."""
    ds = artifact.dataset
    if ds is None:
        return {}
    # bare files have no manifest hash
    return {part: (path, ds.sha256.get(part) or file_sha256(path))
            for part, path in ds.parts().items()}


def _files(jobs: Sequence[PlannedJob]) -> list[tuple[Path, str]]:
    """Every file the jobs will stage, once each; one that cannot be read is left to fail its
    own job when it is staged."""
    files: dict[str, Path] = {}
    for job in jobs:
        files.setdefault(job.artifact.sha256, job.artifact.path)
        try:
            parts = _dataset_files(job.artifact)
        except OSError:
            continue
        for path, sha in parts.values():
            files.setdefault(sha, path)
    return [(path, sha) for sha, path in files.items()]


def precise(session_medians: Sequence[float], precision: float) -> bool:
    """Whether the headline interval of these session medians is within +/-`precision` of the
    headline, their geometric mean, both from the sessions the headline rests on."""
    usable = [m for m in session_medians if stats.has_log(m)]
    ci = stats.log_interval(usable)
    half = stats.relative_half_width(*ci, stats.geometric_mean(usable)) if ci else None
    return half is not None and half <= precision


def _run_session(job: PlannedJob, transport: Transport, options: BenchOptions, session: int,
                 timeout_s: float, *, profile: bool = False) -> AgentRun:
    """One session of `job` on the device: its job built (files staged) and the agent run.
    What fails on the way is the session's failure, not the queue's: the connection or a file
    ('transport'), or a job this profile and these options cannot make ('bad_job')."""
    try:
        spec = build_job(job, transport, options, session, profile=profile)
        return transport.run_agent(spec, timeout_s=timeout_s)
    except (TransportError, OSError) as err:
        return failed_run(job.job_id, "transport", str(err))
    except EdgebenchError as err:
        return failed_run(job.job_id, "bad_job", str(err))


# A session that lost the device, and how many in a row stop the device's queue: one may be a
# dropped connection that the next session's reconnect mends; after two the device is gone.
LOST = "connection_lost"
LOST_IN_A_ROW = 2


def _error_kind(run: AgentRun) -> str | None:
    return (run.result.get("error") or {}).get("kind")


def _error_message(run: AgentRun) -> str:
    return str((run.result.get("error") or {}).get("message") or "connection lost")


def _profile_pass(jobs: Sequence[PlannedJob], transport: Transport, options: BenchOptions,
                  session: int, timeout_s: float, medians: Mapping[str, Sequence[float]],
                  profiled: Collection[str], post: Callable[[SessionDone], None],
                  stop: threading.Event) -> None:
    """After the timed rounds, one profile session (numbered `session`, after the last round)
    for each measurement that measured and has none stored yet."""
    for job in jobs:
        if stop.is_set():
            return
        if not medians[job.job_id] or job.job_id in profiled:
            continue  # nothing measured: nothing to profile; or profiled before
        started_at = utc_now()
        t0 = time.perf_counter()
        run = _run_session(job, transport, options, session, timeout_s, profile=True)
        post(SessionDone(job, session, run, 0, time.perf_counter() - t0, started_at,
                         profile=True))


def run_device_queue(device: DeviceProfile, jobs: Sequence[PlannedJob], options: BenchOptions,
                     done: queue.Queue[SessionDone | None], stop: threading.Event,
                     skip: Mapping[str, set[int]] | None = None,
                     skip_medians: Mapping[str, Sequence[float]] | None = None,
                     profiled: Collection[str] = ()) -> None:
    """Worker: run the sessions of `jobs` on one device in rounds, posting each to `done`.
    A resumed run's sessions already stored are not run again: `skip` names them by job,
    `skip_medians` are their latency medians (for `max_sessions`' precision and whether there is
    anything to profile), and `profiled` names the jobs whose profile session is stored."""
    sessions = options.session_count
    skip = skip or {}
    posted: set[str] = set(job.job_id for job in jobs if skip.get(job.job_id))

    def post(item: SessionDone) -> None:
        posted.add(item.job.job_id)
        done.put(item)
        while not item.stored.wait(0.5):  # the main thread is storing it
            if stop.is_set():
                return

    def fail_rest(kind: str, message: str) -> None:
        for job in jobs:
            if job.job_id not in posted:
                post(SessionDone(job, 0, failed_run(job.job_id, kind, message), 0, 0.0,
                                 utc_now()))

    transport = None
    lost = 0  # sessions in a row that found the device gone
    try:
        transport = transport_for(device)
        transport.open()
        transport.prefetch(_files(jobs))  # what is already there: trusted in one go
        active = list(jobs)
        medians = {job.job_id: list((skip_medians or {}).get(job.job_id, ())) for job in jobs}
        session = 0
        while active and session < max(sessions, options.max_sessions or 0):
            if session >= sessions:  # past the planned rounds: only the imprecise ones
                active = [job for job in active
                          if not precise(medians[job.job_id], options.precision)]
            for job in list(active):
                if stop.is_set():
                    return
                if session in skip.get(job.job_id, ()):
                    continue
                started_at = utc_now()
                t0 = time.perf_counter()
                pushed_before = transport.bytes_pushed
                run = _run_session(job, transport, options, session, device.job_timeout_s)
                orchestration = (time.perf_counter() - t0
                                 - (run.result.get("agent_wall_s") or 0.0))
                lost = lost + 1 if _error_kind(run) == LOST else 0
                if lost >= LOST_IN_A_ROW:
                    # Each session would wait out a connect timeout and fail alike: a device
                    # that went away took minutes to fail its queue. A resume measures the rest.
                    why = (f"{_error_message(run)}; {device.name} did not answer {lost} "
                           "sessions in a row, so its remaining sessions were not run "
                           "(`bench --resume` measures them)")
                    run = failed_run(job.job_id, LOST, why)
                post(SessionDone(job, session, run, transport.bytes_pushed - pushed_before,
                                 max(orchestration, 0.0), started_at))
                if lost >= LOST_IN_A_ROW:
                    fail_rest(LOST, why)
                    return
                if run.result.get("status") == protocol.STATUS_OK:
                    medians[job.job_id].append((run.result.get("latency") or {})["median_ms"])
                elif session == 0:
                    active.remove(job)  # the next sessions would fail the same way
            session += 1
        if options.profile:
            _profile_pass(jobs, transport, options, session, device.job_timeout_s, medians,
                          profiled, post, stop)
    except TransportError as err:
        fail_rest("transport", str(err))
    except Exception as err:  # a bug or a library's surprise: the device's rows still appear
        traceback.print_exc(file=sys.stderr)  # and where it happened, for the bug report
        fail_rest("host_error", f"{type(err).__name__}: {err} (on the host, while running "
                                f"{device.name}'s queue)")
    finally:
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - closing must not hide what happened
                pass
        done.put(None)


Listener = Callable[[str, PlannedJob, dict[str, Any] | None], None]
# (job, [(key, stored, now)]): a resumed measurement's new session ran on a device or runtime
# that differs from its stored sessions' (`results.session_changes`)
ChangeListener = Callable[[PlannedJob, list[tuple[str, Any, Any]]], None]


@dataclass(frozen=True)
class StoredSession:
    """A session a resumed run stored before: its agent result as far as the store keeps it,
    its row and raw samples (harness/resume.py reads them back)."""

    session: int
    result: dict[str, Any]
    row: dict[str, Any]
    samples_ns: Sequence[int]
    started_at: str  # of its measurement


class _Measurement:
    """The sessions of one measurement received so far, and its row as they make it."""

    def __init__(self, job: PlannedJob, started_at: str,
                 stored: Sequence[StoredSession] = (),
                 profile: dict[str, Any] | None = None) -> None:
        self.job = job
        self.started_at = started_at
        self.results: list[dict[str, Any]] = [s.result for s in stored]
        self.rows: list[dict[str, Any]] = [s.row for s in stored]
        self.samples: list[list[int]] = [list(s.samples_ns) for s in stored]
        self.profile = profile  # a resumed run's stored profile session, else none yet
        # what its stored sessions ran on last: after A -> B -> A across two resumes, the
        # change from B is the one to tell
        ok = [s for s in stored if s.result.get("status") == protocol.STATUS_OK]
        self.stored_on = max(ok, key=lambda s: s.row.get("started_at") or "").result \
            if ok else None

    def changes(self, item: SessionDone) -> list[tuple[str, Any, Any]]:
        """How the device or runtime of a session measured now differs from the stored
        sessions' (by the rule of `results.mixed_sessions`)."""
        result = item.run.result
        if self.stored_on is None or result.get("status") != protocol.STATUS_OK:
            return []
        return results.session_changes(self.stored_on, result)

    def add(self, run_id: str, item: SessionDone, planned: int
            ) -> tuple[dict[str, Any], dict[str, Any]]:
        result = item.run.result
        row = results.session_row(self.job.job_id, item.session, result,
                                  started_at=item.started_at, bytes_pushed=item.bytes_pushed,
                                  orchestration_s=item.orchestration_s)
        # in session order, as a run that never stopped has them, when a resume measures a
        # session again that came before sessions it stored (one lost with the connection)
        at = bisect.bisect([r["session"] for r in self.rows], item.session)
        # the samples are kept once, below, not twice
        self.results.insert(at, {k: v for k, v in result.items() if k != "samples_ns"})
        self.rows.insert(at, row)
        self.samples.insert(at, list(result.get("samples_ns") or ()))
        record = results.measurement_row(run_id, self.job, self.started_at, self.results,
                                         self.rows, self.samples, planned, self.profile)
        return row, record

    def add_profile(self, run_id: str, item: SessionDone, planned: int
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        """The profile session's rows, and the measurement's row with its placement."""
        self.profile = item.run.result
        profile, ops = results.profile_rows(self.job.job_id, item.run.result,
                                            started_at=item.started_at)
        record = results.measurement_row(run_id, self.job, self.started_at, self.results,
                                         self.rows, self.samples, planned, self.profile)
        return profile, ops, record


def run_plan(store: Store, jobs: Sequence[PlannedJob], options: BenchOptions, *,
             command: str, suite: str | None = None, on_event: Listener | None = None,
             run_id: str | None = None,
             stored: Mapping[str, Sequence[StoredSession]] | None = None,
             profiles: Mapping[str, dict[str, Any]] | None = None,
             on_change: ChangeListener | None = None,
             halt: threading.Event | None = None,
             ) -> tuple[str, list[dict[str, Any]]]:
    """Run every session of `jobs`, devices in parallel, storing each session as it arrives.

    `on_event("done", job, record)` is called from the main thread after each session is stored,
    with the measurement's row as it stands after that session (`"profile"` after a profile
    session). Returns the run id and the rows, in plan order, of the measurements that stored a
    session in this call (on a resume, those whose sessions were all stored before are not
    among them). With `run_id`, the
    sessions go into that run, which the caller began and finishes (the nightly, a bench);
    `stored` are sessions of these jobs stored before, not run again, and `profiles` the
    profile sessions stored before (agent results by job), not run again either;
    `on_change(job, changes)` is called as soon as a session measured now ran on a device or
    runtime that differs from the stored sessions of its measurement, before it is stored.
    `halt`, set by a caller that does not run this in its main thread (a nightly's device, on
    Ctrl-C or SIGTERM), stops it as a Ctrl-C stops a bench: nothing is stored from then on, so a
    session under way is not stored at all (not as a failure: the connection the interruption
    closes under it is no fault of the device), and a resume measures it.
    """
    by_device: dict[str, list[PlannedJob]] = {}
    for job in jobs:
        by_device.setdefault(job.device.name, []).append(job)
    owner = run_id is None
    if run_id is None:
        run_id = store.begin_run(command, suite, list(by_device))
    stored = stored or {}
    profiles = profiles or {}
    skip = {job_id: {s.session for s in sessions} for job_id, sessions in stored.items()}
    skip_medians = {job_id: [s.result["latency"]["median_ms"] for s in sessions
                             if s.result.get("status") == protocol.STATUS_OK]
                    for job_id, sessions in stored.items()}
    done: queue.Queue[SessionDone | None] = queue.Queue()
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=run_device_queue,
            args=(queue_jobs[0].device, queue_jobs, options, done, stop, skip, skip_medians,
                  set(profiles)),
            name=f"device-{name}",
            daemon=True,
        )
        for name, queue_jobs in by_device.items()
    ]
    measurements: dict[str, _Measurement] = {}
    records: dict[str, dict[str, Any]] = {}
    planned = options.session_count

    status = "interrupted"
    try:
        for worker in workers:
            worker.start()
        remaining = len(workers)
        while remaining:
            item = _next_session(done, halt)
            if halt is not None and halt.is_set():  # what ends now ended by the interruption
                if item is not None:
                    item.stored.set()
                break
            if item is None:
                remaining -= 1
                continue
            try:
                before = stored.get(item.job.job_id, ())
                m = measurements.get(item.job.job_id) or measurements.setdefault(
                    item.job.job_id, _Measurement(
                        item.job, before[0].started_at if before else item.started_at, before,
                    profiles.get(item.job.job_id)))
                if item.profile:
                    profile, ops, record = m.add_profile(run_id, item, planned)
                    store.add_profile(profile, ops, record)
                else:
                    changes = m.changes(item)
                    if changes and on_change is not None:
                        on_change(item.job, changes)
                    session_row, record = m.add(run_id, item, planned)
                    store.add_session(session_row, item.run.result.get("samples_ns") or (),
                                      record)
                records[item.job.job_id] = record
                if on_event is not None:
                    on_event("profile" if item.profile else "done", item.job, record)
            finally:
                item.stored.set()
        missing = [job for job in jobs if job.job_id not in records]
        if halt is None or not halt.is_set():
            status = "finished" if not missing else "incomplete"
    except Exception:  # not Ctrl-C or SIGTERM: the run stopped on an error, not by hand
        status = "failed"
        raise
    finally:
        stop.set()
        if owner:
            store.finish_run(run_id, status)
    return run_id, [records[j.job_id] for j in jobs if j.job_id in records]


def _next_session(done: queue.Queue[SessionDone | None], halt: threading.Event | None
                  ) -> SessionDone | None:
    """The next session posted (None: a worker ended); with `halt`, None as soon as that is
    set, so that an interruption does not wait for a session under way to end. Without it (the
    main thread), a Ctrl-C whose KeyboardInterrupt Python lost (raised in a gc or weakref
    callback, which only prints it) is raised again here (`signals.remembered_interrupts`)."""
    if halt is None:
        while True:
            raise_if_interrupted()
            try:
                return done.get(timeout=0.2)
            except queue.Empty:
                continue
    while not halt.is_set():
        try:
            return done.get(timeout=0.2)
        except queue.Empty:
            continue
    return None
