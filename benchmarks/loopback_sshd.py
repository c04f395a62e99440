"""A real OpenSSH server on loopback: the "device" of the SSH tests and of ssh_overhead.py.

`LoopbackSSHD` runs `/usr/sbin/sshd -D` with its own config, a temporary host key and one
authorized client key, on a free 127.0.0.1 port, as the current user (root included: the config
allows key logins only). It can be stopped, restarted on the same port (same host key), or have its
open connections cut while it keeps listening; `profile_data` is a device profile (as YAML would
load it) that reaches it. Stdlib only and independent of `harness`, so the benchmarks and the tests
(tests/sshd.py wraps it in fixtures) share it. `make test` installs openssh-server
(scripts/install-system-deps.sh); without it `start` raises `SSHDMissing` saying so.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SSHD = Path("/usr/sbin/sshd")
MISSING = (
    "OpenSSH server not installed (/usr/sbin/sshd): `make test` installs it "
    "(scripts/install-system-deps.sh), or run `apt-get install openssh-server`"
)


class SSHDMissing(RuntimeError):
    """This machine has no OpenSSH server to run."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgebench-test",
                    "-f", str(path)], check=True, capture_output=True)
    return path


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid`, found through /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may itself contain spaces or parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie that nobody reaped counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def processes_matching(text: str) -> list[int]:
    """Live pids whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


class LoopbackSSHD:
    """One sshd listening on 127.0.0.1:port, with the files a client profile needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = free_port()
        self.host_key = keygen(root / "host_ed25519")
        self.client_key = keygen(root / "client_ed25519")
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text((root / "client_ed25519.pub").read_text())
        self.known_hosts = root / "known_hosts"
        pub = (root / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_config: list[str] = []  # more sshd_config lines (e.g. SetEnv)

    def write_config(self) -> None:
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "StrictModes no",
            "UsePAM no",
            "AllowTcpForwarding yes",
            "PermitTTY no",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel VERBOSE",
            *self.extra_config,
            "",
        ]))

    def start(self) -> LoopbackSSHD:
        """Start listening (again, on the same port); SSHDMissing without OpenSSH's sshd."""
        if not SSHD.exists():
            raise SSHDMissing(MISSING)
        if os.geteuid() == 0:  # sshd refuses to start as root without its privsep directory
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.write_config()
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not come up on port {self.port}: "
                           f"{self.log.read_text()[-2000:]}")

    def cut_connections(self) -> None:
        """Kill every session (as a network cut would), leaving the server listening."""
        assert self.proc is not None
        for pid in children_of(self.proc.pid):
            try:
                if b"sshd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ProcessLookupError):
                pass

    def stop(self) -> None:
        """Stop listening and cut every connection."""
        if self.proc is None:
            return
        self.cut_connections()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None

    def profile_data(self, **overrides: Any) -> dict[str, Any]:
        ssh = {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key_file": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "connect_timeout_s": 5,
            "command_timeout_s": 20,
            "keepalive_s": 5,
        }
        ssh.update(overrides.pop("ssh", {}))
        data: dict[str, Any] = {
            "name": "loopback-ssh",
            "kind": "linux",
            "transport": "ssh",
            "ssh": ssh,
            # Loopback: the "device" is this machine, so its interpreter has numpy + onnxruntime.
            "python": sys.executable,
            "cache_dir": str(self.root / "device cache"),
            "runtimes": ["onnxruntime"],
            "threads": 1,
            "job_timeout_s": 120,
        }
        data.update(overrides)
        return data
