"""`edgebench` end to end through a real OpenSSH server: bench, re-bench, check, bad host, cut.

The commands run in subprocesses exactly as a user types them; the results are read back from
the real SQLite store.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.store import Store
from harness.transport.base import agent_bundle
from tests.conftest import EDGEBENCH, REPO, make_tiny_onnx, run_cli
from tests.sshd import SSHServer, fresh_sshd, processes_matching, sshd
from tests.test_agent_portability import micro_version, old_python

pytestmark = pytest.mark.ssh
__all__ = ["sshd", "fresh_sshd"]


def rows(db: Path) -> list[dict]:
    with Store(db) as store:
        return store.results()


def test_bench_twice_second_run_pushes_nothing(sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    device = sshd.profile_file(tmp_path / "loopback.yaml", cache_dir=str(tmp_path / "cache"))
    db = tmp_path / "results.db"
    for _ in range(2):
        proc = run_cli("bench", "--device", str(device), "--model", str(model), "--quick",
                       "--db", str(db))
        assert proc.returncode == 0, proc.stderr + proc.stdout
    first, second = sorted(rows(db), key=lambda r: r["started_at"])
    for row in (first, second):
        assert row["status"] == "ok", row["error_message"]
        assert row["device"] == "loopback-ssh"
        assert row["n"] >= 20 and row["latency_median_ms"] > 0
    assert first["bytes_pushed"] == model.stat().st_size + len(agent_bundle()[0])
    assert second["bytes_pushed"] == 0
    assert first["run_id"] != second["run_id"]


def test_devices_check_over_ssh(sshd: SSHServer, tmp_path: Path) -> None:
    device = sshd.profile_file(tmp_path / "loopback.yaml", cache_dir=str(tmp_path / "cache"))
    proc = run_cli("devices", "check", str(device))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "onnxruntime" in proc.stdout
    assert "everything the profile needs is present" in proc.stdout
    # the agent's jobs run from the bytecode its job server compiled in the device cache
    assert f"agent: bytecode in {tmp_path / 'cache' / agent_bundle()[1]}.d" in proc.stdout
    assert "note: threads" not in proc.stdout
    # more threads than the device's CPUs: allowed, but said (they take turns)
    cpus = len(os.sched_getaffinity(0))
    crowded = sshd.profile_file(tmp_path / "crowded.yaml", cache_dir=str(tmp_path / "cache"),
                                threads=cpus + 1)
    proc = run_cli("devices", "check", str(crowded))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert f"note: threads {cpus + 1} is more than the {cpus} CPU" in " ".join(proc.stdout.split())
    # a device whose Python has no LiteRT: both of its packages hidden from the agent there
    hidden = tmp_path / "no-litert"
    for package in ("ai_edge_litert", "tflite_runtime"):
        (hidden / package).mkdir(parents=True)
        (hidden / package / "__init__.py").write_text("raise ImportError('not here')\n")
    python = tmp_path / "python-without-litert"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(hidden))} "
                      f'exec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    wants_missing = sshd.profile_file(tmp_path / "lite.yaml", cache_dir=str(tmp_path / "cache"),
                                      runtimes=["onnxruntime", "tflite"], python=str(python))
    proc = run_cli("devices", "check", str(wants_missing))
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "missing for this profile" in proc.stdout and "tflite" in proc.stdout
    # a runtime no agent has is a mistake in the file, said before connecting
    unknown = sshd.profile_file(tmp_path / "trt.yaml", runtimes=["onnxruntime", "tensorrt"])
    proc = run_cli("devices", "check", str(unknown))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"edgebench: error: {unknown}: runtimes: unknown runtime "
                                   "'tensorrt'; known: onnxruntime, tflite, torch")


def test_unknown_host_key_refused_by_the_cli(sshd: SSHServer, tmp_path: Path) -> None:
    known = tmp_path / "empty_known_hosts"
    known.write_text("")
    device = sshd.profile_file(tmp_path / "strict.yaml", ssh={"known_hosts": str(known)})
    proc = run_cli("devices", "check", str(device))
    assert proc.returncode == 3
    assert "ssh-keyscan" in proc.stderr and "Traceback" not in proc.stderr
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    proc = run_cli("bench", "--device", str(device), "--model", str(model), "--quick",
                   "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 3
    assert "not in" in proc.stderr and "Traceback" not in proc.stderr


def test_connection_cut_mid_run_keeps_the_store(fresh_sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    device = fresh_sshd.profile_file(tmp_path / "loopback.yaml", cache_dir=str(cache))
    db = tmp_path / "results.db"
    argv = ["bench", "--device", str(device), "--model", str(model), "--quick", "--db", str(db)]
    assert run_cli(*argv).returncode == 0
    kept = rows(db)
    proc = subprocess.Popen([*EDGEBENCH, *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not processes_matching(f"{cache}/{agent_bundle()[1]}"):
        assert time.monotonic() < deadline and proc.poll() is None, "the agent never started"
        time.sleep(0.01)
    fresh_sshd.stop()
    out, err = proc.communicate(timeout=60)
    # the device's fault, as one unreachable from the start: exit 3, its last line naming it
    assert proc.returncode == 3, out + err
    assert "connection lost" in err + out
    assert err.splitlines()[-1].startswith("edgebench: error: device loopback-ssh: "), err
    after = rows(db)
    assert [r for r in after if r["run_id"] == kept[0]["run_id"]] == kept  # untouched
    cut = [r for r in after if r["run_id"] != kept[0]["run_id"]]
    assert len(cut) == 1 and cut[0]["status"] == "failed"
    assert cut[0]["error_kind"] == "connection_lost"


def test_a_device_gone_for_good_stops_its_queue_after_two_lost_sessions(
        fresh_sshd: SSHServer, tmp_path: Path) -> None:
    """Found: a board that went away mid-run had each of its remaining sessions wait out a
    connect and fail alike (minutes for a suite, a traceback each). After two sessions in a row
    that find it gone, its queue stops, naming why; a resume measures the rest."""
    from tests.conftest import rows as sql
    from tests.conftest import wait_for_sessions

    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    device = fresh_sshd.profile_file(tmp_path / "loopback.yaml",
                                     cache_dir=str(tmp_path / "cache"))
    db = tmp_path / "results.db"
    proc = subprocess.Popen([*EDGEBENCH, "bench", "--device", str(device), "--model", str(model),
                             "--sessions", "8", "--db", str(db)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_sessions(db, "loopback-ssh", 1, proc)
    fresh_sshd.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, out + err
    ok, lost = (sql(db, "SELECT COUNT(*) FROM sessions WHERE status = ?", status)[0][0]
                for status in ("ok", "failed"))
    assert 1 <= ok <= 6 and lost == 2, (ok, lost, out, err)  # not one failure per session left
    (message,) = {m for (m,) in sql(db, "SELECT error_message FROM sessions WHERE status = "
                                        "'failed' ORDER BY session DESC LIMIT 1")}
    assert "loopback-ssh did not answer 2 sessions in a row, so its remaining sessions were not " \
        "run (`bench --resume` measures them)" in message, message
    assert sql(db, "SELECT status FROM runs") == [("incomplete",)]


def test_devices_check_says_what_the_device_python_lacks(sshd: SSHServer, tmp_path: Path,
                                                         ) -> None:
    """A device whose python3 has no numpy (this machine's system Python, without the venv)."""
    bare = Path("/usr/bin/python3")
    if not bare.exists() or subprocess.run([str(bare), "-c", "import numpy"],
                                           capture_output=True).returncode == 0:
        pytest.skip("needs a python3 without numpy at /usr/bin/python3")
    device = sshd.profile_file(tmp_path / "bare.yaml", python=str(bare),
                               cache_dir=str(tmp_path / "cache"))
    proc = run_cli("devices", "check", str(device))
    # the check itself needs only the stdlib, so the device answers and names what it lacks
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"({bare})" in proc.stdout and "numpy MISSING" in proc.stdout
    assert "missing for this profile: numpy" in proc.stdout
    said = " ".join(proc.stdout.split())
    assert f"(install them on the device for {bare}, or set python in {device} to an " \
        "interpreter that has them" in said, said
    # where to get it: installed for that interpreter, or another interpreter that has it
    proc = run_cli("devices", "check", str(device), "--json")
    assert json.loads(proc.stdout)["runtimes"]["numpy"] == {
        "available": False,
        "reason": f"No module named 'numpy' (every runtime needs numpy: install it for {bare}, "
                  "or set the profile's python to an interpreter that has it)"}


def test_a_port_that_never_speaks_ssh_is_one_line(sshd: SSHServer, tmp_path: Path) -> None:
    """A port that takes the TCP connection and then says nothing (a hung board, a port that is
    not SSH's): one line naming it and the timeout's field, no traceback from paramiko's thread
    through logging's last resort, no "No existing session"."""
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    port = silent.getsockname()[1]
    device = sshd.profile_file(tmp_path / "silent.yaml",
                               ssh={"port": port, "connect_timeout_s": 1})
    with silent:
        proc = run_cli("devices", "check", str(device))
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        f"edgebench: error: no SSH server answered on 127.0.0.1:{port} within 1 s "
        "(ssh.connect_timeout_s): the device may hang, or the port is not SSH's"], proc.stderr


def test_a_cache_dir_that_cannot_be_made_exits_3_for_check_and_bench(sshd: SSHServer,
                                                                      tmp_path: Path) -> None:
    """A file where the cache directory should be (SFTP calls that "No such file"): one line
    naming cache_dir and the device's reason, and the same exit code (3, the device unusable as
    a whole) from `devices check` as from `bench`."""
    (tmp_path / "a file").write_text("")
    cache = tmp_path / "a file" / "cache"
    device = sshd.profile_file(tmp_path / "blocked.yaml", cache_dir=str(cache))
    said = (f"edgebench: error: {sshd.user}@127.0.0.1:{sshd.port}: cannot use {cache} as the "
            f"cache directory (profile field cache_dir): {cache}: Not a directory; set cache_dir "
            "to a folder the SSH user can write in")
    check = run_cli("devices", "check", str(device))
    assert (check.returncode, check.stderr.strip()) == (3, said)
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    bench = run_cli("bench", "--device", str(device), "--model", str(model), "--quick",
                    "--db", str(tmp_path / "r.db"))
    # the bench's last line names the device it could not use
    assert (bench.returncode, bench.stderr.strip().splitlines()[-1]) == (
        3, said.replace("error: ", "error: device loopback-ssh: ", 1))


PYTHON37 = old_python("3.7")


@pytest.mark.skipif(PYTHON37 is None, reason="needs a python3.7 here (pyenv install 3.7)")
def test_a_python_older_than_the_agent_needs_fails_devices_check(sshd: SSHServer,
                                                                 tmp_path: Path) -> None:
    """The Coral Dev Board's stock Python 3.7 passed the check, then every bench job crashed on
    `statistics.NormalDist`: now the check shows why and exits 1, and each job fails in one line
    naming the profile field."""
    assert PYTHON37 is not None
    said = f"python {micro_version(PYTHON37)} is older than the 3.8 the agent needs"
    device = sshd.profile_file(tmp_path / "mendel.yaml", python=PYTHON37,
                               cache_dir=str(tmp_path / "cache"))
    check = run_cli("devices", "check", str(device))
    assert check.returncode == 1, check.stderr + check.stdout
    assert said in " ".join(check.stdout.split())
    assert "everything the profile needs is present" not in check.stdout
    assert "missing for this profile: Python 3.8 or newer" in check.stdout
    assert f"(set python in {device} to a Python 3.8 or newer that has them" in \
        " ".join(check.stdout.split())
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    db = tmp_path / "r.db"
    bench = run_cli("bench", "--device", str(device), "--model", str(model), "--quick",
                    "--db", str(db))
    assert bench.returncode == 1, bench.stderr + bench.stdout
    (row,) = rows(db)
    assert row["error_kind"] == "agent_start"
    assert row["error_message"].startswith(
        f"{PYTHON37} on {sshd.user}@127.0.0.1:{sshd.port}: {said} (profile field python: name "
        "a Python 3.8 or newer there)")


@pytest.mark.slow
def test_a_device_that_cannot_be_reached_says_so_once(tmp_path: Path) -> None:
    """Found: a profile with a wrong port printed the same `cannot connect` line for each of the
    suite's 23 measurements, then the table, then the error. The reason is said once, with how
    many more measurements failed the same way, and the run says how to resume it."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    device = tmp_path / "gone.yaml"
    device.write_text(f"name: gone\nkind: linux\ntransport: ssh\nssh: {{host: 127.0.0.1, port: "
                      f"{port}, connect_timeout_s: 2}}\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("formats: [onnx]\nmodels: {m: {arch: digits_cnn_small, recipes: [q, p]}}\n"
                     "recipes: {q: {steps: [quantize_dynamic]}, p: {steps: [{prune_magnitude: "
                     "{sparsity: 0.5, finetune_epochs: 0}}]}}\n")
    proc = run_cli("bench", "--device", str(device), "--suite", str(suite), "--quick",
                   "--build-dir", str(tmp_path / "b"), "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 3, proc.stderr
    reason = f"127.0.0.1:{port}: Unable to connect"
    lines = [line for line in proc.stderr.splitlines() if reason in line]
    assert len(lines) == 2 and lines[-1].startswith("edgebench: error: device gone: "), proc.stderr
    assert "gone: 2 more measurements failed the same way" in proc.stderr
    assert "incomplete: the same command with --resume " in proc.stderr
    # found in an audit: its progress line said "gone: done" of a device never reached
    assert "gone: not reached" in proc.stderr and "gone: done" not in proc.stderr


def test_a_key_file_that_is_not_there_is_said_before_anything_is_built_or_stored(
        tmp_path: Path) -> None:
    """Found in an audit: `make bench DEVICE=rpi` with the shipped profile and no
    ~/.ssh/id_ed25519 built the suite, stored a run of 23 measurements all `failed: transport`,
    which became `latest`, and only then named the key file. A profile whose key file cannot be
    used is said first, with nothing built and no run stored."""
    device = tmp_path / "pi.yaml"
    missing = tmp_path / "no_such_key"
    device.write_text(f"name: pi\nkind: linux\ntransport: ssh\nssh: {{host: 127.0.0.1, "
                      f"key_file: {missing}}}\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("formats: [onnx]\nmodels: {m: {arch: digits_cnn_small}}\n")
    db = tmp_path / "r.db"
    proc = run_cli("bench", "--device", str(device), "--suite", str(suite), "--quick",
                   "--build-dir", str(tmp_path / "b"), "--db", str(db))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"edgebench: error: device pi: key file {missing} does not exist (ssh.key_file)"]
    assert not (tmp_path / "b").exists()
    assert not db.exists() or Store(db).runs() == []
