"""The SSH transport against a real OpenSSH server on loopback (tests/sshd.py).

Everything here goes through sshd, SFTP and a real agent process running a real ONNX model; the
"device" is this machine, so its Python has numpy and onnxruntime.
"""

from __future__ import annotations

import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.agent import protocol
from harness.errors import AccessError, TransportError
from harness.transport.base import agent_bundle, transport_for
from harness.transport.ssh import SSHTransport
from tests.conftest import make_tiny_onnx
from tests.sshd import SSHServer, alive, free_port, fresh_sshd, keygen, processes_matching, sshd

pytestmark = pytest.mark.ssh
__all__ = ["sshd", "fresh_sshd"]  # fixtures used by name below

# A job that runs for about a minute on the tiny model unless it is killed first.
LONG: dict[str, Any] = {"min_iterations": 10**7, "max_duration_s": 60.0}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job_for(transport: SSHTransport, model: Path, job_id: str = "j1", **settings: Any,
            ) -> dict[str, Any]:
    return {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "job_id": job_id,
        "model": {"path": transport.stage(model, sha256(model)), "format": "onnx"},
        "runtime": "onnxruntime",
        "options": {"threads": 1},
        "settings": dict(protocol.QUICK_SETTINGS, **settings),
        "device_kind": "linux",
    }


def run_in_thread(fn: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(value=fn()), daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def agent_pids(under: Path) -> list[int]:
    """Agent processes run from the bundle pushed under `under` (not the shells around them,
    nor the job server that starts them)."""
    sha = agent_bundle()[1]
    found = []
    for pid in processes_matching(f"{under}/cache/{sha}"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0] == sys.executable.encode() and b"--serve" not in argv:
            found.append(pid)
    return found


@pytest.fixture(autouse=True)
def no_orphan_agents(tmp_path: Path) -> Any:
    """Whatever a failing test leaves running must not disturb the next one."""
    yield
    for pid in agent_pids(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_stage_and_run_a_real_model(sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    with SSHTransport(sshd.profile()) as transport:
        job = job_for(transport, model)
        cache = Path(transport.cache_dir())
        assert job["model"]["path"] == str(cache / sha256(model))
        assert sha256(Path(job["model"]["path"])) == sha256(model)  # same machine: check the copy
        run = transport.run_agent(job, timeout_s=60)
        second = transport.run_agent(dict(job, job_id="j2"), timeout_s=60)
        agent_bytes = len(agent_bundle()[0])
        assert transport.bytes_pushed == model.stat().st_size + agent_bytes
        assert transport.connects == 1  # both jobs on one connection
    result = run.result
    assert result["status"] == protocol.STATUS_OK, result["error"]
    assert result["latency"]["n"] >= job["settings"]["min_iterations"]
    assert result["fingerprint"]["hostname"] == socket.gethostname()
    assert second.result["status"] == protocol.STATUS_OK
    assert second.result["job_id"] == "j2"
    # nothing but the cache: the agent, its unpacked and compiled folder, the model, no partial
    # uploads left behind
    agent_sha = agent_bundle()[1]
    assert sorted(p.name for p in cache.iterdir()) == sorted([agent_sha, f"{agent_sha}.d",
                                                              sha256(model)])


def test_second_connection_pushes_zero_bytes(sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "again.onnx", seed=3)
    profile = sshd.profile(cache_dir=str(tmp_path / "cache"))
    with SSHTransport(profile) as first:
        assert first.run_agent(job_for(first, model), 60).result["status"] == "ok"
        assert first.bytes_pushed > 0
    with SSHTransport(profile) as second:
        run = second.run_agent(job_for(second, model), 60)
        assert run.result["status"] == "ok"
        assert second.bytes_pushed == 0


def job_servers(under: Path) -> list[int]:
    """The `agent --serve` processes started from the bundle under `under`."""
    return [pid for pid in processes_matching(f"{under}/cache/{agent_bundle()[1]}")
            if b"--serve" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]


def test_one_job_server_per_connection_a_fresh_agent_per_job(sshd: SSHServer,
                                                              tmp_path: Path) -> None:
    """The login shell starts once per connection (the job server); each job is still a fresh
    agent process, its child. Closing the transport ends the server."""
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=14)
    with SSHTransport(sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        first = transport.run_agent(job_for(transport, model), 60)
        (server,) = job_servers(tmp_path)
        assert agent_pids(tmp_path) == []  # the job's agent process has ended with its job
        second = transport.run_agent(job_for(transport, model, job_id="j2"), 60)
        assert job_servers(tmp_path) == [server]
        assert agent_pids(tmp_path) == []
    assert first.result["status"] == second.result["status"] == "ok"
    wait_for(lambda: not job_servers(tmp_path), timeout=10, what="the job server to exit")


def test_a_corrupt_cache_entry_is_not_trusted_by_size_alone(sshd: SSHServer, tmp_path: Path,
                                                           ) -> None:
    """A truncated file under a hash name (an interrupted copy by hand) is pushed again."""
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=4)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / sha256(model)).write_bytes(model.read_bytes()[:100])
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        path = transport.stage(model, sha256(model))
        assert transport.bytes_pushed == model.stat().st_size
    assert sha256(Path(path)) == sha256(model)


def _cache_of_four(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Four models and a cache holding the first as it is, the second of the right size with one
    byte changed in place, the third truncated, and not the fourth."""
    models = [make_tiny_onnx(tmp_path / f"m{k}.onnx", seed=20 + k) for k in range(4)]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / sha256(models[0])).write_bytes(models[0].read_bytes())
    changed = bytearray(models[1].read_bytes())
    changed[-1] ^= 0xFF
    (cache / sha256(models[1])).write_bytes(bytes(changed))
    (cache / sha256(models[2])).write_bytes(models[2].read_bytes()[:100])
    return cache, models


def _exec_counted(transport: SSHTransport) -> list[str]:
    """The remote commands `transport` runs from now on (the real ones, counted)."""
    commands: list[str] = []
    real = transport.conn.exec

    def counted(command: str, *args: Any, **kwargs: Any) -> Any:
        commands.append(command)
        return real(command, *args, **kwargs)

    transport.conn.exec = counted  # type: ignore[method-assign]
    return commands


@pytest.mark.parametrize("coreutils", [True, False], ids=["sha256sum", "device-python"])
def test_prefetch_trusts_only_what_hashes_right_in_one_command(
        sshd: SSHServer, fresh_sshd: SSHServer, tmp_path: Path, coreutils: bool) -> None:
    """A run's files looked at in one go: the one intact copy is trusted, and staging it runs
    nothing more on the device; the one changed in place (right size, other bytes), the
    truncated one and the missing one are pushed, so what is measured is what was built. The
    same where the device has no sha256sum (its Python hashes)."""
    server = sshd
    if not coreutils:
        fresh_sshd.stop()
        fresh_sshd.extra_config = ["SetEnv PATH=/nonexistent"]
        server = fresh_sshd.start()
    cache, models = _cache_of_four(tmp_path)
    with SSHTransport(server.profile(cache_dir=str(cache))) as transport:
        commands = _exec_counted(transport)
        transport.prefetch([(m, sha256(m)) for m in models])
        assert len(commands) == 1  # one command hashed every candidate (and marked it used)
        del commands[:]
        transport.stage(models[0], sha256(models[0]))
        assert commands == [] and transport.bytes_pushed == 0
        for m in models[1:]:
            transport.stage(m, sha256(m))
        assert transport.bytes_pushed == sum(m.stat().st_size for m in models[1:])
        assert transport.run_agent(job_for(transport, models[1]), 60).result["status"] == "ok"
    for m in models:
        assert sha256(cache / sha256(m)) == sha256(m)


def test_stage_refuses_a_file_that_does_not_match_its_hash(sshd: SSHServer, tmp_path: Path,
                                                          ) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=5)
    wrong = "0" * 64
    with SSHTransport(sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        with pytest.raises(TransportError, match="sha256"):
            transport.stage(model, wrong)
    assert not (tmp_path / "cache" / wrong).exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if ".part-" in p.name]


def test_hash_check_without_sha256sum_uses_the_device_python(fresh_sshd: SSHServer,
                                                            tmp_path: Path) -> None:
    """A device without coreutils' sha256sum on PATH: the upload is checked with Python."""
    fresh_sshd.stop()
    fresh_sshd.extra_config = ["SetEnv PATH=/nonexistent"]
    fresh_sshd.start()
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=14)
    with SSHTransport(fresh_sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        assert transport.run_command(["/bin/sh", "-c", "command -v sha256sum"]).returncode != 0
        path = transport.stage(model, sha256(model))
        assert transport.run_agent(job_for(transport, model), 60).result["status"] == "ok"
    assert sha256(Path(path)) == sha256(model)


def test_tilde_cache_dir_is_under_the_remote_home(sshd: SSHServer, tmp_path: Path) -> None:
    name = f".cache/edgebench-test-{os.getpid()}-{time.monotonic_ns()}"
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=6)
    home = Path(os.path.expanduser("~"))
    try:
        with SSHTransport(sshd.profile(cache_dir=f"~/{name}")) as transport:
            path = transport.stage(model, sha256(model))
        assert path == str(home / name / sha256(model))
        assert (home / name).stat().st_mode & 0o777 == 0o700
    finally:
        import shutil

        shutil.rmtree(home / name, ignore_errors=True)


def test_unknown_host_is_refused_with_how_to_trust_it(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    profile = sshd.profile(ssh={"known_hosts": str(known)})
    with pytest.raises(TransportError) as info:
        SSHTransport(profile).open()
    message = str(info.value)
    assert info.value.exit_code == 3
    expected = subprocess.run(["ssh-keygen", "-lf", str(sshd.host_key) + ".pub"],
                              capture_output=True, text=True, check=True).stdout.split()[1]
    assert expected in message  # the fingerprint to compare with the device's
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {known}" in message
    assert "trust_on_first_use" in message
    # Following the advice works.
    scan = subprocess.run(["ssh-keyscan", "-p", str(sshd.port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=20)
    known.write_text(scan.stdout)
    with SSHTransport(profile) as transport:
        assert transport.run_command(["true"]).returncode == 0


def test_trust_on_first_use_records_the_key_and_still_refuses_a_changed_one(
        sshd: SSHServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    with SSHTransport(sshd.profile(ssh={"known_hosts": str(known),
                                        "trust_on_first_use": True})) as transport:
        assert transport.run_command(["true"]).returncode == 0
    # the key trusted is said once, with what to compare it with
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert capsys.readouterr().err.splitlines() == [
        f"edgebench: trusted the host key of [127.0.0.1]:{sshd.port} on first use (ssh-ed25519 "
        f"{fingerprint}) and added it to {known}"]
    host_pub = (sshd.host_key.with_suffix(".pub")).read_text().split()[1]
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text() and host_pub in known.read_text()
    # Now known: a strict profile accepts it.
    with SSHTransport(sshd.profile(ssh={"known_hosts": str(known)})) as transport:
        assert transport.run_command(["true"]).returncode == 0
    assert capsys.readouterr().err == ""
    # A different key for the same host is refused even with trust on first use.
    other = keygen(tmp_path / "other_host")
    known.write_text(f"[127.0.0.1]:{sshd.port} "
                     + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    with pytest.raises(TransportError, match="CHANGED.*ssh-keygen -f"):
        SSHTransport(sshd.profile(ssh={"known_hosts": str(known),
                                       "trust_on_first_use": True})).open()


def test_wrong_key_is_refused_with_a_clear_message(sshd: SSHServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    stranger = keygen(tmp_path / "stranger")
    with pytest.raises(TransportError) as info:
        SSHTransport(sshd.profile(ssh={"key_file": str(stranger)})).open()
    message = str(info.value)
    assert f"{sshd.user}@127.0.0.1:{sshd.port} refused key {stranger}" in message
    assert "authorized_keys" in message


def test_missing_key_file_is_named(sshd: SSHServer, tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="key file .*nope.* does not exist"):
        SSHTransport(sshd.profile(ssh={"key_file": str(tmp_path / "nope")})).open()


def test_unreachable_port_fails_fast_and_clearly(sshd: SSHServer) -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(TransportError) as info:
        SSHTransport(sshd.profile(ssh={"port": port})).open()
    assert time.monotonic() - t0 < 5
    assert f"cannot connect to {sshd.user}@127.0.0.1:{port}" in str(info.value)
    assert info.value.exit_code == 3


def test_jump_host(sshd: SSHServer, tmp_path: Path) -> None:
    """Through a bastion (the same sshd forwarding to itself) to the device."""
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=7)
    profile = sshd.profile(ssh={"jump_host": f"{sshd.user}@127.0.0.1:{sshd.port}"})
    with transport_for(profile) as transport:
        assert isinstance(transport, SSHTransport)
        run = transport.run_agent(job_for(transport, model), 60)
    assert run.result["status"] == "ok", run.result["error"]


def test_hostile_names_stay_names(sshd: SSHServer, tmp_path: Path) -> None:
    """A model called like a shell command, a cache path with spaces and quotes: no injection.

    (The markers would be created by an injected `touch`; `rm -rf ~` is not used on a real home.)
    """
    marker = tmp_path / "INJECTED"
    hostile = f"x; touch {marker}; $(touch {marker}2) `touch {marker}3` '\"; echo"
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=8)
    named = tmp_path / hostile.replace("/", "_")
    named.write_bytes(model.read_bytes())
    cache = tmp_path / "ca che 'dir\"; touch INJECTED4 #"
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        run = transport.run_agent(job_for(transport, named), 60)
        out = transport.run_command(["printf", "%s|", hostile, "$HOME", "*"])
    assert run.result["status"] == "ok", run.result["error"]
    assert out.stdout == f"{hostile}|$HOME|*|"
    assert not list(tmp_path.glob("INJECTED*"))
    assert not list(Path.cwd().glob("INJECTED*")) and not list(cache.glob("INJECTED*"))
    assert (cache / sha256(model)).is_file()


def test_agent_killed_gives_failed_result_and_the_next_job_runs(sshd: SSHServer,
                                                                 tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=9)
    with SSHTransport(sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        job = job_for(transport, model, **LONG)
        thread, box = run_in_thread(lambda: transport.run_agent(job, 60))
        pid = wait_for(lambda: agent_pids(tmp_path), what="the agent to start")[0]
        # into the timed loop: the runtime is loaded, then warm-up takes a few hundredths of a s
        wait_for(lambda: "onnxruntime" in Path(f"/proc/{pid}/maps").read_text(),
                 what="the agent to load onnxruntime")
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        thread.join(30)
        run = box["value"]
        after = transport.run_agent(dict(job_for(transport, model), job_id="next"), 60)
    assert run.result["status"] == "failed"
    assert run.result["error"]["kind"] == "agent_crashed"
    assert "killed by signal 9 (SIGKILL)" in run.result["error"]["message"]
    assert after.result["status"] == "ok"


def test_job_timeout_kills_the_agent_and_the_next_job_runs(sshd: SSHServer, tmp_path: Path,
                                                           ) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=10)
    with SSHTransport(sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        job = job_for(transport, model, **LONG)
        t0 = time.monotonic()
        run = transport.run_agent(job, timeout_s=2.0)
        assert time.monotonic() - t0 < 10
        assert run.result["status"] == "failed"
        assert run.result["error"]["kind"] == "timeout"
        assert "2 s" in run.result["error"]["message"]
        wait_for(lambda: not agent_pids(tmp_path), timeout=10,
                 what="the timed-out agent to be killed")
        after = transport.run_agent(job_for(transport, model, job_id="next"), 60)
        assert after.result["status"] == "ok"
        assert transport.connects == 1


def test_connection_cut_mid_job_then_reconnect(fresh_sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=11)
    with SSHTransport(fresh_sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        job = job_for(transport, model, **LONG)
        thread, box = run_in_thread(lambda: transport.run_agent(job, 60))
        orphan = wait_for(lambda: agent_pids(tmp_path), what="the agent to start")[0]
        time.sleep(0.3)
        fresh_sshd.cut_connections()
        thread.join(30)
        run = box["value"]
        assert run.result["status"] == "failed"
        assert run.result["error"]["kind"] == "connection_lost"
        assert f"127.0.0.1:{fresh_sshd.port}" in run.result["error"]["message"]
        # The next job reconnects, and the agent the lost connection left behind is stopped
        # first, so it cannot disturb the next measurement.
        after = transport.run_agent(job_for(transport, model, job_id="next"), 60)
        assert after.result["status"] == "ok", after.result["error"]
        assert transport.connects == 2
        assert not alive(orphan)


def test_server_stopped_mid_job_then_back(fresh_sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=12)
    with SSHTransport(fresh_sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        job = job_for(transport, model, **LONG)
        thread, box = run_in_thread(lambda: transport.run_agent(job, 60))
        wait_for(lambda: agent_pids(tmp_path), what="the agent to start")
        fresh_sshd.stop()
        thread.join(30)
        assert box["value"].result["error"]["kind"] == "connection_lost"
        down = transport.run_agent(dict(job, job_id="down"), 60)
        assert down.result["status"] == "failed"
        assert down.result["error"]["kind"] == "connection_lost"
        assert "cannot connect" in down.result["error"]["message"]
        fresh_sshd.start()
        back = transport.run_agent(job_for(transport, model, job_id="back"), 60)
        assert back.result["status"] == "ok", back.result["error"]


def test_device_check_through_the_agent(sshd: SSHServer, tmp_path: Path) -> None:
    with SSHTransport(sshd.profile(cache_dir=str(tmp_path / "cache"))) as transport:
        run = transport.run_agent({"protocol_version": protocol.PROTOCOL_VERSION,
                                   "job_id": "check", "check": True, "device_kind": "linux"}, 60)
    info = run.result["check"]
    assert info["runtimes"]["onnxruntime"]["available"] is True
    assert info["python"]["version"] == platform.python_version()
    assert info["fingerprint"]["hostname"] == socket.gethostname()


def test_a_port_that_closes_at_once_is_not_called_silent(sshd: SSHServer) -> None:
    """An sshd at its MaxStartups (or a port that is not SSH's) that drops the connection before
    the banner: said as such, at once, not as a timeout nor as paramiko's "banner" words."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def drop_each() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=drop_each, daemon=True).start()
    with server, pytest.raises(TransportError) as info:
        SSHTransport(sshd.profile(ssh={"port": port, "connect_timeout_s": 5})).open()
    assert str(info.value) == (f"127.0.0.1:{port} closed the connection before saying anything: "
                               "not an SSH port, or its sshd refuses new connections for now "
                               "(MaxStartups)")
    assert info.value.exit_code == 3


def test_an_encrypted_default_key_is_named(sshd: SSHServer, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No ssh.key_file, no agent: paramiko tries ~/.ssh/id_*, and the one it could not open is
    the file to name (not "key file None")."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f",
                    str(home / ".ssh" / "id_ed25519")], check=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AccessError) as info:
        SSHTransport(sshd.profile(ssh={"key_file": None})).open()
    key = home / ".ssh" / "id_ed25519"
    assert str(info.value) == (
        f"{sshd.user}@127.0.0.1:{sshd.port}: the default key {key} is encrypted and no SSH "
        f"agent offered a key the device accepts (the profile has no ssh.key_file); load it into "
        f"ssh-agent (`ssh-add {key}`) or set ssh.key_file to an unencrypted key")


def test_no_key_at_all_says_where_keys_were_looked_for(sshd: SSHServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(AccessError) as info:
        SSHTransport(sshd.profile(ssh={"key_file": None})).open()
    assert str(info.value) == (
        f"{sshd.user}@127.0.0.1:{sshd.port}: no key to log in with: the profile has no "
        "ssh.key_file, no SSH agent runs (SSH_AUTH_SOCK is unset), and "
        f"{tmp_path / 'home' / '.ssh'} has no id_rsa, id_ecdsa or id_ed25519; set ssh.key_file "
        "to the private key whose .pub is in the device's authorized_keys")


def test_a_key_file_that_is_no_private_key_is_named_with_its_field(sshd: SSHServer,
                                                                   tmp_path: Path) -> None:
    where = f"{sshd.user}@127.0.0.1:{sshd.port}"
    public = f"{sshd.client_key}.pub"
    cases = {
        public: f"{where}: key file {public} (ssh.key_file) is a public key; set ssh.key_file "
                f"to its private key, {sshd.client_key}",
        str(tmp_path): f"{where}: key file {tmp_path} (ssh.key_file) is a folder; set "
                       f"ssh.key_file to the private key file in it, such as "
                       f"{tmp_path / 'id_ed25519'}",
    }
    (tmp_path / "notes.txt").write_text("not a key\n")
    for key_file, message in cases.items():
        with pytest.raises(AccessError) as info:
            SSHTransport(sshd.profile(ssh={"key_file": key_file})).open()
        assert str(info.value) == message
    with pytest.raises(AccessError) as info:
        SSHTransport(sshd.profile(ssh={"key_file": str(tmp_path / "notes.txt")})).open()
    assert str(info.value).startswith(f"{where}: key file {tmp_path / 'notes.txt'} "
                                      "(ssh.key_file) is not a private key paramiko can read (")
    assert info.value.exit_code == 3


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Any:
    """A read-only file system (a tmpfs mounted ro), where even root cannot write."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"needs a read-only mount (mount as root): {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_cache_dir_that_cannot_be_written_names_its_field_and_why(
        sshd: SSHServer, tmp_path: Path, read_only_folder: Path) -> None:
    """SFTP says only "Failure" for a read-only disk: the device's own mkdir or shell says
    which, and the message names cache_dir; no retry can help (AccessError)."""
    model = make_tiny_onnx(tmp_path / "m.onnx")
    where = f"{sshd.user}@127.0.0.1:{sshd.port}"
    under = read_only_folder / "cache"
    with SSHTransport(sshd.profile(cache_dir=str(under))) as transport, \
            pytest.raises(AccessError) as info:
        transport.stage(model, sha256(model))
    assert str(info.value) == (
        f"{where}: cannot use {under} as the cache directory (profile field cache_dir): "
        f"{under}: Read-only file system; set cache_dir to a folder the SSH user can write in")
    # a cache directory that is there but read-only: the first push says the same
    with SSHTransport(sshd.profile(cache_dir=str(read_only_folder))) as transport, \
            pytest.raises(AccessError) as info:
        transport.stage(model, sha256(model))
    assert str(info.value) == (
        f"{where}: cannot use {read_only_folder} as the cache directory (profile field "
        f"cache_dir): {read_only_folder}: Read-only file system; set cache_dir to a folder the "
        "SSH user can write in")


def test_a_full_disk_says_how_much_a_small_file_needs(sshd: SSHServer, tmp_path: Path) -> None:
    """A 29 KiB file on a disk with less than that free: its size in a unit that shows it (it
    read "needs 0.0 MB")."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"needs a small tmpfs as the device's disk (mount as root): {mount.stderr}")
    data = tmp_path / "inputs.npy"
    data.write_bytes(os.urandom(29 * 1024))
    try:
        with SSHTransport(sshd.profile(cache_dir=str(disk))) as transport, \
                pytest.raises(TransportError) as info:
            transport.stage(data, sha256(data))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    message = str(info.value)
    assert f"device disk full: 'inputs.npy' needs 29.7 kB and {disk} has " in message
    assert message.endswith(" free; free space there or set cache_dir")
    free = message.split(" has ")[1].split(" free")[0]
    assert free == "0 bytes" or free.endswith((" bytes", " kB")), message


def test_human_size_keeps_three_figures() -> None:
    from harness.transport.cache import human_size

    assert [human_size(n) for n in (0, 999, 29 * 1024, 123_456, 999_999, 5_432_100,
                                    12_345_678_901)] == [
        "0 bytes", "999 bytes", "29.7 kB", "123 kB", "1 MB", "5.43 MB", "12.3 GB"]


def test_a_cut_upload_leaves_a_part_the_next_push_of_it_removes(fresh_sshd: SSHServer,
                                                                tmp_path: Path) -> None:
    """A connection cut mid-upload leaves `<sha>.part-*`; the next push of that content removes
    it once nothing holds it open (a part another upload still writes is kept, and so are parts
    of other content, which `devices clean` looks after)."""
    cache = tmp_path / "cache"
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    digest = sha256(big)
    with SSHTransport(fresh_sshd.profile(cache_dir=str(cache))) as transport:
        thread, box = run_in_thread(lambda: pytest.raises(TransportError, transport.stage,
                                                          big, digest))
        wait_for(lambda: [p for p in cache.glob(f"{digest}.part-*") if p.stat().st_size],
                 timeout=30, what="the upload to begin")
        fresh_sshd.cut_connections()
        thread.join(30)
    assert "value" in box  # the push failed, as it should with its connection cut
    (left,) = cache.glob(f"{digest}.part-*")
    old = time.time() - 60  # the user comes back a minute later
    os.utime(left, (old, old))
    # a part another push of the same content still writes, by its own (live) process
    written = cache / f"{digest}.part-0123abcd"
    written.write_bytes(b"in progress")
    os.utime(written, (old, old))
    other = cache / f"{'e' * 64}.part-0123abcd"
    other.write_bytes(b"another content's")
    os.utime(other, (old, old))
    with open(written, "rb"), SSHTransport(fresh_sshd.profile(cache_dir=str(cache))) as again:
        again.stage(big, digest)
    assert sorted(p.name for p in cache.iterdir()) == sorted([digest, written.name, other.name])
    assert sha256(cache / digest) == digest


def test_an_upload_holds_its_part_open_until_it_is_renamed(sshd: SSHServer,
                                                            tmp_path: Path) -> None:
    """What keeps a live push's part from another host's removal: the part is open on the
    device (the SFTP server holds it) from its creation until its rename, also between its
    upload and its hash, when no upload writes it."""
    cache = tmp_path / "cache"
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(4096))
    held: list[bool] = []

    def holders(path: str) -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == path:
                        found.append(int(pid))
                except OSError:
                    pass
        return found

    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        hash_of = transport.cache._remote_sha256

        def watched(path: str, touch: bool = False) -> str | None:  # looks, then hashes
            held.append(bool(holders(path)))
            return hash_of(path, touch)

        transport.cache._remote_sha256 = watched  # type: ignore[method-assign]
        transport.stage(data, sha256(data))
    assert held == [True]
