"""What the agent knows about each kind of board, one module per board, named after its `kind`.

A device profile's `kind` (jetson, rpi, coral) picks the module of that name here; `linux` and
`local` have none and get the generic Linux probes only. A board module provides

- `fingerprint() -> dict` and `state() -> dict`: extra facts from the vendor's own tools and files,
  filed under the kind's name next to the generic ones (probes.py);
- `throttled(before, after) -> bool | None`: whether the board slowed down between two of its
  states, None when it cannot tell;
- optionally `power_monitor() -> power.PowerMonitor | None`, when the board can measure its power,
  and `tune_operations(spec) -> list[tune.Operation]`, the board's own tuning, applied before the
  generic CPU governor.

So a new board is one file here. Each vendor tool's output goes through a pure `parse_*` function,
tested on real published outputs (tests/fixtures/devices); a tool that is missing, slow or refused
is left out, never guessed, and a probe that breaks is reported in the result rather than costing
the job. Board modules are imported on first use, so a board's code runs only on that board.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from types import ModuleType
from typing import Any, Callable, Sequence

TOOL_TIMEOUT_S = 5.0


def board(kind: str) -> ModuleType | None:
    """The module for boards of `kind`, or None for a kind without board-specific knowledge."""
    if not kind.isidentifier() or kind.startswith("_"):
        return None
    name = f"{__name__}.{kind}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # the board exists but something it imports does not: a bug
            raise
        return None


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """A probe must never cost the job: anything unexpected is reported, not raised."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - vendor tools and files vary too much
        return {"probe_error": f"{type(err).__name__}: {err}"}


def fingerprint(kind: str) -> dict[str, Any]:
    """`{kind: facts}` for a board kind, `{}` for plain Linux."""
    module = board(kind)
    return {kind: _guarded(module.fingerprint)} if module else {}


def state(kind: str) -> dict[str, Any]:
    """`{kind: state}` for a board kind, `{}` for plain Linux."""
    module = board(kind)
    return {kind: _guarded(module.state)} if module else {}


def throttled(before: dict[str, Any], after: dict[str, Any], kind: str) -> bool | None:
    """The board's verdict on two full probe states (`probes.state`), None when it has none."""
    module = board(kind)
    if module is None:
        return None
    verdict = _guarded(module.throttled, before.get(kind) or {}, after.get(kind) or {})
    return verdict if isinstance(verdict, bool) else None


def power_monitor(kind: str) -> Any:
    """A started-on-demand power monitor for this board, or None where it has no sensor."""
    factory = getattr(board(kind), "power_monitor", None)
    return factory() if factory else None


def tune_operations(kind: str, spec: dict[str, Any]) -> list[Any]:
    """The board's own tuning operations, in the order they are applied."""
    factory = getattr(board(kind), "tune_operations", None)
    return list(factory(spec)) if factory else []


# Helpers the board modules share ----------------------------------------------------------------

def run_tool(argv: Sequence[str], timeout_s: float = TOOL_TIMEOUT_S) -> str | None:
    """The stdout of a device tool, or None if it is absent, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(list(argv), capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    return proc.stdout.decode("utf-8", "replace")


def as_root(argv: Sequence[str]) -> list[str]:
    """`argv` as root: directly when we are root, else through passwordless `sudo -n`."""
    return list(argv) if os.geteuid() == 0 else ["sudo", "-n"] + list(argv)


def parse_device_tree_model(text: str | None) -> str | None:
    """/proc/device-tree/model is NUL-terminated."""
    if not text:
        return None
    model = text.replace("\x00", "").strip()
    return model or None
