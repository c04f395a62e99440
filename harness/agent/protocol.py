"""The one contract between host and device: a job goes in, a result comes out, both JSON.

The host writes one job object on the agent's stdin; the agent writes one result object on stdout
and nothing else there (logs go to stderr). Both carry `protocol_version`; the agent refuses a job
of another version rather than guess. This module is shared by both sides, so it is stdlib-only and
Python 3.8 syntax, like the rest of the agent.

Job (host -> agent)::

    {"protocol_version": 1, "job_id": "...",
     "model": {"path": "...", "sha256": "...", "format": "onnx" | "tflite"},
     "runtime": "onnxruntime" | "tflite" | ...,
     "options": {"threads": 4, "providers": [...], "graph_optimization_level": "all",
                 "inter_op_threads": 1, "xnnpack": true, "cpu_affinity": [0, 1]},
     "input": {"shape": [1, 3, 224, 224]}            # optional: checked against the model
     "dataset": {"inputs": {"path": ..., "sha256": ...},   # optional: accuracy on real data
                 "labels": {...}, "reference": {...}},
     "settings": {"warmup_s": 1.0, "warmup_min": 10, "min_duration_s": 5.0,
                  "min_iterations": 100, "max_duration_s": 60.0, "stability_tolerance": 0.05},
     "device_kind": "linux"}

A job `{"protocol_version": 1, "job_id": "check", "check": true}` measures nothing and answers
with `check` (python, fingerprint, state, runtimes present): that is `edgebench devices check`.

Result (agent -> host): see `new_result`; `status` is `ok`, `failed` (with `error.kind` and
`error.message`) or `unsupported`.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_UNSUPPORTED = "unsupported"

# What the timer covers; stored with every result so that nobody has to guess.
TIMED_SCOPE = (
    "model execution only: inputs already in runtime memory, outputs fetched to host memory; "
    "pre-processing outside the timer"
)

DEFAULT_SETTINGS = {
    "warmup_s": 1.0,
    "warmup_min": 10,
    "min_duration_s": 5.0,
    "min_iterations": 100,
    "max_duration_s": 60.0,
    "stability_tolerance": 0.05,
}

# `--quick` (tests, CI): short but still the same protocol.
QUICK_SETTINGS = {
    "warmup_s": 0.1,
    "warmup_min": 3,
    "min_duration_s": 0.5,
    "min_iterations": 20,
    "max_duration_s": 5.0,
    "stability_tolerance": 0.05,
}


class ProtocolError(ValueError):
    """A job that does not follow the protocol (wrong version, missing field)."""


def settings_with_defaults(settings: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(DEFAULT_SETTINGS)
    for key, value in (settings or {}).items():
        if key not in DEFAULT_SETTINGS:
            raise ProtocolError("unknown setting {!r}; known: {}".format(
                key, ", ".join(sorted(DEFAULT_SETTINGS))))
        merged[key] = value
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
    if job.get("check"):
        # `devices check`: describe the device, measure nothing
        return dict(job, options=dict(job.get("options") or {}), settings={})
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
    out = dict(job)
    out["options"] = dict(job.get("options") or {})
    out["settings"] = settings_with_defaults(job.get("settings"))
    return out


def new_result(job_id: str) -> dict[str, Any]:
    """A result with every key present, so the host never has to guess what is missing."""
    return {
        "protocol_version": PROTOCOL_VERSION,
        "job_id": job_id,
        "status": STATUS_FAILED,
        "error": None,
        "runtime": None,
        "runtime_version": None,
        "runtime_options": {},
        "threads": None,
        "timed_scope": TIMED_SCOPE,
        "settings": {},
        "load_s": None,
        "first_inference_ms": None,
        "latency": None,
        "samples_ns": [],
        "stable": None,
        "stop_reason": None,
        "memory": {},
        "accuracy": None,
        "fingerprint": {},
        "state_before": {},
        "state_after": {},
        "throttled": None,
        "power": None,
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
