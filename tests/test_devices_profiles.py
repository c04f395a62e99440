"""The shipped device profiles (devices/jetson.yaml, rpi.yaml, coral.yaml): valid, documented, and
usable as they are once pointed at a reachable host (here the loopback sshd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.config import DEVICES_DIR, load_profile
from tests.conftest import REPO, run_cli
from tests.sshd import SSHServer, sshd

__all__ = ["sshd"]
PROFILES = ("jetson", "rpi", "coral")
SSH_CHECKED = (*PROFILES, "cuda")


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_valid_and_documented(name: str) -> None:
    profile = load_profile(name, REPO / DEVICES_DIR)
    assert profile.kind == name and profile.transport == "ssh"
    assert profile.ssh is not None and profile.ssh.host
    assert profile.ssh.trust_on_first_use is False  # strict host keys unless the user opts in
    assert profile.cache_dir == "~/.cache/edgebench"
    text = (REPO / DEVICES_DIR / f"{name}.yaml").read_text()
    assert "Fill in" in text and "needs" in text and "devices check" in text
    assert "password" not in yaml.safe_load(text)["ssh"]


def test_cuda_profile_runs_torch_on_the_gpu() -> None:
    cuda = load_profile("cuda", REPO / DEVICES_DIR)
    assert cuda.kind == "linux" and cuda.transport == "ssh" and cuda.ssh is not None
    assert cuda.runtimes[0] == "torch"
    assert cuda.runtime_options["torch"] == {"device": "cuda", "precision": "fp32",
                                             "cuda_graphs": False}
    text = (REPO / DEVICES_DIR / "cuda.yaml").read_text()
    assert "Fill in" in text and "needs" in text and "nvidia-ml-py" in text


def test_jetson_runs_tensorrt_through_onnxruntime() -> None:
    """No phantom `tensorrt` runtime: one ONNX file is one measurement, on ORT's TensorRT
    provider, with CUDA and the CPU after it."""
    from harness.artifacts import Artifact
    from harness.runner import BenchOptions, plan_jobs

    jetson = load_profile("jetson", REPO / DEVICES_DIR)
    assert jetson.runtimes == ("onnxruntime",)
    ort = jetson.runtime_options["onnxruntime"]
    assert ort["providers"][0] == "TensorrtExecutionProvider"
    assert ort["providers"][-1] == "CPUExecutionProvider" and "fp16" in ort["tensorrt"]
    onnx = Artifact("m", Path("m.onnx"), "onnx", "0" * 64, 1)
    jobs = plan_jobs([onnx], [jetson], BenchOptions())
    assert [j.runtime for j in jobs] == ["onnxruntime"]


def test_coral_runs_tflite_on_the_edge_tpu() -> None:
    coral = load_profile("coral", REPO / DEVICES_DIR)
    assert coral.runtimes == ("tflite",)
    assert coral.runtime_options["tflite"]["delegates"] == ["libedgetpu.so.1"]


@pytest.mark.ssh
@pytest.mark.parametrize("name", SSH_CHECKED)
def test_shipped_profile_checks_out_over_ssh(name: str, sshd: SSHServer, tmp_path: Path) -> None:
    """The shipped profile with only the connection (and interpreter) changed to reach this
    machine: `devices check` connects and the agent probes as that device kind."""
    data = yaml.safe_load((REPO / DEVICES_DIR / f"{name}.yaml").read_text())
    loopback = sshd.profile_data()
    data["ssh"], data["python"] = loopback["ssh"], loopback["python"]
    data["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = run_cli("devices", "check", str(path), "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    info = json.loads(proc.stdout)
    kind = data["kind"]
    if kind != "linux":  # a plain Linux box has no board section
        assert kind in info["fingerprint"] and kind in info["state"]
    assert "gpu" in info["fingerprint"]
    if name == "coral":
        assert info["fingerprint"]["coral"]["edgetpu"]["present"] is False
    if name == "cuda":
        # every runtime the profile lists is here; the GPU line says what NVML found, and the
        # GPU the profile runs torch on is tried: without one here the check fails naming it
        plain = run_cli("devices", "check", str(path))
        gpu_here = info["runtimes"]["torch"]["devices"]["cuda"]["available"]
        assert plain.returncode == (0 if gpu_here else 1), plain.stderr + plain.stdout
        assert "GPU:" in plain.stdout
        assert gpu_here or "torch device cuda" in " ".join(plain.stdout.split())
    if name == "jetson":
        # This machine's ONNX Runtime has no TensorRT provider, which the Jetson profile asks
        # for: the check says so plainly and fails, rather than crashing or passing.
        plain = run_cli("devices", "check", str(path))
        assert plain.returncode == 1, plain.stderr + plain.stdout
        assert "missing for this profile" in plain.stdout
        assert "onnxruntime TensorrtExecutionProvider" in plain.stdout.replace("\n", " ")
        assert "Traceback" not in plain.stderr
