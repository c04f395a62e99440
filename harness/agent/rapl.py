"""CPU package energy from RAPL (Linux powercap), read around the timed window of a session.

Intel CPUs since Sandy Bridge, and AMD Zen since Linux 5.11 through the same driver (not the hwmon
counters of `amd_energy`, which are not read), count the energy of each CPU package in
/sys/class/powercap/intel-rapl:N/energy_uj (microjoules; wraps at `max_energy_range_uj`); a laptop
or NUC may add `psys`, the whole platform. `RaplMeter` reads the counters once before and once after
the window, as NVML's counter is read (gpu.py), and reports the energy of the package zones, summed,
with psys apart. The figure is the socket's, not the model's: other processes and the package's idle
power are in it, which its `covers` says. Only the top-level `intel-rapl:N` zones are read: subzones
(`intel-rapl:N:M`, core, uncore, dram) are parts of or beside their package, and `intel-rapl-mmio:N`
is the same package counted through MMIO, which would count it twice. A counter read between two
readings of a window wraps at most once (at 250 W, a 262 kJ range takes about 17 minutes).

Since Linux 5.10 energy_uj is readable by root only (CVE-2020-8694, a power side channel): a
tree that exists but cannot be read gives no figure and says which file and why, never a guess.
`POWERCAP` is where the tree is looked for: /sys/class/powercap but in tests.

Stdlib only; Python 3.8 syntax.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import time
from typing import Any, NamedTuple

POWERCAP = "/sys/class/powercap"
SOURCE = "rapl"
COVERS = ("CPU package(s), whole socket: includes other processes and idle power, not the "
          "model's own energy")
PSYS = "psys"
_ZONE = re.compile(r"^intel-rapl:\d+$")  # a top-level zone; intel-rapl:N:M is a subzone
# How a user gives the agent read access, for the line that says the counters are unreadable.
GRANT_HINT = ("energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694); run the agent "
              "as root, or grant read access, e.g. `sudo chmod o+r "
              "/sys/class/powercap/intel-rapl:*/energy_uj` (until reboot) or a udev rule "
              "`ACTION==\"add\", SUBSYSTEM==\"powercap\", RUN+=\"/bin/chmod o+r "
              "/sys%p/energy_uj\"`")


class Zone(NamedTuple):
    path: str  # the zone's folder
    name: str  # package-0, package-1, psys
    range_uj: int  # the counter wraps here (max_energy_range_uj)


class Unreadable(Exception):
    """A RAPL zone exists but its counter cannot be read; the message names the file and why."""


def _read(path: str) -> str:
    with open(path, "rb") as fh:
        return fh.read().decode("ascii", "replace").strip()


def zones(root: str | None = None) -> list[Zone]:
    """The top-level RAPL zones under `root` (POWERCAP by default), by zone number; [] where
    there is no RAPL tree. A zone whose name or range cannot be read is left out."""
    found = []
    for path in glob.glob(os.path.join(root or POWERCAP, "intel-rapl:*")):
        if not _ZONE.match(os.path.basename(path)):
            continue
        try:
            found.append(Zone(path, _read(os.path.join(path, "name")),
                              int(_read(os.path.join(path, "max_energy_range_uj")))))
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda z: int(os.path.basename(z.path).split(":")[1]))


def unreadable_why(path: str, err: BaseException) -> str:
    """The line that says why a counter could not be read, and how to allow it if that is why."""
    if isinstance(err, PermissionError) or getattr(err, "errno", None) in (errno.EACCES,
                                                                            errno.EPERM):
        return f"{path}: permission denied: {GRANT_HINT}"
    return f"{path}: {type(err).__name__}: {err}"


def read_uj(zone: Zone) -> int:
    """The zone's counter now (microjoules); Unreadable says which file failed and why."""
    path = os.path.join(zone.path, "energy_uj")
    try:
        return int(_read(path))
    except (OSError, ValueError) as err:
        raise Unreadable(unreadable_why(path, err)) from err


def delta_uj(before: int, after: int, range_uj: int) -> int:
    """Energy between two readings of a counter that wraps to 0 past `range_uj`."""
    return after - before if after >= before else range_uj - before + after


def describe(root: str | None = None) -> dict[str, Any]:
    """Whether RAPL is here and readable, for the fingerprint and `devices check`:
    `{"zones": [...], "readable": bool, "unreadable": why}`, or `{"absent": why}`."""
    here = zones(root)
    if not here:
        return {"absent": f"no RAPL zones (intel-rapl:N) in {root or POWERCAP}: not an x86 "
                          "CPU, a VM, or the intel_rapl_msr module not loaded"}
    out: dict[str, Any] = {"zones": [z.name for z in here], "readable": True}
    for zone in here:
        try:
            read_uj(zone)
        except Unreadable as err:
            out.update(readable=False, unreadable=str(err))
            break
    return out


class RaplMeter:
    """The package (and psys) counters read at `start()` and `stop()`; no thread, nothing runs
    during the window. `why` says why there is no figure where a tree exists but cannot be read;
    a machine without the tree has neither figure nor reason."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root
        self.why: str | None = None
        self._zones: list[Zone] = []
        self._start: list[int] = []
        self._start_t = 0.0

    def start(self) -> None:
        self._zones = [z for z in zones(self.root)
                       if z.name.startswith("package-") or z.name == PSYS]
        self._start = self._read_all()
        self._start_t = time.perf_counter()

    def _read_all(self) -> list[int]:
        try:
            return [read_uj(z) for z in self._zones]
        except Unreadable as err:
            self.why = str(err)
            return []

    def stop(self, iterations: int) -> dict[str, Any] | None:
        """Energy and mean power of the packages between the two readings, and per inference
        over `iterations`; None where there is no tree, it could not be read, or it has no
        package zone."""
        if not self._start:
            return None
        end = self._read_all()
        interval_s = time.perf_counter() - self._start_t
        if not end or interval_s <= 0 or not iterations:
            return None
        zone_mj = {z.name: delta_uj(a, b, z.range_uj) / 1000.0
                   for z, a, b in zip(self._zones, self._start, end)}
        packages = {name: mj for name, mj in zone_mj.items() if name != PSYS}
        if not packages:
            return None
        energy_mj = sum(packages.values())
        out: dict[str, Any] = {
            "source": SOURCE, "covers": COVERS, "rail": "+".join(sorted(packages)),
            "samples": 2, "energy_mj": energy_mj, "energy_interval_s": interval_s,
            "mean_w": energy_mj / 1000.0 / interval_s,
            "energy_mj_per_inference": energy_mj / iterations,
            "rails_mean_w": {name: mj / 1000.0 / interval_s for name, mj in zone_mj.items()},
        }
        if PSYS in zone_mj:
            # the whole platform (SoC, memory, more on some laptops): apart, never summed in
            out["psys"] = {"energy_mj": zone_mj[PSYS],
                           "mean_w": zone_mj[PSYS] / 1000.0 / interval_s}
        return out
