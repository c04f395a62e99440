"""Shared fixtures: tiny real models (built here, nothing downloaded), a scratch store, the CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# A test suite started in the background by a script (`make test &`) inherits SIGINT ignored, and
# so does every command a test runs; edgebench rightly keeps an ignored SIGINT ignored, and the
# tests that stop a bench or build with Ctrl-C then waited for it to finish. Their commands get
# the default: a handler of this process is reset to the default in a child it executes.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
EDGEBENCH = [sys.executable, "-m", "harness.cli"]


def loaded_after_import(modules: str, watched: tuple[str, ...]) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after `import {modules}`: for the
    layering rules (who may import pandas, compare, ...)."""
    code = (f"import sys, {modules}\n"
            f"print(','.join(sorted(m for m in {watched!r} if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=REPO)
    return [m for m in proc.stdout.strip().split(",") if m]


def make_tiny_onnx(path: Path, input_shape: tuple[int, ...] = (1, 1, 8, 8), classes: int = 10,
                   seed: int = 0) -> Path:
    """A real ONNX classifier (flatten + dense + relu + dense), made with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = int(np.prod(input_shape[1:]))
    w1 = numpy_helper.from_array(rng.standard_normal((features, 32)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, classes)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Flatten", ["x"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [input_shape[0], classes])],
        initializer=[w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    # a GPU machine's own Python (scripts/gpu-check.sh) may have onnxruntime but not onnx
    pytest.importorskip("onnx")
    return make_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real TFLite model converted from PyTorch by litert-torch."""
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 10),
    ).eval()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    litert_torch.convert(model, (torch.randn(1, 1, 8, 8),)).export(str(path))
    return path


def tiny_torch_module(seed: int = 0) -> object:
    """The same small conv net as `tiny_tflite`, as a PyTorch module."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 10),
    ).eval()


@pytest.fixture(scope="session")
def tiny_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `torch.export` program (`.pt2`) of `tiny_torch_module`, by edgebench's exporter."""
    pytest.importorskip("torch")
    from harness.compress.export import export_torch

    path = tmp_path_factory.mktemp("pt2") / "tiny.pt2"
    return export_torch(tiny_torch_module(), (1, 1, 8, 8), path)  # type: ignore[arg-type]


def run_agent_job(job: dict[str, object], timeout: float = 120) -> dict[str, object]:
    """One job through a fresh agent process, as the job server runs it."""
    import json

    proc = subprocess.run([sys.executable, "-m", "harness.agent"], input=json.dumps(job),
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)
    assert proc.stdout, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    result["_stderr"] = proc.stderr
    return result


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
    """Run `edgebench ARGS` as a user would, in a subprocess."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([*EDGEBENCH, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def rows(db: Path, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


def wait_for_sessions(db: Path, device: str, count: int, proc: subprocess.Popen[str],
                      timeout: float = 240) -> None:
    """Wait until `count` sessions of `device` are stored by the command `proc` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the command ended early: {proc.communicate()}")
        try:
            found = rows(db, "SELECT COUNT(*) FROM sessions JOIN results USING (job_id) "
                             "WHERE device = ? AND sessions.status = 'ok'", device)[0][0]
        except sqlite3.Error:
            found = 0
        if found >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {count} sessions of {device} after {timeout} s")


def once_a_session_is_stored(db: str) -> str:
    """Python source defining `ready()` for `interrupt_inside_gc`: true once the database `db`
    (an expression over `args`) holds a session, looked at no more than every 0.1 s."""
    return f"""
last = [0.0]


def ready():
    if time.monotonic() - last[0] < 0.1:
        return False
    last[0] = time.monotonic()
    try:
        conn = sqlite3.connect(f"file:{{{db}}}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] >= 1
        finally:
            conn.close()
    except sqlite3.Error:
        return False
"""


def interrupt_inside_gc(ready: str, argv: str) -> str:
    """Python source that runs `edgebench` with `sys.argv = ARGV` (an expression over `args`,
    the script's own arguments) and a gc callback that, once `ready()` (defined by the source
    `ready`, which reads `args` too) is true in the main thread, sends the process SIGINT and
    lets its handler run inside the callback, where Python only prints the KeyboardInterrupt
    (as in JAX's gc callback and importlib's module-lock weakref callback)."""
    return f"""
import gc, os, signal, sqlite3, sys, threading, time
from pathlib import Path

args = sys.argv[1:]  # sys.argv becomes the command's below
{ready}
fired = []


def interrupt_inside_gc(phase, info):
    if fired or threading.current_thread() is not threading.main_thread() or not ready():
        return
    fired.append(True)
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(3):  # the handler runs here, inside the callback
        pass


gc.callbacks.append(interrupt_inside_gc)
sys.argv = {argv}
from harness.entry import main

sys.exit(main())
"""
