"""One job in, one result out: the agent's contract, exercised through a real agent process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.agent import protocol
from tests.conftest import REPO, make_tiny_onnx


def run_agent(job: Any, python: str = sys.executable) -> tuple[dict[str, Any], str]:
    text = job if isinstance(job, str) else json.dumps(job)
    proc = subprocess.run([python, "-m", "harness.agent"], input=text, capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got: {proc.stdout!r}"
    return json.loads(lines[0]), proc.stderr


def job_for(model: Path, runtime: str = "onnxruntime", **extra: Any) -> dict[str, Any]:
    job = {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "job_id": "j-1",
        "model": {"path": str(model), "format": model.suffix.lstrip(".")},
        "runtime": runtime,
        "options": {"threads": 1},
        "settings": protocol.QUICK_SETTINGS,
    }
    job.update(extra)
    return job


def test_round_trip_ok(tiny_onnx: Path) -> None:
    result, stderr = run_agent(job_for(tiny_onnx))
    assert result["status"] == "ok", result["error"]
    assert result["protocol_version"] == protocol.PROTOCOL_VERSION
    assert result["job_id"] == "j-1"
    assert set(protocol.new_result("x")) <= set(result)  # every documented key is present
    lat = result["latency"]
    assert lat["n"] == len(result["samples_ns"]) >= protocol.QUICK_SETTINGS["min_iterations"]
    assert lat["ci95_low_ms"] <= lat["median_ms"] <= lat["ci95_high_ms"]
    assert lat["min_ms"] <= lat["median_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["elapsed_s"] >= protocol.QUICK_SETTINGS["duration_s"]  # the window, fixed
    assert lat["throughput_wall_ips"] == pytest.approx(lat["n"] / lat["elapsed_s"])
    assert result["capped"] is False
    assert result["threads"] == 1
    assert result["runtime_options"]["intra_op_threads"] == 1
    assert result["load_s"] > 0 and result["first_inference_ms"] > 0
    mem = result["memory"]
    assert mem["peak_rss_mb"] >= mem["timed_peak_rss_mb"] > mem["rss_runtime_mb"] > 0
    assert mem["model_mb"] == pytest.approx(mem["timed_peak_rss_mb"] - mem["rss_runtime_mb"])
    assert result["input_shape"] == [1, 1, 8, 8]
    assert result["fingerprint"]["cpu_count"] >= 1
    assert result["accuracy"] is None  # no dataset: not applicable, not zero
    assert result["timed_scope"] == "runtime"  # the runtime's own run, as the reference tools
    assert "[agent]" in stderr  # logs go to stderr, not the protocol stream


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity here")
@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_the_result_says_which_cpus_ran_the_session(runtime: str, tiny_onnx: Path,
                                                    tiny_tflite: Path) -> None:
    """"threads 1" does not say which CPU: on a board of big and little cores, or one pinned
    by the profile's `cpu_affinity`, that is another speed. The result names the CPUs the
    session's process could run on: all this one may, or those it was pinned to."""
    model = tiny_onnx if runtime == "onnxruntime" else tiny_tflite
    mine = sorted(os.sched_getaffinity(0))
    free, _ = run_agent(job_for(model, runtime))
    assert free["status"] == "ok", free["error"]
    assert free["runtime_options"]["cpus"] == mine
    pinned, _ = run_agent(job_for(model, runtime, options={"threads": 1,
                                                           "cpu_affinity": [mine[-1]]}))
    assert pinned["status"] == "ok", pinned["error"]
    assert pinned["runtime_options"]["cpus"] == [mine[-1]]


def test_accuracy_with_dataset_and_reference(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"x": inputs[i:i + 1]})[0] for i in range(40)])
    labels = logits.argmax(axis=1).copy()
    labels[:10] = (labels[:10] + 1) % 10  # make exactly 10 of 40 wrong
    reference = logits.copy()
    reference[0] += 0.25  # a known max difference, same argmax
    for name, arr in (("inputs", inputs), ("labels", labels), ("reference", reference)):
        np.save(tmp_path / f"{name}.npy", arr)
    dataset = {p: {"path": str(tmp_path / f"{p}.npy")} for p in ("inputs", "labels", "reference")}
    result, _ = run_agent(job_for(model, dataset=dataset))
    assert result["status"] == "ok", result["error"]
    acc = result["accuracy"]
    assert acc["n"] == 40
    assert acc["top1"] == pytest.approx(30 / 40)
    assert acc["top5"] >= acc["top1"]
    assert acc["ref_top1_agreement"] == pytest.approx(1.0)
    assert acc["ref_max_abs_diff"] == pytest.approx(0.25, abs=1e-4)


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_both_timed_scopes_compute_the_same_outputs(tmp_path: Path, tiny_onnx: Path,
                                                    tiny_tflite: Path, runtime: str) -> None:
    """The bound run (IOBinding / invoke) and numpy in-out give the same logits; only what the
    timer covers differs, and the result says which."""
    from harness.agent.runtimes import get_runtime

    model = tiny_onnx if runtime == "onnxruntime" else tiny_tflite
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    rt = get_runtime(runtime)
    rt.load(str(model), {"threads": 1})
    rt.set_input(x)
    rt.run()
    bound = rt.output()
    rt.run_end_to_end()
    np.testing.assert_allclose(rt.output(), bound, rtol=1e-6)
    settings = dict(protocol.QUICK_SETTINGS, timed_scope="end_to_end")
    result, _ = run_agent(job_for(model, runtime=runtime, settings=settings))
    assert result["status"] == "ok" and result["timed_scope"] == "end_to_end"


def test_tflite_round_trip(tiny_tflite: Path) -> None:
    result, _ = run_agent(job_for(tiny_tflite, runtime="tflite"))
    assert result["status"] == "ok", result["error"]
    assert result["runtime_options"]["xnnpack"] is True  # asked for, and it took operators
    assert result["runtime_options"]["xnnpack_requested"] is True
    assert result["placement"]["in_force"] == ["XNNPACK"]
    from harness.agent.job import ran_on_cpu_only

    assert ran_on_cpu_only(result)  # XNNPACK is the CPU, whose energy RAPL measures
    assert result["runtime_options"]["threads"] == 1
    result, _ = run_agent(job_for(tiny_tflite, runtime="tflite",
                                  options={"threads": 1, "xnnpack": False}))
    assert result["status"] == "ok" and result["runtime_options"]["xnnpack"] is False
    assert result["runtime_options"]["xnnpack_requested"] is False
    assert result["placement"]["in_force"] == []


@pytest.mark.parametrize(
    ("mutate", "kind"),
    [
        (lambda j, d: j["model"].update(path=str(d / "missing.onnx")), "model_not_found"),
        (lambda j, d: j["model"].update(path=str(d / "corrupt.onnx")), "model_invalid"),
        (lambda j, d: j.update(input={"shape": [1, 3, 224, 224]}), "input_shape"),
        (lambda j, d: j.update(runtime="nosuch"), "unknown_runtime"),
        (lambda j, d: j.update(protocol_version=99), "protocol"),
        (lambda j, d: j.pop("model"), "protocol"),
    ],
    ids=["missing", "corrupt", "shape", "runtime", "version", "no-model"],
)
def test_bad_jobs_fail_with_a_kind_and_message(tmp_path: Path, tiny_onnx: Path, mutate: Any,
                                               kind: str) -> None:
    (tmp_path / "corrupt.onnx").write_bytes(b"this is not a protobuf" * 10)
    job = job_for(tiny_onnx)
    mutate(job, tmp_path)
    result, _ = run_agent(job)
    assert result["status"] == "failed"
    assert result["error"]["kind"] == kind
    assert result["error"]["message"]


def test_format_mismatch_is_unsupported(tiny_onnx: Path) -> None:
    result, _ = run_agent(job_for(tiny_onnx, runtime="tflite"))
    assert result["status"] == "unsupported"
    assert result["error"]["kind"] == "format_mismatch"


def test_an_operator_this_runtime_lacks_is_unsupported_not_an_invalid_model(
        tmp_path: Path) -> None:
    """Found on a device's older ONNX Runtime: a ConvInteger it had no kernel for was `failed`
    as `model_invalid`, blaming a sound file. Here Abs on bfloat16, a valid model that this
    onnxruntime builds no CPU kernel for."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 4])
    graph = helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)  # the file is sound
    path = tmp_path / "abs_bf16.onnx"
    onnx.save(model, str(path))
    result, _ = run_agent(job_for(path))
    assert result["status"] == "unsupported", result["error"]
    assert result["error"]["kind"] == "op_unsupported"
    assert "has no kernel for an operator of" in result["error"]["message"]
    assert "Abs" in result["error"]["message"]


def test_not_json_is_a_failed_result() -> None:
    result, _ = run_agent("{not json")
    assert result["status"] == "failed" and result["error"]["kind"] == "protocol"


def test_runtime_not_installed_is_unsupported(tmp_path: Path, tiny_onnx: Path) -> None:
    """A real interpreter that has numpy but no onnxruntime, as on a bare device."""
    import sysconfig
    import venv

    import numpy

    env_dir = tmp_path / "bare"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True).stdout.strip()
    numpy_dir = Path(numpy.__file__).parent
    for item in numpy_dir.parent.iterdir():  # numpy and its vendored libs only
        if item.name.startswith("numpy"):
            (Path(site) / item.name).symlink_to(item)
    assert sysconfig.get_paths()["purelib"] != site
    result, _ = run_agent(job_for(tiny_onnx), python=str(python))
    assert result["status"] == "unsupported"
    assert result["error"]["kind"] == "runtime_missing"
    assert "onnxruntime" in result["error"]["message"]


def test_nan_becomes_null() -> None:
    text = protocol.dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": {"d": 2.5}})
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": 2.5}}


def test_check_answers_without_numpy(tmp_path: Path) -> None:
    """A bare device (no numpy) still answers `devices check`, and says what it lacks."""
    import venv

    env_dir = tmp_path / "empty"
    venv.create(env_dir, with_pip=False)
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "check", "check": True}
    result, _ = run_agent(job, python=str(env_dir / "bin" / "python"))
    assert result["status"] == "ok"
    assert result["check"]["fingerprint"]["numpy"] is None
    assert result["check"]["fingerprint"]["cpu_count"] >= 1
    assert result["check"]["runtimes"]["numpy"]["available"] is False
    # and the CLI turns that into a plain verdict and a non-zero exit
    from tests.conftest import run_cli

    profile = tmp_path / "bare.yaml"
    profile.write_text(f"name: bare\npython: {env_dir / 'bin' / 'python'}\n")
    proc = run_cli("devices", "check", str(profile))
    assert proc.returncode == 1
    assert "missing for this profile: numpy" in proc.stdout


def test_the_model_memory_is_the_same_with_the_data_and_without(tiny_onnx: Path,
                                                               tmp_path: Path) -> None:
    """The session that scores accuracy and those that do not time the same input and count
    the same memory as the model's. numpy.random, which makes the timed input, is 3-7 MB on first
    import: taken after the baseline, it was in the model's memory of every session but the
    one with the data, so `model_mb` (their median) flattened the ratios of compressed models."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "inputs.npy", rng.standard_normal((64, 1, 8, 8)).astype(np.float32))
    np.save(tmp_path / "labels.npy", rng.integers(0, 10, 64))
    data = {part: {"path": str(tmp_path / f"{part}.npy"), "sha256": "0" * 64}
            for part in ("inputs", "labels")}
    without, _ = run_agent(job_for(tiny_onnx))
    with_data, _ = run_agent(job_for(tiny_onnx, dataset=data))
    assert without["status"] == with_data["status"] == "ok"
    assert with_data["accuracy"]["n"] == 64 and without["accuracy"] is None
    assert without["input_shape"] == with_data["input_shape"] == [1, 1, 8, 8]
    assert abs(without["memory"]["model_mb"] - with_data["memory"]["model_mb"]) < 1.0, (
        without["memory"], with_data["memory"])


def test_the_session_with_the_data_records_the_memory_of_those_without(tmp_path: Path) -> None:
    """The accuracy set is the harness's, not the model's: read before the baseline, a 64 MiB
    set was in the baseline, the process peak and the timed window's peak of the one session
    that scored accuracy (119.5 / 133.7 MiB against 55.4 / 69.6 without), so the same file's
    peak RSS depended on whether its run gave it data, and by how many sessions shared that one
    (the median of --quick's two is their mean)."""
    model = make_tiny_onnx(tmp_path / "m.onnx", input_shape=(1, 1, 128, 128))
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((1024, 1, 128, 128)).astype(np.float32)
    assert inputs.nbytes == 64 * 2**20
    np.save(tmp_path / "inputs.npy", inputs)
    np.save(tmp_path / "labels.npy", rng.integers(0, 10, len(inputs)))
    data = {part: {"path": str(tmp_path / f"{part}.npy"), "sha256": "0" * 64}
            for part in ("inputs", "labels")}
    without, _ = run_agent(job_for(model))
    with_data, _ = run_agent(job_for(model, dataset=data))
    assert without["status"] == with_data["status"] == "ok", with_data["error"]
    assert with_data["accuracy"]["n"] == len(inputs)
    for field in ("rss_runtime_mb", "peak_rss_mb", "timed_peak_rss_mb", "anon_mb"):
        # a few MiB between two processes at most; the set is 64
        assert abs(with_data["memory"][field] - without["memory"][field]) < 8.0, (
            field, without["memory"], with_data["memory"])


def test_a_file_the_runtime_refuses_is_named_as_the_user_knows_it(tmp_path: Path) -> None:
    """On a device a model's path is its cache entry, named by its sha256: an error naming
    `~/.cache/edgebench/fad1...d31` told the user nothing; it names the artifact's file."""
    import hashlib

    data = b"not an onnx model"
    sha = hashlib.sha256(data).hexdigest()
    cached = tmp_path / sha
    cached.write_bytes(data)
    model = {"path": str(cached), "format": "onnx", "sha256": sha, "name": "resnet18-int8"}
    result, _ = run_agent({**job_for(cached), "model": model})
    assert result["status"] == "failed" and result["error"]["kind"] == "model_invalid"
    message = result["error"]["message"]
    assert "resnet18-int8.onnx" in message and sha not in message, message
    # where the file has its own name (the local device), its path is the name to give
    own = tmp_path / "mine.onnx"
    own.write_bytes(data)
    result, _ = run_agent({**job_for(own), "model": {**model, "path": str(own)}})
    assert str(own) in result["error"]["message"]
