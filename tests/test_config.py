"""Device profiles: every shipped profile loads, and each mistake names its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import DEVICES_DIR, list_profiles, load_profile
from harness.errors import ConfigError, EdgebenchError
from tests.conftest import REPO


def test_every_shipped_profile_loads() -> None:
    names = list_profiles(REPO / DEVICES_DIR)
    assert "local" in names
    for name in names:
        profile = load_profile(name, REPO / DEVICES_DIR)
        assert profile.name
        assert profile.runtimes
    local = load_profile("local", REPO / DEVICES_DIR)
    assert (local.kind, local.transport) == ("local", "local")


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("kind: local\n", "name", "required field is missing"),
        ("name: x\nkind: toaster\n", "kind", "'toaster' is not one of"),
        ("name: x\nthreads: 0\n", "threads", "at least 1"),
        ("name: x\nthreads: two\n", "threads", "must be int"),
        ("name: x\ntune: yes please\n", "tune", "must be bool"),
        ("name: x\nruntimes: []\n", "runtimes", "non-empty list"),
        ("name: x\nrunetimes: [onnxruntime]\n", "runetimes", "unknown field; known:"),
        ("name: x\ntransport: ssh\n", "ssh", "no ssh settings"),
        ("name: x\ntransport: ssh\nssh: {port: 22}\n", "ssh.host", "required field"),
        ("name: x\ntransport: ssh\nssh: {host: h, prot: 22}\n", "ssh.prot", "unknown field"),
        ("name: x\nruntime_options: {tflite: fast}\n", "runtime_options.tflite", "mapping"),
        ("name: x\nruntimes: [onnxruntim]\n", "runtimes",
         "unknown runtime 'onnxruntim'; known: onnxruntime, tflite, torch"),
        ("name: x\nruntime_options: {tflit: {}}\n", "runtime_options", "unknown runtime 'tflit'"),
    ],
)
def test_profile_errors_name_file_and_field(tmp_path: Path, text: str, field: str,
                                            message: str) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(str(path))
    assert info.value.field == field
    assert str(path) in str(info.value) and message in str(info.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("name: x\nssh:\n  host: [unclosed\n")
    with pytest.raises(ConfigError, match=r"dev.yaml: malformed YAML: line \d+"):
        load_profile(str(path))


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_profile(str(path))


def test_unknown_device_lists_known_ones() -> None:
    with pytest.raises(EdgebenchError, match="known: .*local"):
        load_profile("no-such-board", REPO / DEVICES_DIR)


def test_cpu_affinity_naming_a_cpu_the_device_lacks_fails_the_job_naming_it(
        tiny_onnx: Path) -> None:
    """Linux drops the CPUs it does not have from an affinity set, so `cpu_affinity: [0, 99]`
    ran on CPU 0 alone, with a thread count the profile did not mean; the agent refuses it."""
    import os

    from harness.agent import job as agent_job
    from harness.agent import protocol

    before = os.sched_getaffinity(0)
    absent = max(before) + 64
    result = agent_job.run_job({
        "protocol_version": protocol.PROTOCOL_VERSION, "job_id": "pin", "runtime": "onnxruntime",
        "model": {"path": str(tiny_onnx), "format": "onnx"}, "device_kind": "linux",
        "options": {"cpu_affinity": [min(before), absent]},
        "settings": {"warmup_s": 0.01, "warmup_min": 1, "duration_s": 0.05, "min_iterations": 2,
                     "max_duration_s": 1.0}})
    assert result["status"] == "failed" and result["error"]["kind"] == "cpu_affinity"
    assert f"names CPU {absent} that this process cannot run on" in result["error"]["message"]
    assert os.sched_getaffinity(0) == before  # refused before anything was pinned
