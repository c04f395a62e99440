"""Remove what a device's content cache no longer uses; run ON the device by `devices clean`.

The host sends this file's source as `python3 -c SOURCE REQUEST` (one remote command, whatever
the number of entries) and reads one JSON answer on stdout. It removes only names the host and
the agent make in the cache, and only when unused for longer than asked:

- `<sha256>` (an agent zip, a model, a dataset part), `<sha256>.d` (that zip unpacked and
  compiled, `unpack.py`) and `tensorrt/<sha256>` (the TensorRT engines built from that model,
  one folder per engine settings, `runtimes/onnxruntime.py`) taken as one unit: last used = the
  latest of their mtimes, which the host sets on the entry on every connection that uses it
  (`transport/cache.py`) and the job server on its folder (`unpack.prepare`); access times are
  not used (`noatime` mounts). A part whose entry is gone goes by its own mtime;
- leftovers of an interrupted upload (`<sha256>.part-<8 hex>`) or unpacking
  (`<sha256>.d.tmp-<12 hex>`, `<sha256>.d.old-<12 hex>`) older than `leftover_s`;
- engines of the older layout, written by ONNX Runtime straight into `tensorrt/`
  (`TensorrtExecutionProvider_*.engine`, `*.profile`), which nothing reads any more, unused for
  as long as an entry.

Everything else (TensorRT's timing cache in `tensorrt/`, which every model shares, files a user
put there, a symlink of any name) is left alone; what is not the cache's own is listed. Symlinks
are never followed: entries are looked at with lstat and only a plain file or folder of the
expected kind is removed (`shutil.rmtree` does not follow links inside a folder either). The
cache folder itself must be a folder this user owns that nobody else can write to, and neither
`/` nor the home folder nor a folder above it, else nothing is done and the answer says why;
a `tensorrt/` that is not such a folder is left alone and listed.

Stdlib only; Python 3.8 syntax; imports nothing from the agent (it runs alone, from `-c`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import time

_SHA = "[0-9a-f]{64}"
ENTRY = re.compile(_SHA)
FOLDER = re.compile(_SHA + r"\.d")
LEFTOVERS = (re.compile(_SHA + r"\.part-[0-9a-f]{8}"),        # cache.py: an upload
             re.compile(_SHA + r"\.d\.(?:tmp|old)-[0-9a-f]{12}"))  # unpack.py: an unpacking
TENSORRT = "tensorrt"  # runtimes/onnxruntime.py: engines in tensorrt/<sha256>/<settings>/
OLD_ENGINE = re.compile(r"TensorrtExecutionProvider_.+\.(?:engine|profile)")  # the flat layout
TIMING_CACHE = re.compile(r"TensorrtExecutionProvider_.+\.timing")  # shared by all models


def _size(path: str, st: os.stat_result) -> int:
    """Bytes of a file, or of every file under a folder (links not followed)."""
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for root, _dirs, files in os.walk(path):  # os.walk does not descend into linked folders
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def unsafe_place(real: str, homes: set[str]) -> str | None:
    """Why a cache at `real` (a resolved path) would lie among what is not edgebench's: `/`, a
    home folder in `homes` or a folder above one; None if it is none of these. Path logic
    alone: the host's profile loader refuses such a `cache_dir` by this same rule, with the
    device's home folder standing for `~`."""
    if real == "/":
        return "it is the root folder"
    for home in sorted(homes):
        if real == home:
            return "it is the home folder itself"
        if home.startswith(real.rstrip("/") + "/"):
            return f"it holds the home folder {home}"
    return None


def home_folders() -> set[str]:
    """This user's home folder, resolved, as each of the ways to ask for it says it."""
    homes = set()
    for home in (os.path.expanduser("~"), os.environ.get("HOME")):
        if home and home.startswith("/"):
            homes.add(os.path.realpath(home))
    try:
        import pwd

        homes.add(os.path.realpath(pwd.getpwuid(os.geteuid()).pw_dir))
    except (ImportError, KeyError):
        pass
    return homes


def unsafe(real: str) -> str | None:
    """Why the folder `real` (a resolved path) must not be cleaned, or None."""
    try:
        st = os.stat(real)
    except OSError as err:
        return f"cannot look at it: {err.strerror or err}"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    place = unsafe_place(real, home_folders())
    if place is not None:
        return place
    if st.st_uid != os.geteuid():
        return f"it belongs to uid {st.st_uid}, not to this user (uid {os.geteuid()})"
    if st.st_mode & stat.S_IWOTH:
        return f"anyone can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _own_folder(st: os.stat_result) -> bool:
    """A folder (not a link to one) of this user's that nobody else can write to."""
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
            and not st.st_mode & stat.S_IWOTH)


def _kind(name: str, st: os.stat_result) -> str | None:
    """What the item `name` of the cache (`tensorrt/NAME` for one in that folder) is, by its
    name and type; None when it is not the cache's own."""
    is_dir, is_file = stat.S_ISDIR(st.st_mode), stat.S_ISREG(st.st_mode)
    folder, _, base = name.rpartition("/")
    if not folder:
        if ENTRY.fullmatch(base) and is_file:
            return "entry"
        if FOLDER.fullmatch(base) and is_dir:
            return "folder"
        if any(p.fullmatch(base) for p in LEFTOVERS) and (is_file or is_dir):
            return "leftover"
    elif folder == TENSORRT:
        if ENTRY.fullmatch(base) and is_dir:
            return "engines"
        if OLD_ENGINE.fullmatch(base) and is_file:
            return "old engine"
        if TIMING_CACHE.fullmatch(base) and is_file:
            return "timing cache"
    return None


def _other(path: str, name: str, st: os.stat_result) -> dict:
    kind = ("link" if stat.S_ISLNK(st.st_mode) else "folder" if stat.S_ISDIR(st.st_mode)
            else "file")
    return {"name": name, "kind": kind, "bytes": 0 if kind == "link" else _size(path, st)}


def _scan(folder: str, prefix: str) -> list:
    """(name as seen from the cache, its lstat) of each item in `folder`, by name."""
    found = []
    for item in sorted(os.scandir(folder), key=lambda e: e.name):
        try:
            found.append((prefix + item.name, item.stat(follow_symlinks=False)))
        except OSError:
            continue
    return found


def _remove(path: str, is_dir: bool) -> str | None:
    errors: list[str] = []

    def failed(_function: object, where: str, exc: object) -> None:
        exc = exc[1] if isinstance(exc, tuple) else exc  # onerror gives exc_info, onexc the error
        errors.append(f"{where}: {getattr(exc, 'strerror', None) or exc}")

    if is_dir:
        if sys.version_info >= (3, 12):  # onerror is deprecated there
            shutil.rmtree(path, onexc=failed)
        else:
            shutil.rmtree(path, onerror=failed)
    else:
        try:
            os.unlink(path)
        except OSError as err:
            errors.append(err.strerror or str(err))
    return "; ".join(errors)[:300] or None


def clean(cache_dir: str, older_than_s: float, leftover_s: float, dry_run: bool,
          now: float | None = None) -> dict:
    """Clean `cache_dir` (`~` and relative paths as the host's SFTP sees them: from home)."""
    now = time.time() if now is None else now
    path = os.path.expanduser(cache_dir)
    if not os.path.isabs(path):
        path = os.path.join(os.path.expanduser("~"), path)
    real = os.path.realpath(path)
    answer: dict = {"cache": path, "real": real, "dry_run": dry_run, "removed": [], "kept": [],
              "other": [], "errors": []}
    if not os.path.lexists(path):
        answer["absent"] = True
        return answer
    why = unsafe(real)
    if why is not None:
        answer["refused"] = why
        return answer
    items = _scan(real, "")
    trt = [st for name, st in items if name == TENSORRT]
    if trt and _own_folder(trt[0]):
        items = [i for i in items if i[0] != TENSORRT] + _scan(os.path.join(real, TENSORRT),
                                                               TENSORRT + "/")
    units: dict = {}  # sha256 -> [(name, stat, kind)]: the entry, its .d, its engines
    loose: list = []  # (name, stat, kind, idle seconds allowed)
    for name, st in items:
        kind = _kind(name, st)
        if kind in ("entry", "folder", "engines"):
            units.setdefault(name.rpartition("/")[2][:64], []).append((name, st, kind))
        elif kind == "leftover":
            loose.append((name, st, kind, leftover_s))
        elif kind == "old engine":
            loose.append((name, st, kind, older_than_s))
        elif kind is None:
            answer["other"].append(_other(os.path.join(real, name), name, st))
        # and the timing cache is kept: every model's engines are built with it
    plan: list = []  # (name, stat, idle seconds, stale, kind)
    for parts in units.values():
        age = now - max(st.st_mtime for _n, st, _k in parts)
        plan += [(n, st, age, age > older_than_s, kind) for n, st, kind in parts]
    plan += [(n, st, now - st.st_mtime, now - st.st_mtime > allowed, kind)
             for n, st, kind, allowed in loose]
    for name, st, age, stale, kind in sorted(plan, key=lambda p: p[0]):
        full = os.path.join(real, name)
        row = {"name": name, "bytes": _size(full, st), "idle_s": round(age, 1), "kind": kind}
        if not stale:
            answer["kept"].append(row)
            continue
        failed = None if dry_run else _remove(full, stat.S_ISDIR(st.st_mode))
        if failed:
            row["error"] = failed
            answer["errors"].append(row)
        else:
            answer["removed"].append(row)
    try:
        vfs = os.statvfs(real)
        answer["free_bytes"] = vfs.f_bavail * vfs.f_frsize
    except (OSError, AttributeError):
        pass
    return answer


def main(argv: list) -> int:
    request = json.loads(argv[0])
    answer = clean(request["cache_dir"], float(request["older_than_s"]),
                   float(request["leftover_s"]), bool(request["dry_run"]))
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
