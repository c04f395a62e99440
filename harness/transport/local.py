"""The local device: the agent runs in a fresh subprocess on this machine, no SSH.

Files are used in place (nothing is copied, `bytes_pushed` stays 0); the agent runs with this
Python unless the profile names another interpreter.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.agent import protocol
from harness.transport.base import (
    AGENT_DIR,
    AgentRun,
    CommandResult,
    Transport,
    failed_run,
    parse_agent_output,
    register_transport,
)


@register_transport("local")
class LocalTransport(Transport):
    def stage(self, path: Path, sha256: str) -> str:
        return str(Path(path).resolve())

    def agent_argv(self) -> list[str]:
        return [self.profile.python or sys.executable, "-m", "harness.agent"]

    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        started = time.perf_counter()
        try:
            proc = subprocess.run(
                self.agent_argv(),
                input=protocol.dumps(job),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                cwd=AGENT_DIR.parent.parent,
            )
        except subprocess.TimeoutExpired as err:
            stderr = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else ""
            return failed_run(job["job_id"], "timeout",
                              f"job exceeded its timeout of {timeout_s:g} s and was killed",
                              stderr, time.perf_counter() - started)
        except OSError as err:
            return failed_run(job["job_id"], "agent_start",
                              f"cannot start the agent with {self.agent_argv()[0]}: {err}")
        return parse_agent_output(job["job_id"], proc.stdout, proc.stderr, proc.returncode,
                                  time.perf_counter() - started)

    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout_s)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)
