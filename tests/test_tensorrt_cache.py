"""Where ONNX Runtime's TensorRT provider keeps a model's engines: one folder per model content and
engine settings, so that no model is measured with another's engine.

ORT-TRT names an engine after the model's path and graph structure, not its weights. TensorRT
cannot run here, so these check the provider options the agent hands to ONNX Runtime (the same
dict the result records as `runtime_options.provider_options`), computed from real ONNX files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnx
import pytest

from harness.agent.runtimes.onnxruntime import (
    TENSORRT,
    OnnxRuntime,
    decode_tensorrt_version,
    tensorrt_version,
)
from tests.conftest import REPO, make_tiny_onnx

JETSON = {"providers": [TENSORRT, "CUDAExecutionProvider", "CPUExecutionProvider"],
          "tensorrt": {"fp16": True, "int8": False}}


def trt_options(model: Path, options: dict[str, Any] = JETSON) -> dict[str, Any]:
    return OnnxRuntime._provider_options(TENSORRT, str(model), options)


def engines(model: Path, options: dict[str, Any] = JETSON) -> Path:
    return Path(trt_options(model, options)["trt_engine_cache_path"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def graph_without_weights(path: Path) -> onnx.GraphProto:
    graph = onnx.load(str(path)).graph
    del graph.initializer[:]
    return graph


def test_same_graph_other_weights_gets_other_engines(tmp_path: Path) -> None:
    """A model rebuilt at the same path with other weights (a pruned or retrained variant)."""
    model = make_tiny_onnx(tmp_path / "resnet.onnx", seed=0)
    before = engines(model)
    graph = graph_without_weights(model)
    make_tiny_onnx(model, seed=1)
    assert graph_without_weights(model) == graph  # what ORT-TRT's engine name is made from
    after = engines(model)
    assert after != before
    assert after == tmp_path / "tensorrt" / sha256(model) / "fp16"


def test_same_content_at_two_paths_shares_engines(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "a.onnx")
    copy = Path(shutil.copy(model, tmp_path / "b.onnx"))
    assert engines(copy) == engines(model) == tmp_path / "tensorrt" / sha256(model) / "fp16"


def test_a_file_named_by_its_sha256_is_not_read_again(tmp_path: Path) -> None:
    """In the device cache the model's name is its sha256, checked by the host on connection:
    the name is taken as is (here, a name that is not the hash of the bytes shows it)."""
    named = tmp_path / ("ab" * 32)
    make_tiny_onnx(named)
    assert sha256(named) != named.name
    assert engines(named) == tmp_path / "tensorrt" / named.name / "fp16"


def test_precision_and_engine_shaping_settings_key_the_folder(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx")
    root = tmp_path / "tensorrt" / sha256(model)

    def folder(tensorrt: dict[str, Any], **provider: Any) -> str:
        opts = dict(JETSON, tensorrt=tensorrt, provider_options={TENSORRT: provider})
        path = engines(model, opts)
        assert path.parent == root
        return path.name

    assert folder({"fp16": False}) == "fp32"
    assert folder({"fp16": True}) == "fp16"
    assert folder({"int8": True}) == "int8"
    assert folder({"fp16": True, "int8": True}) == "fp16+int8"
    # the precision as ORT reads it, whether from `tensorrt` or the provider's own options
    assert folder({}, trt_fp16_enable="True") == "fp16"
    assert folder({"fp16": True}, trt_fp16_enable=False) == "fp32"
    # other settings that change the engine get folders of their own
    small, large = folder({"fp16": True, "workspace_mb": 512}), folder({"fp16": True,
                                                                       "workspace_mb": 2048})
    level = folder({"fp16": True}, trt_builder_optimization_level=5)
    assert len({small, large, level}) == 3
    assert all(name.startswith("fp16-") and len(name) == len("fp16-") + 8
               for name in (small, large, level))
    # ... and settings that do not, none
    assert folder({"fp16": True}, trt_detailed_build_log=True) == "fp16"


def test_timing_cache_is_shared_and_paths_are_recorded(tmp_path: Path) -> None:
    first = make_tiny_onnx(tmp_path / "a.onnx", seed=0)
    second = make_tiny_onnx(tmp_path / "b.onnx", seed=1)
    a, b = trt_options(first), trt_options(second)
    assert a["trt_timing_cache_path"] == b["trt_timing_cache_path"] == str(tmp_path / "tensorrt")
    assert a["trt_engine_cache_path"] != b["trt_engine_cache_path"]
    assert a["trt_engine_cache_enable"] is True and a["trt_fp16_enable"] is True
    # a cache path the profile gives is used as given
    given = dict(JETSON, provider_options={TENSORRT: {"trt_engine_cache_path": "/data/trt"}})
    assert trt_options(first, given)["trt_engine_cache_path"] == "/data/trt"


def test_other_providers_are_untouched(tmp_path: Path) -> None:
    model = tmp_path / "absent.onnx"  # not read: only TensorRT hashes the model
    opts = dict(JETSON, provider_options={"CUDAExecutionProvider": {"device_id": 0}})
    assert OnnxRuntime._provider_options("CUDAExecutionProvider", str(model), opts) == {
        "device_id": 0}
    assert OnnxRuntime._provider_options("CPUExecutionProvider", str(model), opts) == {}


def test_tensorrt_version_integers_decode() -> None:
    # getInferLibVersion() returns NV_TENSORRT_VERSION: major*1000 + minor*100 + patch up to
    # TensorRT 8 (NvInferRuntimeCommon.h of 8.x), major*10000 + minor*100 + patch from 10
    # (NV_TENSORRT_VERSION_INT in NvInferRuntimeBase.h), whose minors pass 9
    assert decode_tensorrt_version(7103) == "7.1.3"
    assert decode_tensorrt_version(8601) == "8.6.1"
    assert decode_tensorrt_version(100300) == "10.3.0"
    assert decode_tensorrt_version(101401) == "10.14.1"


def test_no_tensorrt_here_means_no_version(tmp_path: Path) -> None:
    assert tensorrt_version((str(tmp_path / "libnvinfer.so.10"),)) is None
    model = make_tiny_onnx(tmp_path / "m.onnx")
    assert engines(model).name == "fp16"  # as before: a folder per model and precision


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (cc) to build a "
                    "stand-in libnvinfer")
def test_engines_are_keyed_by_the_tensorrt_the_linker_finds(tmp_path: Path) -> None:
    """TensorRT cannot be installed here: a stand-in libnvinfer.so.10, compiled from one line
    of C, answers getInferLibVersion() as TensorRT 10.3.0's does (100300). Found by its soname
    on LD_LIBRARY_PATH, as ONNX Runtime's TensorRT provider finds the real one, it puts the
    engines of a model in a folder of that TensorRT, so an upgrade (JetPack) builds new ones
    where the old could not be loaded."""
    lib = tmp_path / "lib"
    lib.mkdir()
    source = tmp_path / "nvinfer.c"
    source.write_text("int getInferLibVersion(void) { return 100300; }\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib / "libnvinfer.so.10"), str(source)],
                   check=True)
    model = make_tiny_onnx(tmp_path / "m.onnx")
    probe = ("import sys; from harness.agent.runtimes.onnxruntime import TENSORRT, OnnxRuntime, "
             "tensorrt_version; print(tensorrt_version()); print(OnnxRuntime._provider_options("
             "TENSORRT, sys.argv[1], {'tensorrt': {'fp16': True}})['trt_engine_cache_path'])")
    done = subprocess.run([sys.executable, "-c", probe, str(model)], capture_output=True,
                          text=True, cwd=REPO, check=True,
                          env=dict(os.environ, LD_LIBRARY_PATH=str(lib), PYTHONPATH=str(REPO)))
    version, folder = done.stdout.split()
    assert version == "10.3.0"
    assert Path(folder) == tmp_path / "tensorrt" / sha256(model) / "trt10.3.0-fp16"

