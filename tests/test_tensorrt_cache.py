"""Where ONNX Runtime's TensorRT provider keeps a model's engines: one folder per model content and
engine settings, so that no model is measured with another's engine.

ORT-TRT names an engine after the model's path and graph structure, not its weights. TensorRT
cannot run here, so these check the provider options the agent hands to ONNX Runtime (the same
dict the result records as `runtime_options.provider_options`), computed from real ONNX files.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import onnx

from harness.agent.runtimes.onnxruntime import TENSORRT, OnnxRuntime
from tests.conftest import make_tiny_onnx

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
