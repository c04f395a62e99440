"""A real labgrid lab on loopback: a coordinator, one exporter and places whose `NetworkService`
points at loopback sshd's (benchmarks/loopback_sshd.py): the farm of the nightly tests and of
benchmarks/farm.py.

`LoopbackLab` writes the coordinator's `places.yaml` (what a lab admin builds with `labgrid-client
create` / `add-match`), starts `labgrid-coordinator` on a free 127.0.0.1 port in its own folder,
writes the exporter's resource file (one group per place, each with a `NetworkService`) and starts
`labgrid-exporter`, then waits until the coordinator lists every resource. `farm_data` is a farm
file (as YAML would load it) for these places. Stdlib only (plus the labgrid console scripts next
to this Python), independent of `harness`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.loopback_sshd import LoopbackSSHD, free_port

BIN = Path(sys.executable).parent
EXPORTER_NAME = "loopback"


class LabgridMissing(RuntimeError):
    """labgrid's coordinator or exporter is not installed next to this Python."""


def _labgrid_tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise LabgridMissing(f"{path} not found: install labgrid (`pip install -e '.[farm]'`)")
    return str(path)


class LoopbackLab:
    """A labgrid coordinator and exporter on loopback with one place per sshd."""

    def __init__(self, root: Path, devices: dict[str, LoopbackSSHD]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.devices = devices  # place name -> its sshd
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.exporter: subprocess.Popen[bytes] | None = None

    def write_places(self) -> None:
        # A JSON document is YAML too: the coordinator reads places.yaml from its folder.
        now = time.time()
        places = {
            name: {"aliases": [], "comment": "edgebench loopback", "tags": {"farm": "loopback"},
                   "matches": [{"exporter": EXPORTER_NAME, "group": name,
                                "cls": "NetworkService", "name": None, "rename": None}],
                   "created": now, "changed": now}
            for name in self.devices}
        (self.root / "coordinator").mkdir(exist_ok=True)
        (self.root / "coordinator" / "places.yaml").write_text(json.dumps(places, indent=1))

    def write_exports(self) -> Path:
        exports = {name: {"NetworkService": {"address": "127.0.0.1", "username": sshd.user,
                                             "port": sshd.port}}
                   for name, sshd in self.devices.items()}
        path = self.root / "exports.yaml"
        path.write_text(json.dumps(exports, indent=1))
        return path

    def start_coordinator(self) -> None:
        self.write_places()
        log = open(self.root / "coordinator.log", "ab")
        self.coordinator = subprocess.Popen(
            [_labgrid_tool("labgrid-coordinator"), "-l", self.address],
            cwd=self.root / "coordinator", stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()

    def start_exporter(self) -> None:
        exports = self.write_exports()
        log = open(self.root / "exporter.log", "ab")
        self.exporter = subprocess.Popen(
            [_labgrid_tool("labgrid-exporter"), "-c", self.address, "-n", EXPORTER_NAME,
             "--hostname", "127.0.0.1", str(exports)],
            cwd=self.root, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
        log.close()

    def start(self, timeout_s: float = 60.0) -> LoopbackLab:
        self.start_coordinator()
        deadline = time.monotonic() + timeout_s
        while not self.listening():  # an exporter started before gives up at once
            if self.coordinator is not None and self.coordinator.poll() is not None:
                raise RuntimeError(f"labgrid coordinator exited at start: "
                                   f"{self.log('coordinator')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"labgrid coordinator not listening after {timeout_s:g} s")
            time.sleep(0.1)
        self.start_exporter()
        while time.monotonic() < deadline:
            for proc, what in ((self.coordinator, "coordinator"), (self.exporter, "exporter")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"labgrid {what} exited at start: {self.log(what)}")
            if self.ready():
                return self
            time.sleep(0.3)
        raise RuntimeError(f"labgrid lab not ready after {timeout_s:g} s: "
                           f"{self.log('coordinator')} {self.log('exporter')}")

    def listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log(self, what: str) -> str:
        path = self.root / f"{what}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def client(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60,
               ) -> subprocess.CompletedProcess[str]:
        """`labgrid-client -x ADDRESS ARGS` as a lab user would run it."""
        return subprocess.run([_labgrid_tool("labgrid-client"), "-x", self.address, *args],
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, **(env or {})))

    def ready(self) -> bool:
        """Whether the coordinator lists a NetworkService for every place."""
        try:
            done = self.client("resources", timeout=30)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0 and all(
            f"{EXPORTER_NAME}/{name}/NetworkService" in done.stdout for name in self.devices)

    def stop_coordinator(self) -> None:
        _stop(self.coordinator)
        self.coordinator = None

    def stop(self) -> None:
        _stop(self.exporter)
        self.exporter = None
        self.stop_coordinator()

    def farm_data(self, **overrides: Any) -> dict[str, Any]:
        """A farm file for these places: each place's profile as its sshd's profile would be,
        less the address, user and port that labgrid gives."""
        places = {}
        for name, sshd in self.devices.items():
            profile = sshd.profile_data()
            ssh = {k: v for k, v in profile.pop("ssh").items() if k not in ("host", "port", "user")}
            for key in ("name", "transport"):
                profile.pop(key)
            places[name] = {**profile, "ssh": ssh}
        data: dict[str, Any] = {"coordinator": self.address, "places": places}
        data.update(overrides)
        return data


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
