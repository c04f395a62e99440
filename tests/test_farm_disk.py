"""The nightly on a host whose own disk fails it: a report folder that cannot be written, a
result database on a full disk, before the build and in the middle of a run, with the real
farm of tests/test_farm.py (labgrid coordinator and exporter, sshd on loopback).

A full disk is a real one: a tmpfs of a few MiB mounted for the test and filled by a file, so
SQLite and the file system say what they say on a lab host whose disk filled up. Mounting needs
root (or CAP_SYS_ADMIN); without it those tests are skipped, saying so.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from benchmarks.loopback_labgrid import LoopbackLab
from harness.store import StorageError, Store
from tests import test_farm
from tests.conftest import EDGEBENCH, REPO, rows, run_cli, wait_for_sessions
from tests.sshd import free_port
from tests.test_farm import PLACES, env_for, nightly_args, who, write_farm

# the lab and the suite built once, as test_farm.py has them
lab, suite = test_farm.lab, test_farm.suite

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


def offline_nightly(tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """The demo's nightly on `offline_farm`, into the database tmp_path/db.sqlite and `out`."""
    return run_cli("nightly", "--farm", str(offline_farm(tmp_path)), "--suite",
                   "models/demo.yaml", "--db", str(tmp_path / "db.sqlite"), "--out", str(out))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgebench: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_an_out_folder_that_cannot_be_made_is_refused_before_anything_runs(tmp_path: Path
                                                                            ) -> None:
    """Its parent a file: said in one line naming the folder and the reason, exit 2 (give
    another --out), before the build and before the database is made."""
    (tmp_path / "reports").write_text("a file where the folder should be")
    out = tmp_path / "reports" / "n1"
    proc = offline_nightly(tmp_path, out)
    line = one_line_error(proc)
    assert proc.returncode == 2, proc.stderr
    assert f"{out}: --out cannot be written (Not a directory" in line
    assert not (tmp_path / "db.sqlite").exists()


def test_an_out_folder_that_can_be_written_is_not_left_behind_by_a_refused_nightly(
        tmp_path: Path) -> None:
    """--out is made and written to before the build, then removed: a nightly refused after
    that (here its coordinator is down) leaves no empty report folder."""
    out = tmp_path / "reports" / "n1"
    proc = offline_nightly(tmp_path, out)
    assert proc.returncode == 3 and "cannot be reached" in one_line_error(proc)
    assert not (tmp_path / "reports").exists()


def test_an_out_folder_on_a_full_disk_is_refused_before_anything_runs(
        tmp_path: Path, small_disk: Path) -> None:
    """No space left: one line, exit 3 (the host's fault: not "regression", not bad input)."""
    fill(small_disk)
    out = small_disk / "n1"
    proc = offline_nightly(tmp_path, out)
    line = one_line_error(proc)
    assert proc.returncode == 3, proc.stderr
    assert f"{out}: --out cannot be written (No space left on device" in line
    assert not (tmp_path / "db.sqlite").exists()
    assert not out.exists()  # neither the probe nor the folder made for it is left behind


def test_an_out_folder_on_a_read_only_file_system_is_refused_before_anything_runs(
        tmp_path: Path, small_disk: Path) -> None:
    """A report disk mounted read-only (root may write anywhere else, so only a mount shows
    it): one line naming the folder and the reason, exit 2 (give another --out)."""
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                             capture_output=True, text=True, check=False)
    assert remount.returncode == 0, remount.stderr
    out = small_disk / "n1"
    proc = offline_nightly(tmp_path, out)
    line = one_line_error(proc)
    assert proc.returncode == 2, proc.stderr
    assert f"{out}: --out cannot be written (Read-only file system" in line
    assert not (tmp_path / "db.sqlite").exists()


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


def test_a_report_folder_that_fills_up_during_the_run_is_one_line_and_written_again(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path], small_disk: Path) -> None:
    """The farm is measured and stored; the report alone is lost: one line saying so, where the
    results are and the command that writes it again, exit 3 (not 1, "regression", which the
    systemd unit would take for a success); that command then writes it, measuring nothing."""
    farm = write_farm(tmp_path, lab)
    # sessions enough that the report is still to come once dev0 has stored its first: with
    # --quick's 2 a device, one session (half a second) was all that stood between the test
    # seeing that and the report being written, and a test slow to fill the disk saw exit 0
    args = [*nightly_args(tmp_path, farm, suite, "unused", "--sessions", "6", "--id",
                          "n-full-out"), "--out", str(small_disk / "n")]
    proc = subprocess.Popen([*EDGEBENCH, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(tmp_path / "db.sqlite", "dev0", 1, proc)
    assert proc.poll() is None, "the nightly ended before its report folder could be filled"
    filler = fill(small_disk)
    out, err = proc.communicate(timeout=300)
    line = one_line_error(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert proc.returncode == 3, err + out
    assert f"{small_disk / 'n'}: the nightly's report could not be written (No space left on " \
        "device" in line
    assert f"nightly n-full-out is measured and stored in {tmp_path / 'db.sqlite'}" in line
    assert "--id n-full-out` writes the report again, measuring nothing" in line
    assert rows(tmp_path / "db.sqlite", "SELECT status FROM runs") == [("finished",)]
    assert not any(place in who(lab) for place in PLACES)

    filler.unlink()
    again = run_cli(*args, env=env_for(tmp_path))
    assert again.returncode == 0, again.stderr + again.stdout
    written = json.loads((small_disk / "n" / "summary.json").read_text())
    assert written["status"] == "finished"
    assert sum(d["sessions_run"] for d in written["devices"]) == 0
    assert (small_disk / "n" / "junit.xml").stat().st_size > 0


def test_a_database_that_fills_up_during_the_run_stops_the_nightly_in_one_line(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path], small_disk: Path) -> None:
    """Not every device failed with an OperationalError, the run left running and exit 1: the
    nightly stops (every place released), says the disk and the command that resumes it in
    one line, exit 3; once there is room that command measures what it had not stored."""
    farm = write_farm(tmp_path, lab)
    db = small_disk / "db.sqlite"
    args = [*nightly_args(tmp_path, farm, suite, "n", "--sessions", "6", "--id", "n-full-db"),
            "--db", str(db)]
    proc = subprocess.Popen([*EDGEBENCH, *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(db, "dev0", 1, proc)
    filler = fill(small_disk)
    out, err = proc.communicate(timeout=300)
    line = one_line_error(subprocess.CompletedProcess(args, proc.returncode, out, err))
    assert proc.returncode == 3, err + out
    assert line.startswith(f"edgebench: error: {db}: ")
    assert "no space left on its disk while storing " in line or "disk I/O error while " \
        "storing " in line, line
    assert "nightly n-full-db stopped, its run " in line
    assert "--id n-full-db` measures what it has not stored once there is room" in line
    assert "OperationalError" not in err
    assert not any(place in who(lab) for place in PLACES)
    assert not (tmp_path / "n" / "summary.json").exists()

    filler.unlink()
    ((status,),) = rows(db, "SELECT status FROM runs")
    assert status in ("failed", "running")  # running: the full disk would not take "failed"
    again = run_cli(*args, env=env_for(tmp_path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert rows(db, "SELECT status FROM runs") == [("finished",)]
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status = 'ok'") == [(18,)]
