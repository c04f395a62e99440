"""The content-addressed cache on an SSH device: `<cache_dir>/<sha256>`, filled by SFTP.

A file is uploaded under a temporary name, checked by hash on the device (`sha256sum`, or the
device's Python where coreutils are missing), then renamed, so a file under its hash name is
always complete and a second run of the same suite pushes nothing. The temporary part is held
open from its creation to its rename; a part of the same content that nothing holds open and
nothing has written to for a few seconds was left by an upload cut short (Ctrl-C, a lost
connection), and the next push of that content removes it before uploading, so it neither takes
the room that push needs nor waits for `devices clean`. Parts of other content are left to that.

A file already there is trusted once the device has hashed it on this connection (or it was
pushed on it); a copy of other content under a hash name, truncated or changed in place, is
pushed again. `trust_present` does that for all the files of a run at once (one listing, one
command hashing every candidate), where one file at a time costs two round trips and a process
each. The cache directory is created mode 700 and
nothing is written outside it; one that cannot be made or written in (a read-only disk, a file in
the way) is an `AccessError` naming `cache_dir` with the reason the device's own mkdir or shell
gives, since SFTP's is a bare "Failure".

An entry's mtime says when a connection last used it, for `devices clean`: a pushed file is new,
and one already there is touched by the command that hashes it (no round trip of its own; access
times cannot be trusted, boards mount with `noatime`). Touching is best-effort: a device where
it fails still runs its jobs, its entries only look older to `devices clean`.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import paramiko

from harness.errors import AccessError, TransportError
from harness.transport.sshconn import SSHConnection

BLOCK = 1 << 20
# A part of an upload (`<sha256>.part-<8 hex>`) that no process on the device holds open and that
# nothing wrote to for this long was left by an upload that ended early (Ctrl-C, a cut
# connection): the next push of that content removes it. Every upload holds its part open from
# its creation to its rename; the wait covers only a part some process may hold unseen.
STALE_PART_S = 5.0
# Without /proc to tell whether a part is held, only one this old (as `devices clean` takes it).
STALE_PART_UNSEEN_S = 3600.0
TRUST_BATCH = 500  # files hashed by one command: its line stays far below any ARG_MAX
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"([0-9a-f]{64})\.part-[0-9a-f]{8}")
# Run on the device: remove `<sha>.part-*` in the cache that no process holds open (every fd in
# /proc this user may read) and that were not written to for a while; says each kept as fresh.
_CLEAR_PARTS = '''import glob,os,sys,time
cache,sha,grace,unseen=sys.argv[1],sys.argv[2],float(sys.argv[3]),float(sys.argv[4])
held=set()
seen=os.path.isdir('/proc/self/fd')
for pid in os.listdir('/proc') if seen else ():
    fds='/proc/'+pid+'/fd'
    try:
        names=os.listdir(fds) if pid.isdigit() else ()
    except OSError:
        continue
    for fd in names:
        try:
            held.add(os.readlink(fds+'/'+fd))
        except OSError:
            pass
for part in glob.glob(os.path.join(cache,sha+'.part-*')):
    try:
        if os.path.realpath(part) in held:
            continue
        if time.time()-os.lstat(part).st_mtime<=(grace if seen else unseen):
            print('fresh '+os.path.basename(part))
            continue
        os.remove(part)
    except OSError:
        pass
'''


def human_size(n: int) -> str:
    """`n` bytes in three figures of the unit that suits it: a 29 KiB file is "29.7 kB", where
    megabytes said "0.0 MB"."""
    if n < 1000:
        return f"{n} bytes"
    value, unit = n / 1e3, "kB"
    for bigger in ("MB", "GB", "TB"):
        if value < 999.5:
            break
        value, unit = value / 1e3, bigger
    return f"{value:.3g} {unit}"


class ContentCache:
    """`<cache_dir>/<sha256>` on the device behind `conn`; `put_*` return (path, bytes pushed)."""

    def __init__(self, conn: SSHConnection, cache_dir: str, python_argv: list[str]) -> None:
        self.conn = conn
        self.raw_dir = cache_dir
        self.python_argv = python_argv
        self._dir: str | None = None
        self._present: set[str] = set()  # hashes known to be in the cache on this connection
        # hashes with a part of an upload in the cache, as listed on this connection
        self._parts: set[str] | None = None
        self.touch_on_use = True  # benchmarks/cache_trust.py turns it off to measure its cost

    def forget(self) -> None:
        """A new connection: look again at what the device holds."""
        self._dir = None
        self._present = set()
        self._parts = None

    def dir(self) -> str:
        """The absolute cache directory on the device, created (mode 700) if absent."""
        if self._dir is None:
            sftp = self.conn.sftp()
            raw = self.raw_dir
            if raw == "~" or raw.startswith("~/"):
                home = sftp.normalize(".")
                raw = posixpath.join(home, raw[2:]) if raw != "~" else home
            elif not raw.startswith("/"):
                raw = posixpath.join(sftp.normalize("."), raw)
            path = posixpath.normpath(raw)
            self._mkdirs(sftp, path)
            self._dir = path
        return self._dir

    def path(self, sha256: str) -> str:
        # The hash is the file name on the device: never a path of its own.
        if not _SHA256.fullmatch(sha256):
            raise TransportError(f"{self.conn.where}: {sha256!r} is not a sha256 (64 lowercase "
                                 "hex digits); refusing to use it as a file name in the cache")
        return posixpath.join(self.dir(), sha256)

    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        current = ""
        for part in (p for p in path.split("/") if p):
            current += "/" + part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                try:
                    sftp.mkdir(current, mode=0o700)
                except OSError as err:
                    # SFTP says "Failure" for a read-only disk, "No such file" for a file in the
                    # way: the device's own mkdir says which (and may even succeed)
                    why = self._device_says(f"mkdir -m 700 -- {shlex.quote(current)}")
                    if why == "":
                        continue
                    raise self._unusable(path, current, why, err) from err
            except OSError as err:
                raise self._unusable(path, current, None, err) from err

    def _device_says(self, command: str) -> str | None:
        """Run `command` on the device: "" if it succeeded, else the reason it printed last
        ("Read-only file system" of "mkdir: cannot create directory 'x': Read-only file
        system"), None if it said none."""
        try:
            done = self.conn.exec(f"/bin/sh -c {shlex.quote(command)}",
                                  timeout_s=self.conn.settings.command_timeout_s)
        except TransportError:
            return None
        if done.why is None and done.status == 0:
            return ""
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1].rpartition(": ")[2].strip() or None if lines else None

    def _unusable(self, path: str, where: str, why: str | None,
                  err: OSError | None) -> AccessError:
        """The cache directory cannot be made or written: `why` as the device said it, else
        SFTP's `err`, which for a read-only disk is a bare "Failure"."""
        said = why or (str(err.strerror or err) if err is not None else "")
        if not why and said in ("", "Failure"):
            said = ("the device's SFTP server gives no reason ('Failure'): a read-only file "
                    "system, a full disk or a file in the way")
        return AccessError(f"{self.conn.where}: cannot use {path} as the cache directory "
                           f"(profile field cache_dir): {where}: {said}; set cache_dir to a "
                           "folder the SSH user can write in")

    def _unwritable(self, path: str) -> AccessError | None:
        """Why the existing cache directory cannot be written in, if it cannot."""
        probe = shlex.quote(f"{path}/.edgebench-write-test-{uuid.uuid4().hex[:8]}")
        why = self._device_says(f": > {probe} && rm -f -- {probe}")
        return None if why == "" else self._unusable(path, path, why, None)

    def trust_present(self, wanted: dict[str, int]) -> None:
        """Learn in one go which of `wanted` (sha256 -> size) the device holds with that very
        content, and mark them used: one listing of the cache and one command that hashes every
        file of the right size (by `sha256sum`, else the device's Python). Best effort: whatever
        this does not confirm is looked at file by file when staged, as before."""
        wanted = {sha: size for sha, size in wanted.items()
                  if _SHA256.fullmatch(sha) and sha not in self._present}
        if not wanted:
            return
        try:
            sizes = {a.filename: a.st_size for a in self.conn.sftp().listdir_attr(self.dir())}
        except (OSError, paramiko.SSHException, EOFError, TransportError):
            return
        self._note_parts(sizes)
        names = sorted(sha for sha, size in wanted.items() if sizes.get(sha) == size)
        for start in range(0, len(names), TRUST_BATCH):
            self._trust_batch(names[start:start + TRUST_BATCH])

    def _trust_batch(self, names: list[str]) -> None:
        # Names are hexadecimal (checked above): nothing in them for the shell or the output.
        script = ("import hashlib,sys\nfor n in sys.argv[1:]:\n try:\n  h=hashlib.sha256()\n"
                  "  f=open(n,'rb')\n  [h.update(b) for b in iter(lambda:f.read(1<<20),b'')]\n"
                  "  print(h.hexdigest()+'  '+n)\n except OSError:\n  pass")
        listed = " ".join(names)
        py = " ".join(shlex.quote(a) for a in self.python_argv)
        inner = (f"cd {shlex.quote(self.dir())} && if command -v sha256sum >/dev/null 2>&1; "
                 f"then sha256sum -- {listed} 2>/dev/null; else {py} -c {shlex.quote(script)} "
                 f"{listed}; fi")
        if self.touch_on_use:
            utime = f"{py} -c {shlex.quote('import os,sys;[os.utime(n) for n in sys.argv[1:]]')}"
            inner += f"; touch -c -- {listed} 2>/dev/null || {utime} {listed} 2>/dev/null || :"
        try:
            done = self.conn.exec(f"/bin/sh -c {shlex.quote(inner)}",
                                  timeout_s=self.conn.settings.command_timeout_s)
        except TransportError:
            return
        if done.why is not None:
            return
        for line in done.stdout.decode(errors="replace").splitlines():
            parts = line.split()  # "<hash>  <name>", "<hash> *<name>" in binary mode
            if len(parts) == 2 and parts[1].lstrip("*") in names and \
                    parts[0].lower() == parts[1].lstrip("*"):
                self._present.add(parts[0].lower())

    def _present_on_device(self, sha256: str, size: int) -> bool:
        if sha256 in self._present:
            return True
        try:
            found = self.conn.sftp().stat(self.path(sha256)).st_size == size
        except FileNotFoundError:
            found = False
        except (OSError, paramiko.SSHException, EOFError) as err:
            raise TransportError(f"{self.conn.where}: cannot look into the cache: {err}") from err
        # A file of the right size may still hold other bytes (changed in place on the device):
        # what is measured must be what is hashed, so it is hashed once per connection.
        if found and self._remote_sha256(self.path(sha256), touch=self.touch_on_use) != sha256:
            found = False
        if found:
            self._present.add(sha256)
        return found

    def _device_python(self, script: str, path: str) -> str:
        py = " ".join(shlex.quote(a) for a in self.python_argv)
        return f"{py} -c {shlex.quote(script)} {shlex.quote(path)}"

    def _remote_sha256(self, path: str, touch: bool = False) -> str | None:
        """The sha256 of `path` on the device; `touch`: and set its mtime to now, as used."""
        # The file on stdin: sha256sum prints no name, so none can be escaped into its output.
        # Named relative to the cache, so only the job server's command line holds its full path.
        script = ("import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],'rb');"
                  "[h.update(b) for b in iter(lambda:f.read(1<<20),b'')];print(h.hexdigest())")
        folder, name = posixpath.split(path)
        inner = (f"cd {shlex.quote(folder)} && {{ sha256sum < {shlex.quote(name)} 2>/dev/null "
                 f"|| {self._device_python(script, name)}; }}")
        if touch:  # after the hash, whose exit status stays the command's
            utime = self._device_python("import os,sys;os.utime(sys.argv[1])", name)
            inner += (f" && {{ touch -c {shlex.quote(name)} 2>/dev/null || {utime} 2>/dev/null "
                      "|| :; }")
        done = self.conn.exec(f"/bin/sh -c {shlex.quote(inner)}",
                              timeout_s=self.conn.settings.command_timeout_s)
        if done.why is not None or done.status != 0:
            return None
        text = done.stdout.decode(errors="replace").strip()
        return text.split()[0].lower() if text else None

    def _free_bytes(self) -> int | None:
        """Space left for the cache on the device's disk, None if it cannot be told."""
        script = "import os,sys;s=os.statvfs(sys.argv[1]);print(s.f_bavail*s.f_frsize)"
        done = self.conn.exec(f"/bin/sh -c {shlex.quote(self._device_python(script, self.dir()))}",
                              timeout_s=self.conn.settings.command_timeout_s)
        try:
            return int(done.stdout.decode().split()[0]) if done.status == 0 else None
        except (ValueError, IndexError, UnicodeDecodeError):
            return None

    def _disk_full(self, size: int, what: str) -> TransportError | None:
        free = self._free_bytes()  # the partial copy still takes its room
        if free is None or free >= max(size, BLOCK):
            return None
        return TransportError(
            f"{self.conn.where}: device disk full: {what} needs {human_size(size)} and "
            f"{self.dir()} has {human_size(free)} free; free space there or set cache_dir")

    def _note_parts(self, names: Iterable[str]) -> None:
        self._parts = {m.group(1) for m in map(_PART.fullmatch, names) if m}

    def _clear_stale_parts(self, sha256: str) -> bool:
        """Remove what uploads of `sha256` that ended early left (their parts take the room
        this push needs); True if one was kept only because it was written to a moment ago.
        Best effort: `devices clean` removes what this leaves."""
        if self._parts is None:
            try:
                self._note_parts(self.conn.sftp().listdir(self.dir()))
            except (OSError, paramiko.SSHException, EOFError):
                self._parts = set()
        parts = self._parts or set()
        if sha256 not in parts:
            return False
        inner = " ".join(shlex.quote(a) for a in [*self.python_argv, "-c", _CLEAR_PARTS,
                                                  self.dir(), sha256, str(STALE_PART_S),
                                                  str(STALE_PART_UNSEEN_S)])
        try:
            done = self.conn.exec(f"/bin/sh -c {shlex.quote(inner)}",
                                  timeout_s=self.conn.settings.command_timeout_s)
        except TransportError:
            return False
        fresh = done.why is None and b"fresh " in done.stdout
        if not fresh:
            parts.discard(sha256)
        return fresh

    def _push(self, sha256: str, size: int,
              upload: Callable[[paramiko.SFTPClient, str], None], what: str) -> tuple[str, int]:
        """Put content `sha256` in the cache unless present; `upload(sftp, path)` writes it."""
        final = self.path(sha256)
        if self._present_on_device(sha256, size):
            return final, 0
        sftp = self.conn.sftp()
        fresh_parts = self._clear_stale_parts(sha256)
        partial = f"{final}.part-{uuid.uuid4().hex[:8]}"
        held = None
        try:
            # Held open until renamed, so that no other host's push takes it for a leftover.
            held = sftp.open(partial, "wb")
            upload(sftp, partial)
            got = self._remote_sha256(partial)
            if got != sha256:
                raise self._disk_full(size, what) or TransportError(
                    f"{self.conn.where}: {what} arrived corrupted (sha256 {got or 'unreadable'}, "
                    f"expected {sha256})")
            try:
                sftp.posix_rename(partial, final)
            except (OSError, paramiko.SSHException):
                sftp.rename(partial, final)
        except (OSError, paramiko.SSHException, EOFError) as err:
            full = denied = None
            if isinstance(err, OSError):
                full = self._disk_full(size, what)
                denied = None if full or self._dir is None else self._unwritable(self._dir)
            raise full or denied or TransportError(
                f"{self.conn.where}: cannot push {what}: {err}") from err
        finally:
            try:
                if held is not None:
                    held.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass
            try:
                sftp.remove(partial)
            except (OSError, paramiko.SSHException, EOFError):
                pass
            if fresh_parts:  # written to a moment before this push began: left early, by now
                self._clear_stale_parts(sha256)
        self._present.add(sha256)
        return final, size

    def put_file(self, path: Path, sha256: str) -> tuple[str, int]:
        """`path` under its hash; TransportError if its content is not `sha256` after all."""
        try:
            size = path.stat().st_size
        except OSError as err:
            raise TransportError(f"cannot stage {path}: {err.strerror}") from err
        digest = hashlib.sha256()

        def upload(sftp: paramiko.SFTPClient, remote: str) -> None:
            with open(path, "rb") as src, sftp.open(remote, "wb") as dst:
                dst.set_pipelined(True)
                for block in iter(lambda: src.read(BLOCK), b""):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != sha256:
                raise TransportError(f"{path} has sha256 {digest.hexdigest()}, not the "
                                     f"{sha256} it was staged as (changed since it was built?)")

        return self._push(sha256, size, upload, f"{path.name!r}")

    def put_bytes(self, data: bytes, sha256: str, what: str) -> tuple[str, int]:
        def upload(sftp: paramiko.SFTPClient, remote: str) -> None:
            with sftp.open(remote, "wb") as dst:
                dst.set_pipelined(True)
                dst.write(data)

        return self._push(sha256, len(data), upload, what)
