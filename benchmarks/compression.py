"""What compression buys, measured through edgebench itself on this machine's CPU.

Part 1: ResNet18 at 224x224 in ONNX Runtime: fp32 vs static int8 (QDQ, per-channel) vs 50%
structured channel pruning, built by `build_suite` and measured by `harness.runner` jobs on the
local device under the standard protocol, rounds interleaved so that drift of a shared machine
hits every variant alike. Prints medians, p90, size and the ratios to fp32.
Targets (issue 4): int8 >= 2.5x faster and >= 4x smaller; pruned 50% >= 2.5x faster.

Part 2: the digits demo suite (models/demo.yaml): the accuracy of every artifact, as measured at
build time on the exported file in its own runtime, and as the local agent measures it in a quick
benchmark job (the two must agree). Targets: int8 within 1 point of fp32.

Run by hand (not a test; minutes):

    .venv/bin/python benchmarks/compression.py [--rounds 3] [--threads 2] [--duration 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from rich.console import Console

from harness import runner
from harness.artifacts import Artifact
from harness.compress.build import build_suite
from harness.config import DeviceProfile
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent

RESNET_SUITE = """
name: compression-benchmark
seed: 0
formats: [onnx]
models:
  resnet18: {arch: resnet18, input_size: 224, recipes: [int8_static, prune50]}
recipes:
  int8_static:
    steps: [{quantize_static: {calibration_size: 32, per_channel: true}}]
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
    arts = {a.technique: a for a in report.artifacts}
    order = ["fp32", "int8_static", "prune50"]
    options = runner.BenchOptions(threads=args.threads, settings={
        "min_duration_s": args.duration, "max_duration_s": max(60.0, 4 * args.duration)})
    medians: dict[str, list[float]] = {t: [] for t in order}
    p90: dict[str, list[float]] = {t: [] for t in order}
    for i in range(args.rounds):
        # rotate the order each round so no variant always runs first or last
        rotated = order[i % 3:] + order[:i % 3]
        for technique in rotated:
            record = next(iter(bench([arts[technique]], store, options, args.threads).values()))
            if record["status"] != "ok":
                raise SystemExit(f"{technique}: {record['error_message']}")
            medians[technique].append(record["latency_median_ms"])
            p90[technique].append(record["latency_p90_ms"])
        console.print(f"round {i + 1}: " + ", ".join(
            f"{t} {medians[t][-1]:.2f} ms" for t in order))
    print(f"\nResNet18 224x224, ONNX Runtime CPU, {args.threads} threads, "
          f"{args.rounds} interleaved rounds (one edgebench job per variant per round)")
    print("| variant | median ms | p90 ms | rounds' medians ms | speed-up (paired) | "
          "speed-up (best rounds) | size MB | smaller | MMACs | params M |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for technique in order:
        art, med = arts[technique], statistics.median(medians[technique])
        # Each round's variants ran back to back, so a per-round ratio cancels slow drift of a
        # shared machine; the best rounds show what the hardware can do without contention.
        paired = statistics.median(f / t for f, t in zip(medians["fp32"], medians[technique],
                                                          strict=True))
        best = min(medians["fp32"]) / min(medians[technique])
        print(f"| {technique} | {med:.2f} | {statistics.median(p90[technique]):.2f} | "
              f"{' / '.join(f'{m:.1f}' for m in medians[technique])} | {paired:.2f}x | "
              f"{best:.2f}x | {art.size_bytes / 1e6:.1f} | "
              f"{arts['fp32'].size_bytes / art.size_bytes:.2f}x | {(art.macs or 0) / 1e6:.0f} | "
              f"{(art.params or 0) / 1e6:.2f} |")


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
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
