"""Where `make bench` spends its time, this checkout's code (B) against a base commit's (A).

This machine is shared and noisy, so A and B are never timed at different moments: each part
runs them in pairs, one after the other, in alternating order, each in fresh processes, and prints
every pair's figures, the ratio B/A per pair and the median ratio with its range.

- `build`: `edgebench build models/demo.yaml` into an empty folder with each code (the whole
  build: training, compression, exports, host accuracy); also checks that both wrote the same
  artifacts (the same bytes, but for the checkout's path in the stack traces that ONNX files
  of versions before they were dropped at export record).
- `sessions`: the per-session cost outside the timed window: one measurement of 5 sessions
  (session 0 with the accuracy run) of the demo's digits CNN in ONNX and in TFLite, run through
  each code's own runner, transport, job server and agent, with the warm-up and the timed
  window cut to 3 runs (the same in A and B), so that what remains is the agent's start, load,
  first inference, accuracy and the host's orchestration. Needs a built demo (`--build-dir`).
- `make`: what `make bench` runs after setup, `edgebench bench --suite models/demo.yaml` (build,
  then every session) and `edgebench report`, into a fresh build folder and database; prints
  the build's own time (its summary line), the rest of `bench` and the report's.

A is a git worktree of the base commit (`--base`; make one with `git worktree add ../base COMMIT`);
both run with this interpreter. Run by hand:

    .venv/bin/python benchmarks/make_bench.py sessions --base ../base --build-dir models/build
    .venv/bin/python benchmarks/make_bench.py build --base ../base [--pairs 3]
    .venv/bin/python benchmarks/make_bench.py make --base ../base [--pairs 2]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Run inside one code's checkout (PYTHONPATH and cwd there): the sessions of one measurement of
# each artifact, as the runner runs them; prints each session's wall time in seconds.
SESSIONS_DRIVER = r"""
import json, sys, time
from pathlib import Path
from harness import runner
from harness.artifacts import load_manifest
from harness.config import DeviceProfile
from harness.transport.local import LocalTransport

manifests, sessions = sys.argv[1].split(","), int(sys.argv[2])
settings = {"warmup_s": 0.0, "warmup_min": 3, "duration_s": 0.0, "min_iterations": 3}
options = runner.BenchOptions(settings=settings, threads=1)
profile = DeviceProfile(name="local", runtimes=("onnxruntime", "tflite"))
artifacts = [load_manifest(Path(m)) for m in manifests]
jobs = runner.plan_jobs(artifacts, [profile], options)
transport = LocalTransport(profile)
transport.open()
walls = []
try:
    for session in range(sessions):
        for job in jobs:
            t0 = time.perf_counter()
            spec = runner.build_job(job, transport, options, session)
            run = transport.run_agent(spec, timeout_s=120)
            walls.append(time.perf_counter() - t0)
            if run.result.get("status") != "ok":
                raise SystemExit(f"session failed: {run.result.get('error')}")
finally:
    transport.close()
print(json.dumps(walls))
"""


def run_code(code: Path, argv: list[str]) -> tuple[float, str]:
    """Run `argv` with `code` first on the import path, from `code`; (wall seconds, stdout)."""
    env = dict(os.environ, PYTHONPATH=str(code))
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} in {code} failed:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def summary(label: str, ratios: list[float]) -> str:
    return (f"{label}: B/A median {statistics.median(ratios):.3f} (range {min(ratios):.3f} to "
            f"{max(ratios):.3f}, {len(ratios)} interleaved pairs)")


def part_sessions(base: Path, build_dir: Path, pairs: int, sessions: int) -> None:
    manifests = ",".join(str((build_dir / f"digits_cnn{suffix}.manifest.json").resolve())
                         for suffix in (".onnx", ".tflite"))
    argv = [sys.executable, "-c", SESSIONS_DRIVER, manifests, str(sessions)]
    codes = {"A": base, "B": REPO}
    run_code(base, argv)  # warm the page cache for both before timing anything
    run_code(REPO, argv)
    ratios, per = [], {"A": [], "B": []}
    print(f"per-session wall, ms: median over {2 * sessions} sessions (2 artifacts x {sessions})")
    print(f"{'pair':>4}  {'A':>8}  {'B':>8}  {'B-A':>7}  B/A")
    for i in range(pairs):
        medians = {}
        for side in ("AB" if i % 2 == 0 else "BA"):
            _, out = run_code(codes[side], argv)
            medians[side] = statistics.median(json.loads(out)) * 1e3
            per[side].append(medians[side])
        ratios.append(medians["B"] / medians["A"])
        print(f"{i + 1:>4}  {medians['A']:>8.1f}  {medians['B']:>8.1f}  "
              f"{medians['B'] - medians['A']:>7.1f}  {ratios[-1]:.3f}")
    diffs = [b - a for a, b in zip(per["A"], per["B"], strict=True)]
    print(summary("per-session wall", ratios))
    print(f"B-A per session: median {statistics.median(diffs):.1f} ms (range {min(diffs):.1f} "
          f"to {max(diffs):.1f})")


def _without_source_paths(path: Path) -> bytes:
    """An ONNX file without its nodes' doc strings and metadata, which hold the stack traces of
    the PyTorch code exported, with the checkout's path: A's and B's differ there alone."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for graph in [model.graph, *(f for f in model.functions)]:
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
    return model.SerializeToString(deterministic=True)


def same_artifacts(a: Path, b: Path) -> list[str]:
    """Names of artifact and dataset files that differ between two build folders (ONNX files
    compared without the source paths they record)."""
    names = sorted(p.relative_to(a) for p in a.rglob("*")
                   if p.suffix in (".onnx", ".tflite", ".npy") and ".cache" not in p.parts)
    differ = []
    for name in names:
        if not (b / name).is_file():
            differ.append(str(name))
        elif not filecmp.cmp(a / name, b / name, shallow=False) and (
                name.suffix != ".onnx"
                or _without_source_paths(a / name) != _without_source_paths(b / name)):
            differ.append(str(name))
    return differ


def part_build(base: Path, suite: str, pairs: int) -> None:
    codes = {"A": base, "B": REPO}
    ratios = []
    print(f"{'pair':>4}  {'A s':>7}  {'B s':>7}  B/A")
    with tempfile.TemporaryDirectory(prefix="edgebench-make-bench-") as tmp:
        for i in range(pairs):
            walls, dirs = {}, {}
            for side in ("AB" if i % 2 == 0 else "BA"):
                dirs[side] = Path(tmp) / f"{side}{i}"
                argv = [sys.executable, "-m", "harness.cli", "build",
                        str((REPO / suite).resolve()), "--build-dir", str(dirs[side])]
                walls[side], _ = run_code(codes[side], argv)
            differ = same_artifacts(dirs["A"], dirs["B"])
            ratios.append(walls["B"] / walls["A"])
            print(f"{i + 1:>4}  {walls['A']:>7.1f}  {walls['B']:>7.1f}  {ratios[-1]:.3f}"
                  + (f"  ARTIFACTS DIFFER: {', '.join(differ)}" if differ
                     else "  same artifact bytes"))
            for d in dirs.values():
                shutil.rmtree(d)
    print(summary("build", ratios))


def part_make(base: Path, suite: str, pairs: int) -> None:
    codes = {"A": base, "B": REPO}
    ratios = []
    print(f"{'pair':>4}  {'side':>4}  {'total s':>8}  {'build s':>8}  {'sessions s':>10}  "
          f"{'report s':>8}")
    with tempfile.TemporaryDirectory(prefix="edgebench-make-bench-") as tmp:
        for i in range(pairs):
            totals = {}
            for side in ("AB" if i % 2 == 0 else "BA"):
                folder = Path(tmp) / f"{side}{i}"
                db = str(folder / "r.db")
                bench = [sys.executable, "-m", "harness.cli", "bench", "--device", "local",
                         "--suite", str((REPO / suite).resolve()),
                         "--build-dir", str(folder / "build"), "--db", db]
                env = dict(os.environ, PYTHONPATH=str(codes[side]))
                t0 = time.perf_counter()
                proc = subprocess.run(bench, cwd=codes[side], env=env, capture_output=True,
                                      text=True)
                bench_s = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise SystemExit(f"bench in {codes[side]} failed:\n{proc.stderr[-3000:]}")
                found = re.search(r"build \S+: .* in ([0-9.]+) s", proc.stderr)
                build_s = float(found.group(1)) if found else float("nan")
                report_s, _ = run_code(codes[side], [
                    sys.executable, "-m", "harness.cli", "report", "--run", "latest", "--db", db,
                    "--out", str(folder / "report")])
                totals[side] = bench_s + report_s
                print(f"{i + 1:>4}  {side:>4}  {totals[side]:>8.1f}  {build_s:>8.1f}  "
                      f"{bench_s - build_s:>10.1f}  {report_s:>8.1f}")
                shutil.rmtree(folder)
            ratios.append(totals["B"] / totals["A"])
            print(f"{'':>4}  B/A   {ratios[-1]:.3f}")
    print(summary("bench + report", ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("build", "sessions", "make"))
    parser.add_argument("--base", type=Path, required=True,
                        help="a checkout (git worktree) of the base commit (A)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="interleaved A/B pairs (default: 3 builds, 8 session runs, 2 makes)")
    parser.add_argument("--suite", default="models/demo.yaml")
    parser.add_argument("--build-dir", type=Path, default=REPO / "models/build",
                        help="a built demo, for `sessions`")
    parser.add_argument("--sessions", type=int, default=5)
    args = parser.parse_args()
    if not (args.base / "harness").is_dir():
        raise SystemExit(f"{args.base} is not a checkout of edgebench (--base)")
    if args.part == "build":
        part_build(args.base, args.suite, args.pairs or 3)
    elif args.part == "make":
        part_make(args.base, args.suite, args.pairs or 2)
    else:
        part_sessions(args.base, args.build_dir, args.pairs or 8, args.sessions)


if __name__ == "__main__":
    main()
