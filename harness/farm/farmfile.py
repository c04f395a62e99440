"""The farm file (`devices/farm.yaml`): which labgrid coordinator, and for each place of the lab
the edgebench device profile to use there.

A place's entry holds the fields of a device profile (kind, runtimes, python, threads, ssh key and
known_hosts...) except what labgrid knows: the address, user and port come from the place's
`NetworkService` once it is acquired, and `transport` is `labgrid`. `defaults` are merged into
every place (a place's own fields win; its `ssh` is merged key by key). The device is named after
its place unless the entry gives a `name`. Every problem is one `ConfigError` naming the file and
the field (`places.NAME.field`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.config import (
    DEFAULT_PLACE_WAIT_S,
    DeviceProfile,
    SSHSettings,
    _check_keys,
    _expect,
    _seconds,
    check_coordinator,
    find_devices_dir,
    parse_profile,
    read_yaml,
)
from harness.errors import ConfigError

FARM_FILE = "farm.yaml"
MAX_RETRIES = 20
FARM_KEYS = {"coordinator", "wait_s", "retries", "backoff_s", "defaults", "places"}
# What labgrid gives or the farm sets: a place entry may not say it.
FROM_LABGRID = {"transport", "labgrid"}
FROM_NETWORK_SERVICE = {"host", "port", "user"}
# What a place entry (or `defaults`) may say: a profile's fields less those.
PLACE_KEYS = {f.name for f in fields(DeviceProfile)} - {"source"} - FROM_LABGRID
PLACE_SSH_KEYS = {f.name for f in fields(SSHSettings)} - FROM_NETWORK_SERVICE


@dataclass(frozen=True)
class Farm:
    path: Path
    coordinator: str
    devices: tuple[DeviceProfile, ...]  # in the file's order, transport labgrid
    wait_s: float = DEFAULT_PLACE_WAIT_S
    retries: int = 2  # more tries of a device whose transport failed
    backoff_s: float = 30.0  # wait before the first retry, doubling after each

    def device(self, name: str) -> DeviceProfile | None:
        return next((d for d in self.devices if d.name == name), None)


def default_farm_file(devices_dir: Path) -> Path:
    return find_devices_dir(devices_dir) / FARM_FILE


def load_farm(path: Path) -> Farm:
    path = Path(path)
    data = read_yaml(path)
    _check_keys(path, data, FARM_KEYS)
    for key in ("coordinator", "places"):
        if key not in data:
            raise ConfigError(path, "required field is missing", field=key)
    coordinator = str(_expect(path, data, "coordinator", str)).strip()
    check_coordinator(path, coordinator, "coordinator")
    wait_s = _seconds(path, data, "wait_s") if "wait_s" in data else DEFAULT_PLACE_WAIT_S
    retries = 2
    if "retries" in data:
        retries = _expect(path, data, "retries", int)
        if not 0 <= retries <= MAX_RETRIES:
            raise ConfigError(path, f"must be between 0 and {MAX_RETRIES}, got {retries}",
                              field="retries")
    backoff_s = _seconds(path, data, "backoff_s") if "backoff_s" in data else 30.0
    defaults = _expect(path, data, "defaults", dict) if data.get("defaults") is not None else {}
    _refuse_labgrid_fields(path, defaults, "defaults")
    places = _expect(path, data, "places", dict)
    if not places:
        raise ConfigError(path, "lists no place", field="places")
    devices = []
    for place, entry in places.items():
        where = f"places.{place}"
        if not isinstance(entry, dict):
            raise ConfigError(path, "must be a mapping of device profile fields", field=where)
        _refuse_labgrid_fields(path, entry, where)
        merged = _merged(defaults, entry)
        merged.setdefault("name", str(place))
        merged["transport"] = "labgrid"
        merged["labgrid"] = {"coordinator": coordinator, "place": str(place), "wait_s": wait_s}
        try:
            devices.append(parse_profile(path, merged))
        except ConfigError as err:  # say which place the field belongs to
            field = f"{where}.{err.field}" if err.field else where
            raise ConfigError(path, err.message, field=field) from None
    names = [d.name for d in devices]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(path, f"device name {twice[0]!r} is used by two places", field="places")
    return Farm(path=path, coordinator=coordinator, devices=tuple(devices), wait_s=wait_s,
                retries=retries, backoff_s=backoff_s)


def _merged(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    merged = {**defaults, **entry}
    if isinstance(defaults.get("ssh"), dict) and isinstance(entry.get("ssh"), dict):
        merged["ssh"] = {**defaults["ssh"], **entry["ssh"]}
    return merged


def _refuse_labgrid_fields(path: Path, entry: dict[str, Any], where: str) -> None:
    given = sorted(FROM_LABGRID & set(entry))
    if given:
        raise ConfigError(path, "set by the farm (transport labgrid, this file's coordinator)",
                          field=f"{where}.{given[0]}")
    ssh = entry.get("ssh")
    if isinstance(ssh, dict):
        given = sorted(FROM_NETWORK_SERVICE & set(ssh))
        if given:
            raise ConfigError(path, "comes from the place's NetworkService in labgrid; remove "
                              "it here", field=f"{where}.ssh.{given[0]}")
    # the profile's own check would list transport, labgrid, host, port and user as known
    _check_keys(path, entry, PLACE_KEYS, prefix=f"{where}.")
    if isinstance(ssh, dict):  # a password gets the profile's own answer: never stored
        _check_keys(path, {k: v for k, v in ssh.items() if k != "password"}, PLACE_SSH_KEYS,
                    prefix=f"{where}.ssh.")
