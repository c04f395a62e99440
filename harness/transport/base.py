"""What every transport does: stage files on a device, run one agent job there, run a command.

A transport turns a device profile into actions. The runner stages the model and dataset files
(`stage` returns the path the agent will see and counts bytes pushed), then sends one job to a fresh
agent process (`run_agent`). Whatever goes wrong on the way (agent crash, timeout, lost connection)
comes back as a `failed` result with the reason and the tail of the agent's stderr, so the runner
can store it and go on with the next job. Only problems that make the device unusable as a whole
(cannot connect, host key refused) raise `TransportError`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.agent import protocol
from harness.config import DeviceProfile
from harness.errors import UnknownNameError

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

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile
        self.bytes_pushed = 0

    def open(self) -> None:  # noqa: B027 - local transport has nothing to open
        """Connect; raise TransportError if the device cannot be used at all."""

    def close(self) -> None:  # noqa: B027
        """Release the connection."""

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def stage(self, path: Path, sha256: str) -> str:
        """Make `path` available on the device; return the path the agent should open."""

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


def parse_agent_output(job_id: str, stdout: str, stderr: str, returncode: int | None,
                       wall_s: float) -> AgentRun:
    """The agent's result from its stdout, or a failed result saying why there is none."""
    text = stdout.strip()
    if text:
        try:
            result = protocol.loads(text.splitlines()[-1])
            return AgentRun(result=result, stderr_tail=stderr[-STDERR_TAIL_CHARS:], wall_s=wall_s)
        except ValueError:
            pass
    if returncode is not None and returncode < 0:
        how = f"was killed by signal {-returncode}"
    else:
        how = f"exited with status {returncode} without a result"
    return failed_run(job_id, "agent_crashed", f"agent {how}", stderr, wall_s)


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
        zf.writestr(main, "import runpy\n"
                          "runpy.run_module('edgebench_agent', run_name='__main__')\n")
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


_TRANSPORTS: dict[str, Callable[[DeviceProfile], Transport]] = {}


def register_transport(name: str) -> Callable[[type[Transport]], type[Transport]]:
    def deco(cls: type[Transport]) -> type[Transport]:
        _TRANSPORTS[name] = cls
        return cls

    return deco


def transport_for(profile: DeviceProfile) -> Transport:
    # Import the implementations so they register; ssh pulls in paramiko only when used.
    if profile.transport == "ssh":
        from harness.transport import ssh  # noqa: F401
    else:
        from harness.transport import local  # noqa: F401
    try:
        factory = _TRANSPORTS[profile.transport]
    except KeyError:
        raise UnknownNameError("transport", profile.transport, list(_TRANSPORTS)) from None
    return factory(profile)
