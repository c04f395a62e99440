"""Synthetic result stores for the report, compare, export and HTML tests.

A measurement here is what the runner stores: several sessions, each with raw samples from a
known distribution (fixed seeds), its figures computed by the agent's own
`measure.session_statistics`, and rows made by the runner's own mapping (`results.session_row`,
`results.measurement_row`, which combines sessions with `stats.combine_sessions`), stored by
`Store.add_session`. So the tests check what the report derives against the numbers the harness
really produces. The tests in this file check the builder itself against direct computations.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness import results
from harness.agent import measure
from harness.artifacts import Artifact
from harness.config import DeviceProfile
from harness.report import stats
from harness.runner import PlannedJob
from harness.store import Store

ISA = "arm neon asimd asimddp"
FINGERPRINT = {
    "cpu_model": "Synthetic(R) CPU @ 2.0GHz",  # as the agent reads it from /proc/cpuinfo
    "cpu_count": 4,
    "isa": ISA,
    "kernel": "6.1.0-test",
    "python": "3.11.2",
    "runtimes": {"onnxruntime": "1.32.0"},
}
_job_numbers = itertools.count()
# The timed window's wall time is the sum of its iterations plus the timer's own gaps.
_GAP_NS = 20_000


def lognormal_ns(median_ms: float, n: int = 400, sigma: float = 0.05, seed: int = 0) -> np.ndarray:
    """One session's latency samples (ns) whose population median is exactly `median_ms`."""
    rng = np.random.default_rng(seed)
    return np.round(median_ms * 1e6 * np.exp(rng.normal(0.0, sigma, n))).astype(np.int64)


def sessions_ns(
    median_ms: float,
    sessions: int = 5,
    n: int = 200,
    sigma: float = 0.05,
    between_sd: float = 0.02,
    seed: int = 0,
) -> list[np.ndarray]:
    """Samples of several sessions: each process settles at its own level (log-normal around
    `median_ms` with sd `between_sd`), as measured on real devices, and its iterations vary
    around that level."""
    rng = np.random.default_rng(seed)
    levels = median_ms * np.exp(rng.normal(0.0, between_sd, sessions))
    return [
        lognormal_ns(float(level), n, sigma, seed=seed * 1000 + k) for k, level in enumerate(levels)
    ]


def exact_median_ns(
    median_ms: float, n: int = 51, sigma: float = 0.02, seed: int = 0
) -> np.ndarray:
    """One session's samples (ns) whose median is `median_ms` exactly: an odd count spread
    symmetrically on the log scale, in a seeded order."""
    spread = np.exp(sigma * np.linspace(-2.0, 2.0, n | 1))
    samples = np.round(median_ms * 1e6 * spread).astype(np.int64)
    return np.random.default_rng(seed).permutation(samples)


def _wilson(fraction: float, n: int) -> tuple[float, float]:
    ci = scipy_stats.binomtest(round(fraction * n), n).proportion_ci(0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _accuracy(top1: float | None, n: int) -> dict[str, Any] | None:
    if top1 is None:
        return None
    top5 = min(1.0, top1 + 0.02)
    (l1, h1), (l5, h5) = _wilson(top1, n), _wilson(top5, n)
    return {
        "top1": top1,
        "top1_low": l1,
        "top1_high": h1,
        "top5": top5,
        "top5_low": l5,
        "top5_high": h5,
        "top1_ties": 0,
        "n": n,
    }


def add_job(
    store: Store,
    run_id: str,
    model: str,
    *,
    samples_ns: np.ndarray | Sequence[np.ndarray] | None = None,
    sessions_planned: int | None = None,
    device: str = "pi5",
    baseline: str | None = None,
    technique: str | None = None,
    runtime: str = "onnxruntime",
    threads: int = 4,
    status: str = "ok",
    accuracy_top1: float | None = None,
    accuracy_n: int = 1000,
    host_top1: float | None = None,
    size_bytes: int | None = 4_000_000,
    fingerprint: dict[str, Any] | None = None,
    throttled: bool = False,
    **fields: Any,
) -> str:
    """Store one measurement session by session, the way the runner would; return its job id.

    `samples_ns`: one array per session (a single 1-D array is one session); by default five
    sessions around 10 ms. A failed or unsupported measurement has one session that failed.
    `fields` overwrite the measurement row (figures a device without a meter leaves empty).
    """
    job_id = f"{run_id}-{next(_job_numbers):04d}"
    if status != "ok":
        per_session: list[np.ndarray] = [np.array([], dtype=np.int64)]
    elif samples_ns is None:
        per_session = sessions_ns(10.0, seed=len(job_id))
    elif isinstance(samples_ns, np.ndarray) and samples_ns.ndim == 1:
        per_session = [samples_ns]
    else:
        per_session = [np.asarray(s, dtype=np.int64) for s in samples_ns]
    artifact = Artifact(
        name=model,
        path=Path(f"models/build/{model}.onnx"),
        format="onnx",
        sha256=hashlib.sha256(model.encode()).hexdigest(),
        size_bytes=size_bytes,  # type: ignore[arg-type]  # a sparse row has none
        technique=technique or ("fp32" if baseline is None else model.split("-", 1)[-1]),
        precision="fp32" if baseline is None else "int8",
        base_model=(baseline or model).split("-")[0],
        baseline=baseline,
        params=1_000_000,
        macs=300_000_000,
        input_shape=(1, 3, 224, 224),
        host_accuracy=None
        if host_top1 is None
        else {"top1": host_top1, "top1_low": host_top1 - 0.01, "top1_high": host_top1 + 0.01},
    )
    kind = "jetson" if device == "jetson" else "rpi"
    job = PlannedJob(job_id, DeviceProfile(name=device, kind=kind), artifact, runtime)
    started = f"2026-11-28T04:{len(store.results([run_id])):02d}:00Z"
    size_mb = (size_bytes or 0) / 1e6
    agent_results: list[dict[str, Any]] = []
    session_rows: list[dict[str, Any]] = []
    for k, samples in enumerate(per_session):
        result: dict[str, Any] = {
            "status": status,
            "fingerprint": FINGERPRINT if fingerprint is None else fingerprint,
            "runtime_version": "1.32.0",
            "threads": threads,
            "input_shape": [1, 3, 224, 224],
            "timed_scope": "runtime",
            "state_before": {"temp_c": 41.0, "governor": "performance", "loadavg": [0.5, 0.4, 0.3]},
            "state_after": {"temp_c": 47.5, "governor": "performance"},
        }
        if status == "ok":
            result.update(
                load_s=0.05 + 0.01 * k,
                first_inference_ms=float(samples[0]) / 1e6 * 3,
                warmup_n=20,
                capped=False,
                throttled=throttled,
                latency=measure.session_statistics(
                    samples.tolist(), int(samples.sum()) + _GAP_NS * samples.size
                ),
                memory={
                    "rss_runtime_mb": 60.0,
                    "peak_rss_mb": 80.0 + size_mb,
                    "timed_peak_rss_mb": 79.0 + size_mb,
                    "model_mb": 1.1 * size_mb,
                    "model_anon_mb": 0.2 * size_mb,
                    "model_file_mb": 0.9 * size_mb,
                },
                accuracy=_accuracy(accuracy_top1, accuracy_n),
            )
        else:
            result["error"] = {
                "kind": fields.pop(
                    "error_kind", "runtime_error" if status == "failed" else "unsupported"
                ),
                "message": fields.pop("error_message", f"{model} could not run on {runtime}"),
            }
        agent_results.append(result)
        session_rows.append(
            results.session_row(
                job_id,
                k,
                result,
                started_at=started,
                bytes_pushed=0 if k else 4096,
                orchestration_s=0.2,
            )
        )
        record = results.measurement_row(
            run_id,
            job,
            started,
            agent_results,
            session_rows,
            per_session[: k + 1],
            sessions_planned or len(per_session),
        )
        record.update(fields)
        store.add_session(session_rows[-1], samples.tolist(), record)
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
            samples_ns=sessions_ns(20 * scale, seed=s),
            size_bytes=46_000_000,
        )
        add_job(
            store,
            run,
            "resnet_18&v2-int8",
            device=device,
            baseline="resnet_18&v2",
            accuracy_top1=0.69,
            host_top1=0.72 if device == "pi5" else 0.69,
            samples_ns=sessions_ns(8 * scale, seed=s + 1),
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
            samples_ns=sessions_ns(12 * scale, seed=s + 2),
            size_bytes=23_000_000,
        )
        add_job(
            store,
            run,
            "mobilenet_v3",
            device=device,
            samples_ns=sessions_ns(6 * scale, seed=s + 3),
            size_bytes=10_000_000,
        )
        # processes that disagree: the spread flag and a wide interval
        add_job(
            store,
            run,
            "mobilenet_v3-fp16",
            device=device,
            baseline="mobilenet_v3",
            samples_ns=sessions_ns(4.5 * scale, sigma=0.1, between_sd=0.12, seed=s + 4),
            size_bytes=5_000_000,
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
    assert first["sessions"] == first["sessions_planned"] == 5 and first["isa"] == ISA
    parts = store.session_samples(first["job_id"])
    assert len(parts) == 5 and sum(p.size for p in parts) == first["n"] == 1000
    # The headline is the geometric mean of the session medians, its interval a t interval on
    # their logs: computed here from the raw samples with numpy and scipy alone.
    medians = np.array([np.median(p) / 1e6 for p in parts])
    exact = pytest.approx  # the same figures, up to the last bits of a division by 1e6
    logs = np.log(medians)
    assert first["latency_median_ms"] == exact(np.exp(logs.mean()), rel=1e-12)
    half = scipy_stats.t.ppf(0.975, 4) * logs.std(ddof=1) / math.sqrt(5)
    assert first["latency_ci95_low_ms"] == exact(np.exp(logs.mean() - half), rel=1e-12)
    assert first["latency_ci95_high_ms"] == exact(np.exp(logs.mean() + half), rel=1e-12)
    pooled = np.concatenate(parts) / 1e6
    assert first["latency_p99_ms"] == exact(np.percentile(pooled, 99), rel=1e-12)
    rates = [p.size / ((p.sum() + _GAP_NS * p.size) / 1e9) for p in parts]
    # the throughput as the headline is, with its own interval: found in an audit, a bare
    # median of sessions' rates read 16-47% above the baseline's beside a speedup of 0.86
    rate_logs = np.log(rates)
    rate_half = scipy_stats.t.ppf(0.975, 4) * rate_logs.std(ddof=1) / math.sqrt(5)
    assert first["throughput_wall_ips"] == exact(np.exp(rate_logs.mean()), rel=1e-12)
    assert first["throughput_ci95_low_ips"] == exact(np.exp(rate_logs.mean() - rate_half),
                                                     rel=1e-12)
    assert first["throughput_ci95_high_ips"] == exact(np.exp(rate_logs.mean() + rate_half),
                                                      rel=1e-12)
    assert first["flags"] == [] and first["stable"] is True
    session_rows = store.sessions([first["job_id"]])
    assert [r["median_ms"] for r in session_rows] == exact(list(medians), rel=1e-12)
    assert first["accuracy_top1_low"] < 0.70 < first["accuracy_top1_high"]
    by_model = {(r["device"], r["model"]): r for r in rows}
    assert stats.FLAG_BETWEEN in by_model[("pi5", "mobilenet_v3-fp16")]["flags"]
    assert by_model[("pi5", "mobilenet_v3-fp16")]["stable"] is False
    assert by_model[("pi5", "resnet_18&v2-int8")]["flags"] == [
        stats.FLAG_ACCURACY,
        stats.FLAG_THROTTLED,
    ]
    failed = [r for r in rows if r["status"] == "failed"]
    assert (
        len(failed) == 1 and failed[0]["sessions"] == 0
        and store.samples(failed[0]["job_id"]).size == 0
    )
    assert failed[0]["error_kind"] == "ModelLoadError"


def test_sessions_have_the_spread_they_were_given() -> None:
    medians = [np.median(s) / 1e6 for s in sessions_ns(10.0, sessions=400, n=50, seed=3)]
    assert stats.log_sd(medians) == pytest.approx(0.02, rel=0.15)
    exact = exact_median_ns(7.5, seed=4)
    assert np.median(exact) == 7.5e6 and exact.size == 51


def test_top1_on_the_hosts_own_images_is_flagged_by_the_image() -> None:
    """Found in an audit: host and device score the same images, yet a device's top-1 was
    flagged only outside the host's Wilson interval, so a device could lose 7 of 359 images
    (1.9 points) unflagged. On the same images one image is the yardstick (as in compare); on
    other images, the host's interval still is."""
    from harness.agent.scoring import wilson_interval
    from harness.results import _top1_against_host

    low, high = wilson_interval(353, 359)
    host = {"top1": 353 / 359, "top1_low": low, "top1_high": high, "n": 359}
    for right, flag in ((353, None), (354, stats.FLAG_TOP1_HOST), (347, stats.FLAG_TOP1_HOST)):
        assert _top1_against_host({"top1": right / 359, "n": 359}, host) == flag, right
    assert low < 347 / 359  # inside the interval: unflagged before
    # other images (another count): the host's interval decides
    assert _top1_against_host({"top1": 0.90, "n": 100}, host) == stats.FLAG_ACCURACY
    assert _top1_against_host({"top1": 0.98, "n": 100}, host) is None
    assert _top1_against_host({"top1": None, "n": 359}, host) is None


def test_a_session_whose_median_has_no_log_is_left_out_of_the_row(tmp_path: Path) -> None:
    """A session timed at 0 ns throughout (a timer too coarse for the model) has the median 0:
    the row's latency figures rest on the other two sessions, pooled ones too, and its flags
    say why; `sessions` still counts the three that ran ok."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    parts = [lognormal_ns(10.0, seed=1), np.zeros(400, dtype=np.int64), lognormal_ns(10.4, seed=2)]
    add_job(store, run, "net", samples_ns=parts)
    (row,) = store.results([run])
    medians = np.array([np.median(parts[0]), np.median(parts[2])]) / 1e6
    assert row["sessions"] == 3 and row["n"] == 800
    assert row["latency_median_ms"] == pytest.approx(math.exp(np.log(medians).mean()), rel=1e-12)
    assert row["latency_min_ms"] > 5 and row["latency_ci95_low_ms"] is not None
    assert row["flags"] == [stats.FLAG_UNUSABLE_SESSION]
