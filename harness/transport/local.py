"""The local device: the agent runs on this machine, no SSH, through the same job server.

Files are used in place (nothing is copied, `bytes_pushed` stays 0). Jobs go through the agent's
job server (`python -m harness.agent --serve`) in a subprocess, over its stdin and stdout, exactly
as they go over an SSH channel: a fresh agent process per job, and every fault (agent killed,
timeout, missing interpreter) reported in the same words as on an SSH device. The agent runs with
this Python unless the profile names another interpreter.

Opening the transport writes the agent's bytecode (`__pycache__`, what an import writes where it
may): with PYTHONDONTWRITEBYTECODE set, as on the development VM, or a checkout that imports never
wrote to, every job's fresh agent process compiled the agent's source again, 50-140 ms a session
outside the timed window. Only stale files are written; where nothing can be, the agent compiles
at import as before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import LAUNCH_ENVIRONMENT
from harness.config import DeviceProfile
from harness.transport.base import AGENT_DIR, AgentRun, CommandResult, Transport
from harness.transport.jobserver import JobServer, ProcessPipe, ServerPipe, StartFailed

# The agent runs as `-m harness.agent` from the directory that holds the `harness` package.
WORKDIR = AGENT_DIR.parent.parent


class LocalTransport(Transport):
    has_cache = False

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)
        self.python = profile.python or sys.executable
        self.jobs = JobServer(self.host, self.python, str(WORKDIR), self._start_job_server)

    def open(self) -> None:
        self._compile_agent()

    def close(self) -> None:
        self.jobs.stop()

    def _compile_agent(self) -> None:
        # with the agent's own interpreter: bytecode is per Python version
        try:
            subprocess.run([self.python, "-m", "compileall", "-q", str(AGENT_DIR),
                            str(AGENT_DIR.parent / "__init__.py")], cwd=WORKDIR,
                           capture_output=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass  # a missing interpreter is reported by the job that cannot start

    def stage(self, path: Path, sha256: str) -> str:
        return str(Path(path).resolve())

    def job_server_argv(self) -> list[str]:
        return [self.python, "-m", "harness.agent", "--serve"]

    def _start_job_server(self) -> ServerPipe:
        try:
            # the environment edgebench was started with, whatever it has imported since
            return ProcessPipe(self.job_server_argv(), WORKDIR, env=LAUNCH_ENVIRONMENT)
        except FileNotFoundError as err:
            raise StartFailed("agent_start", f"{self.python} not found on {self.host} "
                              "(profile field python)") from err
        except OSError as err:
            raise StartFailed("agent_start", f"cannot start {self.python} on {self.host}: "
                              f"{err.strerror or err}") from err

    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        return self.jobs.run(job, timeout_s)

    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)
