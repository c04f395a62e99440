"""The agent on the old device software an audit found in the field, with the real old wheels.

Each old runtime lives in a venv of its own of an old Python (pyenv's, see `old_python`),
installed from PyPI once into a cache folder and reused; a test skips, saying what it needs,
where that Python or PyPI is absent. The agent runs there as on a device: its zip, from a folder
without the rest of edgebench. The models are edgebench's own builds of a tiny suite.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.agent import protocol
from harness.agent.runtimes import numpy_minimum
from harness.agent.runtimes.onnxruntime import IR_ADVICE, ML_ADVICE, newer_than_runtime
from harness.agent.runtimes.tflite import MISSING_OP
from harness.agent.runtimes.tflitefile import buffers_outside, operator_version_fields
from tests.conftest import run_cli
from tests.test_agent_portability import old_python

FIXTURES = Path(__file__).parent / "fixtures" / "old_runtimes"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgebench-tests"

# name -> (Python, what pip installs, what it installs without dependencies): wheels the audit
# ran.
ENVS = {
    # reads per-channel FULLY_CONNECTED weights with one scale; makes no XNNPACK partition
    "tflite-2.7.0": ("3.9", ["numpy==1.21.6", "tflite-runtime==2.7.0"], []),
    # reads ONNX IR versions up to 8, ai.onnx opsets up to 17
    "onnxruntime-1.12.1": ("3.8", ["numpy==1.21.6", "onnxruntime==1.12.1"], []),
    # declares numpy>=1.23.2 (its only dependency): a device with an older numpy had it
    # installed by hand
    "tflite-2.14.0-numpy-1.19.5": ("3.8", [], ["tflite-runtime==2.14.0", "numpy==1.19.5"]),
}

SUITE = """
name: oldrt
seed: 0
formats: [onnx, tflite]
datasets:
  digits: {type: digits, image_size: 32}
models:
  d:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 1, lr: 0.003, threads: 1}
    recipes: [int8, fp16]
recipes:
  int8:
    steps: [{quantize_static: {calibration_size: 8, per_channel: true}}]
    formats: [tflite]
  fp16:
    steps: [quantize_fp16]
    formats: [tflite]
"""


def _pip(env: Path, args: list[str]) -> list[str]:
    return [str(env / "bin" / "python"), "-m", "pip", "install", "-q",
            "--disable-pip-version-check", *args]


@pytest.fixture(scope="session")
def old_envs(request: pytest.FixtureRequest) -> dict[str, Path | str]:
    """Each of ENVS's venvs, or why it cannot be had here; made side by side when absent (15 to
    35 s from PyPI, while edgebench builds the models), then reused (`.ready` says it is
    complete, and with what)."""
    found: dict[str, Path | str] = {}
    making: dict[str, tuple[Path, subprocess.Popen[str]]] = {}
    for name, (version, packages, no_deps) in ENVS.items():
        env = CACHE / name
        ready = env / ".ready"
        if ready.exists() and ready.read_text() == json.dumps(ENVS[name]):
            found[name] = env
            continue
        python = old_python(version)
        if python is None:
            found[name] = f"needs a python{version} here (pyenv install {version})"
            continue
        shutil.rmtree(env, ignore_errors=True)
        env.parent.mkdir(parents=True, exist_ok=True)
        # the old Python's own pip, not one installed anew in each venv (20 s on a busy machine)
        steps = [[python, "-m", "venv", "--without-pip", "--system-site-packages", str(env)]]
        if packages:
            steps.append(_pip(env, packages))
        if no_deps:
            steps.append(_pip(env, ["--no-deps", *no_deps]))
        script = " && ".join(" ".join(f"'{a}'" for a in step) for step in steps)
        making[name] = env, subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True)
    if making:
        request.getfixturevalue("built")  # meanwhile
    for name, (env, proc) in making.items():
        out, _ = proc.communicate(timeout=600)
        if proc.returncode:
            last = [line for line in out.splitlines() if line.strip()][-1:] or ["no output"]
            wanted = " ".join(ENVS[name][1] + ENVS[name][2])
            found[name] = f"cannot install {wanted} from PyPI: {last[0]}"
            continue
        (env / ".ready").write_text(json.dumps(ENVS[name]))
        found[name] = env
    return found


def old_env(old_envs: dict[str, Path | str], name: str) -> Path:
    env = old_envs[name]
    if isinstance(env, str):
        pytest.skip(env)
    return env


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny suite built by edgebench: `d` (ONNX, TFLite), `d-int8` (TFLite, int8 weights
    per channel), `d-fp16` (TFLite). Trained, if for one epoch, as the audit's were."""
    from rich.console import Console

    from harness.compress.build import build_suite

    root = tmp_path_factory.mktemp("oldrt")
    suite = root / "oldrt.yaml"
    suite.write_text(SUITE)
    report = build_suite(suite, root / "build", console=Console(quiet=True))
    assert not report.failures, report.failures
    return root / "build"


@pytest.fixture(scope="module")
def agent_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.transport.base import agent_bundle

    path = tmp_path_factory.mktemp("agent") / "agent.pyz"
    path.write_bytes(agent_bundle()[0])
    return path


def run_on(env: Path, agent: Path, job: dict[str, Any]) -> dict[str, Any]:
    """One job through the agent's zip on the venv's Python, from the zip's folder."""
    proc = subprocess.run([str(env / "bin" / "python"), str(agent)], input=json.dumps(job),
                          capture_output=True, text=True, cwd=agent.parent, timeout=120)
    assert proc.stdout, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def job_for(model: Path, runtime: str) -> dict[str, Any]:
    return {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "j", "runtime": runtime,
            "model": {"path": str(model), "format": model.suffix.lstrip(".")},
            "options": {"threads": 1}, "settings": protocol.QUICK_SETTINGS}


def captured(name: str) -> dict[str, str]:
    entry: dict[str, str] = json.loads((FIXTURES / "load_errors.json").read_text())[name]
    return entry


def refusal(result: dict[str, Any]) -> tuple[str, str]:
    assert result["status"] == "unsupported", result
    return result["error"]["kind"], result["error"]["message"]


def test_per_channel_fully_connected_is_refused_before_tflite_2_10(old_envs, built, agent_zip
                                                                   ) -> None:
    """tflite-runtime 2.7-2.9 ran it, `ok`, with every logit alike (top-1 0.0 against the
    host's 0.99); a model measured for latency alone would not even show it."""
    env = old_env(old_envs, "tflite-2.7.0")
    model = built / "d-int8.tflite"
    kind, message = refusal(run_on(env, agent_zip, job_for(model, "tflite")))
    assert (kind, message) == ("op_unsupported", (
        f"tflite_runtime 2.7.0 here would compute {model} wrong: 2 of its FULLY_CONNECTED "
        "weights are quantized per channel, and TFLite before 2.10 applies one scale to them"))


def test_buffers_after_the_flatbuffer_are_refused_before_tflite_2_14(
        old_envs, built, agent_zip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fp16 file as ai-edge-quantizer writes it (its 300 KiB of weights after the
    flatbuffer) loaded, then failed its first inference with `Input tensor 9 lacks data`, as an
    `inference_error`: the file is sound, the runtime too old to read it. edgebench's build
    moves them inside, and that file runs there as on the host."""
    from harness.compress import quantize

    env = old_env(old_envs, "tflite-2.7.0")
    ours = built / "d-fp16.tflite"
    assert buffers_outside(str(ours)) == 0
    result = run_on(env, agent_zip, job_for(ours, "tflite"))
    assert result["status"] == "ok", result["error"]
    model = tmp_path / "as-the-quantizer-writes-it.tflite"
    monkeypatch.setattr(quantize, "_buffers_inside", lambda path: None)
    quantize.quantize_fp16(built / "d.tflite", model, "tflite", {}, None)  # type: ignore[arg-type]
    outside = buffers_outside(str(model))
    assert outside > 0
    kind, message = refusal(run_on(env, agent_zip, job_for(model, "tflite")))
    assert (kind, message) == ("model_too_new", (
        f"tflite_runtime 2.7.0 here cannot read {model}: {outside} of its constant buffers are "
        "stored after the flatbuffer (buffer offsets), which TFLite reads from 2.14 on"))


def test_an_op_version_the_old_runtime_lacks_is_unsupported(old_envs, built, agent_zip,
                                                            tmp_path: Path) -> None:
    """A FULLY_CONNECTED of version 14 (today's converters write it for int4 weights; here the
    int8 model's version 5 is rewritten to it): `model_invalid` blamed a sound file."""
    data = bytearray((built / "d-int8.tflite").read_bytes())
    at = [p for p in operator_version_fields(bytes(data)) if p is not None]
    assert [struct.unpack_from("<i", data, p)[0] for p in at] == [5]  # FULLY_CONNECTED's
    struct.pack_into("<i", data, at[0], 14)
    model = tmp_path / "fc14.tflite"
    model.write_bytes(bytes(data))
    env = old_env(old_envs, "tflite-2.7.0")
    kind, message = refusal(run_on(env, agent_zip, job_for(model, "tflite")))
    assert (kind, message) == ("op_unsupported", (
        f"tflite_runtime 2.7.0 here has no FULLY_CONNECTED version 14, which {model} uses: it "
        "is older than the converter that wrote the file"))
    # the words the agent looks for, as tflite-runtime 2.7.0 wrote them
    assert MISSING_OP.search(captured("tflite_op_version")["text"]).groups() == (
        "FULLY_CONNECTED", "14")


def test_xnnpack_is_recorded_as_in_force_only_where_it_took_operators(old_envs, built,
                                                                      agent_zip) -> None:
    """tflite-runtime 2.7 makes no XNNPACK partition: asked for, not in force, and the record
    says so (it said `xnnpack: true`, `requested: ["XNNPACK"]` alone)."""
    env = old_env(old_envs, "tflite-2.7.0")
    result = run_on(env, agent_zip, job_for(built / "d.tflite", "tflite"))
    assert result["status"] == "ok", result["error"]
    options, placement = result["runtime_options"], result["placement"]
    assert (options["xnnpack"], options["xnnpack_requested"]) == (False, True)
    assert placement["requested"] == ["XNNPACK"] and placement["in_force"] == []
    assert placement["partitions"] == placement["ops_delegated"] == 0
    assert placement["cpu_fallback"] is False  # XNNPACK is the CPU: nothing fell back


def test_onnx_newer_than_the_runtime_is_unsupported_and_opset_17_runs(
        old_envs, built, agent_zip, tmp_path: Path) -> None:
    """onnxruntime 1.12.1 (JetPack 5.0) refused every file edgebench built, as `model_invalid`
    with 400 characters of C++ signature: IR 10, opset 18, opset imports no node used. The
    default build is now IR 8 and imports only what it uses, so what is left is its opset,
    said in one line with the suite's field that lowers it; at `onnx: {opset: 17}` the file
    runs there and scores as on the host."""
    onnx = pytest.importorskip("onnx")
    from harness.compress.export import finish_onnx

    env = old_env(old_envs, "onnxruntime-1.12.1")
    model = built / "d.onnx"
    proto = onnx.load(str(model))
    assert proto.ir_version == 8 and [(o.domain, o.version) for o in proto.opset_import] == [
        ("", 18)]
    kind, message = refusal(run_on(env, agent_zip, job_for(model, "onnxruntime")))
    assert (kind, message) == ("model_too_new", (
        f"onnxruntime 1.12.1 here cannot load {model}: it reads ai.onnx opsets up to 17 and "
        "the file uses opset 18: build it with the suite's `onnx: {opset: 17}`, or update "
        "onnxruntime"))
    lower = tmp_path / "opset17.onnx"  # what the build makes of it at onnx: {opset: 17}
    lower.write_bytes(model.read_bytes())
    finish_onnx(lower, 17)
    result = run_on(env, agent_zip, job_for(lower, "onnxruntime"))
    assert result["status"] == "ok", result["error"]
    newer = tmp_path / "ir10.onnx"  # a file saved by another tool, at the onnx library's IR
    proto.ir_version = 10
    onnx.save(proto, str(newer))
    kind, message = refusal(run_on(env, agent_zip, job_for(newer, "onnxruntime")))
    assert (kind, message) == ("model_too_new", (
        f"onnxruntime 1.12.1 here cannot load {newer}: it reads ONNX IR versions up to 8 and "
        f"the file is IR 10: {IR_ADVICE}"))


@pytest.mark.parametrize(("name", "said"), [
    ("onnxruntime_ir_version", f"it reads ONNX IR versions up to 8 and the file is IR 10: "
     f"{IR_ADVICE}"),
    ("onnxruntime_opset", "it reads ai.onnx opsets up to 17 and the file uses opset 18: build "
     "it with the suite's `onnx: {opset: 17}`, or update onnxruntime"),
    ("onnxruntime_ml_opset", "it reads ai.onnx.ml opsets up to 3 and the file uses opset 4: "
     f"{ML_ADVICE}"),
])
def test_onnxruntime_words_for_a_file_too_new(name: str, said: str) -> None:
    """As onnxruntime 1.12.1 words them (ai.onnx.ml's needs no model of its own to see)."""
    assert newer_than_runtime(captured(name)["text"]) == said
    assert newer_than_runtime("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid "
                              "model.") is None


def test_a_runtime_built_for_a_newer_numpy_says_so(old_envs, built, agent_zip,
                                                   tmp_path: Path) -> None:
    """tflite-runtime 2.14.0 with numpy 1.19.5: `devices check` said present and every job
    failed `agent_error` (`SystemError: ... returned a result with an error set`), the cause on
    stderr alone. Now the check warns and a job says why in one line."""
    env = old_env(old_envs, "tflite-2.14.0-numpy-1.19.5")
    said = captured("tflite_numpy_abi")
    assert "numpy 1.19.5" in said["source"] and said["exception"] == "SystemError"
    kind, message = refusal(run_on(env, agent_zip, job_for(built / "d.tflite", "tflite")))
    assert (kind, message) == ("runtime_unusable", (
        "tflite_runtime 2.14.0 cannot run with numpy 1.19.5 here, older than the numpy >=1.23.2 "
        "it declares: install numpy>=1.23.2 for it"))
    check = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "c", "check": True}
    tflite = run_on(env, agent_zip, check)["check"]["runtimes"]["tflite"]
    assert tflite["available"] is True  # a warning, not a refusal: declared minimums are strict
    assert tflite["warning"] == ("numpy 1.19.5 here is older than the numpy >=1.23.2 that "
                                 "tflite-runtime 2.14.0 declares")
    profile = tmp_path / "old.yaml"
    profile.write_text(f"name: old\npython: {env / 'bin' / 'python'}\nruntimes: [tflite]\n")
    proc = run_cli("devices", "check", str(profile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    said = " ".join(proc.stdout.split())
    assert ("note: tflite: numpy 1.19.5 here is older than the numpy >=1.23.2 that "
            "tflite-runtime 2.14.0 declares; if it was built against that numpy, every job of it "
            "fails there (runtime_unusable): install the numpy it declares") in said


def test_numpy_minimum_reads_metadata_as_packages_write_it() -> None:
    assert numpy_minimum(["numpy >=1.23.2"]) == "1.23.2"  # tflite-runtime 2.14.0
    assert numpy_minimum(["coloredlogs", "numpy (>=1.21.0)"]) == "1.21.0"  # onnxruntime 1.12.1
    assert numpy_minimum(['numpy>=1.21.6,<2; python_version < "3.11"']) == "1.21.6"
    assert numpy_minimum(['numpy>=2; extra == "test"', "numpy-quaternion>=9"]) is None
    assert numpy_minimum(["numpy"]) is None

