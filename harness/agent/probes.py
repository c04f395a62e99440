"""What the device is (fingerprint) and what state it is in (temperatures, clocks, governor).

Read from /proc and /sys with the stdlib only, so the same code runs on a laptop, a Raspberry Pi or
a Jetson. Anything that cannot be read is left out rather than guessed. Boards with their own
tools (Jetson's nvpmodel, the Pi's vcgencmd, the Coral's Edge TPU) add to these through their
module in `boards/`.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import re
import socket
import sys
import time
from typing import Any, Callable, Optional, Tuple

from . import boards, gpu, isa, rapl


def read_text(path: str) -> str | None:
    """A /proc, /sys or /etc file, stripped; None if it cannot be read.

    Decoded leniently: a stray non-UTF-8 byte (a vendor's device-tree string) must not lose the
    whole file.
    """
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip()
    except OSError:
        return None


def proc_status_kb(field: str, path: str = "/proc/self/status") -> int | None:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status, in kB."""
    text = read_text(path)
    if text is None:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def memory_mb() -> dict[str, float]:
    """This process's resident memory now: total, peak, and anonymous (heap, arenas, weights
    copied into them) apart from file-backed (mapped libraries and model files) and shared."""
    found = {}
    for key, field in (("rss_mb", "VmRSS"), ("hwm_mb", "VmHWM"), ("anon_mb", "RssAnon"),
                       ("file_mb", "RssFile"), ("shmem_mb", "RssShmem")):
        kb = proc_status_kb(field)
        if kb is not None:
            found[key] = kb / 1024.0
    return found


def release_freed_memory() -> bool:
    """Hand what the C library holds freed back to the system (glibc's `malloc_trim`), so that a
    session's memory is what the model holds, not what its load freed: whether glibc kept that
    went by the process's environment and address layout, with no change of the model (ResNet18
    in ONNX Runtime: `model_mb` 129.8 or 149.5 MiB in two runs from one shell, 64.7 in every run
    once released). False where the C library has no such call (musl, macOS): there freed memory
    stays in the figures, and the fingerprint's `libc` says which library it was."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


_TRIM: list[Any] = []  # glibc's malloc_trim once looked up ([None] where there is none)


def _malloc_trim() -> Any:
    if not _TRIM:
        try:
            _TRIM.append(ctypes.CDLL(None).malloc_trim)
        except (OSError, AttributeError):
            _TRIM.append(None)
    return _TRIM[0]


def libc() -> str | None:
    """The C library and its version ("glibc 2.36"), None where it does not say (musl)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") or None
    except (ValueError, OSError, AttributeError):
        return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is that of what follows;
    False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cpu_model(cpuinfo: str | None) -> str | None:
    if not cpuinfo:
        return platform.processor() or None
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        match = re.search(rf"^{re.escape(key)}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return None


def os_release() -> str | None:
    text = read_text("/etc/os-release")
    if not text:
        return None
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.MULTILINE)
    return match.group(1) if match else None


def mem_total_mb() -> float | None:
    text = read_text("/proc/meminfo")
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text or "", re.MULTILINE)
    return int(match.group(1)) / 1024.0 if match else None


def numpy_version() -> str | None:
    try:
        import numpy
    except ImportError:
        return None
    return str(numpy.__version__)


def usable_cpus() -> list[int] | None:
    """The CPUs this process may run on (its affinity: a container's, cgroup's or taskset's
    limit included), what a profile's `cpu_affinity` may name; None where the OS does not say."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))


def fingerprint(kind: str = "linux") -> dict[str, Any]:
    cpuinfo = read_text("/proc/cpuinfo")
    cpu = isa.kernel_flags(cpuinfo or "", platform.machine())
    fp: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(cpuinfo),
        # the instruction-set extensions that pick kernels: part of what the device is
        "isa": cpu["isa"],
        "cpu_flags": cpu["flags"],
        "cpu_count": os.cpu_count(),
        "mem_total_mb": mem_total_mb(),
        "kernel": platform.release(),
        "os": os_release(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "numpy": numpy_version(),
        # whose allocator the memory figures went through (see release_freed_memory)
        "libc": libc(),
    }
    # NVIDIA GPUs through NVML; a Jetson has no NVML (its board module reads tegrastats)
    fp["gpu"] = gpu.fingerprint() if kind != "jetson" else {"absent": "Jetson: no NVML"}
    # whether the CPU package's energy can be measured here, and if not readable, why
    fp["rapl"] = rapl.describe()
    fp.update(boards.fingerprint(kind))
    return fp


def _cpu_sort_key(path: str) -> int:
    match = re.search(r"cpu(\d+)", path)
    return int(match.group(1)) if match else 0


def cpu_frequencies_khz() -> dict[str, int]:
    found = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"),
                       key=_cpu_sort_key):
        value = read_text(path)
        if value and value.isdigit():
            found[f"cpu{_cpu_sort_key(path)}"] = int(value)
    return found


def governors() -> dict[str, str]:
    found = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"),
                       key=_cpu_sort_key):
        value = read_text(path)
        if value:
            found[f"cpu{_cpu_sort_key(path)}"] = value
    return found


def temperatures_c() -> dict[str, float]:
    """Every /sys/class/thermal zone, by its type (cpu-thermal, GPU-therm, ...)."""
    found = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = read_text(os.path.join(zone, "temp"))
        if raw is None or not raw.lstrip("-").isdigit():
            continue
        name = read_text(os.path.join(zone, "type")) or os.path.basename(zone)
        if name in found:
            name = f"{name}:{os.path.basename(zone)}"
        found[name] = int(raw) / 1000.0
    return found


def throttle_counts() -> dict[str, int]:
    """Per-CPU thermal throttle event counters, where the kernel exposes them (x86)."""
    found = {}
    pattern = "/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle/core_throttle_count"
    for path in glob.glob(pattern):
        value = read_text(path)
        if value and value.isdigit():
            found[f"cpu{_cpu_sort_key(path)}"] = int(value)
    return found


def parse_cpu_ticks(stat: str) -> tuple[int, int] | None:
    """(busy, all) clock ticks of the whole machine from /proc/stat's `cpu` line. Busy is all but
    idle and iowait: steal (another guest holding the CPU of a VM) counts as busy, since it too
    takes the CPU from the timed model; guest time is already in user."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:9]]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
            return sum(ticks) - idle, sum(ticks)
    return None


# what OtherLoad reads at a moment: /proc/stat's busy and all ticks (None without it), this
# process's own CPU seconds, and the clock (typing's names: the agent runs on Python 3.8)
Reading = Tuple[Optional[Tuple[int, int]], float, float]


def _reading() -> Reading:
    times = os.times()
    return (parse_cpu_ticks(read_text("/proc/stat") or ""), times.user + times.system,
            time.perf_counter())


class OtherLoad:
    """How many CPUs' worth of work others did during a window: the machine's busy time
    (/proc/stat) less this process's own, all threads (`os.times`), over the window. Unlike the
    load average, which lags a minute and counts the benchmark's own previous sessions, this is
    the window itself and leaves the measured process out. None without /proc/stat.

    `now`: what a moment reads (busy and all ticks of /proc/stat, this process's CPU seconds, the
    clock); the machine's, unless a test gives readings of its own."""

    def __init__(self, now: Callable[[], Reading] | None = None) -> None:
        self._start: tuple[tuple[int, int], float, float] | None = None
        self._now = now or _reading

    def start(self) -> None:
        ticks, own, t = self._now()
        self._start = (ticks, own, t) if ticks is not None else None

    def stop(self) -> float | None:
        if self._start is None:
            return None
        ticks, own, t = self._now()
        (busy0, _all0), own0, t0 = self._start
        if ticks is None or t <= t0:
            return None
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others_s = (ticks[0] - busy0) / hz - (own - own0)
        return round(max(others_s, 0.0) / (t - t0), 3)


def state(kind: str = "linux") -> dict[str, Any]:
    st: dict[str, Any] = {
        "time": time.time(),
        "governors": governors(),
        "cpu_freq_khz": cpu_frequencies_khz(),
        "temperatures_c": temperatures_c(),
        "throttle_counts": throttle_counts(),
    }
    try:
        st["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    gpus = gpu.state() if kind != "jetson" else {}
    if gpus:
        st["gpu"] = gpus
    st.update(boards.state(kind))
    return st


def throttled(before: dict[str, Any], after: dict[str, Any], kind: str = "linux"
              ) -> bool | None:
    """Whether the device throttled between two states; None when it cannot be told."""
    verdicts: list[bool | None] = []
    a, b = before.get("throttle_counts") or {}, after.get("throttle_counts") or {}
    if a and b:
        verdicts.append(any(b.get(cpu, 0) > count for cpu, count in a.items()))
    verdicts.append(gpu.slowed_down(before.get("gpu") or {}, after.get("gpu") or {}))
    verdicts.append(boards.throttled(before, after, kind))
    known = [v for v in verdicts if v is not None]
    return any(known) if known else None


def python_info() -> dict[str, Any]:
    return {"executable": sys.executable, "version": platform.python_version()}
