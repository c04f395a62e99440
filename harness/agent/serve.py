"""Serve many jobs over one connection: a fresh agent process per job, one shell per connection.

    python3 agent.pyz --serve        (started once per SSH connection by the host)

Starting a command over SSH runs the device user's login shell, and on real boards that shell
often sources heavy start-up files (a ROS workspace on a Jetson); paying for it on every job would
add its cost to every job. So the host starts this small server once, and for each request line
`{"job": {...}, "kind": "jetson"}` on stdin it spawns a fresh agent process (the same interpreter
and bundle, so every job still has a process and memory figures of its own), answers
`{"pid": N}` at once (so the host can kill a job that outlives its timeout) and then
`{"returncode": R, "stdout": ..., "stderr": ...}` when the agent ends. When stdin closes (the
connection dropped or the host is done) the job in flight is killed and the server exits.

Stdlib only; Python 3.8 syntax.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from typing import Any

# What the host needs of a job's stderr: the tail, where the error is.
STDERR_TAIL_BYTES = 65536


def _reader(requests: queue.Queue[str | None], running: dict[str, Any]) -> None:
    """Read request lines; on end of input, kill the job in flight and signal the end."""
    for line in sys.stdin:
        if line.strip():
            requests.put(line)
    child = running.get("child")
    if child is not None and child.poll() is None:
        child.kill()
    requests.put(None)


def _send(out: Any, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def serve(agent: list[str], out: Any) -> int:
    """Answer requests on `out` until stdin closes; `agent` is the command that runs one job."""
    requests: queue.Queue[str | None] = queue.Queue()
    running: dict[str, Any] = {}
    threading.Thread(target=_reader, args=(requests, running), daemon=True).start()
    while True:
        line = requests.get()
        if line is None:
            return 0
        try:
            request = json.loads(line)
            job = json.dumps(request["job"]).encode()
            env = dict(os.environ, EDGEBENCH_DEVICE_KIND=str(request.get("kind") or "linux"))
        except (ValueError, KeyError, TypeError) as err:
            _send(out, {"error": f"bad request: {err}"})
            continue
        child = subprocess.Popen(agent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env)
        running["child"] = child
        _send(out, {"pid": child.pid})
        stdout, stderr = child.communicate(job)
        running["child"] = None
        _send(out, {
            "returncode": child.returncode,
            "stdout": stdout.decode("utf-8", "replace"),
            "stderr": stderr[-STDERR_TAIL_BYTES:].decode("utf-8", "replace"),
        })
