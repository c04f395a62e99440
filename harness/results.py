"""The one result schema: the columns of runs, measurements and sessions, and how agent results
become rows.

A *measurement* is one (artifact, runtime, device) of a run: one row of `results`, keyed by its
`job_id`. It is made of *sessions*, fresh agent processes interleaved with the other artifacts of
the run: one row of `sessions` each, with the session's own figures and its raw samples. The
store creates its tables from the columns here, the report's frame takes its dtypes from them,
`edgebench export` writes them in this order, and `results/README.md` documents exactly these
names (a test holds the two together).

A measurement benchmarked with `--profile` has one more session, never a timed one: the engine's
per-operator profile, stored as one row of `profiles` (the whole profile as compressed JSON, the
time per operator type, the placement) and its top operators as rows of `profile_ops`.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.agent import protocol
from harness.agent.rapl import SOURCE as RAPL_SOURCE
from harness.report import stats

if TYPE_CHECKING:
    from harness.runner import PlannedJob


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | real | int | bool | json | blob
    key: str = ""  # SQL constraint, e.g. "PRIMARY KEY"

    @property
    def sql(self) -> str:
        base = {"text": "TEXT", "real": "REAL", "int": "INTEGER", "bool": "INTEGER",
                "json": "TEXT", "blob": "BLOB"}[self.kind]
        return f"{base} {self.key}".strip()


def _cols(spec: str) -> tuple[Column, ...]:
    """Columns from lines of `name kind [constraint...]`."""
    out = []
    for line in spec.strip().splitlines():
        name, kind, *key = line.split()
        out.append(Column(name, kind, " ".join(key)))
    return tuple(out)


RUN_COLUMNS = _cols("""
run_id text PRIMARY KEY
started_at text NOT NULL
finished_at text
status text NOT NULL
command text
suite text
devices json
harness_version text
plan json
""")

RESULT_COLUMNS = _cols("""
run_id text NOT NULL
job_id text PRIMARY KEY
started_at text
device text
device_kind text
device_fingerprint json
isa text
model text
model_sha256 text
base_model text
baseline text
technique text
lineage json
precision text
format text
runtime text
runtime_version text
accelerator text
runtime_options json
threads int
batch int
input_shape json
status text
error_kind text
error_message text
sessions int
sessions_planned int
load_s real
first_inference_ms real
n int
timer text
latency_median_ms real
latency_wall_median_ms real
latency_ci95_low_ms real
latency_ci95_high_ms real
latency_p50_ms real
latency_p90_ms real
latency_p95_ms real
latency_p99_ms real
latency_mean_ms real
latency_std_ms real
latency_min_ms real
latency_max_ms real
latency_cov real
latency_cov_within real
latency_cov_between real
latency_lag1 real
throughput_wall_ips real
throughput_ci95_low_ips real
throughput_ci95_high_ips real
stable bool
flags json
throttled bool
rss_runtime_mb real
peak_rss_mb real
timed_peak_rss_mb real
model_mb real
model_anon_mb real
model_file_mb real
gpu_mem_mb real
gpu_process_mb real
power_w real
energy_mj_per_inference real
placement json
accuracy_top1 real
accuracy_top1_low real
accuracy_top1_high real
accuracy_top5 real
accuracy_top5_low real
accuracy_top5_high real
accuracy_ties int
accuracy_n int
ref_top1_agreement real
ref_max_abs_diff real
host_top1 real
host_top5 real
host_isa text
parity_top1_agreement real
parity_max_abs_diff real
params int
macs int
size_bytes int
bytes_pushed int
dataset text
timed_scope text
settings json
state_before json
state_after json
tune json
orchestration_s real
legacy json
harness_version text
""")

SESSION_COLUMNS = _cols("""
job_id text NOT NULL
session int NOT NULL
started_at text
status text
error_kind text
error_message text
load_s real
first_inference_ms real
warmup_n int
n int
timer text
median_ms real
wall_median_ms real
mean_ms real
std_ms real
min_ms real
max_ms real
p90_ms real
p95_ms real
p99_ms real
cov real
ci95_low_ms real
ci95_high_ms real
lag1_autocorrelation real
elapsed_s real
throughput_wall_ips real
capped bool
throttled bool
loadavg_1m real
others_cpus real
cpu_count int
rss_runtime_mb real
peak_rss_mb real
timed_peak_rss_mb real
model_mb real
model_anon_mb real
model_file_mb real
anon_mb real
file_mb real
gpu_mem_mb real
gpu_process_mb real
power_w real
energy_mj_per_inference real
bytes_pushed int
orchestration_s real
fingerprint_sha256 text
state_before json
state_after json
samples blob
""")

# One row per distinct device fingerprint, keyed by the sha256 of its JSON: the sessions of a
# device share one (about 1 KB) instead of a copy each, which would outlive pruned samples.
FINGERPRINT_COLUMNS = _cols("""
sha256 text PRIMARY KEY
fingerprint json NOT NULL
""")

PROFILE_COLUMNS = _cols("""
job_id text PRIMARY KEY
started_at text
status text
error_message text
tool text
iterations int
timed bool
total_ms real
op_types json
placement json
note text
data blob
""")

PROFILE_OP_COLUMNS = _cols("""
job_id text NOT NULL
rank int NOT NULL
name text
op_type text
provider text
calls int
time_ms real
share real
""")

# Operators kept as rows per profile; the whole profile is in `profiles.data`.
TOP_OPERATORS = 20

RESULT_FIELDS = tuple(c.name for c in RESULT_COLUMNS)
SESSION_FIELDS = tuple(c.name for c in SESSION_COLUMNS)
PROFILE_FIELDS = tuple(c.name for c in PROFILE_COLUMNS)
PROFILE_OP_FIELDS = tuple(c.name for c in PROFILE_OP_COLUMNS)
_ALL = (RUN_COLUMNS, RESULT_COLUMNS, SESSION_COLUMNS, FINGERPRINT_COLUMNS, PROFILE_COLUMNS,
        PROFILE_OP_COLUMNS)
JSON_FIELDS = frozenset(c.name for cols in _ALL for c in cols if c.kind == "json")
BOOL_FIELDS = frozenset(c.name for cols in _ALL for c in cols if c.kind == "bool")

# Session memory figures carried into the measurement row (median over sessions).
_MEMORY = ("rss_runtime_mb", "peak_rss_mb", "timed_peak_rss_mb", "model_mb", "model_anon_mb",
           "model_file_mb")


def session_row(job_id: str, session: int, result: dict[str, Any], *, started_at: str,
                bytes_pushed: int, orchestration_s: float) -> dict[str, Any]:
    """One `sessions` row (without its samples) from one agent result."""
    lat = result.get("latency") or {}
    mem = result.get("memory") or {}
    err = result.get("error") or {}
    before = result.get("state_before") or {}
    load = before.get("loadavg") or [None]
    row: dict[str, Any] = {
        "job_id": job_id,
        "session": session,
        "started_at": started_at,
        "status": result.get("status", protocol.STATUS_FAILED),
        "error_kind": err.get("kind"),
        "error_message": err.get("message"),
        "load_s": result.get("load_s"),
        "first_inference_ms": result.get("first_inference_ms"),
        "warmup_n": result.get("warmup_n"),
        "capped": result.get("capped"),
        "throttled": result.get("throttled"),
        "loadavg_1m": load[0],
        "others_cpus": result.get("others_cpus"),
        "cpu_count": (result.get("fingerprint") or {}).get("cpu_count"),
        "power_w": (result.get("power") or {}).get("mean_w"),
        "energy_mj_per_inference": (result.get("power") or {}).get("energy_mj_per_inference"),
        "timer": result.get("timer"),
        "wall_median_ms": (result.get("wall_latency") or {}).get("median_ms"),
        "gpu_mem_mb": mem.get("gpu_mem_mb"),
        "gpu_process_mb": mem.get("gpu_process_mb"),
        # the device this session ran on (the store keeps it once in `fingerprints`, under
        # `fingerprint_sha256`): a resumed measurement's sessions may differ
        "fingerprint": result.get("fingerprint") or None,
        "bytes_pushed": bytes_pushed,
        "orchestration_s": orchestration_s,
        "state_before": before or None,
        "state_after": result.get("state_after") or None,
    }
    for name in ("n", "median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p90_ms", "p95_ms",
                 "p99_ms", "cov", "ci95_low_ms", "ci95_high_ms", "lag1_autocorrelation",
                 "elapsed_s", "throughput_wall_ips"):
        row[name] = lat.get(name)
    for name in (*_MEMORY, "anon_mb", "file_mb"):
        row[name] = mem.get(name)
    return row


def _median(values: Sequence[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.median(present)) if present else None


# Fingerprint keys whose values change from moment to moment (temperatures, clocks, uptime, load,
# free memory): no difference of the device itself. Matched at the start of a word of the key
# (words split by "_"), so that `mem_free_mb` and `soc_temp_c` are momentary while the versions
# of `runtimes.onnxruntime` and `runtimes.tflite_runtime`, which merely contain "time", are not.
_MOMENTARY_KEY = re.compile(r"(?:^|_)(?:temp|cur_freq|freq_cur|uptime|time|load|free|avail)")


# Fingerprint keys that say what could be measured, not what the device is: `gpu.absent` (below)
# and `rapl`, whether the CPU package's energy counters are there and readable (the CPU and kernel
# that decide it are compared already, and a chmod between sessions is no other device).
_NOT_THE_DEVICE = ("gpu.absent", "rapl")


def comparable_fingerprint(fingerprint: Any, prefix: str = "") -> dict[str, Any]:
    """A device fingerprint as dotted keys, without the momentary ones. `gpu.absent` says why
    nothing was found (no NVML, no GPU): like a key never recorded, it is no difference by
    itself (runs from before GPUs were probed have no `gpu` at all), while a GPU that appears or
    goes brings its own keys."""
    flat: dict[str, Any] = {}
    if not isinstance(fingerprint, dict):
        return flat
    for key, value in fingerprint.items():
        name = f"{prefix}{key}"
        if name in _NOT_THE_DEVICE or _MOMENTARY_KEY.search(str(key).lower()):
            continue  # not the device, or a momentary key: with all that is under it
        if isinstance(value, dict) and value:
            flat.update(comparable_fingerprint(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def mixed_sessions(results: Sequence[dict[str, Any]]) -> list[str]:
    """What differs between the sessions of one measurement that should not: fingerprint keys
    (`kernel`, `isa`, `gpu.driver`, a Jetson's power mode...) and `runtime_version`; [] when
    every session ran on the same device and runtime. A farm place whose board was swapped, or
    a bench resumed after an upgrade, would otherwise mix two devices in one figure."""
    seen = [_comparable(r) for r in results if r.get("fingerprint")]
    keys = set().union(*seen) if seen else set()
    return sorted(k for k in keys if len({repr(s.get(k)) for s in seen}) > 1)


def session_changes(before: dict[str, Any], after: dict[str, Any]
                    ) -> list[tuple[str, Any, Any]]:
    """What differs, by the rule of `mixed_sessions`, between two sessions' agent results: each
    key with its value before and after; [] where one has no fingerprint (it failed first)."""
    if not before.get("fingerprint") or not after.get("fingerprint"):
        return []
    a, b = _comparable(before), _comparable(after)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if repr(a.get(k)) != repr(b.get(k))]


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {**comparable_fingerprint(result.get("fingerprint")),
            "runtime_version": result.get("runtime_version")}


# Where a runtime's own name for the CPU appears among the providers or delegates in force.
_CPU_NAMES = ("CPUExecutionProvider", "XNNPACK", "cpu", "CPU")


def accelerator_label(accelerator: dict[str, Any] | None,
                      placement: dict[str, Any] | None = None,
                      fingerprint: dict[str, Any] | None = None) -> str | None:
    """What the model ran on besides the CPU, named like `isa` is for the CPU: the GPU as the
    runtime sees it (`NVIDIA H200 (sm 9.0, 132 SMs)`), else the ONNX Runtime execution
    providers in force that are not the CPU (`TensorrtExecutionProvider+CUDAExecutionProvider`),
    else the LiteRT delegates that took operators (`libedgetpu.so.1`), with the GPUs NVML found
    in the fingerprint (`CUDAExecutionProvider on NVIDIA H200`); None for the CPU alone."""
    if accelerator and accelerator.get("name"):
        cc, sms = accelerator.get("compute_capability"), accelerator.get("sm_count")
        extra = ", ".join(x for x in (f"sm {cc}" if cc else "", f"{sms} SMs" if sms else "")
                          if x)
        return f"{accelerator['name']} ({extra})" if extra else str(accelerator["name"])
    placement = placement or {}
    if "in_force" in placement:  # ONNX Runtime, and LiteRT's since it says
        names = [str(p) for p in placement["in_force"] or () if p not in _CPU_NAMES]
    elif placement.get("ops_delegated"):  # LiteRT's stored before it said `in_force`
        names = [str(d) for d in placement.get("requested") or () if d not in _CPU_NAMES]
    else:
        names = []
    if not names:
        return None
    gpus = [str(g.get("name")) for g in ((fingerprint or {}).get("gpu") or {}).get("gpus") or ()
            if isinstance(g, dict) and g.get("name")]
    return "+".join(names) + (f" on {', '.join(gpus)}" if gpus else "")


def compute_precision(artifact_precision: str | None,
                      runtime_options: dict[str, Any] | None) -> str | None:
    """The precision a measurement computed in: the runtime's where it sets one itself (torch's
    `precision`, to which it casts the program's weights and input; the `runtime_options` it
    reports, or the profile's where it reported none), else the artifact's (its manifest: int8
    for a quantized model). The technique stays the artifact's: what was done to the model."""
    runtime = (runtime_options or {}).get("precision")
    return str(runtime) if runtime else artifact_precision


def runtime_label(record: Mapping[str, Any]) -> str:
    """The runtime of a measurement as a table shows it: `torch fp16` where the runtime computed
    in a precision of its own other than fp32 (the program's weights cast to it), else
    `torch`."""
    own = ((record.get("runtime_options") or {}).get("precision")
           if isinstance(record.get("runtime_options"), dict) else None)
    runtime = str(record.get("runtime"))
    return f"{runtime} {own}" if own and own != "fp32" else runtime


def _top1_against_host(device: dict[str, Any], host: dict[str, Any]) -> str | None:
    """The flag a device's top-1 earns against the build host's, or None. On the same images
    (the same count: the build sends the device its evaluation set) one image more or fewer
    right is what the device computes, not sampling (`stats.top1_verdict`): the host's Wilson
    interval, used before, let a device lose 7 of 359 images (1.9 points) unflagged. On other
    images, the host's interval is the yardstick."""
    top1, host_top1 = device.get("top1"), host.get("top1")
    if top1 is None or host_top1 is None:
        return None
    if device.get("n") is not None and device.get("n") == host.get("n"):
        changed = stats.top1_verdict(host_top1, top1, device["n"]) != stats.SAME_TOP1
        return stats.FLAG_TOP1_HOST if changed else None
    low, high = host.get("top1_low"), host.get("top1_high")
    if low is not None and high is not None and not low <= top1 <= high:
        return stats.FLAG_ACCURACY
    return None


def measurement_row(run_id: str, job: PlannedJob, started_at: str,
                    results: Sequence[dict[str, Any]], session_rows: Sequence[dict[str, Any]],
                    samples_ns: Sequence[Sequence[int]], sessions_planned: int,
                    profile: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `results` row of a measurement from its sessions so far (agent results in session
    order, their rows and raw samples) and its profile session's result, if any."""
    artifact = job.artifact
    first = results[0]
    ok = [i for i, r in enumerate(results) if r.get("status") == protocol.STATUS_OK]
    failed = [r for r in results if r.get("status") != protocol.STATUS_OK]
    shown = results[ok[0]] if ok else first
    err = (failed[0].get("error") or {}) if failed else {}
    ok_rows = [session_rows[i] for i in ok]
    combined = stats.combine_sessions(
        [results[i].get("latency") or {} for i in ok],
        [np.asarray(samples_ns[i], dtype=np.float64) / 1e6 for i in ok],
        wall_medians_ms=[r.get("wall_median_ms") for r in ok_rows])
    flags = stats.latency_flags(combined) if ok else []
    if any(r.get("capped") for r in ok_rows):
        flags.append(stats.FLAG_CAPPED)
    if any(r.get("throttled") for r in ok_rows):
        flags.append(stats.FLAG_THROTTLED)
    if any(stats.loaded(r.get("others_cpus"), r.get("loadavg_1m"), r.get("cpu_count"))
           for r in ok_rows):
        flags.append(stats.FLAG_LOADED)
    if mixed_sessions([results[i] for i in ok]):
        flags.append(stats.FLAG_MIXED)
    if profile_loaded((profile or {}).get("profile")):
        flags.append(stats.FLAG_PROFILE_LOADED)
    # Where it ran: the profile's per-node placement where there is one, else the sessions'.
    placement = ((profile or {}).get("profile") or {}).get("placement") or shown.get("placement")
    if placement and placement.get("cpu_fallback"):
        flags.append(stats.FLAG_CPU_FALLBACK)
    # every figure of the sessions, as the latency, from the ok sessions alone: a session that
    # failed after its timed window (its accuracy pass) still carries a power figure
    ok_results = [results[i] for i in ok]
    if any((r.get("power") or {}).get("source") == RAPL_SOURCE for r in ok_results):
        flags.append(stats.FLAG_PACKAGE_ENERGY)  # so that no table shows it as the model's own
    acc = next((r.get("accuracy") for r in results if r.get("accuracy")), None) or {}
    host = artifact.host_accuracy or {}
    flag = _top1_against_host(acc, host)
    if flag:
        flags.append(flag)
    parity = artifact.parity or {}
    fingerprint = shown.get("fingerprint") or None
    power = [r.get("power") or {} for r in ok_results]
    throttles = [r.get("throttled") for r in ok_rows if r.get("throttled") is not None]
    record: dict[str, Any] = {
        "run_id": run_id,
        "job_id": job.job_id,
        "started_at": started_at,
        "device": job.device.name,
        "device_kind": job.device.kind,
        "device_fingerprint": fingerprint,
        "isa": (fingerprint or {}).get("isa"),
        "model": artifact.name,
        "model_sha256": artifact.sha256,
        "base_model": artifact.base_model,
        "baseline": artifact.baseline,
        "technique": artifact.technique,
        "lineage": list(artifact.lineage),
        # what it computed in: a torch run at fp16 of an fp32 program is an fp16 measurement
        "precision": compute_precision(artifact.precision, shown.get("runtime_options")
                                       or job.device.runtime_options.get(job.runtime)),
        "format": artifact.format,
        "runtime": job.runtime,
        "runtime_version": shown.get("runtime_version"),
        "accelerator": accelerator_label(shown.get("accelerator"), placement, fingerprint),
        "runtime_options": shown.get("runtime_options") or None,
        "threads": shown.get("threads"),
        "batch": artifact.input_shape[0] if artifact.input_shape else 1,
        "input_shape": shown.get("input_shape"),
        # A measurement is ok when every session it ran was; a failed one keeps its ok sessions.
        "status": failed[0].get("status", protocol.STATUS_FAILED) if failed
        else protocol.STATUS_OK,
        "error_kind": err.get("kind"),
        "error_message": err.get("message"),
        "sessions": len(ok),
        "sessions_planned": sessions_planned,
        "load_s": _median([r.get("load_s") for r in ok_rows]),
        "first_inference_ms": _median([r.get("first_inference_ms") for r in ok_rows]),
        "n": combined.get("n"),
        "timer": shown.get("timer"),
        "latency_median_ms": combined.get("median_ms"),
        "latency_wall_median_ms": combined.get("wall_median_ms"),
        "latency_ci95_low_ms": combined.get("ci95_low_ms"),
        "latency_ci95_high_ms": combined.get("ci95_high_ms"),
        "latency_cov": combined.get("cov"),
        "latency_cov_within": combined.get("cov_within"),
        "latency_cov_between": combined.get("cov_between"),
        "latency_lag1": combined.get("lag1_autocorrelation"),
        "throughput_wall_ips": combined.get("throughput_wall_ips"),
        "throughput_ci95_low_ips": combined.get("throughput_ci95_low_ips"),
        "throughput_ci95_high_ips": combined.get("throughput_ci95_high_ips"),
        "stable": (not set(flags) & stats.SPREAD_FLAGS) if ok else None,
        "flags": sorted(set(flags)),
        "throttled": any(throttles) if throttles else None,
        "gpu_mem_mb": _median([(r.get("memory") or {}).get("gpu_mem_mb") for r in ok_results]),
        "gpu_process_mb": _median([(r.get("memory") or {}).get("gpu_process_mb")
                                   for r in ok_results]),
        "placement": placement or None,
        "power_w": _median([p.get("mean_w") for p in power]),
        "energy_mj_per_inference": _median([p.get("energy_mj_per_inference") for p in power]),
        "accuracy_top1": acc.get("top1"),
        "accuracy_top1_low": acc.get("top1_low"),
        "accuracy_top1_high": acc.get("top1_high"),
        "accuracy_top5": acc.get("top5"),
        "accuracy_top5_low": acc.get("top5_low"),
        "accuracy_top5_high": acc.get("top5_high"),
        "accuracy_ties": acc.get("top1_ties"),
        "accuracy_n": acc.get("n"),
        "ref_top1_agreement": acc.get("ref_top1_agreement"),
        "ref_max_abs_diff": acc.get("ref_max_abs_diff"),
        "host_top1": host.get("top1"),
        "host_top5": host.get("top5"),
        # int8 kernels, and so the host's top-1, differ with the build host's instruction set
        "host_isa": (artifact.host_run or {}).get("isa") if host else None,
        "parity_top1_agreement": parity.get("top1_agreement"),
        "parity_max_abs_diff": parity.get("max_abs_diff"),
        "params": artifact.params,
        "macs": artifact.macs,
        "size_bytes": artifact.size_bytes,
        "bytes_pushed": sum(r.get("bytes_pushed") or 0 for r in session_rows),
        "dataset": artifact.dataset.name if artifact.dataset else None,
        "timed_scope": shown.get("timed_scope"),
        "settings": shown.get("settings") or None,
        "state_before": session_rows[0].get("state_before"),
        "state_after": session_rows[-1].get("state_after"),
        "tune": shown.get("tune") or None,
        "orchestration_s": sum(r.get("orchestration_s") or 0.0 for r in session_rows),
    }
    for stat in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max"):
        record[f"latency_{stat}_ms"] = combined.get(f"{stat}_ms")
    for name in _MEMORY:
        record[name] = _median([r.get(name) for r in ok_rows])
    return record


def profile_loaded(profile: dict[str, Any] | None) -> bool:
    """Whether others kept the CPUs busy during a profile session (the agent's profile), by the
    rule of the timed sessions' `loaded` flag."""
    profile = profile or {}
    return stats.loaded(profile.get("others_cpus"), profile.get("loadavg_1m"),
                        profile.get("cpu_count"))


def profile_rows(job_id: str, result: dict[str, Any], *, started_at: str
                 ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A profile session's agent result as its `profiles` row and its top `profile_ops` rows.

    Shares are of the profiled time per inference. An untimed profile (LiteRT's operator list)
    has no time and no share per operator; its operator types have shares by operator count
    instead, and `timed` says so."""
    err = result.get("error") or {}
    profile = result.get("profile") or {}
    ops = list(profile.get("ops") or ())
    timed = bool(profile.get("timed"))
    weight = [float(op.get("time_ms") or 0.0) if timed else 1.0 for op in ops]
    total = sum(weight)
    by_type: dict[str, dict[str, Any]] = {}
    for op, w in zip(ops, weight, strict=True):
        t = by_type.setdefault(str(op.get("op_type")), {"ops": 0, "calls": 0, "time_ms": 0.0})
        t["ops"] += 1
        # calls per inference: torch's profiler gives one entry per operator type (ops 1), the
        # calls say how many ran; ONNX Runtime's nodes run once each, so calls equal ops
        t["calls"] += int(op.get("calls") or 1)
        t["time_ms"] += w if timed else 0.0
    for t in by_type.values():
        t["share"] = (t["time_ms"] if timed else t["ops"]) / total if total else None
        if not timed:
            t["time_ms"] = None
    op_types = largest_first(by_type)
    row = {
        "job_id": job_id,
        "started_at": started_at,
        "status": result.get("status", protocol.STATUS_FAILED),
        "error_message": err.get("message") or profile.get("unsupported"),
        "tool": profile.get("tool"),
        "iterations": profile.get("iterations"),
        "timed": timed if profile else None,
        "total_ms": total if timed and ops else None,
        "op_types": op_types or None,
        "placement": profile.get("placement") or result.get("placement"),
        "note": "; ".join(n for n in (profile.get("note"), _load_note(profile)) if n) or None,
        "data": encode_profile(profile) if profile else None,
    }
    order = sorted(zip(ops, weight, strict=True), key=lambda ow: -ow[1])[:TOP_OPERATORS]
    op_rows = [{"job_id": job_id, "rank": i + 1, "name": op.get("name"),
                "op_type": op.get("op_type"), "provider": op.get("provider"),
                "calls": op.get("calls"), "time_ms": op.get("time_ms") if timed else None,
                "share": w / total if timed and total else None}
               for i, (op, w) in enumerate(order)]
    return row, op_rows


def _load_note(profile: dict[str, Any]) -> str | None:
    if not profile_loaded(profile):
        return None
    others = profile.get("others_cpus")
    busy = (f"others kept {others:.2f} CPUs busy" if others is not None else
            f"load average {profile.get('loadavg_1m')} above the {profile.get('cpu_count')} CPUs")
    return f"loaded: {busy} while this was profiled (flag profile_loaded)"


def largest_first(op_types: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """A profile's operator types, the largest share of time (of operators, untimed) first.

    The store writes JSON with its keys sorted, so `op_types` comes back alphabetical: whoever
    shows it in order must order it again (mobilenet_v3_small's report showed `aten::add` to
    `aten::hardswish` and hid the convolutions, 53.5% of its time)."""
    return dict(sorted((op_types or {}).items(),
                       key=lambda kv: (-(kv[1].get("share") or 0.0),
                                       -(kv[1].get("time_ms") or 0.0), kv[0])))


def encode_profile(profile: dict[str, Any]) -> bytes:
    """The whole profile (every operator, the engine's raw events) as zlib-compressed JSON."""
    return zlib.compress(json.dumps(profile, sort_keys=True).encode("utf-8"), 6)


def decode_profile(blob: bytes | None) -> dict[str, Any] | None:
    if not blob:
        return None
    value = json.loads(zlib.decompress(blob).decode("utf-8"))
    return value if isinstance(value, dict) else None


def measured_nothing(results: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Each device of `results` on which every measurement was unsupported (its runtime gone in
    an update, files its runtime cannot load), with why in words: it measured nothing, though
    nothing failed. `bench` exits 1 for it and the nightly counts it as not measured, as a
    device not reached; one rule and one wording for both, each saying it its own way."""
    out = {}
    for device in sorted({str(r["device"]) for r in results}):
        mine = [r for r in results if str(r["device"]) == device]
        if all(r["status"] == "unsupported" for r in mine):
            which = (f"all {len(mine)} of its measurements were" if len(mine) > 1
                     else "its one measurement was")
            out[device] = (f"measured nothing: {which} unsupported "
                           f"({mine[0]['model']}: {mine[0]['error_message']})")
    return out
