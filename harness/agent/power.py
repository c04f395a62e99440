"""Power during the timed loop, where the device can measure it (Jetson: `tegrastats`).

A monitor samples in the background while the model runs back to back; the job then reports the
mean input power and the energy per inference (mean power x mean latency: W x ms = mJ). The
figure is the whole module's input power, idle share included, which is what a battery sees;
the rail it came from is recorded with it. Devices without a power sensor report nothing rather
than a guess.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Any

from .devices import parse_tegrastats

# Total input rails by board generation, most specific first (Orin Nano/NX: VDD_IN; Nano,
# TX2, Xavier: POM_5V_IN; AGX Orin: VIN_SYS_5V0).
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


def total_rail(rails: dict[str, Any]) -> str | None:
    for name in TOTAL_RAILS:
        if name in rails:
            return name
    return None


class TegrastatsMonitor:
    """Runs `tegrastats --interval N` and keeps each line's instantaneous rail powers."""

    def __init__(self, interval_ms: int = 100) -> None:
        self.interval_ms = interval_ms
        self.samples: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._recording = False

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["tegrastats", "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self._recording = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            if not self._recording:
                break
            rails = parse_tegrastats(raw.decode("utf-8", "replace")).get("power_mw")
            if rails:
                self.samples.append({"t": time.perf_counter(), "rails": rails})

    def stop(self) -> dict[str, Any] | None:
        self._recording = False
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return summarize(self.samples, "tegrastats")


def summarize(samples: list[dict[str, Any]], source: str) -> dict[str, Any] | None:
    """Mean watts of the total input rail (else the sum of all rails) and of every rail."""
    if not samples:
        return None
    names = sorted({name for s in samples for name in s["rails"]})
    rails_mean_w = {
        name: sum(s["rails"][name]["mw"] for s in samples if name in s["rails"])
        / 1000.0 / sum(1 for s in samples if name in s["rails"])
        for name in names
    }
    rail = total_rail(rails_mean_w)
    mean_w = rails_mean_w[rail] if rail else sum(rails_mean_w.values())
    return {
        "source": source,
        "rail": rail or "sum of all rails",
        "samples": len(samples),
        "mean_w": mean_w,
        "rails_mean_w": rails_mean_w,
    }


def monitor_for(kind: str) -> TegrastatsMonitor | None:
    if kind == "jetson" and shutil.which("tegrastats"):
        return TegrastatsMonitor()
    return None
