"""The agent on an SSH device runs from bytecode (`harness/agent/unpack.py`), through real sshd.

zipimport writes no bytecode, so an agent run from its zip compiled its own modules in every
session. The job server unpacks the zip once per agent and Python into `<cache>/<sha256>.d` and
compiles it there; these tests look at that folder on the "device" (this machine, through the
loopback sshd of tests/sshd.py) and at what the agent says about itself in a check job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from harness.agent import protocol
from harness.transport import ssh as ssh_module
from harness.transport.base import AGENT_DIR, agent_bundle
from harness.transport.ssh import SSHTransport
from tests.conftest import make_tiny_onnx
from tests.sshd import SSHServer, sshd

pytestmark = pytest.mark.ssh
__all__ = ["sshd"]  # fixture used by name below

CHECK = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "check", "check": True,
         "device_kind": "linux"}


def python38() -> str | None:
    """A Python 3.8 interpreter (the oldest the agent supports), not a shim that may refuse."""
    import glob

    found = [shutil.which("python3.8"), *sorted(glob.glob(os.path.expanduser(
        "~/.pyenv/versions/3.8*/bin/python3.8")))]
    for path in filter(None, found):
        try:
            out = subprocess.run([path, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        if out.strip() == "(3, 8)":
            return path
    return None


PYTHON38 = python38()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def agent_check(transport: SSHTransport) -> dict[str, Any]:
    run = transport.run_agent(dict(CHECK), 60)
    assert run.result["status"] == "ok", run.result.get("error")
    return dict(run.result["check"]["agent"])


def measure(transport: SSHTransport, model: Path) -> dict[str, Any]:
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "m",
           "model": {"path": transport.stage(model, sha256(model)), "format": "onnx"},
           "runtime": "onnxruntime", "options": {"threads": 1},
           "settings": dict(protocol.QUICK_SETTINGS), "device_kind": "linux"}
    result: dict[str, Any] = transport.run_agent(job, 60).result
    assert result["status"] == "ok", result.get("error")
    return result


def bytecode_files(folder: Path) -> dict[str, int]:
    """Each .pyc under `folder` with its modification time (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.pyc")}


def test_a_session_runs_the_agent_from_its_bytecode_compiled_once(sshd: SSHServer,
                                                                  tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    sha = agent_bundle()[1]
    folder = cache / f"{sha}.d"
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=21)
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        measure(transport, model)
        assert agent_check(transport) == {"path": str(folder), "bytecode": True}
    # bytecode for every module of the agent, for this Python
    for source in AGENT_DIR.rglob("*.py"):
        unpacked = folder / "edgebench_agent" / source.relative_to(AGENT_DIR)
        assert unpacked.read_bytes() == source.read_bytes()
        assert Path(importlib.util.cache_from_source(str(unpacked))).is_file(), unpacked
    compiled = bytecode_files(folder)
    # nothing else in the cache: no temporary folder left behind
    assert sorted(p.name for p in cache.iterdir()) == sorted([sha, f"{sha}.d", sha256(model)])

    # A second connection (a new job server) neither unpacks nor compiles again.
    inode = folder.stat().st_ino
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as again:
        measure(again, model)
        assert agent_check(again)["bytecode"] is True
    assert folder.stat().st_ino == inode
    assert bytecode_files(folder) == compiled


def changed_bundle() -> tuple[bytes, str]:
    """The agent zip with one module changed (as the next version of the agent would be)."""
    data, _ = agent_bundle()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "edgebench_agent/protocol.py":
                body += b"\nCHANGED_BY_THE_TEST = True\n"
            dst.writestr(info, body)
    changed = out.getvalue()
    return changed, hashlib.sha256(changed).hexdigest()


def test_a_changed_agent_gets_a_folder_of_its_own(sshd: SSHServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    old_sha = agent_bundle()[1]
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        assert agent_check(transport)["path"] == str(cache / f"{old_sha}.d")
    changed, new_sha = changed_bundle()
    monkeypatch.setattr(ssh_module, "agent_bundle", lambda: (changed, new_sha))
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        assert agent_check(transport) == {"path": str(cache / f"{new_sha}.d"), "bytecode": True}
    assert b"CHANGED_BY_THE_TEST" in (cache / f"{new_sha}.d/edgebench_agent/protocol.py"
                                      ).read_bytes()
    assert b"CHANGED_BY_THE_TEST" not in (cache / f"{old_sha}.d/edgebench_agent/protocol.py"
                                          ).read_bytes()


def test_a_file_changed_in_place_on_the_device_is_not_run(sshd: SSHServer, tmp_path: Path,
                                                          ) -> None:
    """As for the zip (hashed once per connection), what runs is what the host pushed."""
    cache = tmp_path / "cache"
    sha = agent_bundle()[1]
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        agent_check(transport)
    changed = cache / f"{sha}.d" / "edgebench_agent" / "probes.py"
    changed.write_text("raise SystemExit('edited on the device')\n")
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        assert agent_check(transport)["bytecode"] is True
    assert changed.read_bytes() == (AGENT_DIR / "probes.py").read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == sorted([sha, f"{sha}.d"])


def test_where_the_folder_cannot_be_made_jobs_run_from_the_zip(sshd: SSHServer, tmp_path: Path,
                                                               ) -> None:
    """A device where unpacking fails still measures, as before, and says why it is slower."""
    cache = tmp_path / "cache"
    cache.mkdir()
    sha = agent_bundle()[1]
    (cache / f"{sha}.d").write_text("a file where the folder would go")
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=22)
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        measure(transport, model)
        agent = agent_check(transport)
    assert agent["path"] == str(cache / sha) and agent["bytecode"] is False
    assert "cannot unpack the agent" in agent["from_zip_because"]
    assert sorted(p.name for p in cache.iterdir()) == sorted([sha, f"{sha}.d", sha256(model)])


@pytest.mark.skipif(PYTHON38 is None, reason="needs python3.8 here (pyenv install 3.8)")
def test_a_second_python_adds_its_own_bytecode_to_the_folder(sshd: SSHServer, tmp_path: Path,
                                                             ) -> None:
    """Bytecode is per Python version: a profile with another interpreter compiles for it too,
    and the oldest Python the agent supports can run the unpacking."""
    cache = tmp_path / "cache"
    folder = cache / f"{agent_bundle()[1]}.d"
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        agent_check(transport)
    with SSHTransport(sshd.profile(cache_dir=str(cache), python=PYTHON38)) as old:
        assert agent_check(old) == {"path": str(folder), "bytecode": True}
    tags = {p.name.split(".")[1] for p in (folder / "edgebench_agent" / "__pycache__").iterdir()}
    assert tags == {sys.implementation.cache_tag, "cpython-38"}


def test_servers_starting_at_once_share_one_folder(tmp_path: Path) -> None:
    """Hosts (or connections) that start at once: one folder, complete, nothing left over."""
    data, sha = agent_bundle()
    bundle = tmp_path / sha
    bundle.write_bytes(data)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from edgebench_agent import unpack; "
            "print(unpack.prepare(sys.argv[1])[0])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(bundle)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    answers = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in answers] == [f"{bundle}.d"] * 6, answers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([sha, f"{sha}.d"])
    with zipfile.ZipFile(bundle) as zf:
        for name in zf.namelist():
            assert (tmp_path / f"{sha}.d" / name).read_bytes() == zf.read(name)
