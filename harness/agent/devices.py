"""Device-kind specific probes (Jetson, Raspberry Pi, Coral) layered on the generic Linux ones.

`fingerprint(kind)` and `state(kind)` return extra fields for that kind (nothing for plain Linux);
`throttled(before, after, kind)` says whether the device throttled between two states, or None when
it cannot tell. The facts come from the vendors' own tools and files:

- Jetson: /etc/nv_tegra_release (L4T release), /proc/device-tree/model, `nvpmodel -q` (power mode),
  `jetson_clocks --show` (clocks, needs root: tried with `sudo -n`), devfreq GPU clocks, the
  over-current throttle counters of the power monitors, one `tegrastats` sample (power rails).
- Raspberry Pi: the model, `vcgencmd measure_temp`, `get_throttled` (bit flags) and
  `measure_clock arm`.
- Coral: the Edge TPU (PCIe `/dev/apex_N`, or the USB ids 1a6e:089a before its firmware is loaded
  and 18d1:9302 after), the libedgetpu package version, the Edge TPU temperature and trip point.

Each tool's output goes through a pure `parse_*` function, tested on real published outputs
(tests/fixtures/devices). A tool that is missing, slow or refused is left out, never guessed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Any, Sequence

TOOL_TIMEOUT_S = 5.0

# Raspberry Pi `vcgencmd get_throttled` bits (Raspberry Pi documentation, "get_throttled").
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capped_occurred",
    18: "throttled_occurred",
    19: "soft_temperature_limit_occurred",
}
# Bits that mean the CPU ran slower than asked: now (1-3) and since boot (17-19).
SLOWDOWN_NOW = (1 << 1) | (1 << 2) | (1 << 3)
SLOWDOWN_OCCURRED = (1 << 17) | (1 << 18) | (1 << 19)

# Coral Edge TPU USB ids: before the runtime loads its firmware, and after.
CORAL_USB_IDS = {
    ("1a6e", "089a"): "Global Unichip Corp. (Edge TPU, firmware not yet loaded)",
    ("18d1", "9302"): "Google Inc. (Edge TPU, runtime initialised)",
}


def read_text(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return None


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


# Jetson -----------------------------------------------------------------------------------------

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
    """One `tegrastats` line: RAM, per-CPU load@MHz, temperatures, power rails (mW).

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
    gpu = re.search(r"GR3D_FREQ (\d+)%(?:@\[?(\d+))?", line)
    if gpu:
        out["gpu_load_pct"] = int(gpu.group(1))
        if gpu.group(2):
            out["gpu_mhz"] = int(gpu.group(2))
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


def devfreq_state(root: str = "/sys/class/devfreq") -> dict[str, dict[str, int]]:
    """Current/min/max frequency (Hz) of devfreq devices (the Jetson GPU is one)."""
    found = {}
    for dev in sorted(glob.glob(os.path.join(root, "*"))):
        entry = {}
        for key in ("cur_freq", "min_freq", "max_freq"):
            value = (read_text(os.path.join(dev, key)) or "").strip()
            if value.isdigit():
                entry[key] = int(value)
        if entry:
            found[os.path.basename(dev)] = entry
    return found


def over_current_counts(root: str = "/sys/class/hwmon") -> dict[str, int]:
    """Over-current throttle event counters of the Jetson power monitors (`oc*_event_cnt`)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "hwmon*", "oc*_event_cnt"))):
        value = (read_text(path) or "").strip()
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


def jetson_fingerprint() -> dict[str, Any]:
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


def jetson_state() -> dict[str, Any]:
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


def jetson_throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
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


# Raspberry Pi -----------------------------------------------------------------------------------

def parse_measure_temp(text: str) -> float | None:
    """`vcgencmd measure_temp` -> `temp=47.2'C`."""
    match = re.search(r"temp=(-?\d+(?:\.\d+)?)'?C", text)
    return float(match.group(1)) if match else None


def parse_measure_clock(text: str) -> int | None:
    """`vcgencmd measure_clock arm` -> `frequency(48)=1500398464` (Hz)."""
    match = re.search(r"frequency\(\d+\)=(\d+)", text)
    return int(match.group(1)) if match else None


def parse_get_throttled(text: str) -> dict[str, Any] | None:
    """`vcgencmd get_throttled` (`throttled=0x50005`) or the firmware's sysfs file (`50005`)."""
    match = re.fullmatch(r"(?:throttled=)?(?:0x)?([0-9a-fA-F]+)", text.strip())
    if not match:
        return None
    value = int(match.group(1), 16)
    flags = {name: bool(value & (1 << bit)) for bit, name in THROTTLE_BITS.items()}
    return {"raw": f"0x{value:x}", "value": value, "flags": flags}


def rpi_fingerprint() -> dict[str, Any]:
    fp: dict[str, Any] = {}
    model = parse_device_tree_model(read_text("/proc/device-tree/model"))
    if model:
        fp["model"] = model
    cpuinfo = read_text("/proc/cpuinfo") or ""
    revision = re.search(r"^Revision\s*:\s*(\w+)", cpuinfo, re.MULTILINE)
    if revision:
        fp["board_revision"] = revision.group(1)
    version = run_tool(["vcgencmd", "version"])
    if version:
        fp["firmware"] = " ".join(version.split())
    return fp


def rpi_state() -> dict[str, Any]:
    st: dict[str, Any] = {}
    temp = run_tool(["vcgencmd", "measure_temp"])
    if temp and parse_measure_temp(temp) is not None:
        st["soc_temp_c"] = parse_measure_temp(temp)
    clock = run_tool(["vcgencmd", "measure_clock", "arm"])
    if clock and parse_measure_clock(clock) is not None:
        st["arm_clock_hz"] = parse_measure_clock(clock)
    flags = run_tool(["vcgencmd", "get_throttled"])
    if flags is None:  # without vcgencmd (Ubuntu images) the firmware driver has the same word
        flags = read_text("/sys/devices/platform/soc/soc:firmware/get_throttled")
    parsed = parse_get_throttled(flags) if flags else None
    if parsed:
        st["throttled_flags"] = parsed
    return st


def rpi_throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    a = (before.get("throttled_flags") or {}).get("value")
    b = (after.get("throttled_flags") or {}).get("value")
    if b is None:
        return None
    if b & SLOWDOWN_NOW:
        return True
    if a is None:
        return None
    if (b & SLOWDOWN_OCCURRED) & ~a:
        return True  # a "has occurred" bit appeared during the job
    if a & SLOWDOWN_OCCURRED:
        return None  # already set since boot: a slowdown during the job would not show
    return False


# Coral ------------------------------------------------------------------------------------------

def parse_lsusb(text: str) -> list[dict[str, str]]:
    """Coral Edge TPUs among `lsusb` lines (`Bus 002 Device 002: ID 1a6e:089a Global ...`)."""
    found = []
    for bus, dev, vid, pid in re.findall(
            r"^Bus (\d+) Device (\d+): ID ([0-9a-f]{4}):([0-9a-f]{4})", text, re.MULTILINE):
        if (vid, pid) in CORAL_USB_IDS:
            found.append({"bus": bus, "device": dev, "id": f"{vid}:{pid}",
                          "state": CORAL_USB_IDS[(vid, pid)]})
    return found


def usb_edgetpus(root: str = "/sys/bus/usb/devices") -> list[dict[str, str]]:
    """Coral Edge TPUs on USB, from sysfs (no lsusb needed)."""
    found = []
    for dev in sorted(glob.glob(os.path.join(root, "*"))):
        vid = (read_text(os.path.join(dev, "idVendor")) or "").strip().lower()
        pid = (read_text(os.path.join(dev, "idProduct")) or "").strip().lower()
        if (vid, pid) in CORAL_USB_IDS:
            found.append({"path": os.path.basename(dev), "id": f"{vid}:{pid}",
                          "state": CORAL_USB_IDS[(vid, pid)]})
    return found


def parse_dpkg_edgetpu(text: str) -> dict[str, str]:
    """libedgetpu packages and versions from `dpkg -l` or `dpkg-query -W` output."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "ii":
            name, version = parts[1], parts[2]
        elif len(parts) == 2:
            name, version = parts
        else:
            continue
        name = name.split(":")[0]
        if name.startswith("libedgetpu"):
            found[name] = version
    return found


def edgetpu_temperature(apex: str) -> dict[str, float]:
    """Edge TPU temperature and first throttling trip point (PCIe driver, millidegrees C)."""
    out = {}
    for key in ("temp", "trip_point0_temp"):
        value = (read_text(os.path.join("/sys/class/apex", apex, key)) or "").strip()
        if value.lstrip("-").isdigit():
            out[key + "_c" if key == "temp" else "trip_point0_c"] = int(value) / 1000.0
    return out


def coral_fingerprint() -> dict[str, Any]:
    fp: dict[str, Any] = {}
    model = parse_device_tree_model(read_text("/proc/device-tree/model"))
    if model:
        fp["model"] = model
    pcie = sorted(os.path.basename(p) for p in glob.glob("/dev/apex_*"))
    usb = usb_edgetpus()
    fp["edgetpu"] = {"pcie": pcie, "usb": usb, "present": bool(pcie or usb)}
    packages = run_tool(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libedgetpu*"])
    if packages:
        fp["libedgetpu"] = parse_dpkg_edgetpu(packages)
    lib = edgetpu_library()
    if lib:
        fp["libedgetpu_path"] = lib
    return fp


def edgetpu_library() -> str | None:
    import ctypes.util

    name = ctypes.util.find_library("edgetpu")
    if not name:
        return None
    for libdir in ("/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
                   "/usr/lib/arm-linux-gnueabihf", "/usr/lib", "/usr/local/lib"):
        path = os.path.join(libdir, name)
        if os.path.exists(path):
            return os.path.realpath(path)
    return name


def coral_state() -> dict[str, Any]:
    temps = {os.path.basename(p): edgetpu_temperature(os.path.basename(p))
             for p in sorted(glob.glob("/sys/class/apex/apex_*"))}
    temps = {k: v for k, v in temps.items() if v}
    return {"edgetpu_temperatures": temps} if temps else {}


def coral_throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    temps = after.get("edgetpu_temperatures") or {}
    verdicts = [t["temp_c"] >= t["trip_point0_c"] for t in temps.values()
                if "temp_c" in t and "trip_point0_c" in t]
    return any(verdicts) if verdicts else None


# dispatch ---------------------------------------------------------------------------------------

def _guarded(fn: Any, *args: Any) -> Any:
    """A probe must never cost the job: anything unexpected is reported, not raised."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - vendor tools and files vary too much
        return {"probe_error": f"{type(err).__name__}: {err}"}


_FINGERPRINT = {"jetson": jetson_fingerprint, "rpi": rpi_fingerprint, "coral": coral_fingerprint}
_STATE = {"jetson": jetson_state, "rpi": rpi_state, "coral": coral_state}
_THROTTLED = {"jetson": jetson_throttled, "rpi": rpi_throttled, "coral": coral_throttled}


def fingerprint(kind: str) -> dict[str, Any]:
    fn = _FINGERPRINT.get(kind)
    return {kind: _guarded(fn)} if fn else {}


def state(kind: str) -> dict[str, Any]:
    fn = _STATE.get(kind)
    return {kind: _guarded(fn)} if fn else {}


def throttled(before: dict[str, Any], after: dict[str, Any], kind: str) -> bool | None:
    fn = _THROTTLED.get(kind)
    if fn is None:
        return None
    verdict = _guarded(fn, before.get(kind) or {}, after.get(kind) or {})
    return verdict if isinstance(verdict, bool) else None


__all__ = [
    "fingerprint", "state", "throttled", "parse_nv_tegra_release", "parse_nvpmodel_query",
    "parse_jetson_clocks_show", "parse_tegrastats", "parse_measure_temp", "parse_measure_clock",
    "parse_get_throttled", "parse_lsusb", "parse_dpkg_edgetpu", "usb_edgetpus",
]
