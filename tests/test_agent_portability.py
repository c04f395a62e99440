"""The agent ships to devices alone, with old Pythons: check both promises on every file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "harness" / "agent"
AGENT_FILES = sorted(AGENT.rglob("*.py"))


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
    import json
    import subprocess
    import sys

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
