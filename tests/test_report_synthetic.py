"""Synthetic result stores for the report, compare, export and HTML tests.

Samples come from known distributions with fixed seeds, and every statistic stored with a job is
computed here from those samples with numpy, the way the agent reports them, so that the tests can
check what the report derives against direct computations. The one test in this file checks the
builder itself round-trips through the real store.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from harness.store import Store

FINGERPRINT = {
    "cpu": {"model": "Synthetic CPU @ 2.0GHz", "cores": 4},
    "kernel": "6.1.0-test",
    "python": "3.11.2",
    "runtimes": {"onnxruntime": "1.32.0"},
}
_job_numbers = itertools.count()


def lognormal_ns(median_ms: float, n: int = 400, sigma: float = 0.05, seed: int = 0) -> np.ndarray:
    """Latency samples (ns) whose population median is exactly `median_ms`."""
    rng = np.random.default_rng(seed)
    return np.round(median_ms * 1e6 * np.exp(rng.normal(0.0, sigma, n))).astype(np.int64)


def stats_of(samples_ns: np.ndarray) -> dict[str, Any]:
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    median = float(np.median(ms))
    return {
        "n": int(ms.size),
        "latency_median_ms": median,
        "latency_mean_ms": float(ms.mean()),
        "latency_std_ms": float(ms.std(ddof=1)),
        "latency_min_ms": float(ms.min()),
        "latency_max_ms": float(ms.max()),
        "latency_p90_ms": float(np.percentile(ms, 90)),
        "latency_p95_ms": float(np.percentile(ms, 95)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "latency_cov": float(ms.std(ddof=1) / ms.mean()),
        "latency_ci95_low_ms": float(np.percentile(ms, 45)),
        "latency_ci95_high_ms": float(np.percentile(ms, 55)),
        "throughput_ips": 1000.0 / median,
    }


def add_job(
    store: Store,
    run_id: str,
    model: str,
    *,
    samples_ns: np.ndarray | None = None,
    device: str = "pi5",
    baseline: str | None = None,
    technique: str | None = None,
    runtime: str = "onnxruntime",
    threads: int = 4,
    status: str = "ok",
    accuracy_top1: float | None = None,
    size_bytes: int | None = 4_000_000,
    fingerprint: dict[str, Any] | None = None,
    **fields: Any,
) -> str:
    """Store one job (and its samples) the way the runner would; return its job id."""
    job_id = f"{run_id}-{next(_job_numbers):04d}"
    record: dict[str, Any] = {
        "run_id": run_id,
        "job_id": job_id,
        "started_at": f"2026-11-28T04:{len(store.results([run_id])):02d}:00Z",
        "device": device,
        "device_kind": "rpi",
        "device_fingerprint": FINGERPRINT if fingerprint is None else fingerprint,
        "model": model,
        "base_model": (baseline or model).split("-")[0],
        "baseline": baseline,
        "technique": technique or ("fp32" if baseline is None else model.split("-", 1)[-1]),
        "precision": "fp32" if baseline is None else "int8",
        "format": "onnx",
        "runtime": runtime,
        "threads": threads,
        "batch": 1,
        "status": status,
        "accuracy_top1": accuracy_top1,
        "accuracy_top5": None if accuracy_top1 is None else min(1.0, accuracy_top1 + 0.02),
        "size_bytes": size_bytes,
        "params": 1_000_000,
        "macs": 300_000_000,
        "peak_rss_mb": None if size_bytes is None else 80.0 + size_bytes / 1e6,
        "stable": True,
        "throttled": False,
        "state_before": {"temp_c": 41.0, "governor": "performance"},
        "state_after": {"temp_c": 47.5, "governor": "performance"},
    }
    if status == "ok":
        samples = lognormal_ns(10.0, seed=len(job_id)) if samples_ns is None else samples_ns
        record.update(stats_of(samples))
    else:
        samples = np.array([], dtype=np.int64)
        record.setdefault("error_kind", "runtime_error" if status == "failed" else "unsupported")
        record.setdefault("error_message", f"{model} could not run on {runtime}")
    record.update(fields)
    store.add_result(record, samples.tolist())
    return job_id


def demo_store(path: Path, seed: int = 1) -> tuple[Store, str]:
    """A realistic finished run: two devices, baselines and variants, a failure, flags."""
    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["pi5", "jetson"])
    for d, device in enumerate(("pi5", "jetson")):
        scale = 1.0 if device == "pi5" else 0.35
        s = seed + 10 * d
        add_job(
            store,
            run,
            "resnet_18&v2",
            device=device,
            accuracy_top1=0.70,
            samples_ns=lognormal_ns(20 * scale, seed=s),
            size_bytes=46_000_000,
        )
        add_job(
            store,
            run,
            "resnet_18&v2-int8",
            device=device,
            baseline="resnet_18&v2",
            accuracy_top1=0.69,
            samples_ns=lognormal_ns(8 * scale, seed=s + 1),
            size_bytes=11_800_000,
            throttled=(device == "pi5"),
        )
        add_job(
            store,
            run,
            "resnet_18&v2-pruned50",
            device=device,
            baseline="resnet_18&v2",
            accuracy_top1=0.66,
            samples_ns=lognormal_ns(12 * scale, seed=s + 2),
            size_bytes=23_000_000,
        )
        add_job(
            store,
            run,
            "mobilenet_v3",
            device=device,
            samples_ns=lognormal_ns(6 * scale, seed=s + 3),
            size_bytes=10_000_000,
        )
        add_job(
            store,
            run,
            "mobilenet_v3-fp16",
            device=device,
            baseline="mobilenet_v3",
            samples_ns=lognormal_ns(4.5 * scale, sigma=0.2, seed=s + 4),
            size_bytes=5_000_000,
            stable=False,
        )
    add_job(
        store,
        run,
        "mobilenet_v3-int8",
        device="pi5",
        baseline="mobilenet_v3",
        status="failed",
        error_kind="ModelLoadError",
        error_message="unsupported op DequantizeLinear<axis=1> in mobilenet_v3-int8.onnx",
    )
    store.finish_run(run)
    return store, run


def test_synthetic_store_round_trips(tmp_path: Path) -> None:
    store, run = demo_store(tmp_path / "x.db")
    rows = store.results([run])
    assert len(rows) == 11
    first = rows[0]
    assert first["model"] == "resnet_18&v2" and first["baseline"] is None
    samples = np.asarray(store.samples(first["job_id"]))
    assert samples.size == first["n"] == 400
    assert np.median(samples) / 1e6 == first["latency_median_ms"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and store.samples(failed[0]["job_id"]) == []
