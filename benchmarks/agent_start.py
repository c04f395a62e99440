"""What a session's fresh agent process costs before it measures: this checkout (B) against a base
commit's code (A), side by side.

This machine is shared and noisy, so A and B are never timed at different moments: each part runs
them in pairs of fresh processes, one after the other, in alternating order, and prints every
pair's figures, the ratio B/A per pair, and the median with its range and quartiles.

- `ssh`: the per-session wall time seen by the host (`AgentRun.wall_s`: sending the job, the
  fresh agent process, its imports, loading a tiny ONNX model, three timed runs, the result) over
  a real sshd on loopback (benchmarks/loopback_sshd.py), through each code's own SSH transport,
  job server and agent; each pair's figure is the median of `--sessions` sessions on one
  connection. Each code connects once before timing, so what is timed is every connection after
  the first (B's first connection unpacks and compiles its agent; that one-off cost is printed
  apart).
- `nvml`: the GPU probes of a session on this machine, `gpu.fingerprint()` and two `gpu.state()`
  (before and after the timed window), timed inside a fresh interpreter from the import of
  `harness.agent.gpu` on; says whether pynvml got imported.

A is a checkout of the base commit (`--base`), e.g. `git archive 2450afa | tar -x -C ../base`;
both run with this interpreter. Run by hand:

    .venv/bin/python benchmarks/agent_start.py ssh --base ../base [--pairs 8] [--sessions 5]
    .venv/bin/python benchmarks/agent_start.py nvml --base ../base [--pairs 30]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.loopback_sshd import LoopbackSSHD, SSHDMissing  # noqa: E402

# Run inside one code's checkout: `sessions` sessions of the model over one SSH connection;
# prints each session's wall time (s) as the host's job server client measured it.
SSH_DRIVER = r"""
import hashlib, json, sys
from pathlib import Path
from harness.agent import protocol
from harness.config import parse_profile
from harness.transport import transport_for

profile = parse_profile(Path("loopback.yaml"), json.loads(sys.argv[1]))
model, sessions = Path(sys.argv[2]), int(sys.argv[3])
sha = hashlib.sha256(model.read_bytes()).hexdigest()
settings = {"warmup_s": 0.0, "warmup_min": 3, "duration_s": 0.0, "min_iterations": 3}
walls = []
with transport_for(profile) as transport:
    path = transport.stage(model, sha)
    for i in range(sessions):
        job = protocol.measure_job(f"s{i}", {"path": path, "format": "onnx"}, "onnxruntime",
                                   session=i, device_kind="linux", options={"threads": 1},
                                   settings=settings)
        run = transport.run_agent(job, timeout_s=120)
        if run.result.get("status") != "ok":
            raise SystemExit(f"session failed: {run.result.get('error')}")
        walls.append(run.wall_s)
print(json.dumps(walls))
"""

NVML_DRIVER = r"""
import json, sys, time
t0 = time.perf_counter()
from harness.agent import gpu
fp = gpu.fingerprint(); gpu.state(); gpu.state()
ms = (time.perf_counter() - t0) * 1e3
print(json.dumps({"ms": ms, "pynvml": "pynvml" in sys.modules, "absent": fp.get("absent")}))
"""


def run_code(code: Path, argv: list[str]) -> str:
    """Run `argv` with `code` first on the import path, from `code`; its stdout."""
    env = dict(os.environ, PYTHONPATH=str(code))
    proc = subprocess.run(argv, cwd=code, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} in {code} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return (f"median {statistics.median(values):.3f} (quartiles {q[0]:.3f} to {q[2]:.3f}, "
            f"range {min(values):.3f} to {max(values):.3f}, {len(values)} interleaved pairs)")


def pairs_of(pairs: int, measure: Any, unit: str) -> None:
    """Run `measure(side)` for A and B in alternating order; print each pair and the summary."""
    ratios, diffs = [], []
    print(f"{'pair':>4}  {'A':>9}  {'B':>9}  {'B-A':>8}  B/A   ({unit})")
    for i in range(pairs):
        got = {}
        for side in ("AB" if i % 2 == 0 else "BA"):
            got[side] = measure(side)
        ratios.append(got["B"] / got["A"])
        diffs.append(got["B"] - got["A"])
        print(f"{i:>4}  {got['A']:>9.2f}  {got['B']:>9.2f}  {diffs[-1]:>+8.2f}  {ratios[-1]:.3f}",
              flush=True)
    print(f"B/A: {spread(ratios)}")
    print(f"B-A ({unit}): {spread(diffs)}")


def part_ssh(base: Path, pairs: int, sessions: int) -> int:
    from tests.conftest import make_tiny_onnx

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            server = LoopbackSSHD(root / "sshd").start()
        except SSHDMissing as err:
            print(err)
            return 2
        try:
            model = make_tiny_onnx(root / "tiny.onnx")
            profile = json.dumps(server.profile_data(cache_dir=str(root / "cache")))
            codes = {"A": base.resolve(), "B": REPO}

            def walls(side: str, n: int = sessions) -> list[float]:
                return [float(w) for w in json.loads(run_code(
                    codes[side], [sys.executable, "-c", SSH_DRIVER, profile, str(model), str(n)]))]

            for side in "AB":  # the first connection pushes the agent (B's also unpacks it)
                t0 = time.perf_counter()
                first = walls(side, 1)[0]
                print(f"{side}: first connection's process {time.perf_counter() - t0:.2f} s, "
                      f"its session {first * 1e3:.0f} ms (agent pushed"
                      + (", unpacked and compiled)" if side == "B" else ")"))
            print(f"per-session wall seen by the host, median of {sessions} sessions on one "
                  "connection, each pair in fresh host processes")
            pairs_of(pairs, lambda side: statistics.median(walls(side)) * 1e3, "ms")
            listing = sorted(p.name[:12] + ("…" + p.name[64:] if len(p.name) > 64 else "")
                             for p in (root / "cache").iterdir())
            print(f"device cache afterwards: {', '.join(listing)}")
        finally:
            server.stop()
    return 0


def part_nvml(base: Path, pairs: int) -> int:
    codes = {"A": base.resolve(), "B": REPO}
    seen: dict[str, Any] = {}

    def probe(side: str) -> float:
        out = json.loads(run_code(codes[side], [sys.executable, "-c", NVML_DRIVER]))
        seen[side] = out
        return float(out["ms"])

    for code in codes.values():  # both import their own modules from bytecode, as agents do
        run_code(code, [sys.executable, "-m", "compileall", "-q", "harness"])
    print("gpu.fingerprint() + 2 x gpu.state() in a fresh interpreter, import included")
    pairs_of(pairs, probe, "ms")
    for side in "AB":
        print(f"{side}: pynvml imported: {seen[side]['pynvml']}; recorded: "
              f"{{'absent': {seen[side]['absent']!r}}}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    ssh = sub.add_parser("ssh", help="per-session wall time over a loopback SSH device")
    ssh.add_argument("--base", type=Path, required=True)
    ssh.add_argument("--pairs", type=int, default=8)
    ssh.add_argument("--sessions", type=int, default=5)
    nvml = sub.add_parser("nvml", help="the GPU probes of a session, import included")
    nvml.add_argument("--base", type=Path, required=True)
    nvml.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args(argv)
    if not (args.base / "harness" / "agent").is_dir():
        parser.error(f"--base {args.base}: not a checkout of edgebench (no harness/agent)")
    if args.part == "ssh":
        return part_ssh(args.base, args.pairs, args.sessions)
    return part_nvml(args.base, args.pairs)


if __name__ == "__main__":
    sys.exit(main())
