"""The pushed agent zip, unpacked and compiled once per device and Python, for the jobs to run.

zipimport never writes bytecode, so an agent run as `python3 <cache>/<sha256>` compiles every
module of its own that it imports, in every fresh agent process, which is every session (50-140
ms on the development VM; more on a Raspberry Pi). The job server, itself started from the zip
once per connection, makes `<cache>/<sha256>.d` instead: the zip's files with their bytecode,
compiled by this interpreter (bytecode is per Python version, so a folder gains one stamp per
cache tag). The jobs then run `python3 <cache>/<sha256>.d`, importing the bytecode.

The folder is unpacked and compiled under a temporary name and renamed whole into place, so a
half-written folder is never used and hosts or servers that prepare it at once do not disturb
each other: the first rename wins, the others use its folder. The folder is named by the zip's
hash, so an agent that changed gets a folder of its own; and each server compares the folder's
files with the zip (which the host hashes once per connection), so a file changed in place on the
device is not run: the folder is made again. Where anything fails (a read-only
cache, a full disk, a Python that cannot compile the agent) the jobs run the zip as before, and
the reason is kept for `devices check`. A folder in use has its mtime set on every server start,
as the host sets its zip's, so `devices clean` (`cacheclean.py`) sees that it is used.

Stdlib only; Python 3.8 syntax.
"""

from __future__ import annotations

import os
import sys

SUFFIX = ".d"
# The environment variable by which the job server tells its jobs why they run from the zip.
FROM_ZIP_ENV = "EDGEBENCH_AGENT_FROM_ZIP"


def folder_for(zip_path: str) -> str:
    return zip_path + SUFFIX


def _stamp() -> str | None:
    """The file that says a folder holds this interpreter's bytecode, at its optimisation."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return None
    return f"compiled-{tag}-O{sys.flags.optimize}"


def _compile(folder: str, shown_as: str) -> str | None:
    """Compile every module under `folder` (named `shown_as` in tracebacks); why not, or None.

    Each .pyc is written under a temporary name and renamed (py_compile does), so a second
    Python compiling into a folder in use never leaves a half-written file there.
    """
    import compileall
    import contextlib
    import io

    said = io.StringIO()
    with contextlib.redirect_stdout(said):  # compileall prints its errors
        ok = compileall.compile_dir(folder, ddir=shown_as, quiet=1)
    if ok:
        return None
    lines = [line.strip() for line in said.getvalue().splitlines() if line.strip()]
    return "cannot compile the agent with Python {}: {}".format(
        sys.version.split()[0], " ".join(lines)[-400:] or "compileall failed")


def _mark(folder: str, stamp: str) -> None:
    with open(os.path.join(folder, stamp), "w"):
        pass


def _unpack_new(zip_path: str, final: str, stamp: str) -> str | None:
    """Unpack and compile into a temporary folder, then rename it to `final`; why not, or None."""
    import shutil
    import zipfile

    temp = f"{final}.tmp-{os.urandom(6).hex()}"
    try:
        os.mkdir(temp, 0o700)
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(temp)
        why = _compile(temp, final)
        if why is not None:
            return why
        _mark(temp, stamp)
        try:
            os.rename(temp, final)
        except OSError:
            # another server renamed its copy first (a folder is never renamed over a full one)
            if not os.path.exists(os.path.join(final, stamp)):
                raise
        return None
    except (OSError, zipfile.BadZipFile) as err:
        return f"cannot unpack the agent into {os.path.dirname(final)}: {err}"
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _same_as_zip(zip_path: str, folder: str) -> bool:
    """Every file of the zip is in `folder` with the same bytes (the zip's hash was checked by
    the host on this connection; the folder's files could have been changed in place since)."""
    import zipfile

    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                with open(os.path.join(folder, info.filename), "rb") as f:
                    if f.read() != zf.read(info):
                        return False
    except (OSError, zipfile.BadZipFile):
        return False
    return True


def _set_aside(folder: str) -> None:
    """Take a changed folder out of the way of a fresh copy (its running jobs keep their
    files open); whatever cannot be moved is left for the unpacking to report."""
    import shutil

    aside = f"{folder}.old-{os.urandom(6).hex()}"
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _touch(folder: str) -> None:
    """Mark the folder used now (its own mtime; a failure only makes it look older)."""
    try:
        os.utime(folder)
    except OSError:
        pass


def prepare(zip_path: str) -> tuple[str | None, str]:
    """The folder the jobs of this server run (None: run the zip) and what was done or why not.

    Cheap when the folder is ready (its files compared with the zip's, a few milliseconds):
    that is every connection but the first.
    """
    stamp = _stamp()
    if stamp is None:
        return None, f"this Python ({sys.implementation.name}) writes no bytecode"
    final = folder_for(zip_path)
    if os.path.isdir(final) and not _same_as_zip(zip_path, final):
        _set_aside(final)
    if os.path.exists(os.path.join(final, stamp)):
        _touch(final)
        return final, "ready"
    if os.path.isdir(final):
        # unpacked by a Python of another version: add this one's bytecode beside its own
        why = _compile(final, final)
        if why is None:
            try:
                _mark(final, stamp)
            except OSError as err:
                why = f"cannot write in {final}: {err}"
        return (None, why) if why is not None else (final, "compiled")
    why = _unpack_new(zip_path, final, stamp)
    return (None, why) if why is not None else (final, "unpacked and compiled")
