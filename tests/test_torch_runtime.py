"""The agent's torch runtime on `torch.export` programs: on the CPU here, and on a CUDA GPU
(CUDA events, CUDA graphs, allocator peak, NVML) where one exists (`-m gpu`, skipped without)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.agent import protocol
from harness.agent.runtimes import ModelLoadError, get_runtime
from tests.conftest import REPO, run_agent_job, tiny_torch_module

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (scripts/gpu-check.sh on one)")


def job(path: Path, **options: Any) -> dict[str, Any]:
    return protocol.measure_job("t", {"path": str(path), "format": "torch"}, "torch", session=0,
                                device_kind="local", options=dict(options),
                                settings=protocol.QUICK_SETTINGS)


def outputs(path: Path, x: np.ndarray, **options: Any) -> np.ndarray:
    runtime = get_runtime("torch")
    runtime.load(str(path), dict(options))
    try:
        runtime.set_input(x)
        runtime.run()
        return runtime.output()
    finally:
        runtime.close()


def test_torch_program_measured_on_the_cpu_by_the_agent(tiny_pt2: Path) -> None:
    result = run_agent_job(job(tiny_pt2, threads=1))
    assert result["status"] == "ok", result["error"]
    assert result["runtime_version"] == torch.__version__
    assert result["timer"] == "perf_counter" and result["wall_latency"] is None
    latency = result["latency"]
    assert isinstance(latency, dict) and latency["n"] >= 5 and latency["median_ms"] > 0
    assert result["input_shape"] == [1, 1, 8, 8]
    options = result["runtime_options"]
    assert isinstance(options, dict)
    assert options["device"] == "cpu" and options["precision"] == "fp32"
    assert options["intra_op_threads"] == 1 and options["cuda_graphs"] is False
    assert options["inference_mode"] is True  # no autograd bookkeeping in what was timed
    fp = result["fingerprint"]
    assert isinstance(fp, dict) and fp["isa"]  # the CPU that produced the figure
    # NVML is optional: either it describes the GPUs or it says why it cannot
    assert "absent" in fp["gpu"] or fp["gpu"]["gpus"]


def test_outputs_are_the_modules_own(tiny_pt2: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = tiny_torch_module()(torch.from_numpy(x)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(outputs(tiny_pt2, x), expected, rtol=1e-5, atol=1e-6)
    # bf16 weights and input: close to fp32 at bf16's 8-bit mantissa, not equal
    low = outputs(tiny_pt2, x, precision="bf16")
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, expected, atol=0.1 * float(np.abs(expected).max()))
    assert not np.array_equal(low, expected)


def test_end_to_end_scope_measures_the_same_model(tiny_pt2: Path) -> None:
    spec = job(tiny_pt2)
    spec["settings"]["timed_scope"] = "end_to_end"
    result = run_agent_job(spec)
    assert result["status"] == "ok", result["error"]
    assert result["timed_scope"] == "end_to_end"


@pytest.mark.parametrize(("options", "kind", "words"), [
    ({"precision": "int4"}, "bad_option", "int4"),
    ({"device": "tpu"}, "bad_option", "tpu"),
    ({"cuda_graphs": True}, "bad_option", "cuda_graphs"),
])
def test_bad_options_fail_naming_the_option(tiny_pt2: Path, options: dict[str, Any], kind: str,
                                            words: str) -> None:
    result = run_agent_job(job(tiny_pt2, **options))
    assert result["status"] == "failed"
    assert result["error"]["kind"] == kind and words in result["error"]["message"]


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_cuda_asked_for_without_a_gpu_says_so(tiny_pt2: Path) -> None:
    result = run_agent_job(job(tiny_pt2, device="cuda"))
    assert result["status"] == "failed"
    assert result["error"]["kind"] == "cuda_unavailable"
    assert "no CUDA GPU" in result["error"]["message"]


def test_corrupt_program_is_a_clear_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    runtime = get_runtime("torch")
    with pytest.raises(ModelLoadError, match="bad.pt2"):
        runtime.load(str(bad), {})


def test_other_runtimes_and_devices_check_do_not_import_torch(tiny_onnx: Path) -> None:
    """torch is imported only when the torch runtime is used (seconds and hundreds of MB)."""
    onnx_job = protocol.measure_job("o", {"path": str(tiny_onnx), "format": "onnx"},
                                    "onnxruntime", session=0, device_kind="local",
                                    settings=protocol.QUICK_SETTINGS)
    code = ("import json, sys\nfrom harness.agent import job, __main__ as agent\n"
            f"r = job.run_job(json.loads({json.dumps(json.dumps(onnx_job))}))\n"
            "c = agent.check('local')\n"
            "print(json.dumps([r['status'], 'torch' in sys.modules, "
            "c['runtimes']['torch']]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=True)
    status, imported, listed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert status == "ok" and imported is False
    # the runtime's own version string, as results record it: its build tag (`+cu130`, `+cpu`)
    # tells a CUDA build from a CPU one, which the package metadata (`2.14.1`) does not
    assert listed == {"available": True, "version": torch.__version__,
                      "cuda": torch.version.cuda}


def test_devices_check_tries_the_torch_device_the_profile_asks_for(tmp_path: Path) -> None:
    """Found: a profile asking for `device: cuda` on a machine where torch sees no GPU passed
    `devices check` ("everything the profile needs is present"), then every bench job failed
    `cuda_unavailable`."""
    from tests.conftest import run_cli

    profile = tmp_path / "gpu.yaml"
    profile.write_text("name: gpu\nruntimes: [torch]\nruntime_options:\n"
                       "  torch: {device: cuda, cuda_graphs: true}\n")
    proc = run_cli("devices", "check", str(profile))
    said = " ".join(proc.stdout.split())
    assert f" {torch.__version__} " in said  # the version a result records, build tag and all
    if CUDA:
        assert proc.returncode == 0, said
        assert "everything the profile needs is present" in said
    else:
        assert proc.returncode == 1, said
        assert "missing for this profile: torch device cuda" in said
        assert f"change runtime_options.torch.device in {profile}" in said
        assert "sees no CUDA GPU" in said or "CPU build" in said
        assert "everything the profile needs" not in said
    info = json.loads(run_cli("devices", "check", str(profile), "--json").stdout)
    assert info["runtimes"]["torch"]["devices"]["cuda"]["available"] is CUDA
    # on the CPU nothing is tried, and torch is not imported to say it is there
    profile.write_text("name: cpu\nruntimes: [torch]\nruntime_options: {torch: {device: cpu}}\n")
    proc = run_cli("devices", "check", str(profile))
    assert proc.returncode == 0, proc.stdout
    assert "devices" not in json.loads(run_cli("devices", "check", str(profile), "--json")
                                      .stdout)["runtimes"]["torch"]


# --- on a CUDA GPU --------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("graphs", [False, True], ids=["eager", "cuda_graphs"])
def test_cuda_timing_by_events_with_wall_time_beside(tiny_pt2: Path, graphs: bool) -> None:
    result = run_agent_job(job(tiny_pt2, device="cuda", cuda_graphs=graphs))
    assert result["status"] == "ok", result["error"]
    assert result["timer"] == "cuda_events"
    assert result["runtime_options"]["cuda_graphs"] is graphs
    latency, wall = result["latency"], result["wall_latency"]
    assert latency["n"] == wall["n"] == len(result["samples_ns"])
    # the host clock around a synchronised step cannot be shorter than the GPU's time inside it
    assert wall["median_ms"] >= latency["median_ms"] > 0
    assert result["memory"]["gpu_mem_mb"] > 0
    acc = result["accelerator"]
    assert acc["name"] and acc["sm_count"] > 0 and acc["cuda_runtime"]
    assert result["fingerprint"]["accelerator"] == acc


@pytest.mark.gpu
@needs_gpu
def test_cuda_outputs_match_the_cpu(tiny_pt2: Path) -> None:
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    cpu = outputs(tiny_pt2, x)
    np.testing.assert_allclose(outputs(tiny_pt2, x, device="cuda"), cpu, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(outputs(tiny_pt2, x, device="cuda", cuda_graphs=True), cpu,
                               rtol=1e-3, atol=1e-4)
    half = outputs(tiny_pt2, x, device="cuda", precision="fp16")
    np.testing.assert_allclose(half, cpu, atol=0.02 * float(np.abs(cpu).max()))


@pytest.mark.gpu
@needs_gpu
def test_nvml_state_and_energy_where_installed(tiny_pt2: Path) -> None:
    pytest.importorskip("pynvml")
    result = run_agent_job(job(tiny_pt2, device="cuda"))
    assert result["status"] == "ok", result["error"]
    gpus = result["fingerprint"]["gpu"]["gpus"]
    assert gpus and gpus[0]["name"] and result["fingerprint"]["gpu"]["driver"]
    state = result["state_before"]["gpu"]["0"]
    assert state["sm_clock_mhz"] > 0 and state["temperature_c"] is not None
    nvml = result["gpu"]
    assert nvml["source"] == "nvml"
    if nvml.get("energy_mj") is not None:  # Volta and newer have the counter
        assert result["power"]["source"] == "nvml"
        assert result["power"]["energy_mj_per_inference"] >= 0
