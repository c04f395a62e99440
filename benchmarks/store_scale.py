"""Results at farm scale: how big the store grows and how fast reports read it.

Generates a synthetic history through the store's own API (`Store.begin_run`, `add_session`):
by default 365 nightly runs x 3 devices x 30 artifacts (6 architectures, each an fp32 baseline and
4 compressed variants), 5 sessions per measurement, each session with as many raw samples as a 2 s
timed window gives at the artifact's latency (latencies log-uniform over 0.1-50 ms, so 300 to
20,000 samples a session). Then times, each in a fresh process that reports its own peak RSS:
`edgebench report` of the latest run (its trends read up to 30 earlier runs) and
`edgebench export --samples` of it, interleaved over `--repeat` rounds. Prints bytes per sample,
database size, seconds and peak MB. Targets (issue 14): report <= 30 s and <= 1 GB on 2 cores.
Run by hand (not a test; the generation takes minutes):

    .venv/bin/python benchmarks/store_scale.py [--db /tmp/scale.db] [--runs 365] [--repeat 3]
    .venv/bin/python benchmarks/store_scale.py --db EXISTING.db --reuse   # time reads only
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness.store import Store

TECHNIQUES = ("int8", "fp16", "prune50", "lowrank")
WINDOW_S = 2.0

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
what, db, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
t = time.perf_counter()
if what == "report":
    from harness.report import run_report
    run_report(db, "latest", out)
else:
    from harness.report.export import export_samples
    export_samples(db, "latest", "parquet", out)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _artifacts(count: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """`count` artifacts: architectures of 1 + len(TECHNIQUES) each, with a base latency."""
    out: list[dict[str, object]] = []
    arch = 0
    while len(out) < count:
        base = f"arch{arch}"
        latency = float(np.exp(rng.uniform(np.log(0.1), np.log(50.0))))  # ms, fp32
        out.append({"model": base, "baseline": None, "technique": "fp32", "latency": latency,
                    "size": int(4e6 * latency)})
        for tech in TECHNIQUES[: count - len(out)]:
            speed = {"int8": 0.45, "fp16": 0.8, "prune50": 0.6, "lowrank": 0.7}[tech]
            out.append({"model": f"{base}-{tech}", "baseline": base, "technique": tech,
                        "latency": latency * speed, "size": int(4e6 * latency * speed)})
        arch += 1
    return out


def generate(db: Path, runs: int, devices: int, artifacts: int, sessions: int,
             min_samples: int, max_samples: int, seed: int = 0) -> int:
    """Fill `db` with the synthetic history; return the number of samples stored."""
    rng = np.random.default_rng(seed)
    arts = _artifacts(artifacts, rng)
    device_names = [f"board{d}" for d in range(devices)]
    total = 0
    started = time.perf_counter()
    with Store(db) as store:
        # generation speed only: the format is the same, and a lost benchmark file is regenerated
        store.conn.execute("PRAGMA synchronous=OFF")
        for r in range(runs):
            run_id = store.begin_run("edgebench nightly", "farm.yaml", device_names)
            drift = float(np.exp(rng.normal(0, 0.02)))  # the whole night a little off
            for d, device in enumerate(device_names):
                for a, art in enumerate(arts):
                    job_id = f"{run_id}-{d}-{a:03d}"
                    latency_ms = float(art["latency"]) * (1 + 0.5 * d) * drift  # type: ignore[arg-type]
                    n = int(np.clip(WINDOW_S * 1e3 / latency_ms, min_samples, max_samples))
                    medians = []
                    for s in range(sessions):
                        level = latency_ms * 1e6 * np.exp(rng.normal(0, 0.03))
                        ns = (level * rng.lognormal(0, 0.05, n)).astype(np.int64)
                        median = float(np.median(ns)) / 1e6
                        medians.append(median)
                        p90, p95, p99 = (float(v) / 1e6 for v in np.percentile(ns, [90, 95, 99]))
                        session = {
                            "job_id": job_id, "session": s, "status": "ok", "n": n,
                            "warmup_n": 10, "median_ms": median, "mean_ms": float(ns.mean()) / 1e6,
                            "std_ms": float(ns.std()) / 1e6, "min_ms": float(ns.min()) / 1e6,
                            "max_ms": float(ns.max()) / 1e6, "p90_ms": p90, "p95_ms": p95,
                            "p99_ms": p99, "elapsed_s": float(ns.sum()) / 1e9, "cpu_count": 4,
                        }
                        logs = np.log(medians)
                        half = 2.78 * logs.std(ddof=1) / np.sqrt(len(logs)) if s else 0.0
                        head = float(np.median(medians))
                        row = {
                            "run_id": run_id, "job_id": job_id, "device": device,
                            "device_kind": "rpi", "isa": "arm asimd asimddp", "model": art["model"],
                            "base_model": str(art["model"]).split("-")[0],
                            "baseline": art["baseline"], "technique": art["technique"],
                            "precision": "int8" if art["technique"] == "int8" else "fp32",
                            "format": "onnx", "runtime": "onnxruntime", "threads": 4, "batch": 1,
                            "status": "ok", "sessions": s + 1, "sessions_planned": sessions,
                            "n": n * (s + 1), "latency_median_ms": head,
                            "latency_ci95_low_ms": head * float(np.exp(-half)),
                            "latency_ci95_high_ms": head * float(np.exp(half)),
                            "latency_p50_ms": head, "latency_p90_ms": p90, "latency_p99_ms": p99,
                            "latency_mean_ms": session["mean_ms"], "stable": True, "flags": [],
                            "size_bytes": art["size"], "model_mb": float(art["size"]) / 1e6,  # type: ignore[arg-type]
                            "accuracy_top1": 0.7, "params": 1_000_000,
                        }
                        store.add_session(session, ns, row)
                        total += n
            store.finish_run(run_id)
            if (r + 1) % 25 == 0 or r + 1 == runs:
                print(f"  {r + 1}/{runs} runs, {total / 1e6:.0f} M samples, "
                      f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return total


def measure(what: str, db: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, what, str(db), str(out)],
                          capture_output=True, text=True, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="database to create (default: a temp file)")
    parser.add_argument("--reuse", action="store_true", help="time reads of --db, no generation")
    parser.add_argument("--runs", type=int, default=365)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--artifacts", type=int, default=30)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--min-samples", type=int, default=300)
    parser.add_argument("--max-samples", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="store_scale-")
    db = args.db or Path(tmp.name) / "scale.db"
    if not args.reuse:
        if db.exists():
            sys.exit(f"{db} exists; remove it or pass --reuse")
        t = time.perf_counter()
        generate(db, args.runs, args.devices, args.artifacts, args.sessions,
                 args.min_samples, args.max_samples)
        print(f"generated in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    with Store(db) as store:
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        stats = store.stats()
    print(f"db stats in {time.perf_counter() - t:.1f} s")
    samples = sum(r.samples for r in stats.runs)
    sample_bytes = sum(r.sample_bytes for r in stats.runs)
    sessions = sum(r.sessions for r in stats.runs)
    print(f"{len(stats.runs)} runs, {sum(r.measurements for r in stats.runs)} measurements, "
          f"{sessions} sessions, {samples / 1e6:.1f} M samples")
    print(f"database {db.stat().st_size / 2**20:.0f} MiB; samples {sample_bytes / 2**20:.0f} MiB, "
          f"{sample_bytes / max(samples, 1):.2f} bytes/sample; by table (MiB): "
          + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in stats.tables.items() if v > 2**20))

    figures: dict[str, list[dict[str, float]]] = {"report": [], "export": []}
    for i in range(args.repeat):  # interleaved, so that a noisy neighbour hits both alike
        figures["report"].append(measure("report", db, Path(tmp.name) / f"report{i}"))
        figures["export"].append(measure("export", db, Path(tmp.name) / f"samples{i}.parquet"))
    for what, runs in figures.items():
        if not runs:
            continue
        secs = [f["seconds"] for f in runs]
        peak = max(f["peak_mb"] for f in runs)
        print(f"{what:7s} latest run: median {statistics.median(secs):.1f} s "
              f"(all: {', '.join(f'{s:.1f}' for s in secs)}), peak RSS {peak:.0f} MB")
    tmp.cleanup()


if __name__ == "__main__":
    main()
