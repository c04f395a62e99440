"""The device farm with real parts: a labgrid coordinator and exporter on loopback, three places
whose NetworkService points at three real OpenSSH servers on loopback, and `edgebench nightly` run
as a user runs it (a subprocess), on a tiny suite built once for the module.

Each test gets its own lab (its own coordinator, so no place is left acquired between tests) and
its own state folder for the labgrid lock files.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.loopback_labgrid import LabgridMissing, LoopbackLab
from harness.config import LabgridSettings
from harness.errors import TransportError
from harness.farm.labgrid import LabgridClient, lock_file
from harness.store import Store, fingerprint_sha256
from tests.conftest import (
    EDGEBENCH,
    REPO,
    interrupt_inside_gc,
    once_a_session_is_stored,
    rows,
    run_cli,
    wait_for_sessions,
)
from tests.sshd import SSHServer, free_port
from tests.test_report_synthetic import add_job

pytestmark = [pytest.mark.ssh, pytest.mark.farm]

SUITE = """
name: farmtiny
seed: 0
formats: [onnx]
datasets:
  digits: {type: digits, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 1, lr: 0.003, threads: 1}
"""
PLACES = ("dev0", "dev1", "dev2")


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny suite, built once: every nightly below reuses the artifact."""
    root = tmp_path_factory.mktemp("suite")
    path = root / "suite.yaml"
    path.write_text(SUITE)
    build = root / "build"
    proc = run_cli("build", str(path), "--build-dir", str(build))
    assert proc.returncode == 0, proc.stderr
    return {"suite": path, "build": build}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LoopbackLab]:
    servers = {name: SSHServer(tmp_path / f"sshd-{name}").start() for name in PLACES}
    try:
        lab = LoopbackLab(tmp_path / "lab", dict(servers)).start()
    except LabgridMissing as err:
        for server in servers.values():
            server.stop()
        pytest.skip(str(err))
    yield lab
    lab.stop()
    for server in servers.values():
        server.stop()


def env_for(tmp_path: Path) -> dict[str, str]:
    return {"EDGEBENCH_LABGRID_STATE": str(tmp_path / "labgrid-state")}


def write_farm(tmp_path: Path, lab: LoopbackLab, **overrides: Any) -> Path:
    data = lab.farm_data(**{"retries": 1, "backoff_s": 0.5, "wait_s": 30, **overrides})
    path = tmp_path / "farm.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def nightly_args(tmp_path: Path, farm: Path, suite: dict[str, Path], out: str, *extra: str,
                 ) -> list[str]:
    return ["nightly", "--farm", str(farm), "--suite", str(suite["suite"]), "--build-dir",
            str(suite["build"]), "--db", str(tmp_path / "db.sqlite"), "--out",
            str(tmp_path / out), "--quick", *extra]


def nightly(tmp_path: Path, farm: Path, suite: dict[str, Path], out: str, *extra: str,
            ) -> subprocess.CompletedProcess[str]:
    return run_cli(*nightly_args(tmp_path, farm, suite, out, *extra), env=env_for(tmp_path))


def summary(tmp_path: Path, out: str) -> dict[str, Any]:
    return json.loads((tmp_path / out / "summary.json").read_text())


# Sessions a measurement to be interrupted asks for: 20 took 11 s on a loaded CI machine and
# ended before the signal came, so the bench exited 0 where 130 was expected.
LONG_RUN_SESSIONS = "300"


def who(lab: LoopbackLab) -> str:
    done = lab.client("who")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nightly_measures_every_place_then_a_second_nightly_pushes_nothing_and_compares(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    farm = write_farm(tmp_path, lab)
    first = nightly(tmp_path, farm, suite, "n1")
    assert first.returncode == 0, first.stderr + first.stdout
    one = summary(tmp_path, "n1")
    assert [d["status"] for d in one["devices"]] == ["ok"] * 3
    assert one["baseline"] is None and one["status"] == "finished"
    for place in PLACES:  # the closing table: each place's name whole on its row
        assert re.search(rf"^\s+{re.escape(place)}\s+ok\s+\d+\s+0\b", first.stdout, re.M), \
            first.stdout
    db = tmp_path / "db.sqlite"
    # one run, tagged with the nightly's id, every device's measurement in it
    assert rows(db, "SELECT run_id, status FROM runs") == [(one["nightly_id"], "finished")]
    assert sorted(r[0] for r in rows(db, "SELECT device FROM results")) == list(PLACES)
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status = 'ok'") == [(6,)]
    # each place came from its own NetworkService, i.e. its own sshd
    for place, server in lab.devices.items():
        assert f"{place}: acquired labgrid place {place} (" in first.stderr
        assert f"127.0.0.1:{server.port})" in first.stderr
    assert not any(place in who(lab) for place in PLACES)  # every place released
    assert not list((tmp_path / "labgrid-state").glob("*.json"))
    assert all(d["bytes_pushed"] > 0 for d in one["devices"])

    second = nightly(tmp_path, farm, suite, "n2")
    assert second.returncode == 0, second.stderr + second.stdout
    two = summary(tmp_path, "n2")
    assert two["baseline"] == one["nightly_id"]
    assert [d["bytes_pushed"] for d in two["devices"]] == [0, 0, 0]
    assert rows(db, "SELECT SUM(bytes_pushed) FROM results WHERE run_id = ?",
                two["nightly_id"]) == [(0,)]
    verdicts = {m["device"]: m["verdict"] for m in two["measurements"]}
    assert set(verdicts) == set(PLACES)
    assert set(verdicts.values()) <= {"slower", "faster", "no change", "inconclusive"}
    # the same file on the same images: the same top-1, never a regression of accuracy
    assert {m["accuracy_verdict"] for m in two["measurements"]} == {"same top-1"}
    assert all(m["isa_b"] and m["job_id_a"] for m in two["measurements"])

    # the CI's view: one suite per device, one case per measurement, regressions as failures
    junit = ET.parse(tmp_path / "n2" / "junit.xml").getroot()
    assert [s.get("name") for s in junit.findall("testsuite")] == list(PLACES)
    cases = junit.findall(".//testcase")
    assert len(cases) == 3
    slower = sum(v == "slower" for v in verdicts.values())
    assert int(junit.get("failures") or 0) == slower == two["regressions"]
    # the trend over both nightlies, latency and accuracy, PNG and PDF, and the page
    for name in ("trends.png", "trends.pdf", "accuracy.png", "accuracy.pdf", "index.html"):
        assert (tmp_path / "n2" / name).stat().st_size > 0, name
    page = (tmp_path / "n2" / "index.html").read_text()
    assert one["nightly_id"] in page and two["nightly_id"] in page
    assert "ISA (CPU)" in page and two["measurements"][0]["isa_b"] in page


def test_a_place_held_by_someone_else_is_waited_for_then_skipped_naming_the_holder(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    held = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    farm = write_farm(tmp_path, lab, wait_s=3)
    started = time.monotonic()
    proc = nightly(tmp_path, farm, suite, "n")
    assert proc.returncode == 3, proc.stderr + proc.stdout
    out = summary(tmp_path, "n")
    status = {d["name"]: d for d in out["devices"]}
    assert status["dev0"]["status"] == status["dev2"]["status"] == "ok"
    assert status["dev1"]["status"] == "skipped"
    assert "held by " in status["dev1"]["message"] and "/alice" in status["dev1"]["message"]
    assert "waited 3 s" in status["dev1"]["message"]
    assert status["dev1"]["message"].endswith(", skipping it")
    # a cron mail ends with the exit status and its meaning
    assert proc.stdout.splitlines()[-1] == f"exit 3: {out['exit_meaning']}"
    assert "dev1: labgrid place dev1 is held by " in proc.stderr  # said when the wait began
    assert "waiting up to 3 s for it, then skipping it" in proc.stderr
    assert time.monotonic() - started >= 3
    assert rows(tmp_path / "db.sqlite", "SELECT DISTINCT device FROM results ORDER BY 1") == [
        ("dev0",), ("dev2",)]
    junit = ET.parse(tmp_path / "n" / "junit.xml").getroot()
    assert junit.find("testsuite[@name='dev1']/testcase/skipped") is not None
    assert "alice" in who(lab)  # alice keeps her place
    assert "dev0" not in who(lab) and "dev2" not in who(lab)


def test_coordinator_down_is_one_clear_error(tmp_path: Path, lab: LoopbackLab,
                                             suite: dict[str, Path]) -> None:
    port = free_port()
    farm = write_farm(tmp_path, lab, coordinator=f"127.0.0.1:{port}")
    proc = nightly(tmp_path, farm, suite, "n")
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"labgrid coordinator 127.0.0.1:{port} cannot be reached" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "db.sqlite").exists()  # nothing begun


def test_devices_list_and_check_know_farm_devices(tmp_path: Path, lab: LoopbackLab) -> None:
    farm = write_farm(tmp_path, lab)
    listed = run_cli("devices", "list", "--farm", str(farm))
    assert listed.returncode == 0, listed.stderr
    for place in PLACES:
        assert place in listed.stdout
    assert f"labgrid {lab.address}" in listed.stdout
    check = run_cli("devices", "check", "dev2", "--farm", str(farm), env=env_for(tmp_path))
    assert check.returncode == 0, check.stderr + check.stdout
    assert f"127.0.0.1:{lab.devices['dev2'].port} (labgrid place dev2)" in check.stdout
    assert "dev2" not in who(lab)  # released after the check
    # a place someone holds: the check says so at once, and gives up after the farm's wait
    held = lab.client("-p", "dev2", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    busy = run_cli("devices", "check", "dev2", "--farm", str(write_farm(tmp_path, lab, wait_s=2)),
                   env=env_for(tmp_path))
    assert busy.returncode == 3, busy.stderr + busy.stdout
    first, *_, last = busy.stderr.strip().splitlines()
    assert "labgrid place dev2 is held by " in first and "/alice" in first
    assert "waiting up to 2 s for it (Ctrl-C stops waiting)" in first
    assert last.startswith("edgebench: error: labgrid place dev2 is held by ")


def test_a_device_whose_sshd_dies_mid_run_is_marked_and_the_others_finish(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    farm = write_farm(tmp_path, lab)
    db = tmp_path / "db.sqlite"
    proc = subprocess.Popen(
        [*EDGEBENCH, *nightly_args(tmp_path, farm, suite, "n", "--sessions", "6")], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, **env_for(tmp_path)))
    victim = lab.devices["dev1"]
    wait_for_sessions(db, "dev1", 1, proc)
    victim.stop()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err + out
    status = {d["name"]: d for d in summary(tmp_path, "n")["devices"]}
    assert status["dev0"]["status"] == status["dev2"]["status"] == "ok"
    assert status["dev1"]["status"] == "failed" and status["dev1"]["attempts"] == 2
    assert "127.0.0.1" in status["dev1"]["message"]
    ok = dict(rows(db, "SELECT device, COUNT(*) FROM sessions JOIN results USING (job_id) "
                       "WHERE sessions.status = 'ok' GROUP BY device"))
    assert ok["dev0"] == ok["dev2"] == 6 and 1 <= ok["dev1"] < 6
    assert rows(db, "SELECT status FROM runs") == [("incomplete",)]
    # the first nightly: failing with no baseline is newly failing, as it would be the night
    # after one where it ran ok; the case says why
    junit = ET.parse(tmp_path / "n" / "junit.xml").getroot()
    failure = junit.find("testsuite[@name='dev1']/testcase/failure[@type='newly failing']")
    assert failure is not None and "127.0.0.1" in (failure.get("message") or "")
    assert "dev1" not in who(lab)


def test_a_nightly_killed_by_sigkill_resumes_measuring_only_what_is_missing(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    farm = write_farm(tmp_path, lab)
    db = tmp_path / "db.sqlite"
    nightly_id = "nightly-resume-test"
    # sessions enough that no device ends its queue (and gives back its place) before the
    # slowest has stored its first, however loaded the machine
    per_device = 8
    total = 3 * per_device
    args = nightly_args(tmp_path, farm, suite, "n", "--sessions", str(per_device), "--id",
                        nightly_id)
    proc = subprocess.Popen([*EDGEBENCH, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, **env_for(tmp_path)))
    for place in PLACES:  # every device has pushed its files and stored a session
        wait_for_sessions(db, place, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = rows(db, "SELECT job_id, session, started_at FROM sessions WHERE status = 'ok'")
    assert 3 <= len(before) < total
    assert len(list((tmp_path / "labgrid-state").glob("*.json"))) == 3  # left by the kill
    assert all(p in who(lab) for p in PLACES)  # labgrid keeps a dead client's places
    # one board upgraded while the nightly was down (its kernel, as a reboot would change it):
    # its stored sessions say the old kernel, the sessions measured now the new one
    counts = dict(rows(db, "SELECT device, COUNT(*) FROM sessions JOIN results USING (job_id) "
                           "WHERE sessions.status = 'ok' GROUP BY device"))
    upgraded = min(PLACES, key=lambda p: counts.get(p, 0))
    assert counts.get(upgraded, 0) < per_device
    ((fp,),) = rows(db, "SELECT device_fingerprint FROM results WHERE device = ?", upgraded)
    kernel = json.loads(fp)["kernel"]
    key, text = fingerprint_sha256(dict(json.loads(fp), kernel="5.15.0-old"))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO fingerprints (sha256, fingerprint) VALUES (?, ?)", (key, text))
        conn.execute("UPDATE sessions SET fingerprint_sha256 = ? WHERE job_id IN "
                     "(SELECT job_id FROM results WHERE device = ?)", (key, upgraded))
    conn.close()

    again = run_cli(*args, env=env_for(tmp_path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming nightly nightly-resume-test" in again.stderr
    said = [line for line in (again.stderr + again.stdout).splitlines() if "warning" in line]
    assert len(said) == 1 and f"{upgraded} changed since the sessions run {nightly_id} " \
        f"stored (kernel 5.15.0-old -> {kernel})" in said[0], said
    flagged = rows(db, "SELECT device FROM results WHERE flags LIKE '%mixed_sessions%'")
    assert flagged == [(upgraded,)]
    out = summary(tmp_path, "n")
    notes = [n for d in out["devices"] for n in d["notes"]]
    assert len(notes) == 3 and all("left by a killed run" in n for n in notes)
    after = rows(db, "SELECT job_id, session, started_at FROM sessions WHERE status = 'ok'")
    assert len(after) == total  # every device's sessions: no duplicates, nothing missing
    assert set(before) <= set(after)  # what was measured before the kill was not measured again
    assert sum(d["sessions_run"] for d in out["devices"]) == total - len(before)
    assert [d["bytes_pushed"] for d in out["devices"]] == [0, 0, 0]
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM results") == [(3, 3)]
    assert rows(db, "SELECT run_id, status FROM runs") == [(nightly_id, "finished")]
    assert rows(db, "SELECT sessions FROM results") == [(per_device,)] * 3
    assert not list((tmp_path / "labgrid-state").glob("*.json"))
    assert not any(p in who(lab) for p in PLACES)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_nightly_releases_every_place(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path], sig: signal.Signals) -> None:
    """... and says the command that resumes it; the sessions under way when it came are not
    stored, least of all as lost connections (the interruption closes them): a resume measures
    them."""
    farm = write_farm(tmp_path, lab)
    db = tmp_path / "db.sqlite"
    args = nightly_args(tmp_path, farm, suite, "n", "--sessions", LONG_RUN_SESSIONS)
    proc = subprocess.Popen(
        [*EDGEBENCH, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, **env_for(tmp_path)))
    for place in PLACES:
        wait_for_sessions(db, place, 1, proc)
    assert all(p in who(lab) for p in PLACES)
    assert proc.poll() is None, "the nightly ended before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not any(p in who(lab) for p in PLACES)
    assert not list((tmp_path / "labgrid-state").glob("*.json"))
    ((nightly_id, status),) = rows(db, "SELECT run_id, status FROM runs")
    assert status == "interrupted"
    again = " ".join(["edgebench", *args, "--id", nightly_id])
    assert (f"nightly {nightly_id} interrupted: sessions under way are not stored; `{again}` "
            "measures what it has not stored") in err
    assert "connection lost" not in err and "failed:" not in err
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status != 'ok'") == [(0,)]
    assert rows(db, "SELECT DISTINCT status FROM results") == [("ok",)]


# `edgebench ARGS...` (args[1:], args[0] the database), interrupted inside a gc callback once
# the database holds a session (looked at no more than every 0.1 s). The nightly's main thread
# only waits for its devices' threads, and collects garbage at each wait here.
NIGHTLY_INTERRUPTED_INSIDE_GC = interrupt_inside_gc("""
join = threading.Thread.join


def collecting_join(self, timeout=None):
    gc.collect()
    return join(self, timeout)


threading.Thread.join = collecting_join
""" + once_a_session_is_stored("args[0]"), '["edgebench", *args[1:]]')


def test_a_ctrl_c_python_swallowed_in_a_callback_still_stops_the_nightly(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A Ctrl-C whose KeyboardInterrupt lands in a gc callback is only printed by Python: the
    nightly measured its 20 sessions a device to the end and exited 0. It is remembered, and
    the nightly stops, releases its places and says how to resume."""
    farm = write_farm(tmp_path, lab)
    db = tmp_path / "db.sqlite"
    args = nightly_args(tmp_path, farm, suite, "n", "--sessions", "20")
    proc = subprocess.run(
        [sys.executable, "-c", NIGHTLY_INTERRUPTED_INSIDE_GC, str(db), *args], cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO), **env_for(tmp_path)), capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert "interrupted: sessions under way are not stored" in proc.stderr
    assert rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert rows(db, "SELECT COUNT(*) FROM sessions")[0][0] < 3 * 20
    assert not any(p in who(lab) for p in PLACES)


def one_place_farm(tmp_path: Path, lab: LoopbackLab, **place: Any) -> Path:
    """A farm of dev0 alone (its profile changed by `place`), for tests of the run itself."""
    data = lab.farm_data(retries=0, wait_s=30)
    data["places"] = {"dev0": {**data["places"]["dev0"], **place}}
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump(data, sort_keys=False))
    return farm


def _python_without_runtimes(where: Path) -> Path:
    """A real interpreter with numpy and no inference runtime, as on a board whose onnxruntime
    an OS update removed."""
    import sysconfig
    import venv

    import numpy

    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True).stdout.strip()
    assert site and site != sysconfig.get_paths()["purelib"]
    for item in Path(numpy.__file__).parent.parent.iterdir():  # numpy and its own libraries
        if item.name.startswith("numpy"):
            (Path(site) / item.name).symlink_to(item)
    return python


def test_a_board_on_which_every_measurement_is_unsupported_is_not_measured(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """Found in a review: a board whose runtime was gone measured nothing, every measurement
    `unsupported`, and the gate said "every device measured and no regression" with exit 0. It
    is a device not measured: exit 3, said in summary.json, JUnit and on the page."""
    farm = one_place_farm(tmp_path, lab, python=str(_python_without_runtimes(tmp_path / "bare")))
    done = nightly(tmp_path, farm, suite, "n")
    assert done.returncode == 3, done.stderr + done.stdout
    found = summary(tmp_path, "n")
    (device,) = found["devices"]
    assert device["status"] == "unsupported"
    assert device["message"].startswith("measured nothing: its one measurement was unsupported "
                                        "(digits_cnn: "), device["message"]
    assert "onnxruntime" in device["message"]
    assert found["exit_code"] == 3
    assert "1 of 1 device not measured (dev0 unsupported)" in found["exit_meaning"]
    assert "every device measured" not in found["exit_meaning"]
    junit = (tmp_path / "n" / "junit.xml").read_text()
    header = junit.split("<testsuite ", 2)[1].split(">", 1)[0]
    assert 'name="dev0"' in header and 'failures="0" errors="0"' not in header  # newly failing
    page = (tmp_path / "n" / "index.html").read_text()
    assert "1 unsupported" in page
    assert rows(tmp_path / "db.sqlite", "SELECT DISTINCT status FROM results") == [
        ("unsupported",)]


def test_a_nightly_resumed_with_other_options_is_refused_naming_them(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """`--id` takes up a nightly as it began: a session of another protocol, count or thread
    count would mix into its measurements, or go unmeasured as "measured already". Refused in
    one line before anything is built or measured, as `bench --resume` refuses; a nightly of an
    edgebench that recorded no plan is taken up as before."""
    farm = one_place_farm(tmp_path, lab)
    db = tmp_path / "db.sqlite"
    ident = "nightly-options"
    first = nightly(tmp_path, farm, suite, "n", "--id", ident)
    assert first.returncode == 0, first.stderr + first.stdout
    stored = rows(db, "SELECT job_id, session, started_at FROM sessions")
    plain = [a for a in nightly_args(tmp_path, farm, suite, "n", "--id", ident) if a != "--quick"]

    for extra, line in (
            (["--sessions", "3"], f"edgebench: error: nightly {ident} was measured with --quick; "
                                  "this command gives no --quick; resume it with the options it "
                                  "began with"),
            (["--quick", "--threads", "2"],
             f"edgebench: error: nightly {ident} was measured with no --threads; this command "
             "gives --threads 2; resume it with the options it began with")):
        again = run_cli(*plain, *extra, env=env_for(tmp_path))
        assert again.returncode == 2, again.stderr + again.stdout
        assert again.stderr.strip().splitlines() == [line]  # nothing built, nothing acquired
    # the farm file now sets the board up otherwise: refused, naming what differs
    threads = run_cli(*nightly_args(tmp_path, one_place_farm(tmp_path, lab, threads=2), suite,
                                    "n", "--id", ident), env=env_for(tmp_path))
    assert threads.returncode == 2, threads.stderr + threads.stdout
    assert (f"nightly {ident}: digits_cnn on onnxruntime on dev0 would be measured otherwise "
            "than it was (options.threads: 1 then, 2 now)") in threads.stderr
    assert rows(db, "SELECT job_id, session, started_at FROM sessions") == stored
    assert rows(db, "SELECT status FROM runs") == [("finished",)]

    # a nightly begun before plans were recorded is taken up as before
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET plan = NULL")
    old = run_cli(*nightly_args(tmp_path, farm, suite, "n", "--id", ident),
                  env=env_for(tmp_path))
    assert old.returncode == 0, old.stderr + old.stdout
    assert "resuming nightly nightly-options" in old.stderr
    assert "everything was measured already" in old.stdout + old.stderr
    assert rows(db, "SELECT job_id, session, started_at FROM sessions") == stored


def test_a_nightly_still_running_is_not_taken_up_by_a_second_with_its_id(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A manual start while the timer's nightly of that id runs: refused before the build, as
    `bench --resume` refuses a run still being measured, naming the process; it would wait for
    the places, measure the same sessions again, fail on them and overwrite the good report."""
    held = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    farm = write_farm(tmp_path, lab, wait_s=120)  # the first waits for dev1 meanwhile
    db = tmp_path / "db.sqlite"
    ident = "nightly-twice"
    args = nightly_args(tmp_path, farm, suite, "n", "--sessions", "4", "--id", ident)
    first = subprocess.Popen([*EDGEBENCH, *args], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(db, "dev0", 1, first)
    second = run_cli(*args, env=env_for(tmp_path))
    let_go = lab.client("-p", "dev1", "release", env={"LG_USERNAME": "alice"})
    assert let_go.returncode == 0, let_go.stderr
    assert second.returncode == 2, second.stderr + second.stdout
    assert second.stderr.strip().splitlines() == [
        f"edgebench: error: nightly {ident} is still being measured by process {first.pid} on "
        "this host; stop it first (Ctrl-C, SIGTERM), then resume it, or give another --id"]
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err + out
    done = summary(tmp_path, "n")
    assert done["status"] == "finished" and [d["status"] for d in done["devices"]] == ["ok"] * 3
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status = 'ok'") == [(12,)]
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status != 'ok'") == [(0,)]


def test_previous_skips_a_nightly_that_stored_nothing(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A nightly interrupted before its first session ended stored nothing: the next one is
    compared with the last nightly that measured the board, not "only in B" against nothing."""
    farm = one_place_farm(tmp_path, lab)
    first = nightly(tmp_path, farm, suite, "n1")
    assert first.returncode == 0, first.stderr + first.stdout
    good = summary(tmp_path, "n1")["nightly_id"]
    with Store(tmp_path / "db.sqlite") as store:  # as Ctrl-C leaves one that stored nothing
        empty = store.begin_run(" ".join(["edgebench", *nightly_args(tmp_path, farm, suite,
                                                                     "n2")]),
                                str(suite["suite"]), ["dev0"], run_id="nightly-empty")
        store.finish_run(empty, "interrupted")
    third = nightly(tmp_path, farm, suite, "n3")
    assert third.returncode == 0, third.stderr + third.stdout
    out = summary(tmp_path, "n3")
    assert out["baseline"] == good and out["baselines"] == {"dev0": good}
    ((m,),) = [out["measurements"]]
    assert m["verdict"] in ("slower", "faster", "no change", "inconclusive") and m["job_id_a"]
    assert m["baseline_run"] == good and out["not_gated"] == 0
    assert f"(baseline {good})" in " ".join(third.stdout.split())  # the table's title


def test_an_explicit_baseline_that_can_gate_nothing_is_refused_before_anything_runs(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """`--baseline RUN` of another device, or of the same board but none of this suite's
    measurements, would make every measurement "only in B" and pass the gate: refused in one
    line, before any place is acquired or anything measured."""
    db = tmp_path / "db.sqlite"
    with Store(db) as store:
        elsewhere = store.begin_run("edgebench bench --device local --model x.onnx", None,
                                    ["local"])
        add_job(store, elsewhere, "digits_cnn", device="local")
        store.finish_run(elsewhere)
        other = store.begin_run("edgebench bench --device dev0 --model other.onnx", None,
                                ["dev0"])
        add_job(store, other, "other", device="dev0")
        store.finish_run(other)
    farm = one_place_farm(tmp_path, lab)
    refused = nightly(tmp_path, farm, suite, "n", "--baseline", elsewhere)
    assert refused.returncode == 2, refused.stderr + refused.stdout
    assert refused.stderr.strip().splitlines() == [  # before the build
        f"edgebench: error: --baseline {elsewhere}: it measured nothing ok on this farm's "
        "devices (dev0; it measured local), so it can gate nothing; give a run of these "
        "devices, or `previous`"]
    refused = nightly(tmp_path, farm, suite, "n", "--baseline", other)
    assert refused.returncode == 2, refused.stderr + refused.stdout
    assert refused.stderr.strip().splitlines()[-1] == (
        f"edgebench: error: --baseline {other}: it has no ok measurement of a model this "
        "nightly measures (same device, model, format, runtime, threads and batch), so it can "
        "gate nothing; give a run of this suite on these devices, or `previous`")
    assert "acquired" not in refused.stderr and "dev0" not in who(lab)
    assert rows(db, "SELECT run_id FROM runs ORDER BY rowid") == [(elsewhere,), (other,)]


def _corrupt_copy(build: Path, into: Path, name: str) -> Path:
    """A copy of the built suite whose `name` holds bytes that are no model, its manifest and
    build record saying so (as a broken export would leave it): the build reuses it."""
    shutil.copytree(build, into)
    model = into / name
    model.write_bytes(b"not an onnx model " * 64)
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    manifest = model.with_name(name + ".manifest.json")
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "sha256": sha, "size_bytes": model.stat().st_size}))
    record = model.with_name(name + ".build.json")
    record.write_text(json.dumps({**json.loads(record.read_text()), "sha256": sha}))
    return into


def test_a_measurement_failing_in_the_first_nightly_fails_the_gate(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """No baseline: a failure never ran ok before, so it is newly failing (exit 1 with
    --fail-on-regression, a JUnit failure), and the page says so first."""
    data = lab.farm_data(retries=0, wait_s=30)
    data["places"] = {"dev0": data["places"]["dev0"]}
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump(data, sort_keys=False))
    broken = {**suite, "build": _corrupt_copy(suite["build"], tmp_path / "build",
                                              "digits_cnn.onnx")}
    proc = nightly(tmp_path, farm, broken, "n", "--fail-on-regression")
    assert proc.returncode == 1, proc.stderr + proc.stdout
    out = summary(tmp_path, "n")
    assert out["baseline"] is None and [d["status"] for d in out["devices"]] == ["ok"]
    (m,) = out["measurements"]
    assert m["status_b"] == "failed" and m["verdict"] == "newly failing" and m["error_b"]
    assert out["regressions"] == 1 and out["exit_code"] == 1
    junit = ET.parse(tmp_path / "n" / "junit.xml").getroot()
    assert junit.find("testsuite[@name='dev0']/testcase/failure") is not None
    page = (tmp_path / "n" / "index.html").read_text()
    status = page[page.index("<div class=status>"):page.index("</div>")]
    assert "Exit code 1" in status and "1 newly failing" in status
    assert "Baseline: none, the first nightly" in status and "digits_cnn" in status


def test_a_suite_entry_that_does_not_build_fails_the_nightly(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """An entry that does not build is measured nowhere: the nightly says so in summary.json,
    junit.xml (a failed case), the page's verdict and on the console, and exits 3 (something was
    not measured), with or without --fail-on-regression, as `bench` fails it."""
    farm = one_place_farm(tmp_path, lab)
    missing = tmp_path / "no-such-folder"
    broken = tmp_path / "suite.yaml"
    broken.write_text(SUITE.replace(
        "datasets:\n",
        f"datasets:\n  elsewhere: {{type: imagefolder, path: {missing}, image_size: 32}}\n")
        + "  elsewhere_cnn: {arch: digits_cnn, dataset: elsewhere}\n")
    build = tmp_path / "build"
    shutil.copytree(suite["build"], build)  # the digits CNN is reused, not trained again
    proc = nightly(tmp_path, farm, {"suite": broken, "build": build}, "n")
    assert proc.returncode == 3, proc.stderr + proc.stdout
    out = summary(tmp_path, "n")
    ((failed,),) = [out["build_failures"]]
    assert failed["entry"] == "elsewhere_cnn" and f"{missing} does not exist" in failed["error"]
    assert out["exit_code"] == 3 and "1 suite entry did not build (elsewhere_cnn)" in \
        out["exit_meaning"]
    assert [d["status"] for d in out["devices"]] == ["ok"]  # the rest measured all the same
    assert [m["model"] for m in out["measurements"]] == ["digits_cnn"]
    junit = ET.parse(tmp_path / "n" / "junit.xml").getroot()
    case = junit.find("testsuite[@name='suite build']/testcase[@name='elsewhere_cnn']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and "does not exist" in (failure.get("message") or "")
    assert int(junit.get("failures") or 0) >= 1
    page = (tmp_path / "n" / "index.html").read_text()
    status = page[page.index("<div class=status>"):page.index("</div>")]
    assert "Exit code 3" in status and "1 suite entry did not build" in status
    assert "elsewhere_cnn" in status
    assert "1 suite entry did not build (measured on no device): elsewhere_cnn: " in proc.stdout


def _bench_args(tmp_path: Path, farm: Path, suite: dict[str, Path], *extra: str) -> list[str]:
    return ["bench", "--device", "dev1", "--farm", str(farm), "--model",
            str(suite["build"] / "digits_cnn.onnx"), "--quick", "--db",
            str(tmp_path / "db.sqlite"), *extra]


def test_bench_on_a_farm_device_acquires_its_place_and_releases_it(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    farm = write_farm(tmp_path, lab)
    done = run_cli(*_bench_args(tmp_path, farm, suite, "--sessions", "2"), env=env_for(tmp_path))
    assert done.returncode == 0, done.stderr + done.stdout
    assert rows(tmp_path / "db.sqlite", "SELECT device, status, sessions FROM results") == [
        ("dev1", "ok", 2)]
    assert "dev1" not in who(lab) and not list((tmp_path / "labgrid-state").glob("*.json"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_bench_on_a_farm_device_releases_its_place(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path], sig: signal.Signals) -> None:
    farm = write_farm(tmp_path, lab)
    # far more sessions than can be measured before the signal: `who` alone can take seconds
    proc = subprocess.Popen([*EDGEBENCH, *_bench_args(tmp_path, farm, suite, "--sessions",
                                                      LONG_RUN_SESSIONS)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(tmp_path / "db.sqlite", "dev1", 1, proc)
    assert "dev1" in who(lab)  # held for the whole bench, not per session
    assert proc.poll() is None, "the bench ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "dev1" not in who(lab) and not list((tmp_path / "labgrid-state").glob("*.json"))
    assert rows(tmp_path / "db.sqlite", "SELECT status FROM runs") == [("interrupted",)]


def test_farm_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.farm.farmfile import load_farm

    def load(data: dict[str, Any]) -> str:
        path = tmp_path / "farm.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as err:
            load_farm(path)
        return str(err.value)

    base = {"coordinator": "127.0.0.1:20408", "places": {"p": {"kind": "rpi"}}}
    assert "places: required field is missing" in load({"coordinator": "x:1"})
    assert "places.p.ssh.host: comes from the place's NetworkService" in load(
        {**base, "places": {"p": {"ssh": {"host": "10.0.0.1"}}}})
    assert "places.p.kind: 'toaster' is not one of" in load(
        {**base, "places": {"p": {"kind": "toaster"}}})
    assert "places.p.transport: set by the farm" in load(
        {**base, "places": {"p": {"transport": "ssh"}}})
    assert "retries: must be between 0 and" in load({**base, "retries": -1})
    # found: a coordinator without its port went to :443 and failed later, as unreachable
    assert ("coordinator: must be HOST:PORT of the labgrid coordinator, such as "
            "127.0.0.1:20408" in load({**base, "coordinator": "127.0.0.1"}))
    assert "coordinator: must be HOST:PORT" in load({**base, "coordinator": "::1"})
    # found: the known fields listed transport and labgrid, which the farm then refuses
    for where, data in (("places.p.", {**base, "places": {"p": {"kind": "rpi", "runtimez": []}}}),
                        ("defaults.", {**base, "defaults": {"runtimez": []}})):
        said = load(data)
        assert f"{where}runtimez: unknown field; known: cache_dir, cpu_affinity, " in said, said
        assert "labgrid" not in said.split("known:")[1] and "transport" not in said
    said = load({**base, "places": {"p": {"ssh": {"key_flie": "~/.ssh/k"}}}})
    assert "places.p.ssh.key_flie: unknown field; known: command_timeout_s" in said
    assert not {"host", "port", "user"} & set(said.split("known: ")[1].split(", "))
    assert "passwords are never stored" in load(
        {**base, "places": {"p": {"ssh": {"password": "x"}}}})
    # a place name becomes part of a lock file's path, even when the device has its own name
    assert "places.../x.labgrid.place: '../x' is not a usable place name" in load(
        {**base, "places": {"../x": {"name": "pi"}}})
    shipped = REPO / "devices" / "farm.yaml"
    from harness.farm.farmfile import load_farm as load_shipped

    farm = load_shipped(shipped)  # the documented example loads
    assert {d.transport for d in farm.devices} == {"labgrid"}
    assert all(d.ssh is not None and d.ssh.key_file for d in farm.devices)



def test_a_labgrid_profile_needs_its_coordinator_and_place_but_no_address(tmp_path: Path,
                                                                          ) -> None:
    from harness.config import parse_profile
    from harness.errors import ConfigError

    path = tmp_path / "board.yaml"
    profile = parse_profile(path, {"name": "board", "kind": "rpi", "transport": "labgrid",
                                   "labgrid": {"coordinator": "lab:20408", "place": "rpi-3",
                                               "wait_s": 60},
                                   "ssh": {"key_file": "~/.ssh/k"}})
    assert profile.labgrid is not None and profile.labgrid.place == "rpi-3"
    assert profile.ssh is not None and profile.ssh.host == "" and profile.ssh.key_file
    with pytest.raises(ConfigError, match="board.yaml: labgrid: transport is labgrid but no"):
        parse_profile(path, {"name": "board", "transport": "labgrid"})
    with pytest.raises(ConfigError, match="labgrid.place: required field is missing"):
        parse_profile(path, {"name": "board", "transport": "labgrid",
                             "labgrid": {"coordinator": "lab:20408"}})
    with pytest.raises(ConfigError, match="labgrid.place: '../x' is not a usable place name"):
        parse_profile(path, {"name": "board", "transport": "labgrid",
                             "labgrid": {"coordinator": "lab:20408", "place": "../x"}})
    with pytest.raises(ConfigError, match="ssh.host: required field is missing"):
        parse_profile(path, {"name": "board", "transport": "ssh", "ssh": {"port": 22}})
    with pytest.raises(ConfigError, match="labgrid.coordinator: must be HOST:PORT"):
        parse_profile(path, {"name": "board", "transport": "labgrid",
                             "labgrid": {"coordinator": "lab", "place": "rpi-3"}})


def test_out_folder_of_someone_else_is_refused_before_anything_runs(tmp_path: Path) -> None:
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump({"coordinator": f"127.0.0.1:{free_port()}",
                                    "places": {"p": {"kind": "linux"}}}))
    out = tmp_path / "paper"
    out.mkdir()
    (out / "draft.tex").write_text("mine")
    proc = run_cli("nightly", "--farm", str(farm), "--suite", "models/demo.yaml", "--db",
                   str(tmp_path / "db.sqlite"), "--out", str(out))
    assert proc.returncode == 2
    assert "folder holds files a nightly did not write (draft.tex" in proc.stderr
    assert (out / "draft.tex").read_text() == "mine" and not (tmp_path / "db.sqlite").exists()


def test_a_nightly_id_that_is_not_a_name_is_refused(tmp_path: Path) -> None:
    """The id is the run id and names the report folder: `../x` would write outside reports/."""
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump({"coordinator": f"127.0.0.1:{free_port()}",
                                    "places": {"p": {"kind": "linux"}}}))
    proc = run_cli("nightly", "--farm", str(farm), "--suite", "models/demo.yaml", "--db",
                   str(tmp_path / "db.sqlite"), "--id", "../x")
    assert proc.returncode == 2
    assert "--id '../x' is not a usable nightly id" in proc.stderr
    assert not (tmp_path / "db.sqlite").exists() and not (REPO / "x").exists()


def test_a_missing_key_file_fails_its_device_at_once_without_retries(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """Waiting does not create a key file: the device fails on its first try, naming the file,
    while the others are measured."""
    data = lab.farm_data(retries=2, backoff_s=20, wait_s=30)
    missing = tmp_path / "no-such-key"
    data["places"]["dev1"]["ssh"]["key_file"] = str(missing)
    farm = tmp_path / "farm.yaml"
    farm.write_text(yaml.safe_dump(data, sort_keys=False))
    proc = nightly(tmp_path, farm, suite, "n")
    assert proc.returncode == 3, proc.stderr + proc.stdout
    status = {d["name"]: d for d in summary(tmp_path, "n")["devices"]}
    assert status["dev1"]["status"] == "failed" and status["dev1"]["attempts"] == 1
    assert f"key file {missing} does not exist" in status["dev1"]["message"]
    assert "trying again" not in proc.stderr + proc.stdout
    assert status["dev0"]["status"] == status["dev2"]["status"] == "ok"
    assert "dev1" not in who(lab)  # released


class _Lines:
    """A process's stderr read line by line as it comes, so a test can act on a line while the
    process still runs."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc, self.lines = proc, []  # type: list[str]
        self._new = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self.lines.append("")  # the end
            self._new.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The first line holding `text`; fails if the process ends or `timeout` passes first
        (a generous bound against a hang, not a measurement)."""
        with self._new:
            found = self._new.wait_for(
                lambda: any(text in line for line in self.lines) or "" in self.lines, timeout)
            match = next((line for line in self.lines if text in line), None)
        assert found and match is not None, f"no {text!r} on stderr: {''.join(self.lines)}"
        return match

    def rest(self, timeout: float = 120) -> str:
        """All of stderr once the process has ended (stdout is read and dropped)."""
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return "".join(self.lines)


def _bench_popen(tmp_path: Path, farm: Path, suite: dict[str, Path], *extra: str,
                 ) -> tuple[subprocess.Popen[str], _Lines]:
    proc = subprocess.Popen([*EDGEBENCH, *_bench_args(tmp_path, farm, suite, *extra)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **env_for(tmp_path)))
    return proc, _Lines(proc)


def reservations(lab: LoopbackLab) -> str:
    done = lab.client("reservations")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_on_a_place_held_by_someone_else_says_so_at_once_then_gives_up_in_its_words(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    held = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    farm = write_farm(tmp_path, lab, wait_s=1800)  # the example farm's wait; --wait wins
    proc, err = _bench_popen(tmp_path, farm, suite, "--wait", "2")
    notice = err.wait_for("is held by")
    assert "labgrid place dev1 is held by " in notice and "/alice" in notice
    assert "waiting up to 2 s" in notice and "Ctrl-C" in notice
    stderr = err.rest()
    assert proc.returncode == 3, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("edgebench: error: device dev1: labgrid place dev1 is held by ")
    assert "/alice" in last and "gave up after waiting 2 s" in last
    assert "skipping" not in stderr and "Traceback" not in stderr
    assert "alice" in who(lab)  # alice keeps her place, and nothing of ours is left
    assert "Reservation" not in reservations(lab)
    assert not list((tmp_path / "labgrid-state").glob("*.json"))

    proc, err = _bench_popen(tmp_path, farm, suite, "--wait", "0")
    stderr = err.rest()
    assert proc.returncode == 3, stderr
    assert "waiting up to" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(
        "edgebench: error: device dev1: labgrid place dev1 is held by ")
    assert "not waiting for it" in stderr

    plain = run_cli("bench", "--model", str(suite["build"] / "digits_cnn.onnx"), "--wait", "5",
                    "--db", str(tmp_path / "db.sqlite"))
    assert plain.returncode == 2 and "local is no farm device" in plain.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_bench_interrupted_while_waiting_for_a_place_leaves_no_reservation(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path], sig: signal.Signals) -> None:
    """A reservation left waiting would be given the place the moment its holder lets go, and
    keep everyone else out of it for a minute."""
    held = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    farm = write_farm(tmp_path, lab)
    proc, err = _bench_popen(tmp_path, farm, suite, "--wait", "600")
    err.wait_for("waiting up to 600 s")
    assert proc.poll() is None and "Reservation" in reservations(lab)  # ours, waiting
    proc.send_signal(sig)
    stderr = err.rest()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert "Reservation" not in reservations(lab)
    assert not list((tmp_path / "labgrid-state").glob("*.json"))
    released = lab.client("-p", "dev1", "release", env={"LG_USERNAME": "alice"})
    assert released.returncode == 0, released.stderr
    taken = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "bob"})
    assert taken.returncode == 0, taken.stderr  # not kept for a reservation of ours
    assert "bob" in who(lab)


def test_a_reservation_filed_as_its_acquisition_was_stopped_is_cancelled(
        tmp_path: Path, lab: LoopbackLab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a timeout) landing while CreateReservation is under way: the coordinator filed
    the reservation, but its token was in the answer never read. It is found by owner and place
    and cancelled; a reservation of this user that another live run holds (lock file) is kept.
    The stop is injected at the one await where it can land, right after the real answer."""
    monkeypatch.setenv("EDGEBENCH_LABGRID_STATE", str(tmp_path / "labgrid-state"))
    by_hand = lab.client("reserve", "name=dev1")  # this user, another run of ours
    assert by_hand.returncode == 0, by_hand.stderr
    kept = re.search(r"Reservation '([^']+)'", by_hand.stdout).group(1)  # type: ignore[union-attr]
    other_run = subprocess.Popen(["sleep", "60"])
    try:
        lock = lock_file(lab.address, "dev1")
        lock.parent.mkdir(mode=0o700, parents=True)
        stat = Path(f"/proc/{other_run.pid}/stat").read_text()
        lock.write_text(json.dumps({"pid": other_run.pid, "token": kept, "place": "dev1",
                                    "start": stat[stat.rindex(")") + 2:].split()[19]}))
        client = LabgridClient(lab.address)
        filed: list[str] = []
        real = client._rpc

        async def stopped_as_the_answer_comes(name: str, request: Any) -> Any:
            answer = await real(name, request)
            if name == "CreateReservation":
                filed.append(answer.reservation.token)
                raise asyncio.CancelledError
            return answer

        client._rpc = stopped_as_the_answer_comes  # type: ignore[method-assign]
        try:
            with pytest.raises(TransportError, match="stopped waiting"):
                client.acquire(LabgridSettings(lab.address, "dev1", wait_s=5))
        finally:
            client._rpc = real  # type: ignore[method-assign]
            client.close()
    finally:
        other_run.kill()
        other_run.wait()
    left = reservations(lab)
    assert filed and filed[0] not in left  # the unanswered one is gone
    assert kept in left  # the other run's is not


def test_a_place_acquired_by_hand_after_a_killed_run_is_not_released_by_the_next(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A bench killed while it held dev1 leaves its lock file; the same user then releases dev1
    by hand and acquires it for themselves (under the same labgrid name, `host/user`, and while
    the dead run's reservation still lasts). The next run must leave that acquisition alone."""
    farm = write_farm(tmp_path, lab)
    proc = subprocess.Popen([*EDGEBENCH, *_bench_args(tmp_path, farm, suite, "--sessions",
                                                      LONG_RUN_SESSIONS)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(tmp_path / "db.sqlite", "dev1", 1, proc)
    assert proc.poll() is None, "the bench ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list((tmp_path / "labgrid-state").glob("*.json"))) == 1
    for step in ("release", "acquire"):  # by hand, as the same user
        done = lab.client("-p", "dev1", step)
        assert done.returncode == 0, done.stderr
    mine = who(lab)
    assert "dev1" in mine

    again = run_cli(*_bench_args(tmp_path, farm, suite, "--wait", "1"), env=env_for(tmp_path))
    assert again.returncode == 3, again.stderr + again.stdout
    assert "left by a killed run" not in again.stderr
    last = again.stderr.strip().splitlines()[-1]
    assert "labgrid place dev1 is held by " in last
    # the holder is this very user: the message says why the place was not taken back
    assert "this user, but not by the edgebench run that last held it" in last
    assert "`labgrid-client -p dev1 release`" in last
    assert who(lab) == mine  # still acquired by hand
    assert not list((tmp_path / "labgrid-state").glob("*.json"))


def test_a_lock_file_of_an_older_edgebench_never_releases_a_place(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A lock file as an older edgebench wrote it ("acquired" before AcquirePlace, no stamp) and
    a place acquired under our name: it cannot be told from a hand acquisition, so it is kept,
    and the run says how to release it."""
    done = lab.client("-p", "dev1", "acquire")
    assert done.returncode == 0, done.stderr
    mine = who(lab)
    farm = write_farm(tmp_path, lab)
    state = tmp_path / "labgrid-state"
    state.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (state / lock_file(lab.address, "dev1").name).write_text(json.dumps({
        "pid": dead.pid, "start": 1, "token": "0123abcd", "run": "old-run", "place": "dev1",
        "acquired": True, "since": "2026-11-01T02:00:00Z"}))
    again = run_cli(*_bench_args(tmp_path, farm, suite, "--wait", "1"), env=env_for(tmp_path))
    assert again.returncode == 3, again.stderr + again.stdout
    assert "left by a killed run" not in again.stderr
    assert "old-run" in again.stderr and "`labgrid-client -p dev1 release`" in again.stderr
    assert who(lab) == mine


def test_a_bench_releases_the_place_a_killed_bench_left_and_says_so(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A bench killed while it held dev1 leaves it acquired; the next bench, finding it unchanged
    since, releases it, says so, and measures."""
    farm = write_farm(tmp_path, lab)
    proc = subprocess.Popen([*EDGEBENCH, *_bench_args(tmp_path, farm, suite, "--sessions",
                                                      LONG_RUN_SESSIONS)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, **env_for(tmp_path)))
    wait_for_sessions(tmp_path / "db.sqlite", "dev1", 1, proc)
    assert proc.poll() is None, "the bench ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert "dev1" in who(lab)

    again = run_cli(*_bench_args(tmp_path, farm, suite, "--wait", "1"), env=env_for(tmp_path))
    assert again.returncode == 0, again.stderr + again.stdout
    assert "labgrid place dev1: released the acquisition left by a killed run" in again.stderr
    assert "dev1" not in who(lab)
    assert not list((tmp_path / "labgrid-state").glob("*.json"))


def test_a_place_acquired_under_the_reservation_of_a_run_killed_while_acquiring_is_kept(
        tmp_path: Path, lab: LoopbackLab, suite: dict[str, Path]) -> None:
    """A run killed before it recorded its acquisition: the place, acquired under our name and
    the dead run's reservation, may be that run's or the user's by hand; it is kept, and the
    next run says how to release it."""
    held = lab.client("-p", "dev1", "acquire", env={"LG_USERNAME": "alice"})
    assert held.returncode == 0, held.stderr
    farm = write_farm(tmp_path, lab)
    proc, err = _bench_popen(tmp_path, farm, suite, "--wait", "600")
    err.wait_for("waiting up to 600 s")
    proc.send_signal(signal.SIGKILL)
    err.rest()
    released = lab.client("-p", "dev1", "release", env={"LG_USERNAME": "alice"})
    assert released.returncode == 0, released.stderr
    # the dead run's reservation now has dev1, and the same user may acquire it
    done = lab.client("-p", "dev1", "acquire")
    assert done.returncode == 0, done.stderr
    mine = who(lab)

    again = run_cli(*_bench_args(tmp_path, farm, suite, "--wait", "1"), env=env_for(tmp_path))
    assert again.returncode == 3, again.stderr + again.stdout
    assert "left acquired" in again.stderr and "labgrid-client -p dev1 release" in again.stderr
    assert who(lab) == mine
    assert not list((tmp_path / "labgrid-state").glob("*.json"))
