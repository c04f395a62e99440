"""From a plan (artifacts x runtimes x devices) to stored results.

Each device gets its own queue and worker thread (one job at a time per device, devices in
parallel); each job runs in a fresh agent process through the device's transport. The main thread
alone writes to the store, one transaction per finished job, so an interrupted run keeps everything
that finished. A device that cannot be reached at all gets a `failed` row for each of its jobs
instead of stopping the others.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.agent import protocol
from harness.artifacts import Artifact, sha256_file
from harness.config import DeviceProfile
from harness.errors import EdgebenchError, TransportError, UnknownNameError
from harness.registry import RUNTIMES as RUNTIME_MODULES
from harness.store import Store, utc_now
from harness.transport.base import AgentRun, Transport, failed_run, transport_for

# Which runtimes can execute which artifact format, in order of preference.
FORMAT_RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "tensorrt"),
    "tflite": ("tflite",),
    "tensorrt": ("tensorrt",),
    "torch": ("torch",),
}


@dataclass(frozen=True)
class BenchOptions:
    runtimes: tuple[str, ...] = ()  # empty: every runtime the device profile lists
    threads: int | None = None
    quick: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # overrides of protocol settings


@dataclass(frozen=True)
class PlannedJob:
    job_id: str
    device: DeviceProfile
    artifact: Artifact
    runtime: str


@dataclass(frozen=True)
class JobDone:
    job: PlannedJob
    run: AgentRun
    bytes_pushed: int
    orchestration_s: float
    started_at: str


def known_runtimes() -> list[str]:
    return sorted(RUNTIME_MODULES)


def plan_jobs(artifacts: Sequence[Artifact], devices: Sequence[DeviceProfile],
              options: BenchOptions) -> list[PlannedJob]:
    """Every (artifact, runtime, device) that makes sense; unknown runtimes are refused."""
    for name in options.runtimes:
        if name not in RUNTIME_MODULES:
            raise UnknownNameError("runtime", name, known_runtimes())
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


def build_job(job: PlannedJob, transport: Transport, options: BenchOptions) -> dict[str, Any]:
    """The agent job for `job`, with its files staged on the device."""
    artifact = job.artifact
    settings = dict(protocol.QUICK_SETTINGS if options.quick else protocol.DEFAULT_SETTINGS)
    settings.update(options.settings)
    agent_options: dict[str, Any] = dict(job.device.runtime_options.get(job.runtime, {}))
    threads = options.threads or job.device.threads
    if threads:
        agent_options["threads"] = threads
    if job.device.cpu_affinity:
        agent_options["cpu_affinity"] = list(job.device.cpu_affinity)
    spec: dict[str, Any] = {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "job_id": job.job_id,
        "model": {
            "path": transport.stage(artifact.path, artifact.sha256),
            "sha256": artifact.sha256,
            "format": artifact.format,
            "name": artifact.name,
        },
        "runtime": job.runtime,
        "options": agent_options,
        "settings": settings,
        "device_kind": job.device.kind,
        "tune": job.device.tune,
    }
    if artifact.input_shape:
        spec["input"] = {"shape": list(artifact.input_shape)}
    ds = artifact.dataset
    if ds is not None:
        files = {"inputs": ds.inputs, "labels": ds.labels, "reference": ds.reference}
        spec["dataset"] = {}
        for part, path in files.items():
            if path is not None:
                sha = file_sha256(path)
                spec["dataset"][part] = {"path": transport.stage(path, sha), "sha256": sha}
    return spec


@lru_cache(maxsize=256)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """sha256 of a dataset file, hashed once per run rather than once per job that uses it."""
    st = Path(path).stat()
    return _sha256_of(Path(path), st.st_size, st.st_mtime_ns)


def run_device_queue(device: DeviceProfile, jobs: Sequence[PlannedJob], options: BenchOptions,
                     done: queue.Queue[JobDone | None], stop: threading.Event) -> None:
    """Worker: run `jobs` on one device in order, posting each result to `done`."""
    try:
        transport = transport_for(device)
        transport.open()
    except TransportError as err:
        for job in jobs:
            done.put(JobDone(job, failed_run(job.job_id, "transport", str(err)), 0, 0.0,
                             utc_now()))
        done.put(None)
        return
    try:
        for job in jobs:
            if stop.is_set():
                break
            started_at = utc_now()
            t0 = time.perf_counter()
            pushed_before = transport.bytes_pushed
            try:
                spec = build_job(job, transport, options)
                run = transport.run_agent(spec, timeout_s=device.job_timeout_s)
            except (TransportError, OSError) as err:
                run = failed_run(job.job_id, "transport", str(err))
            orchestration = time.perf_counter() - t0 - (run.result.get("agent_wall_s") or 0.0)
            done.put(JobDone(job, run, transport.bytes_pushed - pushed_before,
                             max(orchestration, 0.0), started_at))
    finally:
        transport.close()
        done.put(None)


def to_record(run_id: str, done: JobDone) -> dict[str, Any]:
    """One row of the results table from a finished job."""
    job, result = done.job, done.run.result
    artifact = job.artifact
    lat = result.get("latency") or {}
    mem = result.get("memory") or {}
    acc = result.get("accuracy") or {}
    err = result.get("error") or {}
    host = artifact.host_accuracy or {}
    parity = artifact.parity or {}
    power = result.get("power") or {}
    record: dict[str, Any] = {
        "run_id": run_id,
        "job_id": job.job_id,
        "started_at": done.started_at,
        "device": job.device.name,
        "device_kind": job.device.kind,
        "device_fingerprint": result.get("fingerprint") or None,
        "model": artifact.name,
        "model_sha256": artifact.sha256,
        "base_model": artifact.base_model,
        "baseline": artifact.baseline,
        "technique": artifact.technique,
        "lineage": list(artifact.lineage),
        "precision": artifact.precision,
        "format": artifact.format,
        "runtime": job.runtime,
        "runtime_version": result.get("runtime_version"),
        "runtime_options": result.get("runtime_options") or None,
        "threads": result.get("threads"),
        "batch": artifact.input_shape[0] if artifact.input_shape else 1,
        "status": result.get("status", protocol.STATUS_FAILED),
        "error_kind": err.get("kind"),
        "error_message": err.get("message"),
        "load_s": result.get("load_s"),
        "first_inference_ms": result.get("first_inference_ms"),
        "n": lat.get("n"),
        "latency_cov": lat.get("cov"),
        "latency_ci95_low_ms": lat.get("ci95_low_ms"),
        "latency_ci95_high_ms": lat.get("ci95_high_ms"),
        "throughput_ips": lat.get("throughput_ips"),
        "stable": result.get("stable"),
        "stop_reason": result.get("stop_reason"),
        "throttled": result.get("throttled"),
        "rss_before_mb": mem.get("rss_before_mb"),
        "peak_rss_mb": mem.get("peak_rss_mb"),
        "rss_delta_mb": mem.get("rss_delta_mb"),
        "gpu_mem_mb": mem.get("gpu_mem_mb"),
        "power_w": power.get("mean_w"),
        "energy_mj_per_inference": power.get("energy_mj_per_inference"),
        "accuracy_top1": acc.get("top1"),
        "accuracy_top5": acc.get("top5"),
        "accuracy_n": acc.get("n"),
        "ref_top1_agreement": acc.get("ref_top1_agreement"),
        "ref_max_abs_diff": acc.get("ref_max_abs_diff"),
        "host_top1": host.get("top1"),
        "host_top5": host.get("top5"),
        "parity_top1_agreement": parity.get("top1_agreement"),
        "parity_max_abs_diff": parity.get("max_abs_diff"),
        "params": artifact.params,
        "macs": artifact.macs,
        "size_bytes": artifact.size_bytes,
        "bytes_pushed": done.bytes_pushed,
        "dataset": artifact.dataset.name if artifact.dataset else None,
        "timed_scope": result.get("timed_scope"),
        "settings": result.get("settings") or None,
        "state_before": result.get("state_before") or None,
        "state_after": result.get("state_after") or None,
        "tune": result.get("tune") or None,
        "orchestration_s": done.orchestration_s,
    }
    for stat in ("median", "mean", "std", "min", "max", "p90", "p95", "p99"):
        record[f"latency_{stat}_ms"] = lat.get(f"{stat}_ms")
    return record


Listener = Callable[[str, PlannedJob, dict[str, Any] | None], None]


def run_plan(store: Store, jobs: Sequence[PlannedJob], options: BenchOptions, *,
             command: str, suite: str | None = None, on_event: Listener | None = None,
             ) -> tuple[str, list[dict[str, Any]]]:
    """Run `jobs`, devices in parallel, storing each result as it arrives.

    `on_event(kind, job, record)` is called with kind "start" before a device's job is sent (from
    the main thread, as the previous one finishes) and "done" with the stored record.
    Returns the run id and the stored records in completion order.
    """
    by_device: dict[str, list[PlannedJob]] = {}
    for job in jobs:
        by_device.setdefault(job.device.name, []).append(job)
    run_id = store.begin_run(command, suite, list(by_device))
    done: queue.Queue[JobDone | None] = queue.Queue()
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=run_device_queue,
            args=(queue_jobs[0].device, queue_jobs, options, done, stop),
            name=f"device-{name}",
            daemon=True,
        )
        for name, queue_jobs in by_device.items()
    ]
    records: list[dict[str, Any]] = []
    next_index = {name: 0 for name in by_device}

    def announce(device: str) -> None:
        if on_event is not None and next_index[device] < len(by_device[device]):
            on_event("start", by_device[device][next_index[device]], None)

    status = "interrupted"
    try:
        for name, worker in zip(by_device, workers, strict=True):
            announce(name)
            worker.start()
        remaining = len(workers)
        while remaining:
            item = done.get()
            if item is None:
                remaining -= 1
                continue
            record = to_record(run_id, item)
            store.add_result(record, item.run.result.get("samples_ns") or ())
            records.append(record)
            name = item.job.device.name
            next_index[name] += 1
            if on_event is not None:
                on_event("done", item.job, record)
            announce(name)
        status = "finished"
    finally:
        stop.set()
        store.finish_run(run_id, status)
    return run_id, records

