"""Google Coral: the Edge TPU (PCIe or USB), the libedgetpu it runs with, and its temperature.

The Edge TPU shows as PCIe `/dev/apex_N`, or on USB with the ids 1a6e:089a before its firmware is
loaded and 18d1:9302 after; the libedgetpu package version comes from dpkg and the library path
from the loader. The PCIe driver reports the TPU's temperature and its first throttling trip
point, which is what throttling means here. No power sensor and no board tuning.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from ..probes import read_text
from . import parse_device_tree_model, run_tool

# Coral Edge TPU USB ids: before the runtime loads its firmware, and after.
CORAL_USB_IDS = {
    ("1a6e", "089a"): "Global Unichip Corp. (Edge TPU, firmware not yet loaded)",
    ("18d1", "9302"): "Google Inc. (Edge TPU, runtime initialised)",
}


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
        vid = (read_text(os.path.join(dev, "idVendor")) or "").lower()
        pid = (read_text(os.path.join(dev, "idProduct")) or "").lower()
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
        value = read_text(os.path.join("/sys/class/apex", apex, key)) or ""
        if value.lstrip("-").isdigit():
            out[key + "_c" if key == "temp" else "trip_point0_c"] = int(value) / 1000.0
    return out


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


def fingerprint() -> dict[str, Any]:
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


def state() -> dict[str, Any]:
    temps = {os.path.basename(p): edgetpu_temperature(os.path.basename(p))
             for p in sorted(glob.glob("/sys/class/apex/apex_*"))}
    temps = {k: v for k, v in temps.items() if v}
    return {"edgetpu_temperatures": temps} if temps else {}


def throttled(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    temps = after.get("edgetpu_temperatures") or {}
    verdicts = [t["temp_c"] >= t["trip_point0_c"] for t in temps.values()
                if "temp_c" in t and "trip_point0_c" in t]
    return any(verdicts) if verdicts else None
