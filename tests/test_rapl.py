"""CPU package energy from RAPL (harness/agent/rapl.py), on powercap trees built from real ones.

This machine (a VM) has no /sys/class/powercap. The trees the reader walks are made from published
captures (tests/fixtures/devices/rapl, each naming its source): the kernel's documented
two-package tree, a laptop's zones with psys and the MMIO copy of its package, and a desktop's
zone whose energy_uj a user could not read. The captures give the zones, their names and the
counter range; the counter's values are written by the test, before and after a window, and in the
session test by a thread that advances them while the real agent measures: a simulation of the
counter, never of the reader.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness import results
from harness.agent import job as agent_job
from harness.agent import protocol, rapl
from harness.report import stats
from harness.report.console import FLAG_MEANINGS
from harness.report.tables import row_flags
from tests.conftest import REPO, make_tiny_onnx
from tests.test_devices import capture

# The range of a package counter in the desktop's capture (grep_intel_rapl0_permission_denied)
RANGE_UJ = 262143328850
_GREP_LINE = re.compile(r"^/sys/class/powercap/(?:intel-rapl/)?([^/:]+(?::\d+)+)/(\w+):(.*)$")
_DENIED = re.compile(
    r"^grep: /sys/class/powercap/(?:intel-rapl/)?([^/]+)/(\w+): Permission denied$")


def tree_from_grep(text: str, root: Path, range_uj: int = RANGE_UJ) -> list[Path]:
    """The zones of a `grep . .../name`-style capture as a powercap class folder under `root`
    (zones flat, as /sys/class/powercap lists them); returns the energy_uj files the capture
    could not read. Zones whose range the capture does not show get `range_uj`."""
    denied = []
    for line in text.splitlines():
        value = _GREP_LINE.match(line)
        refused = _DENIED.match(line)
        if value:
            zone, attr, content = value.groups()
            (root / zone).mkdir(parents=True, exist_ok=True)
            (root / zone / attr).write_text(content + "\n")
        elif refused:
            zone, attr = refused.groups()
            (root / zone).mkdir(parents=True, exist_ok=True)
            (root / zone / attr).write_text("0\n")
            denied.append(root / zone / attr)
    for zone in root.iterdir():
        if not (zone / "max_energy_range_uj").exists():
            (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
        if not (zone / "energy_uj").exists():
            (zone / "energy_uj").write_text("0\n")
    return denied


def tree_from_kernel_doc(root: Path) -> None:
    """The zone folders of the kernel's documented tree, named as its text says (intel-rapl:j
    package-j, its subzones :0 core and :1 uncore)."""
    for zone in re.findall(r"──(intel-rapl:\d+(?::\d+)?)$",
                           capture("rapl/powercap_rst_two_packages.txt"), re.MULTILINE):
        folder = root / zone
        folder.mkdir(parents=True)
        parts = zone.split(":")[1:]
        name = f"package-{parts[0]}" if len(parts) == 1 else ("core", "uncore")[int(parts[1])]
        (folder / "name").write_text(name + "\n")
        (folder / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
        (folder / "energy_uj").write_text("0\n")


def set_counter(root: Path, zone: str, value: int) -> None:
    """The zone's counter now; replaced whole, as the kernel's file never shows half a value."""
    tmp = root / zone / ".energy_uj"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, root / zone / "energy_uj")


def window(root: Path, before: dict[str, int], after: dict[str, int],
           iterations: int) -> tuple[dict[str, Any] | None, rapl.RaplMeter]:
    """A meter read around a window in which the counters went from `before` to `after`."""
    for zone, value in before.items():
        set_counter(root, zone, value)
    meter = rapl.RaplMeter(str(root))
    meter.start()
    for zone, value in after.items():
        set_counter(root, zone, value)
    return meter.stop(iterations), meter


# the reader on the fixture trees ---------------------------------------------------------------

def test_two_packages_are_summed_and_their_subzones_left_out(tmp_path: Path) -> None:
    tree_from_kernel_doc(tmp_path)
    assert [z.name for z in rapl.zones(str(tmp_path))] == ["package-0", "package-1"]
    # the core and uncore subzones move too: they are inside their package, never added to it
    out, meter = window(tmp_path,
                        {"intel-rapl:0": 1_000_000, "intel-rapl:1": 5_000_000,
                         "intel-rapl:0:0": 0, "intel-rapl:1:1": 0},
                        {"intel-rapl:0": 1_600_000, "intel-rapl:1": 5_400_000,
                         "intel-rapl:0:0": 9_000_000, "intel-rapl:1:1": 9_000_000},
                        iterations=200)
    assert out is not None and meter.why is None
    assert out["source"] == "rapl" and "whole socket" in out["covers"]
    assert out["covers"].startswith("CPU package(s)") and "other processes" in out["covers"]
    assert out["rail"] == "package-0+package-1"
    assert out["energy_mj"] == pytest.approx(1000.0)  # 600 + 400 mJ
    assert out["energy_mj_per_inference"] == pytest.approx(5.0)  # 1000 mJ / 200
    assert out["mean_w"] == pytest.approx(1.0 / out["energy_interval_s"])
    assert out["rails_mean_w"]["package-0"] == pytest.approx(0.6 / out["energy_interval_s"])
    assert "psys" not in out


def test_a_counter_that_wraps_in_the_window(tmp_path: Path) -> None:
    tree_from_kernel_doc(tmp_path)
    out, _ = window(tmp_path,
                    {"intel-rapl:0": RANGE_UJ - 1_000, "intel-rapl:1": 10},
                    {"intel-rapl:0": 500, "intel-rapl:1": 10},
                    iterations=3)
    assert out is not None
    assert out["energy_mj"] == pytest.approx(1.5)  # 1000 uJ up to the range, 500 after 0
    assert out["energy_mj_per_inference"] == pytest.approx(0.5)
    assert rapl.delta_uj(100, 50, 1000) == 950 and rapl.delta_uj(50, 100, 1000) == 50


def test_psys_is_apart_and_the_mmio_copy_of_the_package_is_not_counted(tmp_path: Path) -> None:
    tree_from_grep(capture("rapl/names_xps7390_psys_mmio.txt"), tmp_path)
    assert (tmp_path / "intel-rapl-mmio:0" / "name").read_text() == "package-0\n"
    assert [z.name for z in rapl.zones(str(tmp_path))] == ["package-0", "psys"]
    out, _ = window(tmp_path,
                    {"intel-rapl:0": 0, "intel-rapl:1": 0, "intel-rapl-mmio:0": 0},
                    {"intel-rapl:0": 2_000_000, "intel-rapl:1": 7_000_000,
                     "intel-rapl-mmio:0": 2_000_000},
                    iterations=10)
    assert out is not None
    assert out["energy_mj"] == pytest.approx(2000.0)  # package-0 once, psys not in it
    assert out["rail"] == "package-0"
    assert out["psys"]["energy_mj"] == pytest.approx(7000.0)
    assert out["psys"]["mean_w"] == pytest.approx(7.0 / out["energy_interval_s"])
    assert rapl.describe(str(tmp_path)) == {"zones": ["package-0", "psys"], "readable": True}


def test_no_tree_means_no_figure_and_no_note(tmp_path: Path) -> None:
    meter = rapl.RaplMeter(str(tmp_path / "powercap"))
    meter.start()
    assert meter.stop(100) is None and meter.why is None
    assert set(rapl.describe(str(tmp_path))) == {"absent"}


def test_a_counter_that_stops_reading_mid_window_gives_no_figure(tmp_path: Path) -> None:
    """Not a permission: a counter file that reads garbage (or goes) after the window started
    gives no figure and the file's name, never a figure from the other package alone."""
    tree_from_kernel_doc(tmp_path)
    meter = rapl.RaplMeter(str(tmp_path))
    meter.start()
    (tmp_path / "intel-rapl:1" / "energy_uj").unlink()
    assert meter.stop(10) is None
    assert meter.why is not None and "intel-rapl:1/energy_uj: FileNotFoundError" in meter.why


# a counter only root may read, read by someone else ---------------------------------------------

def unprivileged(code: str, *args: str) -> Any:
    """`code` run by a user without root's bypass of file modes: this user where it is not root,
    else `nobody` with a system Python (root's own may sit where nobody can reach it). What it
    prints, as JSON."""
    if os.geteuid() != 0:
        argv, user = [sys.executable], None
    else:
        python = shutil.which("python3", path="/usr/bin:/bin:/usr/local/bin")
        if python is None:
            pytest.skip("root here and no system python3 for user nobody to run the reader")
        argv, user = [python], 65534
    proc = subprocess.run([*argv, "-c", code, *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={"PYTHONPATH": str(REPO)},
                          **({"user": user, "group": user} if user is not None else {}))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def root_only_tree() -> Iterator[Path]:
    """The desktop's capture as a tree others may walk, whose energy_uj only its owner reads
    (0400 root-owned, as Linux >= 5.10 makes it; 0000 where the test's user owns it)."""
    folder = Path(tempfile.mkdtemp(prefix="powercap-"))
    try:
        denied = tree_from_grep(capture("rapl/grep_intel_rapl0_permission_denied.txt"), folder)
        assert [p.relative_to(folder) for p in denied] == [Path("intel-rapl:0/energy_uj")]
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        for path in denied:
            path.chmod(0o400 if os.geteuid() == 0 else 0o000)
        yield folder
    finally:
        shutil.rmtree(folder)


READ_AS_USER = ("import json, sys\n"
                "from harness.agent import rapl\n"
                "meter = rapl.RaplMeter(sys.argv[1])\n"
                "meter.start()\n"
                "print(json.dumps([rapl.describe(sys.argv[1]), meter.stop(100), meter.why]))\n")


def test_a_counter_only_root_may_read_gives_no_figure_and_says_why(root_only_tree: Path) -> None:
    described, figure, why = unprivileged(READ_AS_USER, str(root_only_tree))
    path = f"{root_only_tree}/intel-rapl:0/energy_uj"
    assert figure is None
    assert why.startswith(f"{path}: permission denied: ")
    assert "root only since Linux 5.10 (CVE-2020-8694)" in why and "udev rule" in why
    assert "chmod o+r" in why
    assert described == {"zones": ["package-0"], "readable": False, "unreadable": why}


# the real agent on a session, the counters advancing under it -------------------------------------

class AdvancingCounters:
    """Writes each zone's counter as `start + rate x elapsed` (modulo its range) every millisecond
    while the agent measures: the kernel's counter, simulated. The package's starts just below its
    range, so that it wraps during the session, in the window or before it (the wrap in a window
    is tested on the reader above)."""

    def __init__(self, root: Path, watts: dict[str, float], start: dict[str, int]) -> None:
        self.root, self.watts, self.start = root, watts, start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            elapsed_us = (time.perf_counter() - t0) * 1e6
            for zone, watts in self.watts.items():  # W = J/s = uJ/us
                set_counter(self.root, zone, int(self.start[zone] + watts * elapsed_us) % RANGE_UJ)
            time.sleep(0.001)

    def __enter__(self) -> AdvancingCounters:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def session(model: Path, duration_s: float, runtime: str = "onnxruntime") -> dict[str, Any]:
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "rapl",
           "runtime": runtime, "model": {"path": str(model), "format": model.suffix[1:]},
           "device_kind": "linux", "options": {"threads": 1},
           "settings": {"warmup_s": 0.01, "warmup_min": 2, "duration_s": duration_s,
                        "min_iterations": 5, "max_duration_s": 2.0}}
    result = agent_job.run_job(job)
    assert result["status"] == "ok", result["error"]
    return result


def test_a_session_reports_the_package_energy_per_inference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real agent measures a real ONNX model while the laptop tree's counters advance at
    25 W (package) and 40 W (psys): the energy of the window over its iterations."""
    powercap = tmp_path / "powercap"
    tree_from_grep(capture("rapl/names_xps7390_psys_mmio.txt"), powercap)
    monkeypatch.setattr(rapl, "POWERCAP", str(powercap))
    model = make_tiny_onnx(tmp_path / "m.onnx")
    start = {"intel-rapl:0": RANGE_UJ - 2_000_000, "intel-rapl:1": 0}  # wraps after 80 ms
    with AdvancingCounters(powercap, {"intel-rapl:0": 25.0, "intel-rapl:1": 40.0}, start):
        time.sleep(0.01)
        # a second's window: the writer thread, late by up to 100 ms under load (it shares the
        # GIL and two cores), stays within the 10% asked; at 0.4 s, 40 ms of delay would fail it
        result = session(model, duration_s=1.0)
    watts = result["power"]
    assert watts["source"] == "rapl" and "whole socket" in watts["covers"]
    n = result["latency"]["n"]
    assert n == len(result["samples_ns"]) >= 5
    assert watts["energy_mj_per_inference"] == pytest.approx(watts["energy_mj"] / n)
    # 25 W for the time between the two readings, less than a millisecond's step either side
    assert watts["energy_interval_s"] >= 1.0
    assert watts["mean_w"] == pytest.approx(25.0, rel=0.1)
    assert watts["energy_mj"] == pytest.approx(25.0 * watts["energy_interval_s"] * 1e3, rel=0.1)
    assert watts["psys"]["mean_w"] == pytest.approx(40.0, rel=0.1)
    assert result["power_unavailable"] is None
    assert result["fingerprint"]["rapl"] == {"zones": ["package-0", "psys"], "readable": True}


def test_a_litert_session_on_xnnpack_reports_the_package_energy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_tflite: Path) -> None:
    """XNNPACK, LiteRT's default delegate, takes every operator of a float model and runs on
    the CPU: the package counter sees it. Taken for an accelerator, every TFLite session had no
    energy, with "the model ran on an accelerator" in its log."""
    powercap = tmp_path / "powercap"
    tree_from_grep(capture("rapl/names_xps7390_psys_mmio.txt"), powercap)
    monkeypatch.setattr(rapl, "POWERCAP", str(powercap))
    with AdvancingCounters(powercap, {"intel-rapl:0": 25.0, "intel-rapl:1": 40.0},
                           {"intel-rapl:0": 0, "intel-rapl:1": 0}):
        result = session(tiny_tflite, duration_s=1.0, runtime="tflite")  # as above
    assert result["placement"]["requested"] == ["XNNPACK"]
    assert result["placement"]["ops_delegated"] > 0  # what made it look like an accelerator
    assert result["power"] is not None and result["power"]["source"] == "rapl"
    assert result["power"]["mean_w"] == pytest.approx(25.0, rel=0.1)


def test_a_session_without_the_tree_has_no_power(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rapl, "POWERCAP", str(tmp_path / "powercap"))
    result = session(make_tiny_onnx(tmp_path / "m.onnx"), duration_s=0.05)
    assert result["power"] is None and result["power_unavailable"] is None
    assert set(result["fingerprint"]["rapl"]) == {"absent"}


def test_rapl_leaves_out_a_model_that_ran_on_an_accelerator() -> None:
    """The package counter does not see a GPU or an Edge TPU: no figure for such a session."""
    figure = {"source": "rapl", "mean_w": 10.0}
    on_cpu = [{}, {"placement": {"in_force": ["CPUExecutionProvider"]}},
              {"placement": {"requested": ["XNNPACK"], "ops_delegated": 0}},
              # XNNPACK took every operator: still the CPU, which RAPL measures
              {"placement": {"requested": ["XNNPACK"], "in_force": ["XNNPACK"],
                             "ops_delegated": 11}}]
    elsewhere = [{"accelerator": {"name": "NVIDIA H200"}},
                 {"placement": {"in_force": ["CUDAExecutionProvider", "CPUExecutionProvider"]}},
                 {"placement": {"requested": ["libedgetpu.so.1"], "ops_delegated": 12}},
                 {"placement": {"requested": ["libedgetpu.so.1", "XNNPACK"],
                                "in_force": ["libedgetpu.so.1"], "ops_delegated": 12}}]
    for result in on_cpu:
        assert agent_job.cpu_package_power(result, figure, None) is figure
    for result in elsewhere:
        assert agent_job.cpu_package_power(result, figure, None) is None
    unreadable: dict[str, Any] = {}
    assert agent_job.cpu_package_power(unreadable, None, "why") is None
    assert unreadable["power_unavailable"] == "why"


# what the host keeps and shows ------------------------------------------------------------------

def measurement(*powers: dict[str, Any] | None, failed: int | None = None) -> dict[str, Any]:
    """The `results` row of a measurement whose sessions reported `powers`, one each; session
    `failed` failed (after its timed window, so it has a power figure too)."""
    from harness.artifacts import Artifact
    from harness.config import DeviceProfile
    from harness.runner import PlannedJob

    device = DeviceProfile(name="nuc", kind="linux", transport="local")
    job = PlannedJob("j1", device, Artifact("m", Path("m.onnx"), "onnx", "0" * 64, 1), "onnx")
    sessions = [{"status": "failed" if i == failed else "ok", "fingerprint": {},
                 "latency": {"median_ms": 1.0, "n": 3}, "power": power}
                for i, power in enumerate(powers)]
    srows = [results.session_row("j1", i, session, started_at="t", bytes_pushed=0,
                                 orchestration_s=0.0) for i, session in enumerate(sessions)]
    return results.measurement_row("r", job, "t", sessions, srows, [[10**6] * 3] * len(powers),
                                   len(powers))


def test_the_energy_of_a_measurement_comes_from_its_ok_sessions_alone() -> None:
    """As its latency does: a session that failed after its timed window (in its accuracy
    pass) has a figure of its own, which went into the median of two."""
    figure = {"source": "tegrastats", "mean_w": 4.0, "energy_mj_per_inference": 1.0}
    other = {"source": "rapl", "mean_w": 40.0, "energy_mj_per_inference": 10.0}
    row = measurement(figure, other, failed=1)
    assert row["power_w"] == 4.0 and row["energy_mj_per_inference"] == 1.0
    assert stats.FLAG_PACKAGE_ENERGY not in row["flags"]


def test_a_rapl_figure_is_flagged_as_the_whole_package_wherever_energy_is_shown() -> None:
    figure = {"source": "rapl", "covers": rapl.COVERS, "mean_w": 21.5,
              "energy_mj_per_inference": 4.3}
    row = measurement(figure)
    assert row["power_w"] == 21.5 and row["energy_mj_per_inference"] == 4.3
    assert stats.FLAG_PACKAGE_ENERGY in row["flags"]
    assert stats.FLAG_PACKAGE_ENERGY not in stats.SPREAD_FLAGS  # a caveat, not a spread
    assert "whole socket" in FLAG_MEANINGS[stats.FLAG_PACKAGE_ENERGY]
    assert "not the model's own" in FLAG_MEANINGS[stats.FLAG_PACKAGE_ENERGY]
    # the tables put it in the row's Notes, next to the energy it qualifies
    assert stats.FLAG_PACKAGE_ENERGY in row_flags(pd.Series(row))
    tegrastats = measurement({"source": "tegrastats", "mean_w": 4.0,
                              "energy_mj_per_inference": 1.0})
    assert stats.FLAG_PACKAGE_ENERGY not in tegrastats["flags"]
    assert stats.FLAG_PACKAGE_ENERGY not in measurement(None)["flags"]


def test_a_resumed_measurement_keeps_the_flag() -> None:
    """A row rebuilt from stored sessions (bench --resume) knows its energy was RAPL's from the
    stored row's flags: the sessions table keeps the figures, not their source."""
    from harness.resume import _result

    record = measurement({"source": "rapl", "mean_w": 20.0, "energy_mj_per_inference": 2.0})
    srow = {"session": 0, "status": "ok", "power_w": 20.0, "energy_mj_per_inference": 2.0}
    assert _result(srow, record)["power"]["source"] == "rapl"
    assert _result(srow, dict(record, flags=[]))["power"]["source"] is None


def test_rapl_in_the_fingerprint_is_no_difference_between_sessions() -> None:
    """Whether RAPL is readable is what may be measured, not what the device is: a chmod between
    sessions does not make them `mixed_sessions`."""
    readable = {"kernel": "6.8.0", "rapl": {"zones": ["package-0"], "readable": True}}
    refused = {"kernel": "6.8.0", "rapl": {"zones": ["package-0"], "readable": False,
                                           "unreadable": "why"}}
    sessions = [{"fingerprint": readable}, {"fingerprint": refused}, {"fingerprint": {
        "kernel": "6.8.0"}}]
    assert results.mixed_sessions(sessions) == []


def test_devices_check_says_whether_cpu_energy_can_be_measured() -> None:
    from harness.cli import rapl_text

    assert rapl_text({"zones": ["package-0", "psys"], "readable": True}).startswith(
        "RAPL (package-0, psys): energy per inference of the whole CPU package")
    refused = rapl_text({"zones": ["package-0"], "readable": False, "unreadable": "X: why"})
    assert "present but unreadable, no energy figure: X: why" in refused
    assert rapl_text({"absent": "no RAPL zones"}) == "none: no RAPL zones"
    assert rapl_text(None).startswith("not probed")
