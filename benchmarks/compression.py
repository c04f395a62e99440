"""What compression buys, measured through edgebench itself on this machine's CPU.

Part 1: ResNet18 at 224x224 in ONNX Runtime: fp32 vs static int8 (QDQ, per-channel, 7-bit
weights: the default, safe on every CPU) vs the same with full 8-bit weights (what the 7 bits
cost) vs 50% structured channel pruning, built by `build_suite` and measured in one run of
`harness.runner` on the local device under the standard protocol: sessions in rounds across the
variants, so session k of each ran back to back and the speed-ups are paired by session.
Prints medians with their 95% intervals, p90, size, and speed-ups with their intervals.
Targets (issue 4): int8 >= 2.5x faster and >= 4x smaller; pruned 50% >= 2.5x faster.

Part 2: the digits demo suite (models/demo.yaml): the accuracy of every artifact, as measured at
build time on the exported file in its own runtime, and as the local agent measures it in a quick
benchmark job (the two must agree). Targets: int8 within 1 point of fp32.

Run by hand (not a test; minutes):

    .venv/bin/python benchmarks/compression.py [--sessions 5] [--threads 2] [--duration 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

from harness import runner
from harness.artifacts import Artifact
from harness.compress.build import build_suite
from harness.config import DeviceProfile
from harness.report import stats
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent

RESNET_SUITE = """
name: compression-benchmark
seed: 0
formats: [onnx]
models:
  resnet18: {arch: resnet18, input_size: 224, recipes: [int8_static, int8_8bit, prune50]}
recipes:
  int8_static:
    steps: [{quantize_static: {calibration_size: 32, per_channel: true}}]
  int8_8bit:
    steps: [{quantize_static: {calibration_size: 32, per_channel: true, reduce_range: false}}]
  prune50:
    steps: [{prune_structured: {ratio: 0.5, importance: l1, finetune_epochs: 0}}]
"""


def bench(artifacts: list[Artifact], store: Store, options: runner.BenchOptions,
          threads: int) -> dict[tuple[str, str], dict]:
    profile = DeviceProfile(name="local", threads=threads, runtimes=("onnxruntime", "tflite"))
    jobs = runner.plan_jobs(artifacts, [profile], options)
    _, records = runner.run_plan(store, jobs, options, command="compression benchmark")
    return {(r["model"], r["format"]): r for r in records}


def resnet18(build_dir: Path, store: Store, args: argparse.Namespace, console: Console) -> None:
    suite = build_dir / "resnet18.yaml"
    suite.write_text(RESNET_SUITE)
    report = build_suite(suite, build_dir / "resnet18", console=console)
    if report.failures:
        raise SystemExit(f"build failed: {report.failures}")
    arts = {a.name.replace("resnet18-", "").replace("resnet18", "fp32"): a
            for a in report.artifacts}
    order = ["fp32", "int8_static", "int8_8bit", "prune50"]
    options = runner.BenchOptions(threads=args.threads, sessions=args.sessions,
                                  settings={"duration_s": args.duration})
    records = bench([arts[t] for t in order], store, options, args.threads)
    rows = {t: records[(arts[t].name, "onnx")] for t in order}
    for t, r in rows.items():
        if r["status"] != "ok":
            raise SystemExit(f"{t}: {r['error_message']}")
    medians = {t: [s["median_ms"] for s in store.sessions([r["job_id"]])] for t, r in rows.items()}
    print(f"\nResNet18 224x224, ONNX Runtime CPU, {args.threads} threads, ISA "
          f"{rows['fp32']['isa']}, {args.sessions} sessions each, interleaved")
    print("| variant | median ms [95% CI] | p90 ms | speed-up [95% CI, paired] | size MB | "
          "smaller | MMACs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in order:
        r, art = rows[t], arts[t]
        speedup = stats.ratio_interval(medians[t], medians["fp32"], paired=True)
        print(f"| {t} | {r['latency_median_ms']:.2f} [{r['latency_ci95_low_ms']:.2f}, "
              f"{r['latency_ci95_high_ms']:.2f}] | {r['latency_p90_ms']:.2f} | "
              f"{speedup.ratio:.2f}x [{speedup.low:.2f}, {speedup.high:.2f}] | "
              f"{art.size_bytes / 1e6:.1f} | {arts['fp32'].size_bytes / art.size_bytes:.2f}x | "
              f"{(art.macs or 0) / 1e6:.0f} |")
    eight = stats.ratio_interval(medians["int8_8bit"], medians["int8_static"], paired=True)
    print(f"7-bit weights vs 8-bit: latency ratio {eight.ratio:.3f} [{eight.low:.3f}, "
          f"{eight.high:.3f}] ({stats.verdict(eight)} beyond {stats.THRESHOLD:.0%})")


def digits(build_dir: Path, store: Store, args: argparse.Namespace, console: Console) -> None:
    report = build_suite(ROOT / "models" / "demo.yaml", args.demo_build, console=console)
    arts = [a for a in report.artifacts if a.host_accuracy is not None]
    options = runner.BenchOptions(threads=args.threads, quick=True)
    records = bench(arts, store, options, args.threads)
    base = {a.format: a.host_accuracy["top1"] for a in arts  # type: ignore[index]
            if a.technique == "fp32"}
    print("\nDigits demo (359 held-out images): accuracy of every artifact")
    print("| artifact | format | technique | precision | KiB | kMACs | host top-1 | "
          "device top-1 | vs fp32 (points) | agreement |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for a in sorted(arts, key=lambda a: (a.format, a.name)):
        rec = records.get((a.name, a.format), {})
        host = a.host_accuracy["top1"]  # type: ignore[index]
        device = rec.get("accuracy_top1")
        print(f"| {a.name} | {a.format} | {a.technique} | {a.precision} | "
              f"{a.size_bytes / 1024:.0f} | {(a.macs or 0) / 1e3:.0f} | {100 * host:.1f} | "
              + (f"{100 * device:.1f}" if device is not None else "n/a") + " | "
              f"{100 * (host - base[a.format]):+.1f} | "
              f"{a.parity['top1_agreement'] if a.parity else float('nan'):.3f} |")
    if report.failures:
        print(f"\nfailed to build: {report.failures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=2.0, help="timed window per session")
    parser.add_argument("--demo-build", type=Path, default=ROOT / "models" / "build",
                        help="build folder of the demo suite (reused when up to date)")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.db") as store:
        if not args.skip_resnet:
            resnet18(Path(tmp), store, args, console)
        if not args.skip_digits:
            digits(Path(tmp), store, args, console)


if __name__ == "__main__":
    main()
