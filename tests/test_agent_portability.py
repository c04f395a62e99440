"""The agent ships to devices alone, with old Pythons: check both promises on every file."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "harness" / "agent"
AGENT_FILES = sorted(AGENT.rglob("*.py"))


def old_python(version: str) -> str | None:
    """An interpreter of `version` ("3.7") on this machine (pythonX.Y, or pyenv's), if any."""
    found = [shutil.which(f"python{version}"), *sorted(glob.glob(os.path.expanduser(
        f"~/.pyenv/versions/{version}.*/bin/python{version}")))]
    for path in filter(None, found):
        try:
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        if out.strip() == version:
            return path
    return None


def micro_version(python: str) -> str:
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_there_are_agent_files() -> None:
    assert len(AGENT_FILES) >= 5


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(AGENT)))
def test_agent_file_parses_as_python_38(path: Path) -> None:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


@pytest.mark.parametrize("path", AGENT_FILES, ids=lambda p: str(p.relative_to(AGENT)))
def test_agent_imports_nothing_else_from_harness(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        assert not any(n == "harness" or n.startswith("harness.") for n in names), (
            f"{path.name}:{node.lineno} imports {names}; the agent must stay self-contained"
        )


def test_agent_bundle_runs_without_the_rest_of_harness(tmp_path: Path) -> None:
    """The zip pushed to devices answers a check job from a folder where harness is absent."""
    from harness.transport.base import agent_bundle

    data, sha = agent_bundle()
    assert agent_bundle()[1] == sha  # deterministic: the cache key only changes with the code
    bundle = tmp_path / f"{sha}.pyz"
    bundle.write_bytes(data)
    from harness.agent import protocol

    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "check", "check": True}
    proc = subprocess.run([sys.executable, "-I", str(bundle)], input=json.dumps(job),
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    result = json.loads(proc.stdout)
    assert result["status"] == "ok", proc.stderr
    assert result["check"]["runtimes"]["onnxruntime"]["available"] is True


def test_the_oldest_python_the_agent_runs_on_is_3_8() -> None:
    from harness.agent.__main__ import PYTHON_TOO_OLD, python_too_old
    from harness.transport import jobserver

    assert python_too_old((3, 7, 16)) == "python 3.7.16 is older than the 3.8 the agent needs"
    assert python_too_old((2, 7, 18)) == "python 2.7.18 is older than the 3.8 the agent needs"
    assert python_too_old((3, 8, 0)) is None and python_too_old((3, 13, 1)) is None
    assert PYTHON_TOO_OLD == jobserver.PYTHON_TOO_OLD  # the host reads the agent's status
    # the zip's entry, for Pythons that cannot read the agent, says it in the same words
    from harness.transport.base import ZIP_MAIN

    assert f"sys.exit({PYTHON_TOO_OLD})" in ZIP_MAIN
    assert "is older than the 3.8 the agent needs" in ZIP_MAIN


@pytest.mark.parametrize("version", ["2.7", "3.6", "3.7"])
def test_an_older_python_is_told_in_one_line_before_the_agent_fails(tmp_path: Path,
                                                                    version: str) -> None:
    """A measurement job on a real older interpreter: the agent (or, below 3.7, which cannot
    read its files, the zip's own entry) says why in one line and exits PYTHON_TOO_OLD, where
    3.7 crashed on `statistics.NormalDist` and 3.6 on `from __future__ import annotations`. A
    check job on 3.7 still answers, saying the same."""
    python = old_python(version)
    if python is None:
        pytest.skip(f"needs a python{version} here (pyenv install {version})")
    from harness.agent import protocol
    from harness.agent.__main__ import PYTHON_TOO_OLD
    from harness.transport.base import agent_bundle

    bundle = tmp_path / "agent.pyz"
    bundle.write_bytes(agent_bundle()[0])
    said = f"python {micro_version(python)} is older than the 3.8 the agent needs"
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "j", "runtime": "onnxruntime",
           "model": {"path": str(tmp_path / "m.onnx"), "format": "onnx"}}
    proc = subprocess.run([python, str(bundle)], input=json.dumps(job), capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (PYTHON_TOO_OLD, "", said + "\n")
    if version != "3.7":
        return
    check = dict(job, check=True)
    proc = subprocess.run([python, str(bundle)], input=json.dumps(check), capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    info = json.loads(proc.stdout)["check"]
    assert info["python"]["too_old"] == said
    runtimes = info["runtimes"]
    assert runtimes.pop("python") == {"available": False, "reason": said}
    if "numpy" in runtimes:  # that Python has no numpy: said as on any Python
        assert list(runtimes) == ["numpy"]
    else:  # installed or not, no runtime can be driven there
        assert runtimes == {name: {"available": False, "reason": said}
                            for name in ("onnxruntime", "tflite", "torch")}
