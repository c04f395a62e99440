"""NVIDIA Jetson: what the board is, its state, throttling, power from tegrastats, and tuning.

The facts come from NVIDIA's own tools and files: /etc/nv_tegra_release (L4T release),
/proc/device-tree/model, `nvpmodel -q` (power mode), `jetson_clocks --show` (clocks, needs root:
tried with `sudo -n`), devfreq GPU clocks, the over-current throttle counters of the power
monitors, and `tegrastats` (power rails), sampled once for the state and continuously during the
timed loop for the job's power figure. Tuning sets the power mode (`nvpmodel -m`, MAXN = mode 0
unless the job names another) and pins the clocks at their maximum (`jetson_clocks`, its previous
settings stored first); both are restored after the job.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from typing import Any

from .. import power
from ..probes import read_text
from ..tune import Operation, TuneError, can_be_root, run_command
from . import as_root, parse_device_tree_model, run_tool

# Total input rails by board generation, most specific first (Orin Nano/NX: VDD_IN; Nano,
# TX2, Xavier: POM_5V_IN; AGX Orin: VIN_SYS_5V0).
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0")


# Parsers ----------------------------------------------------------------------------------------

def parse_nv_tegra_release(text: str) -> dict[str, Any]:
    """`# R35 (release), REVISION: 4.1, GCID: ..., BOARD: ..., EABI: ..., DATE: ...`."""
    match = re.search(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)(.*)", text)
    if not match:
        return {}
    revision = match.group(2).rstrip(".")
    out: dict[str, Any] = {"l4t": f"{match.group(1)}.{revision}"}
    if revision.count(".") == 0:
        out["l4t"] += ".0"
    for key, value in re.findall(r"(\w+):\s*([^,]+)", match.group(3)):
        out[key.lower()] = value.strip()
    variant = re.search(r"^#\s*KERNEL_VARIANT:\s*(\S+)", text, re.MULTILINE)
    if variant:
        out["kernel_variant"] = variant.group(1)
    return out


def parse_nvpmodel_query(text: str) -> dict[str, Any]:
    """`nvpmodel -q`: the power mode name, its id on the next line, the fan mode if shown."""
    out: dict[str, Any] = {}
    match = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if match:
        out["power_mode"] = match.group(1)
        rest = text[match.end():].strip().splitlines()
        if rest and rest[0].strip().isdigit():
            out["power_mode_id"] = int(rest[0].strip())
    fan = re.search(r"NV Fan Mode:\s*(\S+)", text)
    if fan:
        out["fan_mode"] = fan.group(1)
    return out


def _freqs(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(MinFreq|MaxFreq|CurrentFreq|FreqOverride)=(\d+)",
                                             text)}


def parse_jetson_clocks_show(text: str) -> dict[str, Any]:
    """`jetson_clocks --show`: SoC, per-CPU governor and frequencies, GPU, EMC, engines, mode."""
    out: dict[str, Any] = {"cpus": {}, "engines": {}}
    for line in text.splitlines():
        line = line.strip()
        soc = re.match(r"SOC family:\s*(\S+)\s+Machine:\s*(.+)$", line)
        if soc:
            out["soc_family"], out["machine"] = soc.group(1), soc.group(2).strip()
            continue
        online = re.match(r"Online CPUs:\s*([\d\-]+(?:,[\d\-]+)*)", line)
        if online:
            out["online_cpus"] = online.group(1)
            continue
        cpu = re.match(r"(cpu\d+):\s*(.*)$", line)
        if cpu:
            entry: dict[str, Any] = dict(_freqs(cpu.group(2)))
            gov = re.search(r"Governor=(\S+)", cpu.group(2))
            if gov:
                entry["Governor"] = gov.group(1)
            on = re.search(r"Online=(\d)", cpu.group(2))
            if on:
                entry["Online"] = on.group(1) == "1"
            out["cpus"][cpu.group(1)] = entry
            continue
        unit = re.match(r"(GPU|EMC)\s+(.*)$", line)
        if unit and "MinFreq" in line:
            out[unit.group(1).lower()] = _freqs(unit.group(2))
            continue
        engine = re.match(r"([A-Z0-9_]+):\s+(.*MinFreq.*)$", line)
        if engine:
            out["engines"][engine.group(1)] = _freqs(engine.group(2))
            continue
        mode = re.match(r"NV Power Mode:\s*(\S.*)$", line)
        if mode:
            out["power_mode"] = mode.group(1).strip()
    if not out["cpus"] and "soc_family" not in out:
        return {}
    out["clocks_locked"] = clocks_locked(out)
    return out


def clocks_locked(show: dict[str, Any]) -> bool | None:
    """True when every online CPU and the GPU run pinned at max (what `jetson_clocks` does)."""
    units = [c for c in show.get("cpus", {}).values() if c.get("Online", True)]
    if show.get("gpu"):
        units.append(show["gpu"])
    if not units or any("MinFreq" not in u or "MaxFreq" not in u for u in units):
        return None
    return all(u["MinFreq"] == u["MaxFreq"] for u in units)


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One `tegrastats` line: RAM, per-CPU load@MHz, the memory controller's (EMC) and the GPU's
    load@MHz, temperatures, power rails (mW). Boards of JetPack 4 print `EMC_FREQ 0%` without
    its clock.

    Older boards print rails as `POM_5V_IN 2138/2138` (current/average mW), Orin as
    `VDD_IN 4764mW/4764mW`.
    """
    out: dict[str, Any] = {}
    ram = re.search(r"RAM (\d+)/(\d+)MB", line)
    if ram:
        out["ram_used_mb"], out["ram_total_mb"] = int(ram.group(1)), int(ram.group(2))
    cpus = re.search(r"CPU \[([^\]]*)\]", line)
    if cpus:
        loads: list[dict[str, int] | None] = []
        for item in cpus.group(1).split(","):
            m = re.match(r"\s*(\d+)%@(\d+)", item)
            loads.append({"load_pct": int(m.group(1)), "mhz": int(m.group(2))} if m else None)
        out["cpus"] = loads
    for key, unit in (("EMC_FREQ", "emc"), ("GR3D_FREQ", "gpu")):
        found = re.search(key + r" (\d+)%(?:@\[?(\d+))?", line)
        if found:
            out[f"{unit}_load_pct"] = int(found.group(1))
            if found.group(2):
                out[f"{unit}_mhz"] = int(found.group(2))
    temps = {}
    for name, value in re.findall(r"([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b", line):
        if float(value) > -200:  # -256C marks a sensor that is off
            temps[name] = float(value)
    if temps:
        out["temperatures_c"] = temps
    rails = {}
    for name, cur, avg in re.findall(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b", line):
        if name not in ("RAM", "SWAP"):
            rails[name] = {"mw": int(cur), "avg_mw": int(avg)}
    if rails:
        out["power_mw"] = rails
    return out


# Fingerprint, state, throttling -----------------------------------------------------------------

def devfreq_state(root: str = "/sys/class/devfreq") -> dict[str, dict[str, int]]:
    """Current/min/max frequency (Hz) of devfreq devices (the Jetson GPU is one)."""
    found = {}
    for dev in sorted(glob.glob(os.path.join(root, "*"))):
        entry = {}
        for key in ("cur_freq", "min_freq", "max_freq"):
            value = read_text(os.path.join(dev, key)) or ""
            if value.isdigit():
                entry[key] = int(value)
        if entry:
            found[os.path.basename(dev)] = entry
    return found


def over_current_counts(root: str = "/sys/class/hwmon") -> dict[str, int]:
    """Over-current throttle event counters of the Jetson power monitors (`oc*_event_cnt`)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "hwmon*", "oc*_event_cnt"))):
        value = read_text(path) or ""
        if value.isdigit():
            hwmon = os.path.basename(os.path.dirname(path))
            found[f"{hwmon}/{os.path.basename(path)}"] = int(value)
    return found


def tegrastats_sample() -> dict[str, Any] | None:
    """One line of `tegrastats` (it prints until killed)."""
    if shutil.which("tegrastats") is None:
        return None
    try:
        proc = subprocess.Popen(["tegrastats", "--interval", "100"], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    except OSError:
        return None
    try:
        line = proc.stdout.readline().decode("utf-8", "replace") if proc.stdout else ""
    finally:
        proc.kill()
        proc.wait()
    return parse_tegrastats(line) or None


def fingerprint() -> dict[str, Any]:
    fp: dict[str, Any] = {}
    release = read_text("/etc/nv_tegra_release")
    if release:
        fp["l4t"] = parse_nv_tegra_release(release)
    model = parse_device_tree_model(read_text("/proc/device-tree/model"))
    if model:
        fp["model"] = model
    query = run_tool(["nvpmodel", "-q"])
    if query:
        fp.update(parse_nvpmodel_query(query))
    return fp


def state() -> dict[str, Any]:
    st: dict[str, Any] = {}
    query = run_tool(["nvpmodel", "-q"])
    if query:
        st["nvpmodel"] = parse_nvpmodel_query(query)
    show = run_tool(as_root(["jetson_clocks", "--show"]))
    if show:
        st["jetson_clocks"] = parse_jetson_clocks_show(show)
    freqs = devfreq_state()
    if freqs:
        st["devfreq_hz"] = freqs
    counts = over_current_counts()
    if counts:
        st["over_current_events"] = counts
    sample = tegrastats_sample()
    if sample:
        st["tegrastats"] = sample
    return st


def throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    verdicts: list[bool] = []
    a, b = before.get("over_current_events") or {}, after.get("over_current_events") or {}
    if a and b:
        verdicts.append(any(b.get(k, 0) > v for k, v in a.items()))
    clocks = after.get("jetson_clocks") or {}
    if clocks.get("clocks_locked"):
        # Clocks pinned at max by jetson_clocks: any unit below its max was slowed down.
        units = list(clocks.get("cpus", {}).values()) + [clocks.get("gpu") or {}]
        verdicts.append(any(u.get("CurrentFreq", u.get("MaxFreq", 0)) < u.get("MaxFreq", 0)
                            for u in units if u.get("Online", True)))
    return any(verdicts) if verdicts else None


# Power ------------------------------------------------------------------------------------------

class TegrastatsMonitor(power.PowerMonitor):
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
        return power.summarize(self.samples, "tegrastats", TOTAL_RAILS)


def power_monitor() -> TegrastatsMonitor | None:
    return TegrastatsMonitor() if shutil.which("tegrastats") else None


# Tuning -----------------------------------------------------------------------------------------

class NvpModel(Operation):
    """The Jetson power mode (`nvpmodel -m ID`), then back to the previous one."""

    name = "nvpmodel"

    def __init__(self, mode: int = 0) -> None:
        super().__init__()
        self.mode = mode
        self.saved: int | None = None

    def available(self) -> bool:
        if shutil.which("nvpmodel") is None:
            self.reason = "nvpmodel is not installed"
            return False
        if not can_be_root():
            self.reason = "nvpmodel -m needs root or passwordless sudo"
            return False
        return True

    def show(self) -> dict[str, Any]:
        try:
            return parse_nvpmodel_query(run_command(["nvpmodel", "-q"]))
        except TuneError:
            return {}

    def write(self, tune: bool) -> None:
        if tune:
            self.saved = self.show().get("power_mode_id")
            if self.saved != self.mode:
                run_command(as_root(["nvpmodel", "-m", str(self.mode)]))
        elif self.saved is not None and self.saved != self.mode:
            run_command(as_root(["nvpmodel", "-m", str(self.saved)]))


class JetsonClocks(Operation):
    """Jetson clocks pinned at their maximum (`jetson_clocks`), then `--restore`d."""

    name = "jetson_clocks"

    def __init__(self, store_dir: str | None = None) -> None:
        super().__init__()
        # The agent runs in the device cache: keep the stored settings there.
        self.store = os.path.join(store_dir or os.getcwd(),
                                  f".edgebench-jetson_clocks-{os.getpid()}.conf")
        self.stored = False

    def available(self) -> bool:
        if shutil.which("jetson_clocks") is None:
            self.reason = "jetson_clocks is not installed"
            return False
        if not can_be_root():
            self.reason = "jetson_clocks needs root or passwordless sudo"
            return False
        return True

    def show(self) -> dict[str, Any]:
        try:
            show = parse_jetson_clocks_show(run_command(as_root(["jetson_clocks", "--show"])))
        except TuneError:
            return {}
        return {"clocks_locked": show.get("clocks_locked"), "power_mode": show.get("power_mode"),
                "gpu": show.get("gpu"), "emc": show.get("emc")}

    def write(self, tune: bool) -> None:
        if tune:
            run_command(as_root(["jetson_clocks", "--store", self.store]))
            self.stored = True
            run_command(as_root(["jetson_clocks"]))
        elif self.stored:
            try:
                run_command(as_root(["jetson_clocks", "--restore", self.store]))
            finally:
                try:
                    os.remove(self.store)
                except OSError:
                    pass


def tune_operations(spec: dict[str, Any]) -> list[Operation]:
    """The power mode first: `jetson_clocks` pins the clocks at the maximum of the mode in force."""
    return [NvpModel(int(spec.get("power_mode", 0))), JetsonClocks()]
