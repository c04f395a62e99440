"""Device tuning as small operations, applied for one job and restored afterwards.

Modelled on pyperf's `system tune`: each operation knows whether it can run here (`available()`,
with `reason` when not), what the device is set to now (`show()`), and how to put the device into
its benchmarking state or back (`write(tune=True|False)`). A job that asks for `"tune": true` gets
its board's own operations first (`boards.<kind>.tune_operations`: on a Jetson the power mode and
`jetson_clocks`), then the CPU frequency governor set to `performance`, which every Linux board
has. They are undone in reverse order when the job ends, whatever happened to it, and the result
records what each one found, reached and restored: a device that refused (no root, no passwordless
sudo) is measured as it is and says so.

Root is needed for all of them: the agent uses them directly when it runs as root, else through
`sudo -n` (a sudoers rule for nvpmodel, jetson_clocks and tee on the cpufreq files; see
devices/jetson.yaml). Nothing is written outside the working directory (the device cache) except
the settings being tuned.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Any

from . import boards

COMMAND_TIMEOUT_S = 30.0


class TuneError(Exception):
    """An operation could not put the device in the state asked for."""


def run_command(argv: list[str]) -> str:
    """The stdout of a command that changes or shows a setting; TuneError says why it failed."""
    try:
        proc = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as err:
        raise TuneError(f"{' '.join(argv)}: {err}") from err
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-300:]
        raise TuneError(f"{' '.join(argv)} exited with {proc.returncode}: {tail}")
    return proc.stdout.decode("utf-8", "replace")


def can_be_root() -> bool:
    if os.geteuid() == 0:
        return True
    if shutil.which("sudo") is None:
        return False
    try:
        return subprocess.run(["sudo", "-n", "true"], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class Operation:
    """One setting of the device that tuning changes and restores."""

    name = "operation"

    def __init__(self) -> None:
        self.reason: str | None = None  # why it is not available

    def available(self) -> bool:
        raise NotImplementedError

    def show(self) -> Any:
        raise NotImplementedError

    def write(self, tune: bool) -> None:
        raise NotImplementedError


class CPUGovernor(Operation):
    """Every CPU's cpufreq governor set to `performance`, then back to what each had."""

    name = "cpu_governor"
    wanted = "performance"

    def __init__(self, root: str = "/sys/devices/system/cpu") -> None:
        super().__init__()
        self.root = root
        self.saved: dict[str, str] = {}

    def _files(self) -> dict[str, str]:
        found = {}
        for path in glob.glob(os.path.join(self.root, "cpu[0-9]*", "cpufreq", "scaling_governor")):
            cpu = os.path.basename(os.path.dirname(os.path.dirname(path)))
            found[cpu] = path
        return dict(sorted(found.items(), key=lambda kv: int(kv[0][3:])))

    def available(self) -> bool:
        files = self._files()
        if not files:
            self.reason = "no cpufreq governors on this device"
            return False
        for path in files.values():
            choices = os.path.join(os.path.dirname(path), "scaling_available_governors")
            try:
                with open(choices) as fh:
                    if self.wanted not in fh.read().split():
                        self.reason = f"governor {self.wanted} is not offered ({choices})"
                        return False
            except OSError:
                pass
        if not all(os.access(p, os.W_OK) for p in files.values()) and not can_be_root():
            self.reason = "changing the governor needs root or passwordless sudo"
            return False
        return True

    def show(self) -> dict[str, str]:
        shown = {}
        for cpu, path in self._files().items():
            try:
                with open(path) as fh:
                    shown[cpu] = fh.read().strip()
            except OSError:
                continue
        return shown

    def _set(self, path: str, value: str) -> None:
        try:
            with open(path, "w") as fh:
                fh.write(value)
        except PermissionError:
            proc = subprocess.run(["sudo", "-n", "tee", path], input=value.encode(),
                                  capture_output=True, timeout=COMMAND_TIMEOUT_S)
            if proc.returncode != 0:
                raise TuneError(f"cannot write {path}: "
                                f"{proc.stderr.decode('utf-8', 'replace').strip()}") from None
        except OSError as err:
            raise TuneError(f"cannot write {path}: {err}") from err

    def write(self, tune: bool) -> None:
        files = self._files()
        if tune:
            self.saved = self.show()
            for path in files.values():
                self._set(path, self.wanted)
        else:
            for cpu, value in self.saved.items():
                if cpu in files:
                    self._set(files[cpu], value)


def operations_for(kind: str, spec: dict[str, Any]) -> list[Operation]:
    """What tuning means on a device of `kind`, in the order it is applied."""
    ops: list[Operation] = boards.tune_operations(kind, spec)
    ops.append(CPUGovernor())
    return ops


class Tuning:
    """Tuning applied for one job; `finish()` restores it and returns what happened."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops
        self.applied: list[Operation] = []
        self.report: dict[str, dict[str, Any]] = {}

    def apply(self) -> Tuning:
        for op in self.ops:
            entry: dict[str, Any] = {"available": False}
            self.report[op.name] = entry
            try:
                if not op.available():
                    entry["reason"] = op.reason
                    continue
                entry["available"] = True
                entry["before"] = op.show()
                self.applied.append(op)
                op.write(True)
            except Exception as err:  # noqa: BLE001 - a refusal must not cost the job
                entry["error"] = _describe(err)
            entry["reached"] = op.show() if entry["available"] else None
        return self

    def finish(self) -> dict[str, Any]:
        for op in reversed(self.applied):
            entry = self.report[op.name]
            try:
                op.write(False)
            except Exception as err:  # noqa: BLE001 - restore the others anyway
                entry["restore_error"] = _describe(err)
            entry["restored"] = op.show()
        self.applied = []
        return {"requested": True,
                "applied": [n for n, e in self.report.items()
                            if e.get("available") and "error" not in e],
                "operations": self.report}


def _describe(err: Exception) -> str:
    text = str(err) or type(err).__name__
    return re.sub(r"\s+", " ", text)[:500]


def start(kind: str, request: Any) -> Tuning | None:
    """Tuning for a job whose `tune` field is `request` (true, or {"power_mode": N}); None if
    the job does not ask for it."""
    if not request:
        return None
    spec = request if isinstance(request, dict) else {}
    return Tuning(operations_for(kind, spec)).apply()
