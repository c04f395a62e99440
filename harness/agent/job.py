"""One measurement job, start to finish, in the order of the measurement protocol.

One job is one session of a measurement: fingerprint and state, load (cold start), first
inference, warm-up, the timed window, accuracy on the dataset with the same runtime session (the
host asks for it in one session of each measurement), state again. A problem with this job
becomes a `failed` or `unsupported` result, never an exception out of `run_job`.

On a GPU the runtime may time each iteration on the GPU's own clock (CUDA events): those samples
are the session's latency, and the host clock around the same iterations is kept as
`wall_latency`. NVML's energy counter, read just before and just after the timed window, gives
the GPU's mean power over that interval and, over the window's time, its energy per inference,
where no board monitor (tegrastats) measures power. Where neither measured
and the model ran on the CPU alone, RAPL's package counters (rapl.py) give the energy of the CPU
package(s) over the window: the whole socket's, which the figure says.

A profile job (`"profile": {"iterations": N}`) is a session of its own, never a timed one: after
the same load and a warm-up of `warmup_min` runs, it runs N iterations under the engine's
profiler and answers with the per-operator figures instead of latency samples, and with the work
others did meanwhile (`others_cpus`), as a timed window does.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import numpy as np

from . import gpu, measure, power, probes, protocol, rapl, scoring, tune
from .runtimes import (
    ModelLoadError,
    ProfileUnsupported,
    RuntimeUnavailable,
    first_line,
    get_runtime,
)
from .runtimes.options import declared as declared_options

SEED = 20240611
# What ONNX Runtime and LiteRT call the CPU among the providers and delegates in force.
CPU_PROVIDERS = ("CPUExecutionProvider", "XNNPACK", "cpu", "CPU")


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
        # Filling a free dimension with 1 would time a 1x1 image: say which ones need a size.
        free = [i for i, d in enumerate(declared) if d is None]
        if free:
            raise JobError("input_shape", "model input {} has dynamic dimensions {}; give the "
                           "shape to measure (bench --input-shape, or input_shape in the "
                           "manifest)".format([d if d is not None else "?" for d in declared],
                                              ", ".join(str(i) for i in free)))
        return list(declared)  # type: ignore[arg-type]
    if len(wanted) != len(declared) or any(
            d is not None and d != w for d, w in zip(declared, wanted)):
        raise JobError("input_shape", "model expects input shape {}, {} gives {}".format(
            [d if d is not None else "?" for d in declared], source, list(wanted)))
    return list(wanted)


def checked_threads(options: dict[str, Any], cpus: int) -> int | None:
    """The threads asked for, refused beyond 4 per CPU (a typo, or a number that overflows the
    runtime's int) unless the job says `force_threads`."""
    threads = options.get("threads")
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise JobError("options_invalid", f"threads must be a whole number >= 1, not {threads!r}")
    if threads > 4 * cpus and not options.get("force_threads"):
        raise JobError("options_invalid", f"threads {threads} is more than 4x this device's "
                       f"{cpus} CPUs; use --force-threads to measure it anyway")
    return threads


def open_dataset(spec: dict[str, Any]) -> dict[str, np.ndarray]:
    """The accuracy set's arrays, mapped and checked but not read: their pages become resident
    only when the accuracy pass reads them, after the timed window's memory is taken. Read
    here, they were in every memory figure of the one session with the data (a 1000-image
    224x224 set, 574 MiB, in its baseline and peaks), so a measurement's peak RSS depended on
    whether its file came with data and on how many sessions shared that one (`--quick`'s two
    take the mean)."""
    data = {}
    for part in ("inputs", "labels", "reference"):
        ref = spec.get(part)
        if not ref:
            continue
        try:
            data[part] = np.load(ref["path"], mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise JobError("dataset_invalid",
                           "cannot read dataset {} {}: {}".format(part, ref["path"], err)) from err
    if len(data["inputs"]) != len(data["labels"]):
        raise JobError("dataset_invalid", "dataset has {} inputs but {} labels".format(
            len(data["inputs"]), len(data["labels"])))
    return data


def accuracy(runtime: Any, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Top-1/top-5 with Wilson intervals and tie counts, and agreement with the host's fp32
    reference, with the session just timed; `scoring.score` is also what the host's build runs."""
    # plain arrays over the mapped files, read as they are scored
    data = {part: np.asarray(array) for part, array in data.items()}
    logits = scoring.logits_of(runtime, data["inputs"])
    try:
        return scoring.score(logits, data["labels"], data.get("reference"))
    except ValueError as err:  # labels or reference that do not fit this model's outputs
        raise JobError("dataset_invalid", str(err)) from err


def model_memory(baseline: dict[str, float], loaded: dict[str, float],
                 timed: dict[str, float], peak_reset: bool) -> dict[str, Any]:
    """Memory figures of one session, in MB; what the model adds is measured from `baseline`,
    taken after the runtime was imported and before the model was loaded."""
    def minus(after: float | None, before: float | None) -> float | None:
        return after - before if after is not None and before is not None else None

    process_peak = max(v for v in (loaded.get("hwm_mb"), timed.get("hwm_mb"), 0.0)
                       if v is not None) or None
    timed_peak = timed.get("hwm_mb") if peak_reset else None
    return {
        "rss_runtime_mb": baseline.get("rss_mb"),
        "rss_loaded_mb": loaded.get("rss_mb"),
        "peak_rss_mb": process_peak,
        "timed_peak_rss_mb": timed_peak,
        "anon_mb": timed.get("anon_mb"),
        "file_mb": timed.get("file_mb"),
        # the model's share: what loading and running it added to the runtime's own memory
        "model_mb": minus(timed_peak if timed_peak is not None else process_peak,
                          baseline.get("rss_mb")),
        "model_anon_mb": minus(timed.get("anon_mb"), baseline.get("anon_mb")),
        "model_file_mb": minus(timed.get("file_mb"), baseline.get("file_mb")),
    }


def _optional(probe: Any, what: str) -> Any:
    """A runtime's description of itself; a failure there is logged, never the job's end."""
    try:
        return probe()
    except Exception as err:  # noqa: BLE001
        log(f"{what} unavailable: {first_line(err)}")
        return None


def run_profile(runtime: Any, step: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The engine's per-operator profile of `iterations` runs of `step`, or why there is none."""
    iterations = int(spec.get("iterations") or 20)
    try:
        profile: dict[str, Any] = runtime.profile(step, iterations)
    except ProfileUnsupported as err:
        return {"tool": None, "unsupported": str(err), "ops": []}
    log("profile: {} operators by {}".format(len(profile.get("ops") or ()), profile["tool"]))
    return profile


def pin(cpus: list[int]) -> None:
    """Run on exactly the CPUs the profile names. Linux drops CPUs it does not have from the set
    (it refuses only a set with none it has), so a profile's [0, 99] ran on CPU 0 alone, with
    another thread count than the profile meant: refused instead, naming what is there."""
    online = os.sched_getaffinity(0)
    absent = sorted(set(cpus) - online)
    if absent:
        raise JobError("cpu_affinity", "cpu_affinity {} names CPU{} {} that this process cannot "
                       "run on; it may use CPUs {}".format(
                           sorted(cpus), "s" if len(absent) > 1 else "",
                           ", ".join(map(str, absent)), ", ".join(map(str, sorted(online)))))
    os.sched_setaffinity(0, cpus)


def named_file(message: str, model: dict[str, Any]) -> str:
    """`message` with the model's file named as the user knows it: on a device its path is the
    cache's entry, named by its sha256 (`~/.cache/edgebench/fad1...d31`), which says nothing."""
    path, name = str(model.get("path") or ""), model.get("name")
    if not name or not path or os.path.basename(path) != model.get("sha256"):
        return message
    shown = "{}.{}".format(name, model["format"]) if model.get("format") else str(name)
    return message.replace(path, shown)


def ran_on_cpu_only(result: dict[str, Any]) -> bool:
    """Whether the session's model ran on the CPU alone: no GPU the runtime runs on, and no
    execution provider or delegate in force other than the CPU's, whose energy RAPL leaves out."""
    if result.get("accelerator"):
        return False
    placement = result.get("placement") or {}
    in_force = placement.get("in_force")
    if in_force is None and placement.get("ops_delegated"):
        # LiteRT before it said which delegates took operators: XNNPACK's counted as another's
        return False
    return all(p in CPU_PROVIDERS for p in in_force or ())


def cpu_package_power(result: dict[str, Any], energy: dict[str, Any] | None,
                      why: str | None) -> dict[str, Any] | None:
    """RAPL's figure for a session nothing else measured, None (and a log line) where there is
    none to give or the model ran where RAPL does not see it."""
    if why is not None:
        log(f"no RAPL energy: {why}")
        result["power_unavailable"] = why
        return None
    if energy is None:
        return None
    if not ran_on_cpu_only(result):
        log("no RAPL energy: the model ran on an accelerator, which the CPU package's counter "
            "does not measure")
        return None
    return energy


def timed_session(result: dict[str, Any], job: dict[str, Any], runtime: Any, step: Any,
                  data: dict[str, Any] | None, baseline: dict[str, Any]) -> None:
    """The timed window of a session on a loaded, warmed-up model, then its accuracy, device
    state, memory and energy, into `result`."""
    kind, settings = job.get("device_kind") or "linux", job["settings"]
    accelerator = result.get("accelerator")
    runtime.take_device_samples_ns()  # the warm-up's
    runtime.reset_device_peak()
    meter = gpu.EnergyMeter(accelerator.get("index") or 0, accelerator.get("uuid")) \
        if accelerator else None
    if meter is not None:
        meter.open()  # NVML up and the GPU found now: around the window, the counter alone
    loaded = probes.memory_mb()
    peak_reset = probes.reset_peak_rss()
    monitor = power.monitor_for(kind)
    if monitor is not None:
        monitor.start()
    # a board's own sensor measures the whole board: RAPL is read only where there is none
    package = rapl.RaplMeter() if monitor is None else None
    others = probes.OtherLoad()
    others.start()
    if package is not None:
        package.start()  # last before the window and first after it: the readings bracket it
    if meter is not None:
        meter.start()  # likewise
    try:
        samples, elapsed_ns, capped = measure.timed_window(
            step, settings["duration_s"], settings["min_iterations"],
            settings["max_duration_s"])
        if meter is not None:
            meter.stop()
        cpu_energy = package.stop(len(samples)) if package is not None else None
    except BaseException:
        if meter is not None:
            meter.close()
        raise
    finally:
        result["others_cpus"] = others.stop()
        watts = monitor.stop() if monitor is not None else None
    timed = probes.memory_mb()
    device_ns = runtime.take_device_samples_ns()
    result["timer"] = "perf_counter"
    if device_ns and len(device_ns) == len(samples):
        result["timer"] = runtime.timer()
        result["wall_latency"] = measure.session_statistics(samples, elapsed_ns)
        samples = device_ns
    result["samples_ns"] = samples
    result["latency"] = measure.session_statistics(samples, elapsed_ns)
    result["capped"] = capped
    nvml = meter.finish(elapsed_ns / 1e9, len(samples), os.getpid()) if meter else None
    result["gpu"] = nvml
    if watts is None and nvml and nvml.get("mean_w") is not None:
        # the GPU's own energy counter over the window, divided by its iterations
        watts = {"source": "nvml", "rail": "GPU board", "samples": 2,
                 "mean_w": nvml["mean_w"], "rails_mean_w": {"gpu": nvml["mean_w"]},
                 "energy_mj_per_inference": nvml["energy_mj_per_inference"]}
    elif watts is not None and result["latency"]:
        # W x ms = mJ: the energy one inference costs while the device runs them back to back
        watts["energy_mj_per_inference"] = watts["mean_w"] * result["latency"]["mean_ms"]
    elif watts is None and package is not None:
        watts = cpu_package_power(result, cpu_energy, package.why)
    result["power"] = watts
    log("session {}: {} warm-up runs, {} timed in {:.2f} s{}".format(
        job.get("session"), result["warmup_n"], len(samples), elapsed_ns / 1e9,
        " (cut at max_duration_s)" if capped else ""))

    if data is not None:
        result["accuracy"] = accuracy(runtime, data)

    result["state_after"] = probes.state(kind)
    result["throttled"] = probes.throttled(result["state_before"], result["state_after"], kind)
    result["memory"] = model_memory(baseline, loaded, timed, peak_reset)
    result["memory"].update(runtime.device_memory())
    result["memory"]["gpu_mem_mb"] = result["memory"].get("gpu_allocated_peak_mb")
    result["memory"]["gpu_process_mb"] = (nvml or {}).get("process_memory_mb")


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One session: load, first inference, warm-up, the timed window, accuracy if asked."""
    started = time.perf_counter()
    result = protocol.new_result(str(job.get("job_id", "?")) if isinstance(job, dict) else "?")
    try:
        job = protocol.validate_job(job)
    except protocol.ProtocolError as err:
        return protocol.set_error(result, protocol.STATUS_FAILED, "protocol", str(err))
    kind = job.get("device_kind") or "linux"
    options = job["options"]
    settings = job["settings"]
    result["settings"] = settings
    result["session"] = job.get("session")
    result["timed_scope"] = settings["timed_scope"]
    tuning = None  # device tuning (`"tune": true`), restored in `finally`
    runtime = None
    try:
        affinity = options.get("cpu_affinity")
        if affinity:
            pin(affinity)
        cpus = probes.usable_cpus()
        # Threads are always explicit: default to one per CPU this process may run on.
        threads = checked_threads(options, os.cpu_count() or 1)
        threads = threads or (len(cpus) if cpus else os.cpu_count() or 1)
        options = dict(options, cpu_affinity=cpus, threads=threads)
        result["threads"] = threads
        result["fingerprint"] = probes.fingerprint(kind)
        result["runtime"] = job["runtime"]
        model = job["model"]
        if not os.path.isfile(model["path"]):
            raise JobError("model_not_found", "model file not found: {}".format(model["path"]))
        # Data first, so that a bad file fails the job before the runtime is loaded; mapped,
        # not read, so that this session's memory is that of the sessions without data.
        data = open_dataset(job["dataset"]) if job.get("dataset") else None
        try:
            runtime = get_runtime(job["runtime"])
        except KeyError as err:
            raise JobError("unknown_runtime", str(err.args[0])) from None
        except RuntimeUnavailable as err:
            raise JobError("runtime_missing", str(err), protocol.STATUS_UNSUPPORTED) from err
        result["runtime_version"] = runtime.version()
        result["fingerprint"]["runtimes"] = {runtime.name: result["runtime_version"]}
        fmt = model.get("format")
        if fmt and fmt not in runtime.formats:
            raise JobError("format_mismatch", "{} runs {} models, not {}".format(
                runtime.name, "/".join(runtime.formats), fmt), protocol.STATUS_UNSUPPORTED)

        profiling = job.get("profile")
        if profiling:
            options = runtime.prepare_profile(options)
        tuning = tune.start(kind, job.get("tune"))
        result["state_before"] = probes.state(kind)
        # numpy.random is imported on first use, 3 to 7 MB: before the baseline, so that the
        # model's memory is the same whether the input comes from it or not
        rng = np.random.default_rng(SEED)
        # freed memory handed back before the baseline and after the load (where the C library
        # can): what glibc kept of it went by chance, and was no memory of the model's
        if not probes.release_freed_memory():
            log("memory: this C library cannot hand freed memory back (no malloc_trim): what "
                "the load freed may be counted in the model's memory")
        baseline = probes.memory_mb()
        t0 = time.perf_counter()
        try:
            # read through what options.py declares: what the profile loader checks
            runtime.load(model["path"], declared_options(runtime.name, options))
        except ModelLoadError as err:
            raise JobError(err.kind, named_file(str(err), model), protocol.STATUS_UNSUPPORTED
                           if err.unsupported else protocol.STATUS_FAILED) from err
        result["load_s"] = time.perf_counter() - t0
        probes.release_freed_memory()
        result["runtime_options"] = runtime.options_used()
        if cpus:
            # Which CPUs ran it, not only how many threads: on a board of big and little
            # cores, or one pinned by `cpu_affinity`, "threads 2" alone does not say.
            result["runtime_options"] = dict(result["runtime_options"], cpus=cpus)
        result["placement"] = _optional(runtime.placement, "placement")
        accelerator = _optional(runtime.accelerator, "accelerator")
        if accelerator:
            result["accelerator"] = accelerator
            result["fingerprint"]["accelerator"] = accelerator

        declared = runtime.input_shape()
        wanted = (job.get("input") or {}).get("shape")
        if data is not None:
            concrete_shape(declared, [1] + list(data["inputs"].shape[1:]), "the dataset")
            wanted = wanted or [1] + list(data["inputs"].shape[1:])
        shape = concrete_shape(declared, wanted, "the job")
        # every session times the same input, the one with the data and those without
        x = rng.standard_normal(shape).astype(np.float32)
        result["input_shape"] = list(x.shape)
        runtime.set_input(x)
        step = runtime.run if settings["timed_scope"] == "runtime" else runtime.run_end_to_end

        t0 = time.perf_counter()
        try:
            step()
        except Exception as err:
            raise JobError("inference_error", f"first inference failed: {first_line(err)}"
                           ) from err
        result["first_inference_ms"] = (time.perf_counter() - t0) * 1e3

        # A profile session warms up by count alone: ONNX Runtime's profiler records from the
        # session's start, and half a second of a 10 us model would be 50,000 runs of events.
        result["warmup_n"] = measure.warm_up(step, 0.0 if profiling else settings["warmup_s"],
                                             settings["warmup_min"])
        if profiling:  # a profile session ends with its profile: no timed window, no accuracy
            others = probes.OtherLoad()
            others.start()
            profile = run_profile(runtime, step, profiling)
            # whether something else ran while it was profiled, as a timed window records it;
            # kept in the profile, which the store keeps whole
            result["others_cpus"] = profile["others_cpus"] = others.stop()
            profile["loadavg_1m"] = (result["state_before"].get("loadavg") or [None])[0]
            profile["cpu_count"] = result["fingerprint"].get("cpu_count")
            result["profile"] = profile
            result["state_after"] = probes.state(kind)
        else:
            timed_session(result, job, runtime, step, data, baseline)
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
