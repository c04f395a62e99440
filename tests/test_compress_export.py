"""Exports: checker-clean fixed-batch ONNX, TFLite, parity in the agent's runtimes, clear
failures."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from harness.agent.scoring import parity, score
from harness.compress.export import (
    ExportError,
    edgetpu_compile,
    export_onnx,
    export_tflite,
    export_torch,
    input_dtype,
    onnx_versions,
    run_exported,
)
from harness.errors import EdgebenchError
from harness.zoo import build_model
from tests.conftest import REPO


class SvdHead(nn.Module):
    """A model with an op no exporter here supports."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(x.reshape(x.shape[0], 32, 32))[:, :10]


def test_onnx_export_is_clean_fixed_batch_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1)
    path = export_onnx(model, (1, 1, 32, 32), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 32, 32]
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert parity(run_exported(path, "onnx", x), ref)["max_abs_diff"] < 1e-4
    assert input_dtype(path, "onnx") == "float32"


def test_exported_files_do_not_depend_on_where_the_project_lives(tmp_path: Path) -> None:
    """The exporters record where each node was traced from, with absolute paths: the file's
    sha256 (its identity in the store and the device cache) then changed with the clone's
    folder, and the file showed the builder's home folder."""
    import harness

    here = str(Path(harness.__file__).resolve().parent.parent).encode()
    venv = str(Path(torch.__file__).resolve().parent).encode()
    model = build_model("digits_cnn", 10, 1)
    for exporter, name in ((export_onnx, "m.onnx"), (export_torch, "m.pt2")):
        data = exporter(model, (1, 1, 32, 32), tmp_path / name).read_bytes()
        if name.endswith(".pt2"):  # a zip: look inside its (compressed) members
            with zipfile.ZipFile(tmp_path / name) as z:
                data = b"".join(z.read(n) for n in z.namelist())
        assert here not in data and venv not in data, name
    # the rest of the node metadata (scopes, class names: what profiles show) stays
    node = onnx.load(str(tmp_path / "m.onnx")).graph.node[0]
    assert "pkg.torch.onnx.name_scopes" in {p.key for p in node.metadata_props}


def test_tflite_export_keeps_nchw_and_matches_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("digits_cnn", 10, 1)
    path = export_tflite(model, (1, 1, 32, 32), tmp_path / "m.tflite")
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    result = parity(run_exported(path, "tflite", x), ref)
    assert result["top1_agreement"] == 1.0 and result["max_abs_diff"] < 1e-4
    assert input_dtype(path, "tflite") == "float32"


def test_unsupported_op_names_the_op(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"ONNX export failed: unsupported op aten\._linalg_svd"):
        export_onnx(SvdHead(), (1, 1, 32, 32), tmp_path / "svd.onnx")
    assert not (tmp_path / "svd.onnx").exists()


def test_edgetpu_compiler_absent_is_a_clear_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    compiled, message = edgetpu_compile(tmp_path / "m.tflite")
    assert compiled is None and "edgetpu_compiler is not on the PATH" in message


def test_host_scoring_on_known_logits() -> None:
    logits = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 5, 1, 2, 3, 4]], np.float32)
    labels = np.array([5, 1, 0])
    s = score(logits, labels)
    assert (s["top1"], s["top5"], s["n"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3), 3)
    assert s["top1_low"] < 1 / 3 < s["top1_high"] and s["top1_ties"] == s["top5_ties"] == 0
    p = parity(logits, logits[[0, 1, 0]])
    assert p["top1_agreement"] == pytest.approx(2 / 3) and p["max_abs_diff"] == 4.0


def test_host_runs_fail_clearly(tmp_path: Path, tiny_onnx: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ExportError, match="corrupt.onnx does not run in its runtime"):
        run_exported(corrupt, "onnx", x)
    with pytest.raises(EdgebenchError, match="no host runtime for format 'engine'"):
        run_exported(tmp_path / "m.engine", "engine", x)
    # the model wants 1x1x8x8: the engine's error, on one line, names the file
    with pytest.raises(ExportError, match="tiny.onnx does not run in its runtime: .*"):
        run_exported(tiny_onnx, "onnx", np.zeros((2, 1, 4, 4), np.float32))


def test_export_parity_check_refuses_a_file_that_computes_something_else() -> None:
    from harness.compress.export import check_export_parity

    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32) * 20
    check_export_parity(Path("ok.onnx"), ref + 1e-4, ref)  # float reordering is fine
    with pytest.raises(ExportError, match="bad.onnx disagrees with its PyTorch model"):
        check_export_parity(Path("bad.onnx"), ref + 0.5, ref)
    with pytest.raises(ExportError):
        check_export_parity(Path("bad.onnx"), ref[:, :5], ref)


def test_edgetpu_compiler_output_and_report_are_kept(tmp_path: Path, monkeypatch) -> None:
    # The real compiler cannot be installed here; this stand-in behaves like it on the command
    # line: -s prints a summary, -o names the output folder, <stem>_edgetpu.tflite is written.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "edgetpu_compiler"
    fake.write_text('#!/bin/sh\nout="$3"; model="$4"; name=$(basename "$model" .tflite)\n'
                    'cp "$model" "$out/${name}_edgetpu.tflite"\n'
                    'echo "Number of operations that will run on Edge TPU: 6"\n'
                    'echo "Number of operations that will run on CPU: 0"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"tflite")
    compiled, report = edgetpu_compile(model)
    assert compiled == tmp_path / "m_edgetpu.tflite" and compiled.read_bytes() == b"tflite"
    assert "will run on Edge TPU: 6" in report


def test_litert_start_up_chatter_is_kept_off_the_console(tmp_path: Path) -> None:
    """The first TFLite export and interpreter printed TensorFlow's absl and oneDNN notices,
    torch's pytree warning and the XNNPACK line into the build's progress; they are dropped in a
    fresh process (where they appear), and anything else native code prints still shows."""
    code = (
        "import os, sys\n"
        "import numpy as np\n"
        "from pathlib import Path\n"
        "from harness.compress import export\n"
        "from harness.zoo import build_model\n"
        "p = export.export_tflite(build_model('digits_cnn', 10, 1), (1, 1, 32, 32),\n"
        f"                         Path({str(tmp_path / 'm.tflite')!r}))\n"
        "export.run_exported(p, 'tflite', np.zeros((1, 1, 32, 32), np.float32))\n"
        "with export._without_native_chatter():\n"
        "    os.write(2, b'a native warning about the model\\n')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr
    for chatter in ("absl::InitializeLog", "oneDNN", "is an Enum subclass", "XNNPACK delegate"):
        assert chatter not in proc.stderr, proc.stderr
    assert "a native warning about the model" in proc.stderr


class _Pooled(nn.Module):
    """A conv net ending in global average pooling, as every torchvision classifier does: the
    pooling is a ReduceMean, whose axes moved from an attribute to an input at opset 18."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _imports(path: Path) -> dict[str, int]:
    return {o.domain: o.version for o in onnx.load(str(path)).opset_import}


def test_onnx_files_import_only_their_opsets_at_the_lowest_ir_version(tmp_path: Path) -> None:
    """Found by an audit: the exporter's files said IR 10, which the onnxruntime 1.12 to 1.16 of
    JetPack 5 refuse ("Unsupported model IR version: 10, max supported IR version: 8"), though
    opset 18 needs IR 8 only (onnx 1.13 brought both)."""
    path = export_onnx(_Pooled(), (1, 1, 8, 8), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert _imports(path) == {"": 18}
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(list(proto.opset_import)) == 8
    assert onnx_versions(path) == {"opset": 18, "ir_version": 8}
    onnx.checker.check_model(proto, full_check=True)


def test_onnx_at_opset_17_loads_at_ir_8_and_computes_what_opset_18_does(tmp_path: Path) -> None:
    """torch's exporter asked for opset 17 wrote 18 all the same for a model with a ReduceMean,
    saying so only in a log line; onnx's converter, run on the optimized file, reaches 17."""
    import onnxruntime as ort

    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    model = _Pooled()
    at_18 = export_onnx(model, (1, 1, 8, 8), tmp_path / "m18.onnx")
    at_17 = export_onnx(model, (1, 1, 8, 8), tmp_path / "m17.onnx", opset=17)
    assert _imports(at_17) == {"": 17} and onnx_versions(at_17) == {"opset": 17, "ir_version": 8}
    assert "ReduceMean" in {n.op_type for n in onnx.load(str(at_17)).graph.node}
    ort.InferenceSession(str(at_17), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(run_exported(at_17, "onnx", x), run_exported(at_18, "onnx", x))


def test_an_op_below_whose_opset_onnx_cannot_go_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"ONNX export failed: onnx's version converter cannot "
                       r"take torch's opset 18 export down to opset 17: .*Mish"):
        export_onnx(nn.Mish(), (1, 1, 8, 8), tmp_path / "mish.onnx", opset=17)
    assert not (tmp_path / "mish.onnx").exists()


def test_finishing_keeps_the_opsets_a_subgraph_uses_and_drops_the_rest(tmp_path: Path) -> None:
    """onnxruntime.quantization lists opsets no node uses (ai.onnx.ml 5, com.microsoft ...),
    which an onnxruntime that does not know them refuses, used or not; one a node in a branch
    of an If uses is no less used."""
    from onnx import TensorProto, helper

    from harness.compress.export import finish_onnx

    def branch(name: str) -> onnx.GraphProto:
        node = helper.make_node("Binarizer", ["x"], [f"{name}_y"], domain="ai.onnx.ml")
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(
            f"{name}_y", TensorProto.FLOAT, [2])])

    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("a"), else_branch=branch("b"))],
        "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3),
        helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("ai.onnx.training", 1)])
    model.ir_version = 10
    path = tmp_path / "if.onnx"
    onnx.save(model, str(path))
    finish_onnx(path)
    assert _imports(path) == {"": 17, "ai.onnx.ml": 3}
    assert onnx.load(str(path)).ir_version == 8
