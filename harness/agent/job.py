"""One measurement job, start to finish, in the order of the measurement protocol.

Fingerprint and state, load (cold start), first inference, warm-up, timed loop, accuracy on the
dataset with the same session, state again. A problem with this job becomes a `failed` or
`unsupported` result, never an exception out of `run_job`.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import numpy as np

from . import measure, power, probes, protocol, tune
from .runtimes import ModelLoadError, RuntimeUnavailable, first_line, get_runtime

SEED = 20240611


class JobError(Exception):
    def __init__(self, kind: str, message: str, status: str = protocol.STATUS_FAILED) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def log(message: str) -> None:
    sys.stderr.write(f"[agent] {message}\n")
    sys.stderr.flush()


def concrete_shape(declared: list[int | None], wanted: list[int] | None, source: str
                   ) -> list[int]:
    """The input shape to feed: `wanted` checked against the model, dynamic dims filled."""
    if wanted is None:
        return [d if d is not None else 1 for d in declared]
    if len(wanted) != len(declared) or any(
            d is not None and d != w for d, w in zip(declared, wanted)):
        raise JobError("input_shape", "model expects input shape {}, {} gives {}".format(
            [d if d is not None else "?" for d in declared], source, list(wanted)))
    return list(wanted)


def load_dataset(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    data = {}
    for part in ("inputs", "labels", "reference"):
        ref = spec.get(part)
        if not ref:
            continue
        try:
            data[part] = np.load(ref["path"], allow_pickle=False)
        except (OSError, ValueError) as err:
            raise JobError("dataset_invalid",
                           "cannot read dataset {} {}: {}".format(part, ref["path"], err)) from err
    if len(data["inputs"]) != len(data["labels"]):
        raise JobError("dataset_invalid", "dataset has {} inputs but {} labels".format(
            len(data["inputs"]), len(data["labels"])))
    return data


def accuracy(runtime: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Top-1/top-5 and agreement with the host's fp32 reference, with the session just timed."""
    inputs, labels = data["inputs"], data["labels"].astype(np.int64)
    outputs = []
    for i in range(len(inputs)):
        runtime.set_input(inputs[i:i + 1].astype(np.float32))
        runtime.run()
        outputs.append(runtime.output().reshape(1, -1))
    logits = np.concatenate(outputs, axis=0)
    acc: dict[str, Any] = {
        "top1": measure.topk_accuracy(logits, labels, 1),
        "top5": measure.topk_accuracy(logits, labels, 5),
        "n": int(len(labels)),
        "ref_top1_agreement": None,
        "ref_max_abs_diff": None,
    }
    reference = data.get("reference")
    if reference is not None:
        if reference.shape != logits.shape:
            raise JobError("dataset_invalid", f"reference logits have shape "
                           f"{list(reference.shape)}, model gives {list(logits.shape)}")
        acc["ref_top1_agreement"] = float(np.mean(
            reference.argmax(axis=1) == logits.argmax(axis=1)))
        acc["ref_max_abs_diff"] = float(np.max(np.abs(reference.astype(np.float32) - logits)))
    return acc


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = protocol.new_result(str(job.get("job_id", "?")) if isinstance(job, dict) else "?")
    try:
        job = protocol.validate_job(job)
    except protocol.ProtocolError as err:
        return protocol.set_error(result, protocol.STATUS_FAILED, "protocol", str(err))
    kind = job.get("device_kind") or "linux"
    options = job["options"]
    result["settings"] = job["settings"]
    tuning = None  # device tuning (`"tune": true`), restored in `finally`
    runtime = None
    try:
        affinity = options.get("cpu_affinity")
        if affinity:
            os.sched_setaffinity(0, affinity)
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        # Threads are always explicit: default to one per CPU this process may run on.
        threads = int(options.get("threads") or (len(cpus) if cpus else os.cpu_count() or 1))
        options = dict(options, cpu_affinity=cpus, threads=threads)
        result["threads"] = threads
        result["fingerprint"] = probes.fingerprint(kind)
        result["runtime"] = job["runtime"]
        try:
            runtime = get_runtime(job["runtime"])
        except KeyError as err:
            raise JobError("unknown_runtime", str(err.args[0])) from None
        except RuntimeUnavailable as err:
            raise JobError("runtime_missing", str(err), protocol.STATUS_UNSUPPORTED) from err
        result["runtime_version"] = runtime.version()
        result["fingerprint"]["runtimes"] = {runtime.name: result["runtime_version"]}

        model = job["model"]
        fmt = model.get("format")
        if fmt and fmt not in runtime.formats:
            raise JobError("format_mismatch", "{} runs {} models, not {}".format(
                runtime.name, "/".join(runtime.formats), fmt), protocol.STATUS_UNSUPPORTED)
        if not os.path.isfile(model["path"]):
            raise JobError("model_not_found", "model file not found: {}".format(model["path"]))
        data = load_dataset(job["dataset"]) if job.get("dataset") else None

        tuning = tune.start(kind, job.get("tune"))
        result["state_before"] = probes.state(kind)
        rss_before = probes.rss_mb()
        t0 = time.perf_counter()
        try:
            runtime.load(model["path"], options)
        except ModelLoadError as err:
            raise JobError(err.kind, str(err)) from err
        result["load_s"] = time.perf_counter() - t0
        result["runtime_options"] = runtime.options_used()

        declared = runtime.input_shape()
        wanted = (job.get("input") or {}).get("shape")
        shape = concrete_shape(declared, wanted, "the job")
        if data is not None:
            concrete_shape(declared, [1] + list(data["inputs"].shape[1:]), "the dataset")
            x = data["inputs"][:1].astype(np.float32)
        else:
            x = np.random.default_rng(SEED).standard_normal(shape).astype(np.float32)
        runtime.set_input(x)

        t0 = time.perf_counter()
        try:
            runtime.run()
        except Exception as err:
            raise JobError("inference_error", f"first inference failed: {first_line(err)}"
                           ) from err
        result["first_inference_ms"] = (time.perf_counter() - t0) * 1e3

        settings = job["settings"]
        warm = measure.warm_up(runtime.run, settings["warmup_s"], settings["warmup_min"])
        log(f"warm-up: {warm} runs")
        monitor = power.monitor_for(kind)
        if monitor is not None:
            monitor.start()
        try:
            samples, stop_reason = measure.timed_loop(runtime.run, settings)
        finally:
            watts = monitor.stop() if monitor is not None else None
        result["samples_ns"] = samples
        result["latency"] = measure.statistics(samples)
        if watts is not None and result["latency"]:
            # W x ms = mJ: the energy one inference costs while the device runs them back to back
            watts["energy_mj_per_inference"] = watts["mean_w"] * result["latency"]["mean_ms"]
        result["power"] = watts
        result["stop_reason"] = stop_reason
        result["stable"] = stop_reason == "stable"
        log(f"timed: {len(samples)} runs, stopped on {stop_reason}")

        if data is not None:
            result["accuracy"] = accuracy(runtime, data)

        result["state_after"] = probes.state(kind)
        result["throttled"] = probes.throttled(result["state_before"], result["state_after"], kind)
        peak = probes.peak_rss_mb()
        result["memory"] = {
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak,
            "rss_delta_mb": peak - rss_before if peak is not None and rss_before is not None
            else None,
        }
        result["status"] = protocol.STATUS_OK
    except JobError as err:
        protocol.set_error(result, err.status, err.kind, str(err))
    except Exception as err:  # a bug or an engine error we did not foresee: still one result
        traceback.print_exc(file=sys.stderr)
        protocol.set_error(result, protocol.STATUS_FAILED, "agent_error",
                           f"{type(err).__name__}: {err}")
    finally:
        if runtime is not None:
            runtime.close()
        if tuning is not None:
            result["tune"] = tuning.finish()
    result["agent_wall_s"] = time.perf_counter() - started
    return result
