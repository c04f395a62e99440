"""A device over SSH: one connection, a content-addressed cache on it, a job server on it.

`SSHTransport` composes the three: `SSHConnection` (host keys, jump host, reconnecting, remote
commands), `ContentCache` (the agent and every model pushed once by SFTP to
`<cache_dir>/<sha256>`) and `JobServer` (the agent's job server, started once per connection over
an SSH channel, a fresh agent process per job). The server runs from the agent's zip; its jobs
run from `<cache_dir>/<sha256>.d`, the zip unpacked and compiled by the device's Python, which
the server makes on first use (`harness/agent/unpack.py`). What is SSH's own is here: the
launcher command (POSIX sh, every word quoted, run in the cache directory so nothing is written
outside it), the channel as the job server's pipe, and killing a job on the device. A lost
connection gives the job in flight a `failed` result; the next job reconnects and first kills the
agent the lost connection may have left running, so it cannot disturb the next measurement.
"""

from __future__ import annotations

import select
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko

from harness.config import DeviceProfile, SSHSettings
from harness.errors import AccessError, TransportError
from harness.transport.base import AgentRun, CommandResult, Transport, agent_bundle
from harness.transport.cache import ContentCache
from harness.transport.jobserver import (
    NO_WORKDIR,
    JobServer,
    LinkLost,
    ServerPipe,
    StartFailed,
)
from harness.transport.sshconn import EOF_GRACE_S, SSHConnection, drain

_CHANNEL_ERRORS = (paramiko.SSHException, OSError, EOFError)


class ChannelPipe(ServerPipe):
    """A job server on the device, through the SSH channel that started it."""

    def __init__(self, chan: paramiko.Channel, transport: SSHTransport) -> None:
        self.chan = chan
        self.transport = transport

    def send(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except _CHANNEL_ERRORS as err:
            raise LinkLost(f"connection lost ({err or type(err).__name__})") from err

    def read(self, timeout_s: float) -> tuple[bytes, bytes]:
        out, err = bytearray(), bytearray()
        link = self.chan.get_transport()
        try:
            if not drain(self.chan, out, err) and timeout_s > 0 and not self.ended():
                select.select([self.chan], [], [], timeout_s)
                drain(self.chan, out, err)
        except _CHANNEL_ERRORS as exc:
            raise LinkLost(f"connection lost ({exc or type(exc).__name__})") from exc
        if not (out or err) and (link is None or not link.is_active()):
            raise LinkLost("connection lost")
        return bytes(out), bytes(err)

    def ended(self) -> bool:
        chan = self.chan
        return chan.closed or chan.eof_received or chan.exit_status_ready()

    def exit_status(self) -> int | None:
        self.chan.status_event.wait(EOF_GRACE_S)
        if not self.chan.exit_status_ready() or self.chan.exit_status < 0:
            return None
        return int(self.chan.exit_status)

    def kill_job(self, pid: int) -> None:
        self.transport.kill_agent(pid)

    def close(self) -> None:
        try:
            self.chan.close()
        except _CHANNEL_ERRORS:
            pass


class SSHTransport(Transport):
    """One device reached over SSH; `open()` connects, every job reuses the connection."""

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)
        if profile.ssh is None:
            raise TransportError(f"device {profile.name}: transport ssh needs ssh settings")
        self.settings: SSHSettings = profile.ssh
        self.conn = SSHConnection(profile.ssh, on_connect=self._connected)
        self.python_argv = shlex.split(profile.python or "python3")
        self.cache = ContentCache(self.conn, profile.cache_dir, self.python_argv)
        self.jobs = JobServer(self.conn.where, profile.python or "python3", profile.cache_dir,
                              self._start_job_server, self._link_lost)
        self._stale_pid: int | None = None  # agent left running by a connection that dropped

    @property
    def where(self) -> str:
        return self.conn.where

    @property
    def connects(self) -> int:
        return self.conn.connects

    def open(self) -> None:
        self.conn.open()

    def close(self) -> None:
        self.jobs.stop()
        self.conn.close()

    def _connected(self) -> None:
        """A new connection: what the old one had (server, cache view, a job) is gone."""
        self.jobs.stop()
        self.cache.forget()
        pid, self._stale_pid = self._stale_pid, None
        if pid is not None:
            self.kill_agent(pid)

    def _link_lost(self, pid: int | None) -> None:
        self._stale_pid = pid
        self.conn.close()

    # files ----------------------------------------------------------------------------------

    def cache_dir(self) -> str:
        """The absolute cache directory on the device, created (mode 700) if absent."""
        return self.cache.dir()

    def stage(self, path: Path, sha256: str) -> str:
        remote, pushed = self.cache.put_file(Path(path), sha256)
        self.bytes_pushed += pushed
        return remote

    def prefetch(self, files: Sequence[tuple[Path, str]]) -> None:
        data, agent_sha256 = agent_bundle()
        sizes = {agent_sha256: len(data)}
        for path, sha256 in files:
            try:
                sizes[sha256] = Path(path).stat().st_size
            except OSError:
                continue  # staging it says what is wrong
        self.cache.trust_present(sizes)

    def stage_agent(self) -> str:
        data, sha256 = agent_bundle()
        remote, pushed = self.cache.put_bytes(data, sha256, "the agent")
        self.bytes_pushed += pushed
        return remote

    # commands and jobs ----------------------------------------------------------------------

    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        command = shlex.join(list(argv))
        done = self.conn.exec(command, timeout_s=timeout_s)
        if done.why is not None:
            raise TransportError(f"{self.where}: `{command}` failed: {done.why}"
                                 + (f" after {timeout_s:g} s" if done.why == "timeout" else ""))
        return CommandResult(done.status if done.status is not None else -1,
                             done.stdout.decode(errors="replace"),
                             done.stderr.decode(errors="replace"))

    def job_server_command(self, agent_path: str) -> str:
        """The remote command that starts the job server: POSIX sh, every word quoted.

        It runs once per connection, so the login shell's start-up (which can be slow on a
        board whose ~/.bashrc sets up a ROS workspace) is paid once, not once per job.
        """
        cache = shlex.quote(self.cache_dir())
        python = " ".join(shlex.quote(a) for a in self.python_argv)
        script = (f"cd {cache} || exit {NO_WORKDIR}; "
                  f"exec {python} {shlex.quote(agent_path)} --serve")
        return f"/bin/sh -c {shlex.quote(script)}"

    def _start_job_server(self) -> ServerPipe:
        try:
            agent = self.stage_agent()
            chan = self.conn.start(self.job_server_command(agent), "the job server")
        except AccessError:
            # the device as a whole is unusable (a key, a host key, a cache_dir it cannot
            # write): raised as when connecting, so `devices check` exits as `bench` does
            raise
        except TransportError as err:
            raise StartFailed("transport" if self.conn.active() else "connection_lost",
                              str(err)) from err
        return ChannelPipe(chan, self)

    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        return self.jobs.run(job, timeout_s)

    def kill_agent(self, pid: int) -> None:
        """Kill an agent process that is still running on the device."""
        agent_sha = agent_bundle()[1]
        # Only if that pid is still our agent: a reused pid must not be touched.
        script = (f"grep -q {shlex.quote(agent_sha)} /proc/{pid}/cmdline 2>/dev/null || "
                  f"ps -o args= -p {pid} 2>/dev/null | grep -q {shlex.quote(agent_sha)} || exit 0; "
                  f"kill -KILL {pid} 2>/dev/null; exit 0")
        try:
            self.conn.exec(f"/bin/sh -c {shlex.quote(script)}",
                           timeout_s=self.settings.command_timeout_s)
        except TransportError:
            pass
