"""The host's client of the job server (`agent --serve`): one job at a time over one pipe.

Every transport runs its jobs this way: SSH over a channel (one server per connection, so the
device's login shell starts once), the local transport over a subprocess's pipes. A `ServerPipe`
is the byte streams of one running server; `JobServer` starts one when it needs to, sends it a job,
reads `started` and `ended` (the job-server messages of `protocol`), kills a job past its timeout
and turns whatever went wrong into a `failed` result. The wording of those failures lives here
alone, so one fault reads the same on every transport; only the place (`where`) differs.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.agent import protocol
from harness.transport.base import STDERR_TAIL_CHARS, AgentRun, failed_run

READ_CHUNK = 65536
# A killed job's server still reports its end, with the agent's stderr; this long at most.
KILL_GRACE_S = 5.0
# What the server itself wrote on stderr (not its jobs'): enough for a traceback.
SERVER_STDERR_KEEP = 65536
# Exit statuses of a launcher shell: the interpreter does not exist, or cannot be run; it cannot
# enter the server's working directory (the SSH launcher script exits with it).
COMMAND_NOT_FOUND = 127
NOT_EXECUTABLE = 126
NO_WORKDIR = 97
# The agent's (or the zip's) exit status for a Python older than it needs (agent/__main__.py).
PYTHON_TOO_OLD = 98


class LinkLost(Exception):
    """The link under a pipe is gone; the server, and a job, may still run at the other end."""


class StartFailed(Exception):
    """The job server cannot be started; `kind` is the result's `error.kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ServerPipe(ABC):
    """The byte streams of one running job server, and how to stop it."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Write to the server's stdin; LinkLost if the link is gone (a dead server is not)."""

    @abstractmethod
    def read(self, timeout_s: float) -> tuple[bytes, bytes]:
        """What the server wrote on stdout and stderr, waiting up to `timeout_s` for something.

        Both empty when nothing came; LinkLost if the link is gone.
        """

    @abstractmethod
    def ended(self) -> bool:
        """The server has exited (or closed its output, which is as good)."""

    @abstractmethod
    def exit_status(self) -> int | None:
        """The server's exit status once `ended`, None if it has none (killed, over SSH)."""

    @abstractmethod
    def kill_job(self, pid: int) -> None:
        """Kill the agent process `pid` the server started, leaving the server running."""

    @abstractmethod
    def close(self) -> None:
        """Close the server's stdin, so it kills the job in flight and exits; release the pipe."""


def last_exception(stderr: str) -> str | None:
    """`Error: message` from the end of a Python traceback, if stderr ends with one."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines or not any(line.startswith("Traceback") for line in lines):
        return None
    match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):? ?(.*)$", lines[-1])
    return lines[-1].strip() if match else None


class JobServer:
    """Runs jobs through one job server at a time, started on first use and after it is gone.

    `where` names the device in messages; `python` is the interpreter the profile names (for
    advice); `workdir` is where the server runs. `start` starts a server (StartFailed if it
    cannot, which fails the job; an AccessError, the device unusable as a whole, goes through to
    the caller as `Transport.run_agent`'s TransportError); `on_link_lost(pid)` hears that the
    link dropped mid-job, `pid` (None if not known) possibly still running at the other end.
    """

    def __init__(self, where: str, python: str, workdir: str,
                 start: Callable[[], ServerPipe],
                 on_link_lost: Callable[[int | None], None] | None = None) -> None:
        self.where = where
        self.python = python
        self.workdir = workdir
        self._start = start
        self._on_link_lost = on_link_lost
        self._pipe: ServerPipe | None = None
        self._out = bytearray()
        self._err = bytearray()

    def stop(self) -> None:
        """End the server (and the job in flight, if any)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()

    def _started(self) -> ServerPipe:
        if self._pipe is not None and not self._pipe.ended():
            return self._pipe
        self.stop()
        self._out.clear()
        self._err.clear()
        self._pipe = self._start()
        return self._pipe

    def _next(self, deadline: float) -> dict[str, Any] | None:
        """The server's next message, or None once it has ended or `deadline` has passed.

        LinkLost if the link drops; ProtocolError for a line that is not a message.
        """
        pipe = self._pipe
        assert pipe is not None
        while True:
            newline = self._out.find(b"\n")
            if newline >= 0:
                line = bytes(self._out[:newline])
                del self._out[:newline + 1]
                return protocol.read_serve_response(line)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            out, err = pipe.read(min(0.2, remaining))
            if not (out or err) and pipe.ended():
                out, err = pipe.read(0)  # what came between the last look and the end
                if not (out or err):
                    return None
            self._out += out
            self._err += err
            del self._err[:-SERVER_STDERR_KEEP]

    def run(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        """Run `job` in a fresh agent process; a `failed` result for anything that goes wrong."""
        job_id = str(job.get("job_id", "?"))
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        try:
            pipe = self._started()
        except StartFailed as err:
            return failed_run(job_id, err.kind, str(err))
        pid: int | None = None
        try:
            pipe.send(protocol.serve_request(job))
            message = self._next(deadline)
            if message is not None and message["event"] == protocol.SERVE_STARTED:
                pid = message["pid"]
                message = self._next(deadline)
        except LinkLost as err:
            self.stop()
            if self._on_link_lost is not None:
                self._on_link_lost(pid)
            return failed_run(job_id, "connection_lost", f"{err} to {self.where} during the job",
                              self._server_stderr(), time.perf_counter() - started)
        except protocol.ProtocolError as err:
            self.stop()
            return failed_run(job_id, "protocol", f"job server on {self.where} answered "
                              f"what it should not ({err}); it is restarted for the next job",
                              self._server_stderr(), time.perf_counter() - started)
        if message is None:
            if pipe.ended():
                return self._server_gone(job_id, time.perf_counter() - started)
            return self._timed_out(job_id, pid, timeout_s, started)
        wall = time.perf_counter() - started
        if message["event"] == protocol.SERVE_REFUSED:
            return failed_run(job_id, "protocol",
                              f"job server on {self.where} refused the job: {message['reason']}")
        if message["event"] != protocol.SERVE_ENDED:
            self.stop()
            return failed_run(job_id, "protocol", f"job server on {self.where} sent "
                              f"{message['event']!r} where the job's end was due", wall_s=wall)
        return self._agent_ended(job_id, message["returncode"], message["stdout"],
                                 message["stderr"], wall)

    def _server_stderr(self) -> str:
        return self._err.decode(errors="replace")

    def _timed_out(self, job_id: str, pid: int | None, timeout_s: float,
                   started: float) -> AgentRun:
        """Kill the job; the server then reports its end, with the agent's stderr until then."""
        end = None
        if pid is not None and self._pipe is not None:
            try:
                self._pipe.kill_job(pid)
                end = self._next(time.monotonic() + KILL_GRACE_S)
            except (LinkLost, protocol.ProtocolError):
                end = None
        if end is None or end["event"] != protocol.SERVE_ENDED:
            self.stop()  # it did not answer in time: a new server for the next job
        stderr = end["stderr"] if end is not None and "stderr" in end else self._server_stderr()
        return failed_run(job_id, "timeout", f"job exceeded its timeout of {timeout_s:g} s on "
                          f"{self.where} and was killed", stderr, time.perf_counter() - started)

    def _server_gone(self, job_id: str, wall: float) -> AgentRun:
        """The server ended without finishing the job: say why, from its exit status."""
        pipe = self._pipe
        assert pipe is not None
        status = pipe.exit_status()
        stderr = self._server_stderr()
        self.stop()
        if status == COMMAND_NOT_FOUND:
            return failed_run(job_id, "agent_start", f"{self.python} not found on {self.where} "
                              "(profile field python)", stderr, wall)
        if status == PYTHON_TOO_OLD:
            return failed_run(job_id, "agent_start", self._too_old(stderr),
                              wall_s=wall)  # its stderr is that one line
        if status == NO_WORKDIR:
            return failed_run(job_id, "transport", f"cannot enter directory {self.workdir} on "
                              f"{self.where}", stderr, wall)
        if status is None:
            message = f"job server on {self.where} ended without an exit status (killed?)"
        else:
            message = self._exit_message("job server", status, stderr) + " before the job ended"
        return failed_run(job_id, "agent_crashed", message, stderr, wall)

    def _agent_ended(self, job_id: str, returncode: int, stdout: str, stderr: str,
                     wall: float) -> AgentRun:
        """The agent's result from its stdout, or a failed result saying why there is none."""
        text = stdout.strip()
        if text:
            try:
                result = protocol.loads(text.splitlines()[-1])
                return AgentRun(result=result, stderr_tail=stderr[-STDERR_TAIL_CHARS:],
                                wall_s=wall)
            except ValueError:
                pass
        if returncode == PYTHON_TOO_OLD:
            return failed_run(job_id, "agent_start", self._too_old(stderr),
                              wall_s=wall)  # its stderr is that one line
        message = self._exit_message("agent", returncode, stderr)
        if returncode >= 0 and last_exception(stderr) is None:
            message += " without a result"
        return failed_run(job_id, "agent_crashed", message, stderr, wall)

    def _too_old(self, stderr: str) -> str:
        """The agent's own line ("python 3.7.16 is older than the 3.8 the agent needs"), with
        the interpreter, the device and the profile field that chose it."""
        said = [line.strip() for line in stderr.splitlines() if "older than" in line]
        return (f"{self.python} on {self.where}: "
                f"{said[-1] if said else 'its Python is older than the agent needs'} "
                "(profile field python: name a Python 3.8 or newer there)")

    def _exit_message(self, what: str, returncode: int, stderr: str) -> str:
        if returncode < 0:
            try:
                name = f" ({signal.Signals(-returncode).name})"
            except ValueError:
                name = ""
            return f"{what} on {self.where} was killed by signal {-returncode}{name}"
        exception = last_exception(stderr)
        if exception is None:
            return f"{what} on {self.where} exited with status {returncode}"
        hint = ""
        if exception.startswith("ModuleNotFoundError"):  # not "cannot import name": a version
            hint = (f" (install it for {self.python} on {self.where}, or set the profile's "
                    "python to an interpreter that has it)")
        return f"{what} on {self.where} exited with status {returncode}: {exception}{hint}"


class ProcessPipe(ServerPipe):
    """A job server in a local subprocess, in a session of its own so it can be killed whole."""

    def __init__(self, argv: Sequence[str], cwd: str | Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, env=env)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._stdout = self.proc.stdout.fileno()
        self._stderr = self.proc.stderr.fileno()
        self._open = {self._stdout, self._stderr}

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the server has exited: `ended` says so, `exit_status` says how

    def read(self, timeout_s: float) -> tuple[bytes, bytes]:
        if not self._open:
            return b"", b""
        ready, _, _ = select.select(sorted(self._open), [], [], max(0.0, timeout_s))
        got = {self._stdout: b"", self._stderr: b""}
        for fd in ready:
            chunk = os.read(fd, READ_CHUNK)
            if chunk:
                got[fd] = chunk
            else:
                self._open.discard(fd)
        return got[self._stdout], got[self._stderr]

    def ended(self) -> bool:
        return self._stdout not in self._open or self.proc.poll() is not None

    def exit_status(self) -> int | None:
        try:
            return self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            return None

    def kill_job(self, pid: int) -> None:
        # Only a child of this server: a pid reused since the job ended must not be touched.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) != self.proc.pid:
                return
        except (OSError, ValueError, IndexError):
            pass  # no /proc (macOS): the pid was the server's child a moment ago
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
