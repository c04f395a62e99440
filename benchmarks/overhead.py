"""Does edgebench's harness show in its own figures? ResNet18 ONNX on the local device.

Interleaves A/B pairs: A is a full `edgebench` job (fresh agent process, the standard protocol),
B is a bare loop in a separate process with the same threads and optimisation level, timing each
call alone of what edgebench times by default: `run_with_iobinding` on an input and outputs bound
once, as onnxruntime_perf_test does. Prints each pair's medians and the ratio A/B; the target is the
median ratio within 1% of 1.0. Run by hand (not a test; this machine is shared and noisy):

    .venv/bin/python benchmarks/overhead.py [--pairs 5] [--threads 2] [--duration 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import runner
from harness.artifacts import from_model_file
from harness.config import DeviceProfile
from harness.store import Store

BARE_LOOP = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
path, threads, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads = threads
so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
binding = sess.io_binding()
binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x))
for out in sess.get_outputs():
    binding.bind_output(out.name, "cpu")
sess.run_with_iobinding(binding)
for out, value in zip(sess.get_outputs(), binding.get_outputs()):
    binding.bind_ortvalue_output(out.name, value)
end = time.perf_counter() + 1.0
n = 0
while n < 10 or time.perf_counter() < end:
    sess.run_with_iobinding(binding); n += 1
samples = []
end = time.perf_counter() + duration
while len(samples) < 100 or time.perf_counter() < end:
    t0 = time.perf_counter_ns()
    sess.run_with_iobinding(binding)
    samples.append(time.perf_counter_ns() - t0)
print(json.dumps({"median_ms": float(np.median(samples)) / 1e6, "n": len(samples)}))
"""


def export_resnet18(folder: Path) -> Path:
    import torch
    import torchvision

    path = folder / "resnet18.onnx"
    model = torchvision.models.resnet18(weights=None).eval()
    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), dynamo=True,
                      external_data=False)
    return path


def edgebench_median(model: Path, threads: int, duration: float, db: Path) -> tuple[float, int]:
    profile = DeviceProfile(name="local", threads=threads, runtimes=("onnxruntime",))
    # one session per pair: the pairs themselves are the repeated, interleaved processes
    options = runner.BenchOptions(threads=threads, sessions=1, settings={
        "duration_s": duration, "max_duration_s": max(60.0, 4 * duration)})
    jobs = runner.plan_jobs([from_model_file(model)], [profile], options)
    with Store(db) as store:
        _, (record,) = runner.run_plan(store, jobs, options, command="overhead benchmark")
    if record["status"] != "ok":
        raise SystemExit(f"edgebench job failed: {record['error_message']}")
    return record["latency_median_ms"], record["n"]


def bare_median(model: Path, threads: int, duration: float) -> tuple[float, int]:
    proc = subprocess.run([sys.executable, "-c", BARE_LOOP, str(model), str(threads),
                           str(duration)], capture_output=True, text=True, check=True)
    answer = json.loads(proc.stdout)
    return answer["median_ms"], answer["n"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = export_resnet18(folder)
        ratios = []
        print(f"ResNet18 ONNX, {args.threads} threads, {args.duration:g} s timed per side")
        print(f"{'pair':>4}  {'edgebench ms':>12}  {'n':>5}  {'bare loop ms':>12}  {'n':>5}  ratio")
        for i in range(args.pairs):
            # alternate which side goes first so slow drift of the machine cancels out
            if i % 2 == 0:
                a = edgebench_median(model, args.threads, args.duration, folder / "r.db")
                b = bare_median(model, args.threads, args.duration)
            else:
                b = bare_median(model, args.threads, args.duration)
                a = edgebench_median(model, args.threads, args.duration, folder / "r.db")
            ratios.append(a[0] / b[0])
            print(f"{i + 1:>4}  {a[0]:>12.3f}  {a[1]:>5}  {b[0]:>12.3f}  {b[1]:>5}  "
                  f"{ratios[-1]:.4f}")
        median_ratio = statistics.median(ratios)
        verdict = "within" if abs(median_ratio - 1) <= 0.01 else "OUTSIDE"
        print(f"median ratio edgebench/bare = {median_ratio:.4f} ({verdict} the 1% target; "
              f"pairs range {min(ratios):.4f}..{max(ratios):.4f})")


if __name__ == "__main__":
    main()
