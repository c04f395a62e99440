"""What does the SSH transport cost? The same model through the local device and through a
loopback SSH device (a real sshd on 127.0.0.1), interleaved A/B.

Two questions, two figures:
- the measurement: the agent times the model on the device, so the transport must not show in
  the median latency; the ratio SSH/local of the medians should be within 2%;
- the orchestration: per job, the host's wall time minus the agent's own time (starting the agent
  process, staging: a cache check after the first job, sending the job, fetching the result).
  The SSH figure is printed next to the local one; their difference is what SSH adds, target
  under 150 ms per job after the first.

Run by hand (needs /usr/sbin/sshd, as for the tests):  .venv/bin/python benchmarks/ssh_overhead.py
Options: --rounds N (A/B pairs, default 5), --seconds S (timed seconds per job, default 3),
--cpu N (pin the agent to one CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from benchmarks.loopback_sshd import LoopbackSSHD, SSHDMissing  # noqa: E402
from harness.agent import protocol  # noqa: E402
from harness.config import DeviceProfile, parse_profile  # noqa: E402
from harness.transport import transport_for  # noqa: E402
from harness.transport.base import Transport  # noqa: E402


def mlp_onnx(path: Path, width: int = 1024, layers: int = 6) -> Path:
    """A real ONNX MLP of about a millisecond per inference on one core."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, last = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Relu", [f"m{i}"], [f"r{i}"])]
        last = f"r{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [1, width])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def one_job(transport: Transport, model: Path, sha: str, job_id: str, seconds: float,
            cpu: int | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    job = protocol.measure_job(
        job_id, {"path": transport.stage(model, sha), "format": "onnx"}, "onnxruntime",
        session=0, device_kind="linux",
        options={"threads": 1, **({"cpu_affinity": [cpu]} if cpu is not None else {})},
        settings=dict(warmup_s=0.5, warmup_min=20, min_iterations=200,
                      max_duration_s=seconds * 4, duration_s=seconds))
    run = transport.run_agent(job, timeout_s=300)
    wall = time.perf_counter() - t0
    result = run.result
    if result["status"] != "ok":
        raise SystemExit(f"{job_id} failed: {result['error']}")
    return {"median_ms": result["latency"]["median_ms"],
            "orchestration_ms": (wall - result["agent_wall_s"]) * 1e3}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the agent to this CPU")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        try:
            server = LoopbackSSHD(root / "sshd").start()
        except SSHDMissing as err:
            print(err)
            return 2
        model = mlp_onnx(root / "mlp.onnx")
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        try:
            local = transport_for(DeviceProfile(name="local", python=sys.executable))
            ssh_profile = parse_profile(root / "loopback.yaml",
                                        server.profile_data(cache_dir=str(root / "cache")))
            rows: dict[str, list[dict[str, Any]]] = {"local": [], "ssh": []}
            t0 = time.perf_counter()
            with local, transport_for(ssh_profile) as ssh:
                connect_ms = (time.perf_counter() - t0) * 1e3
                first = one_job(ssh, model, sha, "ssh-first", args.seconds, args.cpu)  # pushes
                for i in range(args.rounds):
                    for name, transport in (("local", local), ("ssh", ssh)):
                        rows[name].append(one_job(transport, model, sha, f"{name}-{i}",
                                                  args.seconds, args.cpu))
                pushed_after_first = ssh.bytes_pushed
                # The device's login shell runs every remote command (bash reads ~/.bashrc when
                # started by sshd); jobs avoid it (one job server per connection), a one-off
                # command does not: time a bare `true` to show what each job would have paid.
                shell_ms = []
                for _ in range(5):
                    t1 = time.perf_counter()
                    ssh.run_command(["true"])
                    shell_ms.append((time.perf_counter() - t1) * 1e3)
        finally:
            server.stop()
    med = {k: statistics.median(r["median_ms"] for r in v) for k, v in rows.items()}
    orch = {k: statistics.median(r["orchestration_ms"] for r in v) for k, v in rows.items()}
    # Interleaved pairs share the machine's conditions: compare within each pair.
    pair_ratios = [b["median_ms"] / a["median_ms"] for a, b in zip(rows["local"], rows["ssh"],
                                                                  strict=True)]
    ratio = statistics.median(pair_ratios)
    print(f"model: {model.name}, 1 thread, {args.rounds} interleaved A/B rounds of "
          f"{args.seconds:g} s timed per job")
    for name in ("local", "ssh"):
        medians = ", ".join(f"{r['median_ms']:.4f}" for r in rows[name])
        print(f"  {name:5s} median latency ms per job: {medians}  -> {med[name]:.4f}")
    verdict = "OK" if abs(ratio - 1) <= 0.02 else "OUTSIDE 2%"
    print(f"  ratio ssh/local of medians, per A/B pair: "
          f"{', '.join(f'{r:.4f}' for r in pair_ratios)} -> median {ratio:.4f} ({verdict})")
    print(f"  connect: {connect_ms:.1f} ms; first SSH job (pushes agent + model, "
          f"{pushed_after_first} bytes): orchestration {first['orchestration_ms']:.1f} ms")
    print(f"  orchestration per job after the first (host wall - agent's own time, median): "
          f"local {orch['local']:.1f} ms, ssh {orch['ssh']:.1f} ms; "
          f"SSH adds {orch['ssh'] - orch['local']:.1f} ms "
          f"({'OK' if orch['ssh'] - orch['local'] < 150 else 'ABOVE'} target 150 ms)")
    shell = statistics.median(shell_ms)
    print(f"  a one-off command (`true`) over the same connection, login shell included: "
          f"{shell:.1f} ms: what each job would pay without the job server")
    return 0


if __name__ == "__main__":
    sys.exit(main())
