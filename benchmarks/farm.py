"""Does the nightly run farm devices in parallel? Wall time of one nightly over K = 3 loopback
devices against each device's nightly alone.

A real labgrid coordinator and exporter with three places, each a real OpenSSH server on loopback
(benchmarks/loopback_labgrid.py), and a tiny suite (the digits CNN, fp32 and int8, ONNX), measured
with the quick protocol. Each side runs in a fresh worker process that times the measuring phase
of `edgebench nightly` (`nightly.run_devices`: acquire, health check, every session, release; the
build and the report are the same on both sides and left out): once over the three places
together, once per place alone. Sides are interleaved in each repetition, after one warm-up
repetition that fills the devices' caches. Target: parallel <= 1.2 x the slowest device alone, in
the median over repetitions. The loopback devices share this machine's cores, which real boards do
not; the median per-session time outside the agent's own wall time (the fresh agent's start on the
device, SSH, storing: `sessions.orchestration_s`) is printed for both sides, to see where a
difference comes from.

    .venv/bin/python benchmarks/farm.py [--reps 5] [--sessions 5]
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.loopback_labgrid import LoopbackLab  # noqa: E402
from benchmarks.loopback_sshd import LoopbackSSHD  # noqa: E402

SUITE = """
name: farmbench
seed: 0
formats: [onnx]
datasets:
  digits: {type: digits, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 1, lr: 0.003, threads: 1}
    recipes: [int8]
recipes:
  int8:
    steps: [{quantize_static: {calibration_size: 64}}]
"""
PLACES = ("dev0", "dev1", "dev2")


def worker(args: argparse.Namespace) -> None:
    """Time the measuring phase of one nightly over the places of `args.farm`."""
    from harness.compress.build import build_suite
    from harness.farm import nightly
    from harness.farm.farmfile import load_farm
    from harness.runner import BenchOptions
    from harness.store import Store

    farm = load_farm(Path(args.farm))
    artifacts = build_suite(Path(args.suite), Path(args.build)).artifacts
    nightly_id = nightly.new_nightly_id()
    plan = nightly.plan_nightly(farm, artifacts, BenchOptions(quick=True, sessions=args.sessions),
                                nightly_id, args.suite, "edgebench nightly (benchmark)")
    db = Path(args.db)
    with Store(db) as store:
        nightly.begin(store, plan, farm)
    started = time.perf_counter()
    outcomes = nightly.run_devices(db, plan, farm, lambda text: None)
    wall = time.perf_counter() - started
    with Store(db) as store:
        jobs = [r["job_id"] for r in store.results([nightly_id])]
        outside = [r["orchestration_s"] for r in store.sessions(jobs)]
    bad = [f"{o.name}: {o.message}" for o in outcomes if o.status != "ok"]
    print(json.dumps({"wall_s": wall, "outside_s": statistics.median(outside), "failed": bad,
                      "sessions": sum(o.sessions_run for o in outcomes)}))


def run_worker(farm: Path, suite: Path, build: Path, db: Path, sessions: int,
               env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([sys.executable, __file__, "--worker", "--farm", str(farm), "--suite",
                           str(suite), "--build", str(build), "--db", str(db), "--sessions",
                           str(sessions)], capture_output=True, text=True, cwd=REPO, env=env,
                          timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"worker failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["failed"]:
        raise SystemExit(f"devices failed: {result['failed']}")
    return result  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--farm")
    parser.add_argument("--suite")
    parser.add_argument("--build")
    parser.add_argument("--db")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    import yaml

    root = Path(tempfile.mkdtemp(prefix="edgebench-farm-bench-"))
    env = dict(os.environ, EDGEBENCH_LABGRID_STATE=str(root / "state"), PYTHONPATH=str(REPO))
    suite = root / "suite.yaml"
    suite.write_text(SUITE)
    build = root / "build"
    subprocess.run([sys.executable, "-m", "harness.cli", "build", str(suite), "--build-dir",
                    str(build)], check=True, cwd=REPO, env=env, capture_output=True)
    servers = {p: LoopbackSSHD(root / f"sshd-{p}").start() for p in PLACES}
    lab = LoopbackLab(root / "lab", dict(servers)).start()
    try:
        data = lab.farm_data(retries=0)
        farms = {"parallel": root / "farm-all.yaml"}
        farms["parallel"].write_text(yaml.safe_dump(data))
        for place in PLACES:
            one = dict(data, places={place: data["places"][place]})
            farms[place] = root / f"farm-{place}.yaml"
            farms[place].write_text(yaml.safe_dump(one))
        print(f"K = {len(PLACES)} loopback devices, {args.sessions} quick sessions x 2 "
              f"artifacts each; {os.cpu_count()} CPUs; warm-up repetition first", flush=True)
        print(f"{'rep':>3} {'parallel s':>10} " + " ".join(f"{p + ' s':>8}" for p in PLACES)
              + f" {'ratio':>6} {'par/sum':>7} {'outside par':>11} {'outside alone':>13}",
              flush=True)
        ratios, to_sum, outside_par, outside_alone = [], [], [], []
        for rep in range(args.reps + 1):
            order = ["parallel", *PLACES] if rep % 2 else [*PLACES, "parallel"]
            got = {side: run_worker(farms[side], suite, build, root / f"{side}-{rep}.db",
                                    args.sessions, env) for side in order}
            walls = {side: r["wall_s"] for side, r in got.items()}
            slowest = max(walls[p] for p in PLACES)
            ratio = walls["parallel"] / slowest
            of_sum = walls["parallel"] / sum(walls[p] for p in PLACES)  # 1/K: fully parallel
            alone = statistics.median(got[p]["outside_s"] for p in PLACES)
            tag = "w" if rep == 0 else str(rep)
            print(f"{tag:>3} {walls['parallel']:>10.2f} "
                  + " ".join(f"{walls[p]:>8.2f}" for p in PLACES)
                  + f" {ratio:>6.3f} {of_sum:>7.3f} {got['parallel']['outside_s']:>11.3f}"
                  f" {alone:>13.3f}",
                  flush=True)
            if rep:
                ratios.append(ratio)
                to_sum.append(of_sum)
                outside_par.append(got["parallel"]["outside_s"])
                outside_alone.append(alone)
        print(f"parallel / slowest alone: median {statistics.median(ratios):.3f} (min "
              f"{min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} repetitions); "
              "target <= 1.2")
        print(f"parallel / the three alone one after the other: median "
              f"{statistics.median(to_sum):.3f} (1/{len(PLACES)} = {1 / len(PLACES):.3f} when "
              "nothing is shared)")
        print(f"per session, host wall time outside the agent's own (its start on the device, "
              f"SSH, storing): median {statistics.median(outside_par):.3f} s in parallel, "
              f"{statistics.median(outside_alone):.3f} s alone")
    finally:
        lab.stop()
        for server in servers.values():
            server.stop()


if __name__ == "__main__":
    main()
