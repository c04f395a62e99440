"""Does edgebench's CUDA timing show in its own figures? ResNet18 and MobileNetV3-Small on a GPU.

Interleaves A/B pairs for each model, eager and as a CUDA graph: A is a full edgebench session
(a fresh agent process, the torch runtime, the standard protocol: CUDA events around the model
call, each iteration synchronised), B is a bare loop in a fresh process of its own doing the same
by hand in the same process setup (the same `.pt2`, CPUs, thread count, input, inference mode and
warm-up, events around each call; each side records its setup, and a pair whose setups differ is
a failure, not a ratio). Prints each pair's medians by CUDA events, the wall medians beside them,
and the ratio A/B; the target is the median ratio within 2% of 1.0 (`yes`); where every pair is
outside the band on one side it is `NO`, and where pairs fall on both sides `undecided`, with how
far each side's own median moved between its processes. Pairs go round the four (model, mode)
cells in turn, so a time budget (`--budget`) that runs out still leaves every cell its first
pairs. `--cpus 2,3` pins both sides to the same CPUs. Then one profile
session per model (torch.profiler, CUDA kernels), and a table of what edgebench recorded beside
the timing: GPU memory (allocator peak, NVML), energy per inference (NVML's counter), the GPU's
state before and after, and the fingerprint (GPU, driver, CUDA, torch, SM count).

Run by hand on a machine with an NVIDIA GPU, with that machine's own Python (torch with CUDA;
the models are torchvision's architectures with random weights, built by torchvision where it is
installed and by `benchmarks/gpu_models.py` where it is not, or `--models DIR` holding
`resnet18.pt2` and `mobilenet_v3_small.pt2`). Only `harness.agent` and `benchmarks` are imported
from edgebench, so no project virtualenv is needed:

    PYTHONPATH=. python3 benchmarks/gpu.py [--pairs 3] [--duration 1.5] [--out DIR] [--budget S]
                                           [--cpus 2,3]
    PYTHONPATH=. python3 benchmarks/gpu.py --check [--out DIR]  # the agent's CUDA paths, asserted
    PYTHONPATH=. python3 benchmarks/gpu.py --device cpu [--out DIR]  # a rehearsal without a GPU

`--device cpu` runs, on any machine, what of this needs no GPU (the two models built and exported,
an agent session and a profile session of each on the CPU, and eager pairs on the CPU with both
sides' setups compared), to try a Python and torch like the GPU machine's before its one run; it
prints and records that it is a CPU rehearsal, not a GPU result, and gives its ratios no verdict.

With `--out`, every session's full result, the profiles and the summary are written there as
JSON as they come, so a run cut short still leaves what it measured. `scripts/gpu-check.sh` runs
the first two.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.agent.job import SEED

REPO = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "mobilenet_v3_small")
MODES = ("eager", "cuda_graphs")
SETTINGS = {"warmup_s": 1.0, "warmup_min": 20, "min_iterations": 50, "max_duration_s": 20.0,
            "timed_scope": "runtime"}
SESSION_TIMEOUT_S = 180

TOLERANCE = 0.02  # the issue's target: edgebench's median within 2% of the bare loop's

# The bare loop runs in the process setup an agent session has (`harness/agent/job.py`), so that
# the ratio is edgebench's own cost: the same CPUs, one torch thread per CPU it may run on, no
# autograd, freed memory handed back around the load, the same input (the agent's seed, its
# first draw, made on the host and copied over), the output kept until the next call replaces
# it, a first inference, then the warm-up by time and count. It prints that setup beside its
# figures; `setup_differences` compares it with what the agent's result records, and a pair
# whose sides differ is a failure, not a ratio.
BARE_LOOP = r"""
import gc, json, os, statistics, sys, time
import numpy as np
import torch
path, device, graphs, duration = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
warmup_s, warmup_min, min_iterations = float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
seed, cpus = int(sys.argv[8]), [int(c) for c in sys.argv[9].split(",") if c]
if cpus:
    os.sched_setaffinity(0, cpus)
torch.set_num_threads(len(os.sched_getaffinity(0)))
# held for the process: a guard entered and let go of (`torch.inference_mode().__enter__()`)
# is gone with its object, and this loop ran with autograd, a third slower than the agent
inference = torch.inference_mode()
inference.__enter__()
# freed memory handed back before the load and after it, as the agent does (glibc only)
import ctypes
trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
if trim:
    trim(0)
program = torch.export.load(path)
if device == "cuda":
    from torch.export.passes import move_to_device_pass
    program = move_to_device_pass(program, device)
users = set(program.graph_signature.user_inputs)
shape = next(list(n.meta["val"].shape) for n in program.graph.nodes
             if n.op == "placeholder" and n.name in users)
host = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
model = program.module().to(device)
if trim:
    trim(0)
x = torch.from_numpy(host).to(device)
cuda = device == "cuda"
out = None
if graphs:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = model(x)
    call = g.replay
else:
    def call():
        global out
        out = model(x)
if cuda:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    def step():
        start.record(); call(); end.record(); end.synchronize()
        return start.elapsed_time(end)
else:
    def step():
        call()
        return None
step()
t_end, n = time.perf_counter() + warmup_s, 0
while n < warmup_min or time.perf_counter() < t_end:
    step(); n += 1
events, wall = [], []
t0 = time.perf_counter()
while True:
    a = time.perf_counter_ns(); ms = step(); b = time.perf_counter_ns()
    events.append((b - a) / 1e6 if ms is None else ms); wall.append((b - a) / 1e6)
    if time.perf_counter() - t0 >= duration and len(events) >= min_iterations:
        break
clocks = None  # the GPU's state right after the window, as the agent records its state_after
if cuda:
    try:
        import pynvml
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        clocks = {"sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                  "mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                  "temperature_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)}
    except Exception as err:
        clocks = {"absent": str(err)[:200]}
setup = {"threads": torch.get_num_threads(), "inter_op_threads": torch.get_num_interop_threads(),
         "cpus": sorted(os.sched_getaffinity(0)), "input_shape": list(x.shape),
         "device": str(x.device),
         "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
         "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32) if cuda else None,
         "matmul_precision": torch.get_float32_matmul_precision(), "gc": gc.isenabled(),
         "inference_mode": torch.is_inference_mode_enabled(),
         "torch": str(torch.__version__)}
print(json.dumps({"median_ms": statistics.median(events),
                  "wall_median_ms": statistics.median(wall), "n": len(events),
                  "warmup_n": n, "setup": setup, "state_after": clocks}))
"""

# what both sides record of their setup and must agree on
SETUP_KEYS = ("threads", "inter_op_threads", "cpus", "input_shape", "device",
              "cudnn_benchmark", "cudnn_allow_tf32", "matmul_precision", "inference_mode",
              "torch")


class SessionFailed(Exception):
    """One session (edgebench's or the bare loop's) gave no figures; the message says why."""


def export(name: str, folder: Path, models_dir: Path | None) -> tuple[Path, str]:
    """`name`.pt2 in `folder` (torchvision's architecture, random weights) and where the model
    came from; or the one in `models_dir`."""
    if models_dir is not None:
        return models_dir / f"{name}.pt2", f"{models_dir}"
    import torch

    from benchmarks.gpu_models import build

    path = folder / f"{name}.pt2"
    model, source = build(name)
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(1, 3, 224, 224),))
    torch.export.save(program, str(path))
    return path, source


def agent_job(path: Path, options: dict[str, Any], settings: dict[str, Any],
              profile_iterations: int | None = None) -> dict[str, Any]:
    """One edgebench session, exactly as the job server runs it: a fresh agent process."""
    from harness.agent import protocol

    job = protocol.measure_job("gpu", {"path": str(path), "format": "torch"}, "torch",
                               session=0, device_kind="linux", options=options,
                               settings=settings, profile_iterations=profile_iterations)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.agent"], input=json.dumps(job),
                              capture_output=True, text=True, cwd=REPO,
                              timeout=SESSION_TIMEOUT_S, env=dict(os.environ, PYTHONPATH=str(REPO)))
    except subprocess.TimeoutExpired as err:
        raise SessionFailed(f"agent still running after {SESSION_TIMEOUT_S} s") from err
    if not proc.stdout:
        raise SessionFailed(f"agent gave no result (exit {proc.returncode}): "
                            f"{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    result["_stderr_tail"] = proc.stderr[-2000:]
    return result


def bare_side(path: Path, device: str, graphs: bool, duration: float,
              cpus: list[int] | None) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BARE_LOOP, str(path), device, "1" if graphs else "0",
             str(duration), str(SETTINGS["warmup_s"]), str(SETTINGS["warmup_min"]),
             str(SETTINGS["min_iterations"]), str(SEED), ",".join(map(str, cpus or ()))],
            capture_output=True, text=True, timeout=SESSION_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise SessionFailed(f"bare loop still running after {SESSION_TIMEOUT_S} s") from err
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise SessionFailed(f"bare loop failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def agent_setup(result: dict[str, Any], cpus: list[int] | None) -> dict[str, Any]:
    """What an agent session's result records of the setup the bare loop prints (`SETUP_KEYS`);
    the CPUs are those it ran on (`runtime_options.cpus`), or where a result does not list
    them, those it was pinned to, else the parent's."""
    used = result.get("runtime_options") or {}
    ran_on = used.get("cpus") or (cpus or sorted(os.sched_getaffinity(0)))
    return {"threads": used.get("intra_op_threads"),
            "inter_op_threads": used.get("inter_op_threads"),
            "cpus": sorted(ran_on),
            "input_shape": result["input_shape"],
            "device": used.get("device"), "cudnn_benchmark": used.get("cudnn_benchmark"),
            "cudnn_allow_tf32": used.get("cudnn_allow_tf32"),
            "matmul_precision": used.get("matmul_precision"),
            "inference_mode": used.get("inference_mode"),
            "torch": result.get("runtime_version")}


def setup_differences(edgebench: dict[str, Any], bare: dict[str, Any]) -> list[str]:
    """Where the two sides' setups differ, one 'key: edgebench X, bare Y' each."""
    return [f"{key}: edgebench {edgebench.get(key)!r}, bare {bare.get(key)!r}"
            for key in SETUP_KEYS if edgebench.get(key) != bare.get(key)]


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def gpu_state(state: dict[str, Any]) -> dict[str, Any]:
    return ((state or {}).get("gpu") or {}).get("0") or {}


def state_line(before: dict[str, Any], after: dict[str, Any]) -> str:
    """NVML's GPU state before the session and after its timed window, one line."""
    b, a = gpu_state(before), gpu_state(after)

    def both(key: str, spec: str = ".0f") -> str:
        return f"{_fmt(b.get(key), spec)} -> {_fmt(a.get(key), spec)}"

    return (f"GPU {both('temperature_c')} C, SM {both('sm_clock_mhz')} MHz, "
            f"mem {both('mem_clock_mhz')} MHz, {both('power_w')} W, "
            f"pstate {both('pstate')}, clock events after {a.get('clock_event_reasons')}")


def edgebench_side(path: Path, device: str, graphs: bool, duration: float,
                   cpus: list[int] | None) -> dict[str, Any]:
    options: dict[str, Any] = {"device": device, "cuda_graphs": graphs}
    if cpus:
        options["cpu_affinity"] = cpus
    result = agent_job(path, options, dict(SETTINGS, duration_s=duration))
    if result["status"] != "ok":
        raise SessionFailed(f"edgebench session {result['status']}: {result['error']}; "
                            f"{result['_stderr_tail'][-600:]}")
    timer = "cuda_events" if device == "cuda" else "perf_counter"
    if result["timer"] != timer or (device == "cuda" and not result["wall_latency"]):
        raise SessionFailed(f"edgebench session timed by {result['timer']}, not {timer}")
    nvml = result.get("gpu") or {}
    wall = result.get("wall_latency") or result["latency"]  # on the CPU they are one
    return {"median_ms": result["latency"]["median_ms"],
            "wall_median_ms": wall["median_ms"],
            "n": result["latency"]["n"], "timer": result["timer"],
            "warmup_n": result.get("warmup_n"), "setup": agent_setup(result, cpus),
            "gpu_alloc_peak_mb": result["memory"].get("gpu_allocated_peak_mb"),
            "gpu_reserved_peak_mb": result["memory"].get("gpu_reserved_peak_mb"),
            "nvml_process_mb": nvml.get("process_memory_mb"),
            "nvml_device_used_mb": nvml.get("device_memory_used_mb"),
            "energy_mj_per_inference": (result.get("power") or {}).get(
                "energy_mj_per_inference"),
            "mean_w": nvml.get("mean_w"), "energy_interval_s": nvml.get("energy_interval_s"),
            "window_s": nvml.get("window_s"), "throttled": result.get("throttled"),
            "state": state_line(result["state_before"], result["state_after"]),
            "result_state_after": result["state_after"],
            "result": result}


def fingerprint_lines(result: dict[str, Any]) -> list[str]:
    acc = result.get("accelerator") or {}
    fp = result.get("fingerprint") or {}
    nv = fp.get("gpu") or {}
    g0 = (nv.get("gpus") or [{}])[0]
    nvml = (f"NVML absent: {nv['absent']}" if nv.get("absent") else
            f"NVML: driver {nv.get('driver')}, CUDA driver {nv.get('cuda_driver')}, NVML "
            f"{nv.get('nvml')}, GPU 0 {g0.get('name')} (cc {g0.get('compute_capability')}, "
            f"power limit {g0.get('power_limit_w')} W, max SM {g0.get('max_sm_clock_mhz')} MHz, "
            f"max mem {g0.get('max_mem_clock_mhz')} MHz)")
    return [
        (f"GPU (torch): {acc.get('name')}, {acc.get('sm_count')} SMs, compute capability "
         f"{acc.get('compute_capability')}, {_fmt(acc.get('memory_total_mb'), '.0f')} MB, "
         f"uuid {acc.get('uuid')}") if acc else "GPU: none, the session ran on the CPU",
        f"runtime: torch {result.get('runtime_version')}, CUDA runtime {acc.get('cuda_runtime')}, "
        f"cuDNN {acc.get('cudnn')}; options {result.get('runtime_options')}",
        nvml,
        f"host: {fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs, ISA {fp.get('isa')}, "
        f"Python {fp.get('python')}, numpy {fp.get('numpy')}, {fp.get('os')}",
    ]


class Out:
    """Where the JSON goes (`--out`), written as it comes; nothing without `--out`."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, obj: Any) -> None:
        if self.folder is not None:
            (self.folder / name).write_text(json.dumps(obj, indent=1, default=str))

    def append(self, name: str, obj: Any) -> None:
        if self.folder is not None:
            with open(self.folder / name, "a") as f:
                f.write(json.dumps(obj, default=str) + "\n")


def print_profile(name: str, prof: dict[str, Any], top: int = 12) -> None:
    ops = prof.get("ops") or []
    total = sum(op["time_ms"] for op in ops)
    print(f"\n# torch.profiler, {name} eager: {len(ops)} CUDA kernels, {total:.4f} ms of kernel "
          f"time per inference ({prof.get('iterations')} iterations, torch {prof.get('torch')})")
    for op in ops[:top]:
        print(f"  {op['time_ms'] * 1e3:9.1f} us  x{op['calls']:<3d} {op['name'][:110]}")


def run_pairs(paths: dict[str, Path], device: str, modes: tuple[str, ...],
              args: argparse.Namespace, out: Out, failures: list[str],
              time_left: Any = lambda: float("inf")) -> list[dict[str, Any]]:
    """Interleaved pairs (edgebench, bare loop) going round the (model, mode) cells in turn, so
    that a budget running out leaves each its first pairs; which side goes first alternates."""
    rows: list[dict[str, Any]] = []
    fingerprint_shown = False
    schedule = [(pair, name, mode) for pair in range(args.pairs) for name in paths
                for mode in modes]
    for pair, name, mode in schedule:
        if time_left() < args.reserve:
            print(f"# budget: {args.budget:.0f} s nearly spent; stopped before pair "
                  f"{pair + 1} of {name} {mode}", flush=True)
            break
        graphs = mode == "cuda_graphs"
        sides = [("edgebench", edgebench_side), ("bare", bare_side)]
        if pair % 2:
            sides.reverse()
        try:
            got = {label: fn(paths[name], device, graphs, args.duration, args.cpus)
                   for label, fn in sides}
        except SessionFailed as err:
            failures.append(f"{name} {mode} pair {pair + 1}: {err}")
            print(f"FAIL {name} {mode} pair {pair + 1}: {err}", flush=True)
            continue
        a, b = got["edgebench"], got["bare"]
        result = a.pop("result")
        out.write(f"session-{name}-{mode}-{pair + 1}.json", result)
        if not fingerprint_shown:
            print("# " + "\n# ".join(fingerprint_lines(result)), flush=True)
            out.write("fingerprint.json", {"fingerprint": result["fingerprint"],
                                           "accelerator": result.get("accelerator")})
            print(f"# setup of both sides: {json.dumps(b['setup'])}", flush=True)
            fingerprint_shown = True
        differ = setup_differences(a["setup"], b["setup"])
        row = {"model": name, "mode": mode, "pair": pair + 1, "edgebench": a, "bare": b,
               "ratio": a["median_ms"] / b["median_ms"], "setup_differs": differ}
        out.append("pairs.jsonl", row)
        if differ:  # not the same measurement: no ratio to count
            failures.append(f"{name} {mode} pair {pair + 1}: the sides' setups differ: "
                            + "; ".join(differ))
            print(f"FAIL {name} {mode} pair {pair + 1}: the sides' setups differ: "
                  + "; ".join(differ), flush=True)
            continue
        rows.append(row)
        print(f"{name:18s} {mode:11s} pair {pair + 1}: edgebench {a['median_ms']:.4f} ms "
              f"(wall {a['wall_median_ms']:.4f}, n {a['n']}, warm-up {a['warmup_n']}) | bare "
              f"{b['median_ms']:.4f} ms (wall {b['wall_median_ms']:.4f}, n {b['n']}, warm-up "
              f"{b['warmup_n']}) | ratio {row['ratio']:.4f}", flush=True)
        if device == "cuda":
            after = gpu_state(a["result_state_after"])
            print(f"    after the window: edgebench SM {after.get('sm_clock_mhz')} MHz, mem "
                  f"{after.get('mem_clock_mhz')} MHz, {after.get('temperature_c')} C | bare "
                  f"{b.get('state_after')}", flush=True)
            print(f"    alloc peak {_fmt(a['gpu_alloc_peak_mb'])} MB, NVML process "
                  f"{_fmt(a['nvml_process_mb'])} MB / GPU used "
                  f"{_fmt(a['nvml_device_used_mb'], '.0f')} MB; "
                  f"{_fmt(a['energy_mj_per_inference'], '.3f')} mJ/inference at "
                  f"{_fmt(a['mean_w'])} W (counter read {_fmt(a['energy_interval_s'], '.3f')} s "
                  f"apart, window {_fmt(a['window_s'], '.3f')} s); throttled {a['throttled']}\n"
                  f"    {a['state']}", flush=True)
    return rows


def benchmark(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Out(args.out)

    def time_left() -> float:
        return args.budget - (time.monotonic() - started) if args.budget else float("inf")

    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in MODELS:
            try:
                paths[name], source = export(name, Path(tmp), args.models)
                print(f"# {name}: {source}", flush=True)
            except Exception as err:  # noqa: BLE001 - one model's export must not hide the other
                failures.append(f"{name}: export failed: {err}")
                print(f"FAIL {name}: export failed: {type(err).__name__}: {err}", flush=True)
        rows = run_pairs(paths, "cuda", MODES, args, out, failures, time_left)
        for name in paths:
            if time_left() < args.reserve / 2:
                print(f"# budget: no profile of {name}", flush=True)
                continue
            try:
                r = agent_job(paths[name], {"device": "cuda"}, SETTINGS, profile_iterations=20)
            except SessionFailed as err:
                failures.append(f"{name} profile: {err}")
                print(f"FAIL {name} profile: {err}", flush=True)
                continue
            out.write(f"profile-{name}.json", r)
            if r["status"] != "ok" or not (r.get("profile") or {}).get("ops"):
                failures.append(f"{name} profile: {r['error'] or 'no CUDA kernels'}")
                print(f"FAIL {name} profile: {r['error'] or 'no CUDA kernels'}", flush=True)
                continue
            print_profile(name, r["profile"])
    ok = summarize(rows, out, MODES, args)
    for failure in failures:
        print(f"FAIL {failure[:300]}")
    print(f"\n{time.monotonic() - started:.0f} s; {len(rows)} pairs; "
          f"{len(failures)} failure(s)", flush=True)
    return 0 if ok and not failures else 1


def verdict(ratios: list[float]) -> str:
    """`yes` where the median ratio is within TOLERANCE of 1; `NO` where every pair is outside
    it on the same side (edgebench slower in all, or faster in all); else `undecided`: the pairs
    fall on both sides of the band, and more of them are needed to say."""
    if abs(statistics.median(ratios) - 1) <= TOLERANCE:
        return "yes"
    if all(r > 1 + TOLERANCE for r in ratios) or all(r < 1 - TOLERANCE for r in ratios):
        return "NO"
    return "undecided"


def spread(values: list[float]) -> float:
    """How far one side's medians moved from process to process: (max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values)


def summarize(rows: list[dict[str, Any]], out: Out, modes: tuple[str, ...],
              args: argparse.Namespace, rehearsal: bool = False) -> bool:
    """The table of median ratios per (model, mode), with each side's spread over its
    processes; True when every cell's verdict is `yes`."""
    print(("\n# " + REHEARSAL + ": the CPU's pairs, no verdict on the GPU target") if rehearsal
          else "")
    print("model              mode         pairs  median ratio  [min, max]         within 2%"
          "   edgebench ms (spread)  bare ms (spread)   alloc MB  mJ/inf")
    ok = True
    summary = []
    for name in MODELS:
        for mode in modes:
            cell = [r for r in rows if r["model"] == name and r["mode"] == mode]
            if not cell:
                ok = False
                print(f"{name:18s} {mode:11s}  0      (no pair measured)")
                continue
            ratios = [r["ratio"] for r in cell]
            med = statistics.median(ratios)
            said = verdict(ratios)
            ok &= said == "yes"
            ebs = [r["edgebench"]["median_ms"] for r in cell]
            bares = [r["bare"]["median_ms"] for r in cell]
            energies = [r["edgebench"]["energy_mj_per_inference"] for r in cell
                        if r["edgebench"]["energy_mj_per_inference"] is not None]
            energy = statistics.median(energies) if energies else None
            alloc = cell[0]["edgebench"]["gpu_alloc_peak_mb"]
            summary.append({"model": name, "mode": mode, "pairs": len(cell),
                            "median_ratio": med, "min_ratio": min(ratios),
                            "max_ratio": max(ratios), "verdict": said,
                            "within_2pct": said == "yes",
                            "edgebench_median_ms": statistics.median(ebs),
                            "edgebench_spread": spread(ebs),
                            "bare_median_ms": statistics.median(bares),
                            "bare_spread": spread(bares),
                            "gpu_alloc_peak_mb": alloc, "energy_mj_per_inference": energy})
            print(f"{name:18s} {mode:11s}  {len(cell):<5d}  {med:.4f}        [{min(ratios):.4f}, "
                  f"{max(ratios):.4f}]   {said:9s}   {statistics.median(ebs):9.4f} "
                  f"({spread(ebs):5.1%})   {statistics.median(bares):9.4f} "
                  f"({spread(bares):5.1%})  {_fmt(alloc):>7s}  {_fmt(energy, '.3f')}")
    if any(c["verdict"] == "undecided" for c in summary):
        print("# undecided: the pairs fall on both sides of the 2% band; the spreads say how far "
              "each side moved between its own processes. More pairs (PAIRS=) settle it.")
    out.write("summary.json", {"cells": summary, "all_within_2pct": ok, "settings": SETTINGS,
                               "cpus": args.cpus, "tolerance": TOLERANCE,
                               **({"rehearsal": "cpu", "note": REHEARSAL} if rehearsal else {})})
    return ok


def check(args: argparse.Namespace) -> int:
    """The agent's CUDA paths on a small conv net, each asserted; a failure says which."""
    import torch

    out = Out(args.out)
    failures: list[str] = []

    def expect(cond: bool, what: str) -> None:
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(16, 10)).eval()
        path = Path(tmp) / "tiny.pt2"
        torch.export.save(torch.export.export(model, (torch.randn(1, 3, 32, 32),)), str(path))
        quick = dict(SETTINGS, warmup_s=0.2, warmup_min=5, duration_s=0.5, min_iterations=20)
        for options in ({"device": "cuda"}, {"device": "cuda", "cuda_graphs": True},
                        {"device": "cuda", "precision": "fp16"},
                        {"device": "cuda", "precision": "bf16"},
                        {"device": "cuda", "cuda_graphs": True, "precision": "fp16"}):
            label = json.dumps(options)
            try:
                r = agent_job(path, options, quick)
            except SessionFailed as err:
                expect(False, f"{label}: {err}")
                continue
            out.write("check-{}.json".format("-".join(str(v) for v in options.values())), r)
            expect(r["status"] == "ok", f"{label}: status ok ({r['error']})")
            if r["status"] != "ok":
                print(r["_stderr_tail"][-1500:], flush=True)
                continue
            lat, wall = r["latency"], r["wall_latency"]
            expect(r["timer"] == "cuda_events", f"{label}: timer cuda_events")
            expect(wall is not None and wall["median_ms"] >= lat["median_ms"] > 0,
                   f"{label}: wall median {wall and wall['median_ms']} >= events median "
                   f"{lat['median_ms']}")
            expect(len(r["samples_ns"]) == lat["n"], f"{label}: one sample per iteration")
            expect((r["memory"].get("gpu_mem_mb") or 0) > 0,
                   f"{label}: allocator peak {r['memory'].get('gpu_mem_mb')} MB")
            expect(r["runtime_options"]["cuda_graphs"] is bool(options.get("cuda_graphs")),
                   f"{label}: cuda_graphs recorded")
            expect(r["runtime_options"]["precision"] == options.get("precision", "fp32"),
                   f"{label}: precision recorded")
            expect((r.get("placement") or {}).get("cpu_fallback") is False,
                   f"{label}: weights on the GPU {(r.get('placement') or {}).get('in_force')}")
            acc = r.get("accelerator") or {}
            expect(bool(acc.get("name")) and (acc.get("sm_count") or 0) > 0,
                   f"{label}: accelerator {acc.get('name')}, {acc.get('sm_count')} SMs")
            gpu = r["fingerprint"].get("gpu") or {}
            expect(bool(gpu.get("gpus")), f"{label}: NVML fingerprint "
                   f"{gpu.get('driver') or gpu.get('absent')}")
            st = gpu_state(r["state_before"])
            expect(st.get("sm_clock_mhz") is not None, f"{label}: NVML state {st}")
            nvml = r.get("gpu") or {}
            expect(nvml.get("energy_mj") is not None,
                   f"{label}: NVML energy {nvml.get('energy_mj')} mJ over "
                   f"{nvml.get('energy_interval_s')} s")
            print(f"     median {lat['median_ms']:.4f} ms, wall "
                  f"{_fmt((wall or {}).get('median_ms'), '.4f')} ms; "
                  f"memory {r['memory'].get('gpu_allocated_peak_mb')} MB allocated, "
                  f"{r['memory'].get('gpu_reserved_peak_mb')} MB reserved; power {r.get('power')};"
                  f" nvml {nvml}\n     {state_line(r['state_before'], r['state_after'])}",
                  flush=True)
        try:
            r = agent_job(path, {"device": "cuda"}, quick, profile_iterations=10)
        except SessionFailed as err:
            r = {"status": "failed", "error": str(err)}
        out.write("check-profile.json", r)
        prof = r.get("profile") or {}
        expect(r["status"] == "ok" and prof.get("tool") == "torch.profiler",
               f"profile session ({r['error']})")
        ops = prof.get("ops") or []
        expect(bool(ops) and all(op["provider"] == "CUDA" for op in ops),
               f"profile: {len(ops)} CUDA kernels, top {ops[:1]}")
        # kernels only: an aten op listed too would count its kernels' time twice
        expect(not any(op["name"].startswith("aten::") for op in ops),
               f"profile: no aten operators among the kernels {[op['name'] for op in ops][:8]}")
    print(f"\n{len(failures)} check(s) failed" if failures else "\nall checks passed")
    return 1 if failures else 0


REHEARSAL = "CPU REHEARSAL, not a GPU result"


def rehearse(args: argparse.Namespace) -> int:
    """`--device cpu`: on a machine without a GPU, the parts of this benchmark that do not need
    one, under this Python and torch (a rehearsal for the GPU machine's image): the two models
    built and exported to `.pt2`, one agent session and one profile session of each on the CPU,
    then `--pairs` eager pairs of each (the agent against the bare loop, both on the CPU, their
    setups compared). Nothing CUDA is run, so what it prints and writes says so, and the CPU's
    ratios get no verdict: they are not the GPU's."""
    import platform

    import torch

    print(f"# {REHEARSAL}: torch {torch.__version__}, Python {platform.python_version()}",
          flush=True)
    out = Out(args.out)
    failures: list[str] = []
    quick = dict(SETTINGS, warmup_s=0.2, warmup_min=3, duration_s=args.duration, min_iterations=5)
    models: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            try:
                path, source = export(name, Path(tmp), args.models)
                paths[name] = path
                r = agent_job(path, {"device": "cpu"}, quick)
                p = agent_job(path, {"device": "cpu"}, quick, profile_iterations=3)
            except Exception as err:  # noqa: BLE001 - one model's failure must not hide the other
                failures.append(f"{name}: {type(err).__name__}: {err}")
                print(f"FAIL {name} ({REHEARSAL}): {type(err).__name__}: {err}", flush=True)
                continue
            out.write(f"rehearsal-session-{name}.json", dict(r, rehearsal="cpu"))
            out.write(f"rehearsal-profile-{name}.json", dict(p, rehearsal="cpu"))
            ops = (p.get("profile") or {}).get("ops") or []
            for label, res in (("session", r), ("profile", p)):
                if res["status"] != "ok":
                    failures.append(f"{name} {label}: {res['error']}")
                    print(f"FAIL {name} {label}: {res['error']}\n{res['_stderr_tail']}", flush=True)
            if p["status"] == "ok" and not ops:
                failures.append(f"{name} profile: no operators")
            lat = r.get("latency") or {}
            models[name] = {"source": source, "status": r["status"], "timer": r["timer"],
                            "median_ms": lat.get("median_ms"), "n": lat.get("n"),
                            "profile_status": p["status"], "profile_ops": len(ops)}
            print(f"{name} ({REHEARSAL}): {source}; session {r['status']}, timer {r['timer']}, "
                  f"median {_fmt(lat.get('median_ms'), '.2f')} ms on the CPU (n {lat.get('n')}); "
                  f"profile {p['status']}, {len(ops)} CPU operators, top "
                  f"{[op['op_type'] for op in ops[:3]]}", flush=True)
        # the pairs' machinery, both sides' setups compared, on the CPU: no verdict
        rows = run_pairs(paths, "cpu", ("eager",), args, out, failures)
        summarize(rows, out, ("eager",), args, rehearsal=True)
    out.write("rehearsal.json", {"rehearsal": "cpu", "note": REHEARSAL,
                                 "torch": str(torch.__version__),
                                 "python": platform.python_version(), "models": models,
                                 "failures": failures})
    print(f"\n# {REHEARSAL}: {len(failures)} failure(s)", flush=True)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5, help="timed seconds per side")
    parser.add_argument("--models", type=Path, help="folder of pre-exported .pt2 files")
    parser.add_argument("--out", type=Path, help="folder for the JSON results")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds for the whole benchmark (0: no limit); pairs stop early "
                             "enough to leave --reserve for the profiles and the table")
    parser.add_argument("--reserve", type=float, default=40.0,
                        help="seconds kept back from --budget for one more pair and the profiles")
    parser.add_argument("--cpus", type=lambda v: [int(c) for c in v.split(",") if c] or None,
                        help="CPUs both sides of every pair are pinned to, e.g. 2,3 (the agent "
                             "by its cpu_affinity option): in eager mode the CPU launching kernels "
                             "bounds the time, and a process moved between CPUs swings it")
    parser.add_argument("--check", action="store_true", help="assert the agent's CUDA paths")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a rehearsal without a GPU of what needs none (the models "
                             "exported, an agent session and a profile of each on the CPU); "
                             "never a GPU result")
    args = parser.parse_args()
    if args.device == "cpu":
        if args.check:
            parser.error("--check asserts the CUDA paths: it has no CPU rehearsal")
        return rehearse(args)
    import torch

    if not torch.cuda.is_available():
        print(f"FAIL: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU "
              f"here; this needs a machine with an NVIDIA GPU and torch built with CUDA",
              flush=True)
        return 2
    return check(args) if args.check else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
