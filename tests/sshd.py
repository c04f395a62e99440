"""The loopback OpenSSH server (benchmarks/loopback_sshd.py) as pytest fixtures.

`SSHServer` is `LoopbackSSHD` that skips the test, with the advice to install openssh-server, on a
machine without sshd, and that writes or parses its device profile. Use the `sshd` fixture (one
server per test module) or `fresh_sshd` (one per test, for tests that stop it), after
`from tests.sshd import sshd, fresh_sshd`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.loopback_sshd import (
    MISSING,
    SSHD,
    LoopbackSSHD,
    SSHDMissing,
    alive,
    children_of,
    free_port,
    keygen,
    processes_matching,
)

__all__ = ["SSHD", "SSHServer", "alive", "children_of", "free_port", "fresh_sshd", "keygen",
           "processes_matching", "sshd"]


class SSHServer(LoopbackSSHD):
    def start(self) -> SSHServer:
        try:
            super().start()
        except SSHDMissing:
            pytest.skip(MISSING)
        return self

    def profile_file(self, path: Path, **overrides: Any) -> Path:
        path.write_text(yaml.safe_dump(self.profile_data(**overrides), sort_keys=False))
        return path

    def profile(self, **overrides: Any) -> Any:
        from harness.config import parse_profile

        return parse_profile(self.root / "profile.yaml", self.profile_data(**overrides))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    server = SSHServer(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_sshd(tmp_path: Path) -> Iterator[SSHServer]:
    server = SSHServer(tmp_path / "sshd").start()
    yield server
    server.stop()
