"""The nightly on a host whose own disk fails it: a result database on a full disk.

A full disk is a real one: a tmpfs of a few MiB mounted for the test and filled by a file, so
SQLite and the file system say what they say on a lab host whose disk filled up. Mounting needs
root (or CAP_SYS_ADMIN); without it those tests are skipped, saying so.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from harness.store import StorageError, Store
from tests.conftest import run_cli
from tests.sshd import free_port

pytestmark = [pytest.mark.ssh, pytest.mark.farm]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A file system of 4 MiB of its own (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip("a full disk is a tmpfs mounted for the test, which needs root or "
                    f"CAP_SYS_ADMIN: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Fill the file system of `folder` with one file, to its last byte; the file."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def offline_farm(tmp_path: Path) -> Path:
    """A farm whose coordinator nobody runs: for what is refused before it is asked."""
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump({"coordinator": f"127.0.0.1:{free_port()}",
                                    "places": {"p": {"kind": "linux"}}}))
    return farm


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgebench: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_database_on_a_full_disk_says_so(tmp_path: Path, small_disk: Path) -> None:
    """Not "not a usable result database (disk I/O error)", exit 2: the file is fine, its
    disk is full; said naming the file, with the exit code of the host's failures (3)."""
    db = small_disk / "db.sqlite"
    with Store(db) as store:
        store.begin_run("edgebench nightly --farm f --suite s", "s", ["p"], run_id="n1")
    fill(small_disk)
    with pytest.raises(StorageError) as opened:
        Store(db)
    assert opened.value.exit_code == 3
    assert str(opened.value).startswith(f"{db}: disk I/O error while opening it")
    assert "is its disk full" in str(opened.value)
    with pytest.raises(StorageError) as made:
        Store(small_disk / "new.sqlite")
    assert str(made.value).startswith(f"{small_disk / 'new.sqlite'}: no space left on its disk "
                                      "while opening it")
    proc = run_cli("nightly", "--farm", str(offline_farm(tmp_path)), "--suite",
                   "models/demo.yaml", "--db", str(db), "--out", str(tmp_path / "out"),
                   "--id", "n1")
    line = one_line_error(proc)
    assert proc.returncode == 3, proc.stderr
    assert f"{db}: disk I/O error while opening it" in line
    assert "not a usable result database" not in line
