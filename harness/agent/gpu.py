"""NVIDIA GPUs through NVML: what they are (fingerprint), their state, memory and energy.

NVML comes from `nvidia-ml-py` (`import pynvml`), imported only when a fingerprint or a state is
taken and optional: a device without it, or without a driver (a Jetson, where NVML does not
exist and `tegrastats` in `boards/jetson.py` is the source, or a machine without a GPU), records
why instead of a guess. Each call opens and closes NVML itself, so nothing stays initialised
across the timed window. GPU indices are NVML's; a runtime that knows the GPU it runs on by UUID
(torch does) is matched by UUID, which survives `CUDA_VISIBLE_DEVICES` renumbering.

Importing pynvml costs 15-40 ms of every session that takes a fingerprint or a state, and most
devices (a Raspberry Pi, a Coral, a CPU box) have no NVIDIA driver at all. So before it, the files
say whether NVML could be here (`driver_absent`): NVML is asked wherever there is any sign of the
driver or of NVML's library (`libnvidia-ml.so.1`): the kernel driver's /proc/driver/nvidia (bare
metal, and most containers), its device nodes /dev/nvidia* (what the NVIDIA container runtime
mounts), WSL2's /dev/dxg, or the library where the dynamic loader finds it (LD_LIBRARY_PATH, the
usual folders, WSL's /usr/lib/wsl/lib, /etc/ld.so.cache). Only where there is none is pynvml left
unimported, the reason recorded as for a missing package (`{"absent": why}` in the fingerprint).

Stdlib only (plus pynvml where installed); Python 3.8 syntax.
"""

from __future__ import annotations

import os
import sys
import time
from functools import lru_cache
from typing import Any

# Clock-event reasons that mean the GPU slowed itself down (not idle, not an application clock
# setting): thermal and hardware slowdowns and the software power cap.
_SLOWDOWN_REASONS = ("HwSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown",
                     "SwThermalSlowdown", "SwPowerCap")


NVML_LIBRARY = "libnvidia-ml.so.1"  # what pynvml loads on Linux
# Where the dynamic loader looks besides LD_LIBRARY_PATH and its cache, and WSL2's driver folder.
_LIBRARY_DIRS = ("usr/lib/wsl/lib", "lib", "lib64", "usr/lib", "usr/lib64", "usr/local/lib",
                 "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu")


class NvmlAbsent(Exception):
    """NVML cannot be used here; the message says why (no package, no driver, no GPU)."""


def in_loader_cache(name: str, root: str = "/") -> bool | None:
    """Whether /etc/ld.so.cache names library `name` (None: there is no cache to read)."""
    try:
        with open(os.path.join(root, "etc", "ld.so.cache"), "rb") as f:
            return name.encode() + b"\0" in f.read()
    except OSError:
        return None


@lru_cache(maxsize=None)
def driver_absent(root: str = "/") -> str | None:
    """Why NVML cannot be here, told from files under `root` without loading anything; None
    where it may be (any sign of an NVIDIA driver or of NVML's library), and off Linux."""
    if not sys.platform.startswith("linux"):
        return None  # the signs below are Linux's: elsewhere NVML is asked as before

    def at(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    if os.path.exists(at("proc/driver/nvidia")) or os.path.exists(at("dev/dxg")):
        return None
    try:
        if any(name.startswith("nvidia") for name in os.listdir(at("dev"))):
            return None
    except OSError:
        pass
    folders = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if any(os.path.exists(os.path.join(at(d), NVML_LIBRARY))
           for d in folders + list(_LIBRARY_DIRS)):
        return None
    if in_loader_cache(NVML_LIBRARY, root):
        return None
    return (f"no NVIDIA driver (no /proc/driver/nvidia, /dev/nvidia*, /dev/dxg) and no "
            f"{NVML_LIBRARY} for NVML")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """An open NVML session: `with Nvml() as nv: ...`; NvmlAbsent when there is none.

    `root` is where the driver's files are looked for (`driver_absent`): "/" but in tests.
    """

    def __init__(self, root: str = "/") -> None:
        why = driver_absent(root)
        if why is not None:
            raise NvmlAbsent(why)
        try:
            import pynvml
        except ImportError as err:
            raise NvmlAbsent("nvidia-ml-py (pynvml) is not installed") from err
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            raise NvmlAbsent(f"NVML: {err}") from err
        try:
            self.count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as err:
            self.close()
            raise NvmlAbsent(f"NVML: {err}") from err
        if self.count == 0:
            self.close()
            raise NvmlAbsent("NVML finds no GPU")

    def __enter__(self) -> Nvml:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except self.nv.NVMLError:
            pass

    def _get(self, fn: str, *args: Any) -> Any:
        """One NVML query; None where this GPU or driver does not support it."""
        try:
            return getattr(self.nv, fn)(*args)
        except (self.nv.NVMLError, AttributeError):
            return None

    def handle(self, index: int = 0, uuid: str | None = None) -> Any:
        if uuid:
            found = self._get("nvmlDeviceGetHandleByUUID", uuid)
            if found is not None:
                return found
        return self.nv.nvmlDeviceGetHandleByIndex(index)

    def describe(self, index: int) -> dict[str, Any]:
        h = self.nv.nvmlDeviceGetHandleByIndex(index)
        mem = self._get("nvmlDeviceGetMemoryInfo", h)
        cap = self._get("nvmlDeviceGetCudaComputeCapability", h)
        return {
            "index": index,
            "name": _text(self._get("nvmlDeviceGetName", h)),
            "uuid": _text(self._get("nvmlDeviceGetUUID", h)),
            "memory_total_mb": mem.total / 2**20 if mem is not None else None,
            "compute_capability": "{}.{}".format(*cap) if cap else None,
            "power_limit_w": _milli(self._get("nvmlDeviceGetEnforcedPowerLimit", h)),
            "max_sm_clock_mhz": self._get("nvmlDeviceGetMaxClockInfo", h, self.nv.NVML_CLOCK_SM),
            "max_mem_clock_mhz": self._get("nvmlDeviceGetMaxClockInfo", h,
                                           self.nv.NVML_CLOCK_MEM),
        }

    def state(self, index: int) -> dict[str, Any]:
        return self.state_of(self.nv.nvmlDeviceGetHandleByIndex(index))

    def state_of(self, h: Any) -> dict[str, Any]:
        """The state of the GPU of handle `h` (`handle`: by UUID where one is known)."""
        mem = self._get("nvmlDeviceGetMemoryInfo", h)
        reasons = self._get("nvmlDeviceGetCurrentClocksEventReasons", h)
        if reasons is None:
            reasons = self._get("nvmlDeviceGetCurrentClocksThrottleReasons", h)
        return {
            "temperature_c": self._get("nvmlDeviceGetTemperature", h,
                                       self.nv.NVML_TEMPERATURE_GPU),
            "sm_clock_mhz": self._get("nvmlDeviceGetClockInfo", h, self.nv.NVML_CLOCK_SM),
            "mem_clock_mhz": self._get("nvmlDeviceGetClockInfo", h, self.nv.NVML_CLOCK_MEM),
            "power_w": _milli(self._get("nvmlDeviceGetPowerUsage", h)),
            "memory_used_mb": mem.used / 2**20 if mem is not None else None,
            "utilization_pct": getattr(self._get("nvmlDeviceGetUtilizationRates", h), "gpu",
                                       None),
            "pstate": self._get("nvmlDeviceGetPerformanceState", h),
            "clock_event_reasons": reason_names(self.nv, reasons),
        }

    def energy_mj(self, handle: Any) -> int | None:
        """The GPU's energy counter since the driver loaded (mJ); None on GPUs without one
        (before Volta)."""
        value = self._get("nvmlDeviceGetTotalEnergyConsumption", handle)
        return int(value) if value is not None else None

    def process_memory_mb(self, handle: Any, pid: int) -> float | None:
        """GPU memory NVML attributes to process `pid` (None where the driver does not say)."""
        procs = self._get("nvmlDeviceGetComputeRunningProcesses", handle) or []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            if getattr(p, "pid", None) == pid and isinstance(used, int):
                return used / 2**20
        return None


# The names nvidia-ml-py gives the reason bits: "ClocksEvent" since 12.535, "ClocksThrottle" before
# (the same bits; newer packages define both).
_REASON_PREFIXES = ("nvmlClocksEventReason", "nvmlClocksThrottleReason")


def reason_names(nv: Any, mask: int | None) -> list[str] | None:
    """The names of the clock-event reason bits set in `mask`, from the constants of the NVML
    module `nv`; None where the mask or the constants are missing (unknown, not "no slowdown")."""
    if mask is None:
        return None
    for prefix in _REASON_PREFIXES:
        bits = {attr[len(prefix):]: getattr(nv, attr) for attr in dir(nv)
                if attr.startswith(prefix)}
        bits = {name: bit for name, bit in bits.items()
                if name not in ("All", "None") and isinstance(bit, int) and bit}
        if bits:
            return sorted(name for name, bit in bits.items() if mask & bit)
    return None


def _milli(value: Any) -> float | None:
    return value / 1000.0 if isinstance(value, (int, float)) else None


def fingerprint(root: str = "/") -> dict[str, Any]:
    """Driver, CUDA driver version and every GPU, or `{"absent": why}`."""
    try:
        with Nvml(root) as nv:
            cuda = nv._get("nvmlSystemGetCudaDriverVersion_v2") or nv._get(
                "nvmlSystemGetCudaDriverVersion")
            return {
                "source": "nvml",
                "driver": _text(nv._get("nvmlSystemGetDriverVersion")),
                "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
                "nvml": _text(nv._get("nvmlSystemGetNVMLVersion")),
                "gpus": [nv.describe(i) for i in range(nv.count)],
            }
    except NvmlAbsent as err:
        return {"absent": str(err)}


def state(root: str = "/") -> dict[str, Any]:
    """Temperature, SM and memory clocks, power and clock-event reasons of every GPU, by index;
    empty where NVML is absent (the fingerprint says why)."""
    try:
        with Nvml(root) as nv:
            return {str(i): nv.state(i) for i in range(nv.count)}
    except NvmlAbsent:
        return {}


def slowed_down(before: dict[str, Any], after: dict[str, Any]) -> bool | None:
    """Whether a GPU reported a thermal, hardware or power-cap slowdown in either state."""
    seen = False
    for st in (before, after):
        for gpu in st.values():
            reasons = gpu.get("clock_event_reasons")
            if reasons is None:
                continue
            seen = True
            if any(r in _SLOWDOWN_REASONS for r in reasons):
                return True
    return False if seen else None


class EnergyMeter:
    """NVML's energy counter and the process's GPU memory around the timed window of one GPU,
    found as the runtime identified it: by UUID where it gives one (torch does), else by index.

    `open()` initialises NVML and finds the GPU before the window; `start()` and `stop()` only
    read the counter, each with the moment of its reading, as the last thing before the window
    and the first after it; `finish()` then reads the process's memory and the GPU's state and
    shuts NVML down. NVML stays initialised across the window with nothing asked of it: opening
    it afresh after the window, with the session's statistics before that, charged their
    milliseconds to the window's energy. Mean power is the counter's energy over its own
    interval (`energy_interval_s`, between the two readings), and the energy per inference that
    power over the window's time (`window_s`) per iteration, so that what lies between the
    window and a reading is not charged to the model. A device without NVML or without an
    energy counter gives None.
    """

    def __init__(self, index: int = 0, uuid: str | None = None, root: str = "/") -> None:
        self.index = index
        self.uuid = uuid
        self.root = root
        self._nv: Nvml | None = None
        self._handle: Any = None
        self._start: tuple[int | None, float] = (None, 0.0)
        self._end: tuple[int | None, float] = (None, 0.0)

    def open(self) -> None:
        try:
            self._nv = Nvml(self.root)
            self._handle = self._nv.handle(self.index, self.uuid)
        except Exception:  # noqa: BLE001 - NVML absent or failing must not fail the job
            self.close()

    def _read(self) -> tuple[int | None, float]:
        energy = self._nv.energy_mj(self._handle) if self._nv is not None else None
        return energy, time.perf_counter()

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        self._end = self._read()

    def finish(self, window_s: float, iterations: int, pid: int) -> dict[str, Any] | None:
        """What the readings and NVML say of the window of `window_s` seconds and `iterations`
        inferences; NVML is shut down."""
        nv = self._nv
        if nv is None:
            return None
        try:
            process_mb = nv.process_memory_mb(self._handle, pid)
            state = nv.state_of(self._handle)
        except Exception:  # noqa: BLE001
            return None
        finally:
            self.close()
        # NVML names a process by its pid in the host's namespace: inside a container the
        # process's own pid is not found, and the GPU's used memory is what is left to go on.
        out: dict[str, Any] = {"source": "nvml", "gpu_index": self.index, "gpu_uuid": self.uuid,
                               "process_memory_mb": process_mb,
                               "device_memory_used_mb": state.get("memory_used_mb"),
                               "power_w_after": state.get("power_w")}
        (start, start_t), (end, end_t) = self._start, self._end
        interval_s = end_t - start_t
        if start is not None and end is not None and interval_s > 0 and window_s > 0 \
                and iterations:
            energy_mj = end - start
            mean_w = energy_mj / 1000.0 / interval_s
            out.update({"energy_mj": energy_mj, "mean_w": mean_w,
                        "energy_mj_per_inference": mean_w * window_s * 1000.0 / iterations,
                        "energy_interval_s": interval_s, "window_s": window_s})
        return out

    def close(self) -> None:
        if self._nv is not None:
            self._nv.close()
        self._nv = self._handle = None


