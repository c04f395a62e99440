"""Device profiles: what a device *is* (address, user, runtimes), loaded from YAML and validated.

A profile is plain data (`DeviceProfile`); transports and runtimes act on it. A DEVICE argument is
either a profile name (`devices/NAME.yaml`) or a path to a YAML file. Every problem is reported as
one `ConfigError` naming the file and the field. Suites are loaded by `harness.compress.suite`.
"""

from __future__ import annotations

import math
import os
import posixpath
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness import yamlfile
from harness.artifacts import SAFE_NAME_RULE, is_safe_name
from harness.errors import ConfigError, EdgebenchError

DEVICES_DIR = Path("devices")  # the default: see find_devices_dir()
DEVICE_KINDS = ("local", "linux", "jetson", "rpi", "coral")
MAX_THREADS = 1024  # far above any device; the agent also refuses more than 4 per CPU
MAX_TIMEOUT_S = 7 * 24 * 3600.0
TRANSPORTS = ("local", "ssh", "labgrid")
DEFAULT_PLACE_WAIT_S = 1800.0


@dataclass(frozen=True)
class SSHSettings:
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None  # None: use the SSH agent / default keys; never a password
    known_hosts: str = "~/.ssh/known_hosts"
    trust_on_first_use: bool = False
    jump_host: str | None = None  # "user@host:port" of a bastion, optional
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    keepalive_s: float = 15.0


@dataclass(frozen=True)
class LabgridSettings:
    """A device in a labgrid lab: its place, reserved and acquired through the coordinator; the
    address, user and port come from the place's `NetworkService` (harness/farm/labgrid.py)."""

    coordinator: str  # HOST:PORT of the labgrid coordinator (gRPC)
    place: str
    wait_s: float = DEFAULT_PLACE_WAIT_S  # how long to wait for a place someone else holds


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    kind: str = "local"
    transport: str = "local"
    ssh: SSHSettings | None = None
    labgrid: LabgridSettings | None = None
    python: str | None = None  # interpreter on the device; None: python3 (local: this one)
    cache_dir: str = "~/.cache/edgebench"
    runtimes: tuple[str, ...] = ("onnxruntime", "tflite")
    # Per-runtime settings passed to the agent, e.g. {onnxruntime: {providers: [...]}} on a
    # Jetson, {tflite: {delegates: [libedgetpu.so.1]}} on a Coral.
    runtime_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None
    tune: bool = False
    job_timeout_s: float = 600.0
    source: Path | None = None  # the YAML file it came from


def _expect(path: Path, data: dict[str, Any], key: str, types: type | tuple[type, ...],
            prefix: str = "") -> Any:
    value = data[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise ConfigError(path, f"must be {names}, got {value!r}", field=prefix + key)
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _check_keys(path: Path, data: dict[str, Any], allowed: set[str], prefix: str = "") -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(
            path, f"unknown field; known: {', '.join(sorted(allowed))}", field=prefix + unknown[0]
        )


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from `path`; ConfigError for a missing file or malformed YAML."""
    try:
        data = yamlfile.load(Path(path))
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    if not isinstance(data, dict):
        raise ConfigError(path, "must be a YAML mapping at the top level")
    return data


def parse_profile(path: Path, data: dict[str, Any]) -> DeviceProfile:
    allowed = {f.name for f in fields(DeviceProfile)} - {"source"}
    _check_keys(path, data, allowed)
    if "name" not in data:
        raise ConfigError(path, "required field is missing", field="name")
    kw: dict[str, Any] = {"name": str(_expect(path, data, "name", str)), "source": Path(path)}
    if not is_safe_name(kw["name"]):  # it names report files and the device in every result
        raise ConfigError(path, f"{kw['name']!r} is not a usable device name; use "
                          f"{SAFE_NAME_RULE}", field="name")
    for key, choices in (("kind", DEVICE_KINDS), ("transport", TRANSPORTS)):
        if key in data:
            value = _expect(path, data, key, str)
            if value not in choices:
                raise ConfigError(path, f"{value!r} is not one of {', '.join(choices)}", field=key)
            kw[key] = value
    for key in ("python", "cache_dir"):
        if key in data:
            kw[key] = _expect(path, data, key, str)
    if "cache_dir" in kw:
        _check_cache_dir(path, kw["cache_dir"])
    if "runtimes" in data:
        runtimes = _expect(path, data, "runtimes", list)
        if not runtimes or not all(isinstance(r, str) for r in runtimes):
            raise ConfigError(path, "must be a non-empty list of runtime names", field="runtimes")
        _check_runtime_names(path, runtimes, "runtimes")
        kw["runtimes"] = tuple(runtimes)
    if data.get("runtime_options") is not None:
        per_runtime = _expect(path, data, "runtime_options", dict)
        _check_runtime_names(path, per_runtime, "runtime_options")
        for runtime, opts in per_runtime.items():
            if not isinstance(opts, dict):
                raise ConfigError(path, "must be a mapping of option: value",
                                  field=f"runtime_options.{runtime}")
            _check_runtime_options(path, runtime, opts)
        _check_options_used(path, per_runtime, kw.get("runtimes"))
        kw["runtime_options"] = {str(k): dict(v) for k, v in per_runtime.items()}
    if data.get("threads") is not None:
        threads = _expect(path, data, "threads", int)
        if not 1 <= threads <= MAX_THREADS:
            raise ConfigError(path, f"must be at least 1 and at most {MAX_THREADS}, got {threads}",
                              field="threads")
        kw["threads"] = threads
    if data.get("cpu_affinity") is not None:
        cpus = _expect(path, data, "cpu_affinity", list)
        if not cpus or not all(isinstance(c, int) and c >= 0 for c in cpus):
            raise ConfigError(path, "must be a list of CPU numbers", field="cpu_affinity")
        kw["cpu_affinity"] = tuple(cpus)
    if "tune" in data:
        kw["tune"] = _expect(path, data, "tune", bool)
    if "job_timeout_s" in data:
        kw["job_timeout_s"] = _seconds(path, data, "job_timeout_s")
    labgrid = kw.get("transport") == "labgrid"
    if data.get("ssh") is not None:
        kw["ssh"] = _parse_ssh(path, _expect(path, data, "ssh", dict), need_host=not labgrid)
    if kw.get("transport") == "ssh" and "ssh" not in kw:
        raise ConfigError(path, "transport is ssh but no ssh settings are given", field="ssh")
    if data.get("labgrid") is not None:
        kw["labgrid"] = _parse_labgrid(path, _expect(path, data, "labgrid", dict))
    if labgrid:
        if "labgrid" not in kw:
            raise ConfigError(path, "transport is labgrid but no labgrid settings (coordinator, "
                              "place) are given", field="labgrid")
        # the place's NetworkService gives address, user and port once it is acquired
        kw.setdefault("ssh", SSHSettings(host=""))
    return DeviceProfile(**kw)


def check_coordinator(path: Path, value: str, field: str) -> None:
    """HOST:PORT of a labgrid coordinator (`[v6 address]:PORT` too): without a port labgrid's
    client went to :443 and the run failed later as an unreachable host (exit 3)."""
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
    if (sep and host and (bracketed or ":" not in host) and port.isdigit()
            and 0 < int(port) < 65536):
        return
    example = f"{value}:20408" if value and ":" not in value else "lab.example.org:20408"
    raise ConfigError(path, f"must be HOST:PORT of the labgrid coordinator, such as {example} "
                      f"(labgrid-coordinator listens on 20408 unless told otherwise), got "
                      f"{value!r}", field=field)


def _parse_labgrid(path: Path, data: dict[str, Any]) -> LabgridSettings:
    _check_keys(path, data, {f.name for f in fields(LabgridSettings)}, prefix="labgrid.")
    kw: dict[str, Any] = {}
    for key in ("coordinator", "place"):
        if key not in data:
            raise ConfigError(path, "required field is missing", field=f"labgrid.{key}")
        value = str(_expect(path, data, key, str, prefix="labgrid."))
        if not value.strip():
            raise ConfigError(path, "must not be empty", field=f"labgrid.{key}")
        if key == "coordinator":
            check_coordinator(path, value.strip(), "labgrid.coordinator")
        if key == "place" and not is_safe_name(value):  # it names the place's lock file
            raise ConfigError(path, f"{value!r} is not a usable place name; use {SAFE_NAME_RULE}",
                              field="labgrid.place")
        kw[key] = value
    if "wait_s" in data:
        kw["wait_s"] = _seconds(path, data, "wait_s", prefix="labgrid.")
    return LabgridSettings(**kw)


def _seconds(path: Path, data: dict[str, Any], key: str, prefix: str = "") -> float:
    value = float(_expect(path, data, key, (int, float), prefix=prefix))
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise ConfigError(path, f"must be a number of seconds above 0 and at most "
                          f"{MAX_TIMEOUT_S:.0f} (a week), got {data[key]!r}", field=prefix + key)
    return value


def _check_runtime_names(path: Path, names: Any, where: str) -> None:
    """A runtime the agent does not have would never be planned (a typo such as `onnxruntim`
    left the device measuring nothing with it, said by no one)."""
    from harness.agent.runtimes import RUNTIME_MODULES

    for name in names:
        if name not in RUNTIME_MODULES:
            raise ConfigError(path, f"unknown runtime {name!r}; known: "
                              f"{', '.join(sorted(RUNTIME_MODULES))}", field=where)


def _check_options_used(path: Path, per_runtime: dict[str, Any],
                        runtimes: tuple[str, ...] | None) -> None:
    """Options for a runtime the profile does not list are never read (`bench --runtime` only
    picks among those listed): likely a typo in `runtimes`, refused like an unknown option."""
    listed = runtimes or DeviceProfile.runtimes
    for runtime, opts in per_runtime.items():
        if opts and runtime not in listed:
            said = "runtimes lists" if runtimes else "runtimes is not given, so the default is"
            raise ConfigError(path, f"options for {runtime}, which this profile does not "
                              f"measure with ({said} {', '.join(listed)}), so never used; add "
                              f"{runtime} to runtimes or remove them",
                              field=f"runtime_options.{runtime}")


def _check_runtime_options(path: Path, runtime: str, options: dict[str, Any]) -> None:
    """Against what the agent's runtime reads (harness/agent/runtimes/options.py): a key it
    does not read (`providerz` for `providers`) would leave the setting out without a word."""
    from harness.agent.runtimes.options import OptionError, check_options

    try:
        check_options(runtime, options)
    except OptionError as err:
        raise ConfigError(path, err.message, field=f"runtime_options.{runtime}.{err.field}"
                          ) from None


def _check_cache_dir(path: Path, cache_dir: str) -> None:
    # The cache path goes into device commands and tools' output (sha256sum escapes a name with
    # a backslash or newline): a plain POSIX path is asked for, rather than quoted everywhere.
    bad = sorted({c for c in cache_dir if c == "\\" or not c.isprintable()})
    if not cache_dir.strip() or bad:
        what = ", ".join(repr(c) for c in bad) if bad else "nothing"
        raise ConfigError(path, f"{cache_dir!r}: a cache folder path cannot hold {what}; use a "
                          "plain path such as ~/.cache/edgebench", field="cache_dir")
    why = cache_dir_place(cache_dir)
    if why is not None:
        raise ConfigError(path, f"{cache_dir!r}: {why}; edgebench's files would lie among "
                          "others' there, and devices clean refuses to clean it: use a folder "
                          "of its own such as ~/.cache/edgebench", field="cache_dir")


# Stands for the device's home folder, unknown here: no path holds a NUL, and it lies deep enough
# that `~/../..` is a folder above it, not `/`.
_DEVICE_HOME = "/\0" * 32 + "/~"


def cache_dir_place(cache_dir: str) -> str | None:
    """Why `devices clean` would refuse `cache_dir` for where it is (`/`, the home folder or
    above it), as far as the host can tell: by the device's rule (agent/cacheclean.py), with
    `~` and a relative path taken from the home folder as the device cache takes them
    (transport/cache.py). Links and an absolute path above the home folder (`/home`) only
    the device can resolve; it refuses those, and others' or world-writable folders, itself."""
    from harness.agent.cacheclean import unsafe_place

    if cache_dir == "~" or cache_dir.startswith("~/"):
        where = _DEVICE_HOME + cache_dir[1:]
    elif cache_dir.startswith("/"):
        where = cache_dir
    else:
        where = f"{_DEVICE_HOME}/{cache_dir}"
    why = unsafe_place(posixpath.normpath("/" + where.lstrip("/")), {_DEVICE_HOME})
    return why.replace(_DEVICE_HOME, "~") if why else None


def _parse_ssh(path: Path, data: dict[str, Any], need_host: bool = True) -> SSHSettings:
    allowed = {f.name for f in fields(SSHSettings)}
    if "password" in data:
        raise ConfigError(
            path, "passwords are never stored in a profile; use key_file or an SSH agent",
            field="ssh.password",
        )
    _check_keys(path, data, allowed, prefix="ssh.")
    if "host" not in data and need_host:
        raise ConfigError(path, "required field is missing", field="ssh.host")
    kw: dict[str, Any] = {"host": ""}
    for key in ("host", "user", "key_file", "known_hosts", "jump_host"):
        if data.get(key) is not None:
            kw[key] = str(_expect(path, data, key, (str, int), prefix="ssh."))
    _check_host(path, kw["host"], need_host)
    if "port" in data:
        port = _expect(path, data, "port", int, prefix="ssh.")
        if not 0 < port < 65536:
            raise ConfigError(path, f"{port} is not a TCP port", field="ssh.port")
        kw["port"] = port
    if "trust_on_first_use" in data:
        kw["trust_on_first_use"] = _expect(path, data, "trust_on_first_use", bool, prefix="ssh.")
    for key in ("connect_timeout_s", "command_timeout_s", "keepalive_s"):
        if key in data:
            kw[key] = _seconds(path, data, key, prefix="ssh.")
    return SSHSettings(**kw)


def _check_host(path: Path, host: str, need_host: bool = True) -> None:
    """`ssh.host` is the address alone: `pi@board` or `board:2222` was taken whole for a host
    name and failed at connect as `pi@pi@board: Name or service not known`, an empty one as
    `pi@:22`. What else it holds is said with the fields to give it in, all in one message."""
    if not host.strip():
        if need_host:
            raise ConfigError(path, "is empty; give the device's address (name or IP)",
                              field="ssh.host")
        return
    if any(ch.isspace() for ch in host):
        raise ConfigError(path, f"{host!r} holds a space; give the device's address alone",
                          field="ssh.host")
    rest = host.partition("://")[2] if "://" in host else host
    user, _, rest = rest.rpartition("@")
    name, colon, port = rest.rpartition(":")
    if not (colon and port.isdigit() and (name.count(":") == 0 or (
            name.startswith("[") and name.endswith("]")))):  # [v6]:port; a bare v6 has colons
        name, port = rest, ""
    if not user and not port and "://" not in host:
        return
    give = [f"ssh.user: {user}"] * bool(user) + [f"ssh.port: {port}"] * bool(port)
    raise ConfigError(path, f"{host!r} is more than an address: give "
                      + " and ".join([*give, f"ssh.host: {name.strip('[]')}"]),
                      field="ssh.host")


def _named_folder(folder: Path, source: str) -> Path:
    # a mistyped folder would otherwise hold no profiles: an empty list, every device unknown
    if not folder.is_dir():
        raise EdgebenchError(f"{folder}: {source} is not a folder of device profiles")
    return folder


def find_devices_dir(given: Path = DEVICES_DIR) -> Path:
    """Where profiles are: `given` unless it is the default, which is `$EDGEBENCH_DEVICES`, else
    ./devices, else the devices/ of the project edgebench runs from (so `local` is found from any
    working directory)."""
    if Path(given) != DEVICES_DIR:
        return _named_folder(Path(given), "--devices-dir")
    if os.environ.get("EDGEBENCH_DEVICES"):
        return _named_folder(Path(os.environ["EDGEBENCH_DEVICES"]).expanduser(),
                             "$EDGEBENCH_DEVICES")
    project = Path(__file__).resolve().parents[1] / DEVICES_DIR
    return DEVICES_DIR if DEVICES_DIR.is_dir() or not project.is_dir() else project


def is_profile_path(device: str) -> bool:
    """Whether DEVICE names a profile file (`lab/pi.yaml`) rather than a profile or farm
    device by name (`pi`)."""
    return Path(device).suffix in (".yaml", ".yml") or "/" in device


def profile_path(device: str, devices_dir: Path = DEVICES_DIR) -> Path:
    """The YAML file for DEVICE: a path if it looks like one, else devices/NAME.yaml."""
    if is_profile_path(device):
        return Path(device)
    devices_dir = find_devices_dir(devices_dir)
    path = devices_dir / f"{device}.yaml"
    if not path.is_file():
        known = list_profiles(devices_dir)
        raise EdgebenchError(
            f"unknown device {device!r} (no {path}); known: {', '.join(known) or '(none)'}"
        )
    return path


def list_profiles(devices_dir: Path = DEVICES_DIR) -> list[str]:
    folder = find_devices_dir(devices_dir)
    return sorted(p.stem for p in folder.glob("*.yaml") if p.stem != "farm")


def load_profile(device: str, devices_dir: Path = DEVICES_DIR) -> DeviceProfile:
    path = profile_path(device, devices_dir)
    profile = parse_profile(path, read_yaml(path))
    if path.stem == device and profile.name != device:
        # Results are stored under the profile's name: a copy of rpi.yaml as mypi.yaml, its name
        # left as it was, measured `--device mypi` as rpi, and two boards so copied mixed in the
        # store. A profile given by its path may name its device as it likes.
        raise ConfigError(path, f"{profile.name!r} is not the name this file is found by; "
                          f"results are stored under the name, so `--device {device}` would be "
                          f"stored as {profile.name} (a board copied from another's profile "
                          f"mixes with it): set name: {device}", field="name")
    return profile
