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
        # a key the runtime does not read left the setting out without a word: ONNX Runtime on
        # the CPU, and no cpu_fallback flag since nothing counted as asked for
        ("name: x\nruntime_options: {onnxruntime: {providerz: [CPUExecutionProvider]}}\n",
         "runtime_options.onnxruntime.providerz", "unknown option; known: "
         "graph_optimization_level, inter_op_threads, provider_options, providers, tensorrt"),
        ("name: x\nruntime_options: {onnxruntime: {provider: [CUDAExecutionProvider]}}\n",
         "runtime_options.onnxruntime.provider", "unknown option; known: "),
        ("name: x\nruntime_options: {onnxruntime: {providers: CUDAExecutionProvider}}\n",
         "runtime_options.onnxruntime.providers", "must be a list of names"),
        ("name: x\nruntime_options: {onnxruntime: {providers: [TensorrtExecutionProvider], "
         "tensorrt: {fp61: true}}}\n", "runtime_options.onnxruntime.tensorrt.fp61",
         "unknown option; known: fp16, int8, workspace_mb"),
        ("name: x\nruntime_options: {onnxruntime: {providers: [TensorrtExecutionProvider], "
         "tensorrt: {fp16: 'yes'}}}\n", "runtime_options.onnxruntime.tensorrt.fp16",
         "must be true or false, got 'yes'"),
        ("name: x\nruntime_options: {onnxruntime: {tensorrt: {fp16: true}}}\n",
         "runtime_options.onnxruntime.tensorrt", "which providers does not list"),
        ("name: x\nruntime_options: {onnxruntime: {providers: [TensorrtExecutionProvider], "
         "provider_options: {TensorrtExecutionProvidr: {}}}}\n",
         "runtime_options.onnxruntime.provider_options.TensorrtExecutionProvidr",
         "not among the providers asked for"),
        ("name: x\nruntime_options: {onnxruntime: {threads: 2}}\n",
         "runtime_options.onnxruntime.threads", "the profile's own `threads` field"),
        ("name: x\nruntime_options: {onnxruntime: {inter_op_threads: 0}}\n",
         "runtime_options.onnxruntime.inter_op_threads", "a whole number of at least 1"),
        ("name: x\nruntime_options: {tflite: {delegate: [libedgetpu.so.1]}}\n",
         "runtime_options.tflite.delegate", "known: delegates, xnnpack"),
        ("name: x\nruntime_options: {tflite: {xnnpack: 0}}\n", "runtime_options.tflite.xnnpack",
         "true or false"),
        ("name: x\nruntime_options: {torch: {precision: int4}}\n",
         "runtime_options.torch.precision", "one of fp32, fp16, bf16, got 'int4'"),
        ("name: x\nruntime_options: {torch: {device: gpu}}\n", "runtime_options.torch.device",
         "cpu, cuda or cuda:N"),
        # a CUDA graph on the CPU failed every job at load, naming neither file nor field
        ("name: x\nruntimes: [torch]\nruntime_options: {torch: {cuda_graphs: true}}\n",
         "runtime_options.torch.cuda_graphs", "needs device cuda (or cuda:N); device is cpu "
         "(the default)"),
        ("name: x\nruntimes: [torch]\nruntime_options: {torch: {device: cpu, cuda_graphs: "
         "true}}\n", "runtime_options.torch.cuda_graphs", "device is cpu"),
        # options for a runtime the profile does not measure with are never read
        ("name: x\nruntimes: [onnxruntime]\nruntime_options: {torch: {device: cuda}}\n",
         "runtime_options.torch", "does not measure with (runtimes lists onnxruntime)"),
        ("name: x\nruntime_options: {torch: {device: cuda}}\n", "runtime_options.torch",
         "runtimes is not given, so the default is onnxruntime, tflite"),
        ("name: x\nruntimes: [torch]\nruntime_options: {onnxruntime: {providers: "
         "[CUDAExecutionProvider]}}\n", "runtime_options.onnxruntime", "never used"),
        # the address alone: a user or port in it failed at connect as `pi@pi@board`
        ("name: x\ntransport: ssh\nssh: {host: pi@board}\n", "ssh.host",
         "'pi@board' is more than an address: give ssh.user: pi and ssh.host: board"),
        ("name: x\ntransport: ssh\nssh: {host: '10.0.0.7:2222'}\n", "ssh.host",
         "is more than an address: give ssh.port: 2222 and ssh.host: 10.0.0.7"),
        ("name: x\ntransport: ssh\nssh: {host: '[fe80::1]:22'}\n", "ssh.host",
         "is more than an address: give ssh.port: 22 and ssh.host: fe80::1"),
        # all of it in one message, not one round each; a URL's scheme dropped
        ("name: x\ntransport: ssh\nssh: {host: 'ssh://pi@board:2222'}\n", "ssh.host",
         "give ssh.user: pi and ssh.port: 2222 and ssh.host: board"),
        ("name: x\ntransport: ssh\nssh: {host: ''}\n", "ssh.host", "is empty; give the "
         "device's address"),
        ("name: x\ntransport: ssh\nssh: {host: 'my board'}\n", "ssh.host", "holds a space"),
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


def test_torch_options_that_go_together_load(tmp_path: Path) -> None:
    path = tmp_path / "dev.yaml"
    path.write_text("name: x\nruntimes: [torch, onnxruntime]\nruntime_options:\n"
                    "  torch: {device: 'cuda:1', cuda_graphs: true}\n  tflite: {}\n")
    profile = load_profile(str(path))
    assert profile.runtime_options["torch"] == {"device": "cuda:1", "cuda_graphs": True}


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


def test_runtime_options_are_declared_where_the_runtimes_read_them() -> None:
    """The loader checks profiles against harness/agent/runtimes/options.py; each runtime reads
    its options through that table (`declared`), so a key it reads that the table lacks fails,
    and every key the table declares is one its runtime's code names."""
    import re

    from harness.agent.runtimes import RUNTIME_MODULES
    from harness.agent.runtimes.options import (
        JOB_OPTIONS,
        OPTIONS,
        Table,
        UndeclaredOption,
        declared,
    )

    assert set(OPTIONS) == set(RUNTIME_MODULES)
    for runtime, fields in OPTIONS.items():
        source = (REPO / "harness" / "agent" / "runtimes" / f"{runtime}.py").read_text()
        for key, spec in fields.items():
            names = [key, *(spec.fields if isinstance(spec, Table) else ())]
            for name in names:
                assert f'"{name}"' in source, (runtime, name)
        read = set(re.findall(r'\boptions\.get\("([a-z_]+)"', source))
        assert read and read <= set(fields) | set(JOB_OPTIONS), (runtime, read - set(fields))
    options = declared("onnxruntime", {"providers": ["CPUExecutionProvider"], "threads": 1,
                                       "tensorrt": {"fp16": True}})
    assert options.get("providers") == ["CPUExecutionProvider"] and options["threads"] == 1
    assert options["tensorrt"].get("fp16") is True
    with pytest.raises(UndeclaredOption, match="providerz"):
        options.get("providerz")
    with pytest.raises(UndeclaredOption, match="fp61"):
        options["tensorrt"].get("fp61")


def test_an_ipv6_host_is_not_taken_for_a_host_and_port(tmp_path: Path) -> None:
    for host in ("::1", "fe80::1", "[::1]"):
        path = tmp_path / "dev.yaml"
        path.write_text(f"name: x\ntransport: ssh\nssh: {{host: '{host}'}}\n")
        profile = load_profile(str(path))
        assert profile.ssh is not None and profile.ssh.host == host


def test_a_profile_found_by_name_must_carry_that_name(tmp_path: Path) -> None:
    """Found: devices/mypi.yaml copied from rpi.yaml, its `name: rpi` left, measured
    `--device mypi` as rpi: two boards so copied mixed in the store. By its path a profile may
    name its device as it likes."""
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "mypi.yaml").write_text("name: rpi\n")
    with pytest.raises(ConfigError) as info:
        load_profile("mypi", devices)
    assert info.value.field == "name" and str(devices / "mypi.yaml") in str(info.value)
    assert "`--device mypi` would be stored as rpi" in str(info.value)
    assert "set name: mypi" in str(info.value)
    assert load_profile(str(devices / "mypi.yaml")).name == "rpi"
