"""Raspberry Pi: the model, firmware, SoC temperature, ARM clock and the firmware's throttle flags.

The facts come from /proc/device-tree/model, the `Revision` line of /proc/cpuinfo and the
firmware's `vcgencmd` (`version`, `measure_temp`, `measure_clock arm`, `get_throttled`); images
without vcgencmd (Ubuntu) still have the throttle word in the firmware driver's sysfs file.
The Pi has no power sensor and no board tuning beyond the generic CPU governor.
"""

from __future__ import annotations

import re
from typing import Any

from ..probes import read_text
from . import parse_device_tree_model, run_tool

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

GET_THROTTLED_SYSFS = "/sys/devices/platform/soc/soc:firmware/get_throttled"


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


def fingerprint() -> dict[str, Any]:
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


def state() -> dict[str, Any]:
    st: dict[str, Any] = {}
    temp = run_tool(["vcgencmd", "measure_temp"])
    if temp and parse_measure_temp(temp) is not None:
        st["soc_temp_c"] = parse_measure_temp(temp)
    clock = run_tool(["vcgencmd", "measure_clock", "arm"])
    if clock and parse_measure_clock(clock) is not None:
        st["arm_clock_hz"] = parse_measure_clock(clock)
    flags = run_tool(["vcgencmd", "get_throttled"])
    if flags is None:  # without vcgencmd (Ubuntu images) the firmware driver has the same word
        flags = read_text(GET_THROTTLED_SYSFS)
    parsed = parse_get_throttled(flags) if flags else None
    if parsed:
        st["throttled_flags"] = parsed
    return st


def throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
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
