"""The job server: many jobs over one pipe, each in a fresh agent process.

    python3 agent.pyz --serve            (once per SSH connection)
    python3 -m harness.agent --serve     (once per local transport)

Starting a command over SSH runs the device user's login shell, and on real boards that shell
often sources heavy start-up files (a ROS workspace on a Jetson); paying for it on every job would
add its cost to every job. So the host starts this small server once per connection and sends it
one request line per job; the server spawns a fresh agent process for each (the same interpreter
and agent, so every job still has a process and memory figures of its own; from a zip, the jobs
run its unpacked and compiled copy, see `unpack`), answers `started`
with the agent's pid at once (so the host can kill a job that outlives its timeout) and `ended`
with the agent's exit status, stdout and the tail of its stderr when it exits. The local transport
runs the same server over a subprocess's pipes, so both transports share one code path. The
messages are built and read by `protocol` (the job server section). When stdin closes (the
connection dropped or the host is done) the job in flight is killed and the server exits.

Stdlib only; Python 3.8 syntax.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from typing import IO

from . import protocol

# What the host needs of a job's stderr: the tail, where the error is.
STDERR_TAIL_BYTES = 65536


class _InFlight:
    """The job's agent process, shared with the thread that watches stdin."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.child: subprocess.Popen[bytes] | None = None
        self.closed = False

    def end_of_input(self) -> None:
        # Under the lock, so a job cannot start after this look and outlive the server.
        with self.lock:
            self.closed = True
            if self.child is not None and self.child.poll() is None:
                self.child.kill()


def _reader(lines: IO[str], requests: queue.Queue[str | None], running: _InFlight) -> None:
    """Read request lines; on end of input, kill the job in flight and signal the end."""
    for line in lines:
        if line.strip():
            requests.put(line)
    running.end_of_input()
    requests.put(None)


def _send(out: IO[bytes], line: bytes) -> None:
    out.write(line)
    out.flush()


def serve(agent: list[str], out: IO[bytes], lines: IO[str] | None = None) -> int:
    """Answer requests from `lines` (stdin) on `out` until the input ends.

    `agent` is the command that runs one job (its stdin takes the job, its stdout the result).
    """
    requests: queue.Queue[str | None] = queue.Queue()
    running = _InFlight()
    threading.Thread(target=_reader, args=(lines or sys.stdin, requests, running),
                     daemon=True).start()
    while True:
        line = requests.get()
        if line is None:
            return 0
        try:
            job = protocol.read_serve_request(line)
        except protocol.ProtocolError as err:
            _send(out, protocol.serve_refused(str(err)))
            continue
        with running.lock:
            if running.closed:
                return 0
            try:
                child = subprocess.Popen(agent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
            except OSError as err:
                _send(out, protocol.serve_refused(f"cannot start an agent process: {err}"))
                continue
            running.child = child
        _send(out, protocol.serve_started(child.pid))
        stdout, stderr = child.communicate(protocol.dumps(job).encode("utf-8"))
        with running.lock:
            running.child = None
        _send(out, protocol.serve_ended(child.returncode, stdout.decode("utf-8", "replace"),
                                        stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")))
