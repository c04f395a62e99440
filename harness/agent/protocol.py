"""The one contract between host and device: a job goes in, a result comes out, both JSON.

The host writes one job object on the agent's stdin; the agent writes one result object on stdout
and nothing else there (logs go to stderr). Both carry `protocol_version`; the agent refuses a job
of another version rather than guess. This module is shared by both sides, so it is stdlib-only and
Python 3.8 syntax, like the rest of the agent.

Job (host -> agent)::

    {"protocol_version": 2, "job_id": "...",
     "model": {"path": "...", "sha256": "...", "format": "onnx" | "tflite"},
     "runtime": "onnxruntime" | "tflite" | ...,
     "options": {"threads": 4, "providers": [...], "graph_optimization_level": "all",
                 "inter_op_threads": 1, "xnnpack": true, "cpu_affinity": [0, 1]},
     "input": {"shape": [1, 3, 224, 224]}            # optional: checked against the model
     "dataset": {"inputs": {"path": ..., "sha256": ...},   # optional: accuracy on real data
                 "labels": {...}, "reference": {...}},
     "settings": {"warmup_s": 0.5, "warmup_min": 10, "duration_s": 1.0,
                  "min_iterations": 10, "max_duration_s": 30.0, "timed_scope": "runtime"},
     "session": 0,                                   # which of the measurement's sessions
     "profile": {"iterations": 20},                  # optional: a profile session instead
     "device_kind": "linux"}

A job is one session: a fresh agent process that loads the model, warms up and times one window.
The host runs several sessions of each (artifact, runtime, device), interleaved with the other
artifacts, and combines them.

A job with `profile` is the measurement's extra profile session: load, warm up by count
(`warmup_min` runs), then run `iterations` under the engine's per-operator profiler and answer
with `profile` instead of latency samples; it is never one of the timed sessions.

A job `{"protocol_version": 2, "job_id": "check", "check": true}` measures nothing and answers
with `check` (python, fingerprint, state, runtimes present): that is `edgebench devices check`.

Result (agent -> host): see `new_result`; `status` is `ok`, `failed` (with `error.kind` and
`error.message`) or `unsupported`.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 2

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_UNSUPPORTED = "unsupported"
# Error kinds the host gives a session when the device could not be reached, not a failure of
# the model: a retry or a resume measures it again, and a report counts it as still to measure.
RETRYABLE_KINDS = frozenset({"transport", "connection_lost", "host_error"})

# What the timer covers (`settings.timed_scope`); stored with every result so nobody has to guess.
TIMED_SCOPES = {
    "runtime": "the runtime's own run on inputs and outputs already in runtime memory (ORT "
               "IOBinding run, LiteRT invoke), as onnxruntime_perf_test and benchmark_model time",
    "end_to_end": "numpy in, numpy out through the runtime's Python API (input copied in, run, "
                  "output copied out); pre-processing outside the timer",
}

DEFAULT_SETTINGS = {
    "warmup_s": 0.5,
    "warmup_min": 10,
    # The timed window is fixed before the first sample: at least this long and this many runs.
    "duration_s": 1.0,
    "min_iterations": 10,
    # A model too slow for min_iterations is cut here and the session flagged `capped`.
    "max_duration_s": 30.0,
    "timed_scope": "runtime",
}

# `--quick` (tests, CI): short but still the same protocol.
QUICK_SETTINGS = dict(DEFAULT_SETTINGS, warmup_s=0.05, warmup_min=3, duration_s=0.2,
                      min_iterations=5, max_duration_s=5.0)


class ProtocolError(ValueError):
    """A job that does not follow the protocol (wrong version, missing field)."""


def settings_with_defaults(settings: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise ProtocolError("unknown setting {!r}; known: {}".format(
                key, ", ".join(sorted(DEFAULT_SETTINGS))))
        merged[key] = value
    if merged["timed_scope"] not in TIMED_SCOPES:
        raise ProtocolError("setting timed_scope {!r}; known: {}".format(
            merged["timed_scope"], ", ".join(sorted(TIMED_SCOPES))))
    for key in ("warmup_s", "duration_s", "max_duration_s"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0 <= value <= 3600):
            raise ProtocolError(f"setting {key} must be a number of seconds in [0, 3600], "
                                f"not {value!r}")
    for key in ("warmup_min", "min_iterations"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**7:
            raise ProtocolError(f"setting {key} must be a whole number in [0, 10^7], "
                                f"not {value!r}")
    return merged


def validate_job(job: Any) -> dict[str, Any]:
    """Check the shape of a job and fill in defaults; raise ProtocolError naming the field."""
    if not isinstance(job, dict):
        raise ProtocolError("job must be a JSON object")
    version = job.get("protocol_version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol_version {version!r} is not supported by this agent "
                            f"(speaks {PROTOCOL_VERSION})"
                            )
    for field in ("job_id", "model", "runtime"):
        if field not in job:
            raise ProtocolError(f"job is missing field {field!r}")
    model = job["model"]
    if not isinstance(model, dict) or "path" not in model:
        raise ProtocolError("job field 'model' must be an object with a 'path'")
    dataset = job.get("dataset")
    if dataset is not None:
        for part in ("inputs", "labels"):
            if not isinstance(dataset.get(part), dict) or "path" not in dataset[part]:
                raise ProtocolError(f"job field 'dataset.{part}' must be an object with a 'path'"
                                    )
    profile = job.get("profile")
    if profile is not None:
        iterations = profile.get("iterations") if isinstance(profile, dict) else None
        if isinstance(iterations, bool) or not isinstance(iterations, int) or not (
                1 <= iterations <= 10000):
            raise ProtocolError("job field 'profile' must be an object with 'iterations' a "
                                "whole number in [1, 10000]")
    out = dict(job)
    out["options"] = dict(job.get("options") or {})
    out["settings"] = settings_with_defaults(job.get("settings"))
    return out


def check_job(device_kind: str, runtime_options: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """The job of `edgebench devices check`: describe the device, measure nothing; with the
    profile's `runtime_options`, whose accelerators (a torch GPU) are tried too."""
    return {"protocol_version": PROTOCOL_VERSION, "job_id": "check", "check": True,
            "device_kind": device_kind, "runtime_options": dict(runtime_options or {})}


def measure_job(job_id: str, model: dict[str, Any], runtime: str, *, session: int,
                device_kind: str, options: dict[str, Any] | None = None,
                settings: dict[str, Any] | None = None, tune: Any = False,
                input_shape: list[int] | None = None,
                dataset: dict[str, Any] | None = None,
                profile_iterations: int | None = None) -> dict[str, Any]:
    """One session of a measurement, as the host sends it; checked as the agent will check it."""
    job: dict[str, Any] = {
        "protocol_version": PROTOCOL_VERSION, "job_id": job_id, "model": model,
        "runtime": runtime, "options": dict(options or {}),
        "settings": settings_with_defaults(settings), "session": session,
        "device_kind": device_kind, "tune": tune,
    }
    if input_shape:
        job["input"] = {"shape": list(input_shape)}
    if dataset:
        job["dataset"] = dataset
    if profile_iterations:
        job["profile"] = {"iterations": profile_iterations}
    return validate_job(job)


def new_result(job_id: str) -> dict[str, Any]:
    """A result with every key present, so the host never has to guess what is missing."""
    return {
        "protocol_version": PROTOCOL_VERSION,
        "job_id": job_id,
        "session": None,
        "status": STATUS_FAILED,
        "error": None,
        "runtime": None,
        "runtime_version": None,
        "runtime_options": {},
        "threads": None,
        "input_shape": None,
        "timed_scope": None,
        "settings": {},
        "load_s": None,
        "first_inference_ms": None,
        "warmup_n": None,
        "latency": None,
        # what the samples measure: `perf_counter` (host clock) or `cuda_events` (GPU clock);
        # with the GPU's clock, the host clock around the same iterations is `wall_latency`
        "timer": None,
        "wall_latency": None,
        "samples_ns": [],
        "capped": None,
        "memory": {},
        "accuracy": None,
        "fingerprint": {},
        "state_before": {},
        "state_after": {},
        "throttled": None,
        "power": None,
        # why there is no power figure where a meter exists but could not be read (RAPL's
        # counters, root only since Linux 5.10): the file and how to allow it
        "power_unavailable": None,
        "accelerator": None,  # the GPU as the runtime sees it (name, SM count, CUDA)
        "gpu": None,  # NVML around the timed window: energy, process memory
        "placement": None,  # providers / delegates asked for and in force, CPU fallback
        "profile": None,  # a profile session's per-operator figures
        "agent_wall_s": None,
    }


def set_error(result: dict[str, Any], status: str, kind: str, message: str) -> dict[str, Any]:
    result["status"] = status
    result["error"] = {"kind": kind, "message": message}
    return result


def _finite(value: Any) -> Any:
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(obj: dict[str, Any]) -> str:
    # NaN and infinities are not JSON; a figure that cannot be computed is null.
    return json.dumps(_finite(obj), allow_nan=False, separators=(",", ":"))


def loads(text: str) -> dict[str, Any]:
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ProtocolError("expected a JSON object")
    return obj


# --- Job server messages (host <-> `agent --serve`) ----------------------------------------------
#
# The job server (serve.py) runs many jobs over one pipe (an SSH channel, or a local subprocess's
# stdin and stdout), each in a fresh agent process. One JSON object per line in each direction::
#
#     host -> server   {"protocol_version": 1, "job": {...}}       one job, as above
#     server -> host   {"event": "started", "pid": N}              at once, so the host can kill a
#                                                                  job that outlives its timeout
#                      {"event": "ended", "returncode": R,         when the agent exits; R is
#                       "stdout": "...", "stderr": "..."}          negative for a signal, as
#                                                                  subprocess reports it
#                      {"event": "refused", "reason": "..."}       a request it cannot run
#
# The job itself carries everything the agent needs (`device_kind` included): the server adds
# nothing to it. Both ends build and read these lines only through the functions below.

SERVE_STARTED = "started"
SERVE_ENDED = "ended"
SERVE_REFUSED = "refused"


def _serve_line(message: dict[str, Any]) -> bytes:
    return (dumps(message) + "\n").encode("utf-8")


def serve_request(job: dict[str, Any]) -> bytes:
    """The line that asks the job server to run `job`."""
    return _serve_line({"protocol_version": PROTOCOL_VERSION, "job": job})


def _read_line(line: str | bytes, what: str) -> dict[str, Any]:
    try:
        return loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except ValueError as err:
        raise ProtocolError(f"{what} is not a JSON object: {err}") from None


def read_serve_request(line: str | bytes) -> dict[str, Any]:
    """The job of a request line; ProtocolError saying what is wrong with it."""
    request = _read_line(line, "request")
    version = request.get("protocol_version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"request protocol_version {version!r} is not supported by this "
                            f"job server (speaks {PROTOCOL_VERSION})")
    job = request.get("job")
    if not isinstance(job, dict):
        raise ProtocolError("request field 'job' must be a JSON object")
    return job


def serve_started(pid: int) -> bytes:
    return _serve_line({"event": SERVE_STARTED, "pid": pid})


def serve_ended(returncode: int, stdout: str, stderr: str) -> bytes:
    return _serve_line({"event": SERVE_ENDED, "returncode": returncode, "stdout": stdout,
                        "stderr": stderr})


def serve_refused(reason: str) -> bytes:
    return _serve_line({"event": SERVE_REFUSED, "reason": reason})


_SERVE_FIELDS: dict[str, dict[str, type]] = {
    SERVE_STARTED: {"pid": int},
    SERVE_ENDED: {"returncode": int, "stdout": str, "stderr": str},
    SERVE_REFUSED: {"reason": str},
}


def read_serve_response(line: str | bytes) -> dict[str, Any]:
    """One message of the job server, checked; ProtocolError saying what is wrong with it."""
    message = _read_line(line, "job server answer")
    event = message.get("event")
    fields = _SERVE_FIELDS.get(event) if isinstance(event, str) else None
    if fields is None:
        raise ProtocolError(f"job server answer has unknown event {event!r}")
    for name, kind in fields.items():
        value = message.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ProtocolError(f"job server answer {event!r} needs {name!r} as "
                                f"{kind.__name__}, got {value!r}")
    return message
