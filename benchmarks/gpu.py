"""Does edgebench's CUDA timing show in its own figures? ResNet18 and MobileNetV3-Small on a GPU.

Interleaves A/B pairs for each model, eager and as a CUDA graph: A is a full edgebench session
(a fresh agent process, the torch runtime, the standard protocol: CUDA events around the model
call, each iteration synchronised), B is a bare loop in a fresh process of its own doing the same
by hand (the same `.pt2`, inference mode, the same warm-up, events around each call). Prints each
pair's medians by CUDA events, the wall medians beside them, and the ratio A/B; the target is the
median ratio within 2% of 1.0.

Run by hand on a machine with an NVIDIA GPU, with that machine's own Python (torch with CUDA;
torchvision to build the models, else `--models DIR` holding `resnet18.pt2` and
`mobilenet_v3_small.pt2` exported elsewhere with a compatible torch). Only `harness.agent` is
imported from edgebench, so no project virtualenv is needed:

    PYTHONPATH=. python3 benchmarks/gpu.py [--pairs 3] [--duration 2]
    PYTHONPATH=. python3 benchmarks/gpu.py --check      # the agent's CUDA paths, asserted

`scripts/gpu-check.sh` runs both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "mobilenet_v3_small")
SETTINGS = {"warmup_s": 1.0, "warmup_min": 20, "min_iterations": 50, "max_duration_s": 60.0,
            "timed_scope": "runtime"}

BARE_LOOP = r"""
import json, sys, time
import torch
path, graphs, duration = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
warmup_s, warmup_min, min_iterations = float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.inference_mode().__enter__()
model = torch.export.load(path).module().to("cuda")
x = torch.randn(1, 3, 224, 224, device="cuda")
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
    call = lambda: model(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
def step():
    start.record(); call(); end.record(); end.synchronize()
    return start.elapsed_time(end)
t_end, n = time.perf_counter() + warmup_s, 0
while n < warmup_min or time.perf_counter() < t_end:
    step(); n += 1
events, wall = [], []
t0 = time.perf_counter()
while True:
    a = time.perf_counter_ns(); ms = step(); b = time.perf_counter_ns()
    events.append(ms); wall.append((b - a) / 1e6)
    if time.perf_counter() - t0 >= duration and len(events) >= min_iterations:
        break
events.sort(); wall.sort()
print(json.dumps({"median_ms": events[len(events) // 2], "wall_median_ms": wall[len(wall) // 2],
                  "n": len(events)}))
"""


def export(name: str, folder: Path, models_dir: Path | None) -> Path:
    """`name`.pt2 in `folder`: torchvision's architecture with random weights, or the one given."""
    if models_dir is not None:
        return models_dir / f"{name}.pt2"
    import torch
    import torchvision

    path = folder / f"{name}.pt2"
    model = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(1, 3, 224, 224),))
    torch.export.save(program, str(path))
    return path


def agent_job(path: Path, options: dict[str, Any], settings: dict[str, Any],
              profile_iterations: int | None = None) -> dict[str, Any]:
    """One edgebench session, exactly as the job server runs it: a fresh agent process."""
    from harness.agent import protocol

    job = protocol.measure_job("gpu", {"path": str(path), "format": "torch"}, "torch",
                               session=0, device_kind="linux", options=options,
                               settings=settings, profile_iterations=profile_iterations)
    proc = subprocess.run([sys.executable, "-m", "harness.agent"], input=json.dumps(job),
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if not proc.stdout:
        raise RuntimeError(f"agent gave no result: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def edgebench_side(path: Path, graphs: bool, duration: float) -> dict[str, Any]:
    result = agent_job(path, {"device": "cuda", "cuda_graphs": graphs},
                       dict(SETTINGS, duration_s=duration))
    if result["status"] != "ok":
        raise RuntimeError(f"edgebench session failed: {result['error']}")
    return {"median_ms": result["latency"]["median_ms"],
            "wall_median_ms": result["wall_latency"]["median_ms"],
            "n": result["latency"]["n"], "timer": result["timer"],
            "gpu_mem_mb": result["memory"].get("gpu_mem_mb"),
            "energy_mj": (result.get("power") or {}).get("energy_mj_per_inference"),
            "accelerator": result.get("accelerator"), "isa": result["fingerprint"]["isa"]}


def bare_side(path: Path, graphs: bool, duration: float) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, str(path), "1" if graphs else "0", str(duration),
         str(SETTINGS["warmup_s"]), str(SETTINGS["warmup_min"]), str(SETTINGS["min_iterations"])],
        capture_output=True, text=True, timeout=600, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def benchmark(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = export(name, Path(tmp), args.models)
            for graphs in (False, True):
                mode = "cuda_graphs" if graphs else "eager"
                for pair in range(args.pairs):
                    # alternate which side goes first, so neither always follows the other
                    sides = [("edgebench", edgebench_side), ("bare", bare_side)]
                    if pair % 2:
                        sides.reverse()
                    got = {label: fn(path, graphs, args.duration) for label, fn in sides}
                    a, b = got["edgebench"], got["bare"]
                    ratio = a["median_ms"] / b["median_ms"]
                    rows.append((name, mode, ratio))
                    print(f"{name:20s} {mode:11s} pair {pair + 1}: edgebench {a['median_ms']:.4f}"
                          f" ms (wall {a['wall_median_ms']:.4f}, n {a['n']}, "
                          f"{a['gpu_mem_mb'] or 0:.0f} MB, {a['energy_mj'] or float('nan'):.3g} "
                          f"mJ) | bare {b['median_ms']:.4f} ms (wall {b['wall_median_ms']:.4f}, "
                          f"n {b['n']}) | ratio {ratio:.4f}", flush=True)
                    if pair == 0 and name == MODELS[0] and not graphs:
                        print(f"# GPU: {a['accelerator']}; host ISA: {a['isa']}", flush=True)
    print("\nmodel                mode         median ratio  [min, max]     within 2%")
    ok = True
    for name in MODELS:
        for mode in ("eager", "cuda_graphs"):
            ratios = [r for n, m, r in rows if n == name and m == mode]
            med = statistics.median(ratios)
            within = abs(med - 1) <= 0.02
            ok &= within
            print(f"{name:20s} {mode:11s}  {med:.4f}       [{min(ratios):.4f}, {max(ratios):.4f}]"
                  f"   {'yes' if within else 'NO'}")
    return 0 if ok else 1


def check(args: argparse.Namespace) -> int:
    """The agent's CUDA paths on a small conv net, each asserted; a failure says which."""
    import torch

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
                        {"device": "cuda", "precision": "bf16"}):
            label = json.dumps(options)
            r = agent_job(path, options, quick)
            expect(r["status"] == "ok", f"{label}: status ok ({r['error']})")
            if r["status"] != "ok":
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
            acc = r.get("accelerator") or {}
            expect(bool(acc.get("name")) and (acc.get("sm_count") or 0) > 0,
                   f"{label}: accelerator {acc.get('name')}, {acc.get('sm_count')} SMs")
            gpu = r["fingerprint"].get("gpu") or {}
            expect(bool(gpu.get("gpus")), f"{label}: NVML fingerprint "
                   f"{gpu.get('driver') or gpu.get('absent')}")
            st = (r["state_before"].get("gpu") or {}).get("0") or {}
            expect(st.get("sm_clock_mhz") is not None, f"{label}: NVML state {st}")
            print(f"     median {lat['median_ms']:.4f} ms, wall {wall['median_ms']:.4f} ms, "
                  f"power {r.get('power')}, nvml {r.get('gpu')}", flush=True)
        r = agent_job(path, {"device": "cuda"}, quick, profile_iterations=10)
        prof = r.get("profile") or {}
        expect(r["status"] == "ok" and prof.get("tool") == "torch.profiler",
               f"profile session ({r['error']})")
        ops = prof.get("ops") or []
        expect(bool(ops) and all(op["provider"] == "CUDA" for op in ops),
               f"profile: {len(ops)} CUDA kernels, top {ops[:1]}")
    print(f"\n{len(failures)} check(s) failed" if failures else "\nall checks passed")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="timed seconds per side")
    parser.add_argument("--models", type=Path, help="folder of pre-exported .pt2 files")
    parser.add_argument("--check", action="store_true", help="assert the agent's CUDA paths")
    args = parser.parse_args()
    return check(args) if args.check else benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
