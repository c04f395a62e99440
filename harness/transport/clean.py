"""`edgebench devices clean`: reclaim a device's cache space from entries no longer used.

The cleaning runs on the device in one remote command (`harness/agent/cacheclean.py` as
`python3 -c`, through the transport's `run_command`, so an SSH device and a labgrid place alike),
however many entries the cache holds. What counts as used is the entry's mtime, set by every
connection that uses it; a model's TensorRT engines (`tensorrt/<sha256>`) go with it. See that
module for exactly which names are removed and why nothing else can be. The local device has no
cache: its files are used where they are.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.agent import cacheclean
from harness.errors import EdgebenchError, TransportError
from harness.transport.base import Transport
from harness.transport.jobserver import COMMAND_NOT_FOUND, NOT_EXECUTABLE

DAY_S = 86400.0
# An upload or unpacking in progress renews its file's mtime as it writes; one not touched for
# an hour was interrupted.
LEFTOVER_S = 3600.0
CLEAN_TIMEOUT_S = 600.0  # removing thousands of files from an SD card is slow


@dataclass(frozen=True)
class CleanReport:
    """What the device answered: entries removed (or that would be, on a dry run) and kept."""

    cache: str
    dry_run: bool
    absent: bool = False
    removed: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    free_bytes: int | None = None

    @property
    def removed_bytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.removed)

    @property
    def kept_bytes(self) -> int:
        return sum(int(r["bytes"]) for r in self.kept)


def clean_cache(transport: Transport, older_than_days: float, dry_run: bool = False,
                leftover_s: float = LEFTOVER_S) -> CleanReport:
    """Remove the device's cache entries unused for `older_than_days`; EdgebenchError if its
    cache folder looks unsafe to clean (naming device and folder), TransportError if the
    device cannot run the cleaning."""
    profile = transport.profile
    if not transport.has_cache:
        raise EdgebenchError(f"device {profile.name} keeps no cache ({profile.transport} "
                             "transport: models and data are used where they are on this "
                             "machine); nothing to clean")
    request = {"cache_dir": profile.cache_dir, "older_than_s": older_than_days * DAY_S,
               "leftover_s": leftover_s, "dry_run": dry_run}
    argv = [*shlex.split(profile.python or "python3"), "-c",
            Path(cacheclean.__file__).read_text(encoding="utf-8"), json.dumps(request)]
    done = transport.run_command(argv, timeout_s=CLEAN_TIMEOUT_S)
    if done.returncode in (COMMAND_NOT_FOUND, NOT_EXECUTABLE):  # the shell's words name no field
        what = "not found" if done.returncode == COMMAND_NOT_FOUND else "not executable"
        raise EdgebenchError(f"device {profile.name} ({transport.host}): cannot clean its cache: "
                             f"{argv[0]} {what} there (profile field python)")
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        raise TransportError(
            f"device {profile.name} ({transport.host}): cleaning its cache {profile.cache_dir} "
            f"failed (exit {done.returncode}): {done.stderr.strip()[-300:] or 'no answer'}",
        ) from err
    if "refused" in answer:
        raise EdgebenchError(f"device {profile.name} ({transport.host}): refusing to clean "
                             f"cache_dir {answer['real']}: {answer['refused']}")
    return CleanReport(cache=answer["real"], dry_run=dry_run, absent=bool(answer.get("absent")),
                       removed=answer["removed"], kept=answer["kept"], other=answer["other"],
                       errors=answer["errors"], free_bytes=answer.get("free_bytes"))
