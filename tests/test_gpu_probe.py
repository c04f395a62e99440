"""NVML probes (`harness/agent/gpu.py`): optional, and honest where there is no GPU or driver."""

from __future__ import annotations

import os

import pytest

from harness.agent import gpu, probes


def nvml_works() -> bool:
    try:
        gpu.Nvml().close()
    except gpu.NvmlAbsent:
        return False
    return True


@pytest.mark.skipif(nvml_works(), reason="this machine has NVML and a GPU")
def test_without_nvml_the_fingerprint_says_why_and_nothing_else() -> None:
    fp = probes.fingerprint("local")
    assert set(fp["gpu"]) == {"absent"}
    assert "NVML" in fp["gpu"]["absent"] or "nvidia-ml-py" in fp["gpu"]["absent"]
    assert "gpu" not in probes.state("local")  # no figures made up
    meter = gpu.EnergyMeter()
    meter.start()
    assert meter.stop(1.0, 10, os.getpid()) is None


def test_jetson_is_not_asked_for_nvml() -> None:
    assert probes.fingerprint("jetson")["gpu"] == {"absent": "Jetson: no NVML"}


@pytest.mark.gpu
@pytest.mark.skipif(not nvml_works(), reason="needs NVML and an NVIDIA GPU")
def test_with_nvml_every_gpu_is_described() -> None:
    fp = gpu.fingerprint()
    assert fp["driver"] and fp["gpus"] and all(g["name"] for g in fp["gpus"])
    state = gpu.state()
    assert state and all(s["sm_clock_mhz"] for s in state.values())


def test_slowdown_reasons_decide_throttling() -> None:
    idle = {"0": {"clock_event_reasons": ["GpuIdle"]}}
    capped = {"0": {"clock_event_reasons": ["SwPowerCap"]}}
    unknown = {"0": {"clock_event_reasons": None}}
    assert gpu.slowed_down(idle, idle) is False
    assert gpu.slowed_down(idle, capped) is True
    assert gpu.slowed_down(unknown, unknown) is None and gpu.slowed_down({}, {}) is None
    before = {"throttle_counts": {}, "gpu": idle}
    assert probes.throttled(before, {"gpu": capped}, "linux") is True
