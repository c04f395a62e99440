"""The job server (`agent --serve`) and its client, on both transports.

serve.py is driven over a plain pipe, with no transport at all; then the local transport and the
SSH transport (a real sshd on loopback) meet the same faults (an agent killed, a job past its
timeout, an agent that crashes on import, an interpreter that does not exist) and must say the
same thing about them, only the device's name differing. Every job is a real agent process on
this machine running a real ONNX model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.agent import protocol
from harness.config import DeviceProfile
from harness.errors import UnknownNameError
from harness.transport import transport_for
from harness.transport.base import AgentRun, Transport, agent_bundle
from tests.conftest import REPO, make_tiny_onnx
from tests.sshd import SSHServer, alive, children_of, processes_matching, sshd
from tests.test_agent_portability import micro_version, old_python

__all__ = ["sshd"]  # used by name below

# A job that runs for about a minute on the tiny model unless it is killed first.
LONG: dict[str, Any] = {"min_iterations": 10**7, "max_duration_s": 60.0}
# This machine's system Python, without the venv: a device whose python3 lacks numpy.
BARE_PYTHON = Path("/usr/bin/python3")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             ) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# serve.py and its messages, without a transport ----------------------------------------------


def test_serve_messages_round_trip_and_malformed_ones_are_named() -> None:
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "j", "check": True}
    assert protocol.read_serve_request(protocol.serve_request(job)) == job
    assert protocol.read_serve_response(protocol.serve_started(42)) == {
        "event": "started", "pid": 42}
    assert protocol.read_serve_response(protocol.serve_ended(-9, "out", "err")) == {
        "event": "ended", "returncode": -9, "stdout": "out", "stderr": "err"}
    assert protocol.read_serve_response(protocol.serve_refused("no")) == {
        "event": "refused", "reason": "no"}
    for line in (protocol.serve_request(job), protocol.serve_started(1)):
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # one message, one line
    bad_requests = {
        b"{not json": "not a JSON object",
        b"[1, 2]": "not a JSON object",
        json.dumps({"protocol_version": 0, "job": job}).encode(): "protocol_version 0",
        json.dumps({"protocol_version": protocol.PROTOCOL_VERSION}).encode(): "'job'",
    }
    for line, why in bad_requests.items():
        with pytest.raises(protocol.ProtocolError, match=why):
            protocol.read_serve_request(line)
    bad_answers = {
        b'{"pid": 3}': "unknown event None",
        b'{"event": "started", "pid": "3"}': "'pid' as int",
        b'{"event": "started", "pid": true}': "'pid' as int",
        b'{"event": "ended", "returncode": 0, "stdout": ""}': "'stderr' as str",
        b"garbage": "not a JSON object",
    }
    for line, why in bad_answers.items():
        with pytest.raises(protocol.ProtocolError, match=why):
            protocol.read_serve_response(line)


class ServeProcess:
    """`python -m harness.agent --serve` on plain pipes, read one message at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.agent", "--serve"],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return protocol.read_serve_response(self.proc.stdout.readline())

    def close(self) -> int:
        """Close its stdin, as a dropped connection would; its exit status."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def serve_process() -> Iterator[ServeProcess]:
    server = ServeProcess()
    yield server
    server.close()


def test_job_server_refuses_bad_requests_and_runs_each_job_in_its_own_agent(
        serve_process: ServeProcess) -> None:
    serve_process.send(b"{not json\n")
    refused = serve_process.answer()
    assert refused["event"] == "refused" and "not a JSON object" in refused["reason"]
    serve_process.send(json.dumps({"protocol_version": 0, "job": {}}).encode() + b"\n")
    assert "protocol_version 0" in serve_process.answer()["reason"]
    pids = []
    for job_id in ("check-1", "check-2"):
        serve_process.send(protocol.serve_request(
            {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": job_id, "check": True,
             "device_kind": "linux"}))
        started = serve_process.answer()
        assert started["event"] == "started"
        ended = serve_process.answer()
        assert ended["event"] == "ended" and ended["returncode"] == 0, ended["stderr"]
        result = protocol.loads(ended["stdout"])
        assert result["job_id"] == job_id and result["status"] == "ok"
        assert result["check"]["python"]["executable"] == sys.executable
        pids.append(started["pid"])
    assert pids[0] != pids[1] and pids[0] != serve_process.proc.pid
    assert serve_process.close() == 0


def test_end_of_input_kills_the_job_in_flight(serve_process: ServeProcess,
                                              tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=21)
    serve_process.send(protocol.serve_request({
        "protocol_version": protocol.PROTOCOL_VERSION, "job_id": "long",
        "model": {"path": str(model), "format": "onnx"}, "runtime": "onnxruntime",
        "options": {"threads": 1}, "settings": dict(protocol.QUICK_SETTINGS, **LONG),
        "device_kind": "linux"}))
    agent = serve_process.answer()["pid"]
    assert alive(agent)
    t0 = time.monotonic()
    assert serve_process.close() == 0
    assert time.monotonic() - t0 < 20  # not the minute the job would have run
    wait_for(lambda: not alive(agent), what="the agent to be killed")


# the same client on both transports ------------------------------------------------------------


@dataclasses.dataclass
class Device:
    """A transport under test, and how to find its processes from the outside."""

    name: str
    where: str  # how messages name the device
    profile: DeviceProfile
    cache: Path  # SSH: the device's cache directory (unused for local)

    def transport(self, **changes: Any) -> Transport:
        return transport_for(dataclasses.replace(self.profile, **changes))

    def servers(self) -> list[int]:
        if self.name == "local":
            return [pid for pid in children_of(os.getpid())
                    if cmdline(pid)[-3:] == ["-m", "harness.agent", "--serve"]]
        return [pid for pid in processes_matching(f"{self.cache}/{agent_bundle()[1]}")
                if cmdline(pid)[-1:] == ["--serve"]]

    def agents(self) -> list[int]:
        return [pid for server in self.servers() for pid in children_of(server)
                if "--serve" not in cmdline(pid)]

    def message(self, run: AgentRun) -> str:
        """The error message of a failed run, without the stderr tail that may follow it."""
        assert run.result["status"] == "failed", run.result
        message: str = run.result["error"]["message"]
        return message.split("; agent stderr ends with: ")[0]


@pytest.fixture(params=["local", "ssh"])
def device(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Device]:
    cache = tmp_path / "cache"
    if request.param == "local":
        dev = Device("local", "localhost", DeviceProfile(name="local", python=sys.executable),
                     cache)
    else:
        server: SSHServer = request.getfixturevalue("sshd")
        dev = Device("ssh", f"{server.user}@127.0.0.1:{server.port}",
                     server.profile(cache_dir=str(cache)), cache)
    yield dev
    for pid in dev.agents():  # whatever a failing test left running
        os.kill(pid, signal.SIGKILL)


def job_for(transport: Transport, model: Path, job_id: str = "j", **settings: Any,
            ) -> dict[str, Any]:
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    return {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "job_id": job_id,
        "model": {"path": transport.stage(model, sha), "format": "onnx"},
        "runtime": "onnxruntime",
        "options": {"threads": 1},
        "settings": dict(protocol.QUICK_SETTINGS, **settings),
        "device_kind": "linux",
    }


def test_local_transport_runs_jobs_through_one_job_server(tmp_path: Path) -> None:
    """serve.py without SSH: one server for the transport's life, a fresh agent per job."""
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=22)
    local = Device("local", "localhost", DeviceProfile(name="local"), tmp_path)
    assert local.servers() == []
    with local.transport() as transport:
        first = transport.run_agent(job_for(transport, model, "a"), 60)
        (server,) = local.servers()
        assert local.agents() == []  # the job's agent ended with its job
        second = transport.run_agent(job_for(transport, model, "b"), 60)
        assert local.servers() == [server]
        assert transport.bytes_pushed == 0  # files are used in place
    assert first.result["status"] == second.result["status"] == "ok", first.result["error"]
    assert first.result["job_id"] == "a" and second.result["job_id"] == "b"
    assert not alive(server)


def test_local_agents_get_the_environment_edgebench_started_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bench --suite` builds in its own process before it measures, and the build's torch,
    TensorFlow and LiteRT leave variables in that process's environment (KMP_DUPLICATE_LIB_OK,
    TF_CPP_MIN_LOG_LEVEL, TORCHINDUCTOR_CACHE_DIR); `bench --model` builds nothing. Inherited,
    they gave the agents of a suite another environment than those of one model file, and with
    it another heap: ResNet18's peak RSS in ONNX Runtime went from 217.7 to 197.4 MiB. An agent
    gets the environment edgebench was started with, whatever was added since."""
    from harness import LAUNCH_ENVIRONMENT

    model = make_tiny_onnx(tmp_path / "m.onnx", seed=24)
    monkeypatch.setenv("EDGEBENCH_TEST_LEFT_BY_A_BUILD", "1")
    local = Device("local", "localhost", DeviceProfile(name="local"), tmp_path)
    with local.transport() as transport:
        box: dict[str, AgentRun] = {}
        job = job_for(transport, model, **LONG)
        thread = threading.Thread(target=lambda: box.update(run=transport.run_agent(job, 60)))
        thread.start()
        (agent,) = wait_for(local.agents, what="the agent to start")
        raw = Path(f"/proc/{agent}/environ").read_bytes()
        os.kill(agent, signal.SIGKILL)
        thread.join(60)
    environ = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)
    assert "EDGEBENCH_TEST_LEFT_BY_A_BUILD" not in environ
    assert environ == dict(LAUNCH_ENVIRONMENT)
    assert box["run"].result["error"]["kind"] == "agent_crashed"  # the one killed above


def test_killed_agent_reads_the_same_on_both_transports(device: Device, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=23)
    with device.transport() as transport:
        job = job_for(transport, model, **LONG)
        box: dict[str, AgentRun] = {}
        thread = threading.Thread(target=lambda: box.update(run=transport.run_agent(job, 60)))
        thread.start()
        (agent,) = wait_for(device.agents, what="the agent to start")
        os.kill(agent, signal.SIGKILL)
        thread.join(60)
        after = transport.run_agent(job_for(transport, model, "next"), 60)
    run = box["run"]
    assert run.result["error"]["kind"] == "agent_crashed"
    assert device.message(run) == f"agent on {device.where} was killed by signal 9 (SIGKILL)"
    assert after.result["status"] == "ok", after.result["error"]


def test_timeout_reads_the_same_and_the_job_server_lives_on(device: Device,
                                                            tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=24)
    with device.transport() as transport:
        t0 = time.monotonic()
        run = transport.run_agent(job_for(transport, model, **LONG), timeout_s=2.0)
        assert time.monotonic() - t0 < 15
        servers = device.servers()
        wait_for(lambda: not device.agents(), timeout=10, what="the agent to be killed")
        after = transport.run_agent(job_for(transport, model, "next"), 60)
        assert device.servers() == servers  # killing the job left its server running
    assert run.result["error"]["kind"] == "timeout"
    assert device.message(run) == (f"job exceeded its timeout of 2 s on {device.where} and "
                                   "was killed")
    assert after.result["status"] == "ok", after.result["error"]


def test_agent_crash_reads_the_same_on_both_transports(device: Device, tmp_path: Path) -> None:
    """A device Python without numpy: the job server runs (stdlib only), the agent cannot."""
    if not BARE_PYTHON.exists() or subprocess.run([str(BARE_PYTHON), "-c", "import numpy"],
                                                  capture_output=True).returncode == 0:
        pytest.skip(f"needs a python3 without numpy at {BARE_PYTHON}")
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=25)
    with device.transport(python=str(BARE_PYTHON)) as transport:
        run = transport.run_agent(job_for(transport, model), 60)
    assert run.result["error"]["kind"] == "agent_crashed"
    assert device.message(run) == (
        f"agent on {device.where} exited with status 1: ModuleNotFoundError: No module named "
        f"'numpy' (install it for {BARE_PYTHON} on {device.where}, or set the profile's python "
        "to an interpreter that has it)")
    assert "Traceback" in run.stderr_tail  # the agent's own stderr came back with the failure


def test_an_import_error_that_is_no_missing_module_gives_no_install_advice(
        device: Device, tmp_path: Path) -> None:
    """"cannot import name" says a version differs, not that something is not installed: the
    advice to install it is for ModuleNotFoundError alone."""
    import shlex

    broken = tmp_path / "broken" / "numpy"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("from statistics import NoSuchThing\n")
    python = tmp_path / "python-with-a-broken-numpy"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(broken.parent))} "
                      f'exec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=27)
    with device.transport(python=str(python)) as transport:
        run = transport.run_agent(job_for(transport, model), 60)
    assert run.result["error"]["kind"] == "agent_crashed"
    message = device.message(run)
    assert message.startswith(f"agent on {device.where} exited with status 1: ImportError: "
                              "cannot import name 'NoSuchThing' from 'statistics'"), message
    assert "install it" not in message


PYTHON37 = old_python("3.7")


@pytest.mark.skipif(PYTHON37 is None, reason="needs a python3.7 here (pyenv install 3.7)")
def test_a_python_older_than_the_agent_needs_reads_the_same_on_both_transports(
        device: Device, tmp_path: Path) -> None:
    """The Coral Dev Board's Python: the agent's own line, with the interpreter, the device
    and the profile field, where it read "ImportError: cannot import name 'NormalDist' ...
    (install it for ...)"."""
    assert PYTHON37 is not None
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=28)
    with device.transport(python=PYTHON37) as transport:
        run = transport.run_agent(job_for(transport, model), 60)
    assert run.result["error"]["kind"] == "agent_start"
    assert device.message(run) == (
        f"{PYTHON37} on {device.where}: python {micro_version(PYTHON37)} is older than the 3.8 "
        "the agent needs (profile field python: name a Python 3.8 or newer there)")


def test_missing_interpreter_reads_the_same_on_both_transports(device: Device,
                                                               tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=26)
    with device.transport(python="/nonexistent/python3") as transport:
        run = transport.run_agent(job_for(transport, model), 60)
    assert run.result["error"]["kind"] == "agent_start"
    assert device.message(run) == (f"/nonexistent/python3 not found on {device.where} "
                                   "(profile field python)")


def test_unknown_transport_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown transport 'carrier-pigeon'; known: "
                                               "labgrid, local, ssh"):
        transport_for(DeviceProfile(name="x", transport="carrier-pigeon"))
