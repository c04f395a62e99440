"""What every transport does: stage files on a device, run one agent job there, run a command.

A transport turns a device profile into actions. The runner stages the model and dataset files
(`stage` returns the path the agent will see and counts bytes pushed), then sends one job to a fresh
agent process (`run_agent`). Whatever goes wrong on the way (agent crash, timeout, lost connection)
comes back as a `failed` result with the reason and the tail of the agent's stderr, so the runner
can store it and go on with the next job. Only problems that make the device unusable as a whole
(cannot connect, host key refused) raise `TransportError`. Both transports run jobs through the
agent's job server (`jobserver.py`); `transport_for` picks the one a profile names.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Self

from harness.agent import protocol
from harness.config import DeviceProfile
from harness.registry import Registry

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
STDERR_TAIL_CHARS = 2000


@dataclass(frozen=True)
class AgentRun:
    result: dict[str, Any]
    stderr_tail: str
    wall_s: float


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class Transport(ABC):
    """One device connection, used for every job on that device (a context manager)."""

    # Whether files are pushed into a cache on the device (`profile.cache_dir`), which
    # `devices clean` can clean; the local device uses them in place.
    has_cache = True

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.bytes_pushed = 0

    def open(self) -> None:  # noqa: B027 - local transport has nothing to open
        """Connect; raise TransportError if the device cannot be used at all."""

    def close(self) -> None:  # noqa: B027
        """Release the connection."""

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def stage(self, path: Path, sha256: str) -> str:
        """Make `path` available on the device; return the path the agent should open."""

    def prefetch(self, files: Sequence[tuple[Path, str]]) -> None:  # noqa: B027 - local: no cache
        """Learn at once which of `files` (path, sha256) the device already holds, so that
        staging them costs nothing more; never raises (staging looks at what this missed)."""

    @abstractmethod
    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        """Run one job in a fresh agent process; never raises for a per-job problem."""

    @abstractmethod
    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        """Run a command on the device (for `devices check`)."""

    @property
    def host(self) -> str:
        return "localhost" if self.profile.ssh is None else self.profile.ssh.host


def failed_run(job_id: str, kind: str, message: str, stderr: str = "", wall_s: float = 0.0,
               ) -> AgentRun:
    """A `failed` result for a job whose agent never answered properly."""
    tail = stderr[-STDERR_TAIL_CHARS:]
    result = protocol.new_result(job_id)
    if tail.strip():
        message = f"{message}; agent stderr ends with: {tail.strip()[-500:]}"
    protocol.set_error(result, protocol.STATUS_FAILED, kind, message)
    return AgentRun(result=result, stderr_tail=tail, wall_s=wall_s)


# The zip's (and its unpacked folder's) entry point. A Python older than 3.7 cannot even read the
# agent's files (`from __future__ import annotations`), so this says why in the agent's words and
# exit status (agent/__main__.py: PYTHON_TOO_OLD), in a syntax any Python reads, 2.7 included;
# 3.7 runs the job server and the check, and the agent refuses its jobs itself.
ZIP_MAIN = """import sys
if sys.version_info < (3, 7):
    sys.stderr.write("python %d.%d.%d is older than the 3.8 the agent needs\\n"
                     % tuple(sys.version_info[:3]))
    sys.exit(98)
import runpy
runpy.run_module('edgebench_agent', run_name='__main__')
"""


@lru_cache(maxsize=1)
def agent_bundle() -> tuple[bytes, str]:
    """The agent as a runnable zip (`python3 agent.pyz`) and its sha256.

    Deterministic (fixed timestamps, sorted names) so the content hash only changes when the code
    does; that hash names it in the device cache.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(AGENT_DIR.rglob("*.py")):
            rel = "edgebench_agent/" + path.relative_to(AGENT_DIR).as_posix()
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
        main = zipfile.ZipInfo("__main__.py", date_time=(2020, 1, 1, 0, 0, 0))
        main.external_attr = 0o644 << 16
        zf.writestr(main, ZIP_MAIN)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


# Each transport is declared here by name and imported on first use, so paramiko is loaded only
# for a device that uses SSH. `config.TRANSPORTS` lists the names a profile may give.
TRANSPORTS: Registry[type[Transport]] = Registry("transport", lazy={
    "local": "harness.transport.local:LocalTransport",
    "ssh": "harness.transport.ssh:SSHTransport",
    "labgrid": "harness.farm.labgrid:LabgridTransport",
})


def transport_for(profile: DeviceProfile) -> Transport:
    """The transport the profile names, for that device; UnknownNameError lists the known."""
    return TRANSPORTS.get(profile.transport)(profile)
