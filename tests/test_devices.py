"""Board probes (harness/agent/boards): parsers on real published tool outputs, and end to end.

The fixtures (tests/fixtures/devices) are verbatim captures from real Jetsons, Raspberry Pis and
Corals, each naming where it was published. Where the tool itself cannot exist here (vcgencmd,
nvpmodel, jetson_clocks, tegrastats), a stand-in on PATH prints those same captures, and the real
agent runs a real job with them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.agent import boards, protocol
from harness.agent.boards import coral, jetson, rpi
from tests.conftest import REPO, make_tiny_onnx

FIXTURES = Path(__file__).parent / "fixtures" / "devices"
MARK = "--- output ---\n"


def capture(name: str) -> str:
    """The verbatim output in fixture `name`, after checking that it names its source."""
    text = (FIXTURES / name).read_text()
    header, sep, body = text.partition(MARK)
    assert sep, f"{name}: no '{MARK.strip()}' line"
    assert header.startswith("source: ") and len(header.splitlines()[0]) > 20, \
        f"{name}: must start with the source it was published in"
    return body


def test_every_fixture_names_its_source() -> None:
    files = sorted(p for p in FIXTURES.rglob("*.txt"))
    assert len(files) >= 20
    for path in files:
        capture(str(path.relative_to(FIXTURES)))


# Jetson -----------------------------------------------------------------------------------------

def test_nv_tegra_release_r36() -> None:
    info = jetson.parse_nv_tegra_release(capture("jetson/nv_tegra_release_orin_nano_r36.txt"))
    assert info["l4t"] == "36.4.3"
    assert info["gcid"] == "38968081"
    assert info["board"] == "generic"
    assert info["eabi"] == "aarch64"
    assert info["date"] == "Wed Jan  8 01:49:37 UTC 2025"
    assert info["kernel_variant"] == "oot"


def test_nv_tegra_release_r39_and_garbage() -> None:
    info = jetson.parse_nv_tegra_release(capture("jetson/nv_tegra_release_agx_orin_r39.txt"))
    assert info["l4t"] == "39.2.0"
    assert jetson.parse_nv_tegra_release("not a jetson") == {}


@pytest.mark.parametrize("name,mode,mode_id,fan", [
    ("nvpmodel_q_orin_nano_15w.txt", "15W", 0, None),
    ("nvpmodel_q_thor_maxn.txt", "MAXN", 0, None),
    ("nvpmodel_q_xavier_fan_mode.txt", "MAXN", None, "quiet"),
])
def test_nvpmodel_query(name: str, mode: str, mode_id: int | None, fan: str | None) -> None:
    info = jetson.parse_nvpmodel_query(capture("jetson/" + name))
    assert info["power_mode"] == mode
    assert info.get("power_mode_id") == mode_id
    assert info.get("fan_mode") == fan


def test_jetson_clocks_show_agx_orin_default_dvfs() -> None:
    show = jetson.parse_jetson_clocks_show(capture("jetson/jetson_clocks_show_agx_orin.txt"))
    assert show["soc_family"] == "tegra234"
    assert show["machine"] == "Jetson AGX Orin"
    assert show["online_cpus"] == "0-11"
    assert len(show["cpus"]) == 12
    assert show["cpus"]["cpu10"] == {"MinFreq": 729600, "MaxFreq": 2201600,
                                     "CurrentFreq": 1113600, "Governor": "schedutil",
                                     "Online": True}
    assert show["gpu"] == {"MinFreq": 306000000, "MaxFreq": 1300500000, "CurrentFreq": 306000000}
    assert show["emc"]["FreqOverride"] == 0
    assert show["engines"]["DLA0_CORE"]["MaxFreq"] == 1600000000
    assert set(show["engines"]) == {"DLA0_CORE", "DLA0_FALCON", "DLA1_CORE", "DLA1_FALCON",
                                    "PVA0_VPS0", "PVA0_AXI"}
    assert show["power_mode"] == "MAXN"
    assert show["clocks_locked"] is False


def test_jetson_clocks_show_locked_newer_format() -> None:
    show = jetson.parse_jetson_clocks_show(
        capture("jetson/jetson_clocks_show_agx_orin_locked.txt"))
    assert show["online_cpus"] == "0-11"
    assert len(show["cpus"]) == 12 and "Online" not in show["cpus"]["cpu0"]
    assert show["gpu"]["MinFreq"] == show["gpu"]["MaxFreq"] == 1300500000
    assert show["clocks_locked"] is True


def test_jetson_clocks_show_orin_nano() -> None:
    show = jetson.parse_jetson_clocks_show(capture("jetson/jetson_clocks_show_orin_nano.txt"))
    assert len(show["cpus"]) == 6 and show["power_mode"] == "15W"
    assert show["gpu"]["MaxFreq"] == 612000000
    assert show["clocks_locked"] is False


def test_jetson_clocks_refused_without_root() -> None:
    # what jetson_clocks prints to a normal user: no data, not a crash
    assert jetson.parse_jetson_clocks_show(
        "Error: Run this script(/usr/bin/jetson_clocks) as a root user\n") == {}


def test_tegrastats_orin_rails_in_mw() -> None:
    info = jetson.parse_tegrastats(capture("jetson/tegrastats_agx_orin.txt"))
    assert info["ram_used_mb"] == 1282 and info["ram_total_mb"] == 62795
    assert len(info["cpus"]) == 12 and info["cpus"][0] == {"load_pct": 0, "mhz": 729}
    assert info["temperatures_c"]["CPU"] == pytest.approx(42.593)
    assert "GPU" not in info["temperatures_c"]  # -256C: sensor off
    assert info["power_mw"]["VDD_GPU_SOC"] == {"mw": 2399, "avg_mw": 2399}
    assert info["power_mw"]["VIN_SYS_5V0"]["mw"] == 4032
    assert "RAM" not in info["power_mw"] and "SWAP" not in info["power_mw"]
    # the memory clock (EMC_FREQ 0%@2133): no memory clock was recorded on a Jetson
    assert info["emc_load_pct"] == 0 and info["emc_mhz"] == 2133
    assert info["gpu_load_pct"] == 0 and info["gpu_mhz"] == 0


def test_tegrastats_jetpack46_offline_cores_no_rails() -> None:
    info = jetson.parse_tegrastats(capture("jetson/tegrastats_jetpack46.txt"))
    assert info["cpus"][1] is None and info["cpus"][0] == {"load_pct": 3, "mhz": 345}
    assert info["gpu_load_pct"] == 0
    assert info["emc_load_pct"] == 0 and "emc_mhz" not in info  # `EMC_FREQ 0%`: no clock
    assert info["temperatures_c"]["thermal"] == pytest.approx(50.3)
    assert "power_mw" not in info


def test_jetson_throttled_from_clocks_and_counters() -> None:
    locked = jetson.parse_jetson_clocks_show(
        capture("jetson/jetson_clocks_show_agx_orin_locked.txt"))
    slowed = json.loads(json.dumps(locked))
    slowed["gpu"]["CurrentFreq"] = 900000000
    assert jetson.throttled({}, {"jetson_clocks": locked}) is False
    assert jetson.throttled({}, {"jetson_clocks": slowed}) is True
    dvfs = jetson.parse_jetson_clocks_show(capture("jetson/jetson_clocks_show_agx_orin.txt"))
    assert jetson.throttled({}, {"jetson_clocks": dvfs}) is None  # DVFS: cannot tell
    before = {"over_current_events": {"hwmon1/oc1_event_cnt": 3}}
    assert jetson.throttled(before, {"over_current_events":
                                             {"hwmon1/oc1_event_cnt": 3}}) is False
    assert jetson.throttled(before, {"over_current_events":
                                             {"hwmon1/oc1_event_cnt": 4}}) is True


def test_sysfs_readers(tmp_path: Path) -> None:
    gpu = tmp_path / "devfreq" / "17000000.gpu"
    gpu.mkdir(parents=True)
    for key, value in (("cur_freq", "306000000"), ("min_freq", "306000000"),
                       ("max_freq", "1300500000")):
        (gpu / key).write_text(value + "\n")
    assert jetson.devfreq_state(str(tmp_path / "devfreq")) == {
        "17000000.gpu": {"cur_freq": 306000000, "min_freq": 306000000, "max_freq": 1300500000}}
    hwmon = tmp_path / "hwmon" / "hwmon3"
    hwmon.mkdir(parents=True)
    (hwmon / "oc1_event_cnt").write_text("2\n")
    assert jetson.over_current_counts(str(tmp_path / "hwmon")) == {"hwmon3/oc1_event_cnt": 2}


# Raspberry Pi -----------------------------------------------------------------------------------

def test_get_throttled_flags() -> None:
    now = rpi.parse_get_throttled(capture("rpi/get_throttled_undervoltage_now.txt"))
    assert now is not None and now["raw"] == "0x50005"
    flags = now["flags"]
    assert flags["under_voltage"] and flags["throttled"]
    assert flags["under_voltage_occurred"] and flags["throttled_occurred"]
    assert not flags["arm_frequency_capped"] and not flags["soft_temperature_limit_occurred"]
    ok = rpi.parse_get_throttled(capture("rpi/get_throttled_ok.txt"))
    assert ok is not None and ok["value"] == 0 and not any(ok["flags"].values())


def test_get_throttled_sysfs_word() -> None:
    soft = rpi.parse_get_throttled(capture("rpi/get_throttled_sysfs_soft_temp.txt"))
    assert soft is not None and soft["value"] == 0x80008
    assert soft["flags"]["soft_temperature_limit"]
    assert soft["flags"]["soft_temperature_limit_occurred"]
    assert rpi.parse_get_throttled("VCHI initialization failed") is None


def test_measure_temp_and_clock() -> None:
    assert rpi.parse_measure_temp(capture("rpi/measure_temp_pi3bplus.txt")) == 62.3
    assert rpi.parse_measure_temp(capture("rpi/measure_temp_openelec.txt")) == 49.4
    assert rpi.parse_measure_clock(capture("rpi/measure_clock_arm_pi3bplus.txt")) \
        == 1_400_000_000
    arm = capture("rpi/measure_clock_all_openelec.txt").splitlines()[0]
    assert rpi.parse_measure_clock(arm) == 600_000_000
    assert rpi.parse_measure_temp("error=1 error_msg=\"Command not registered\"") is None


@pytest.mark.parametrize("before,after,expected", [
    ("get_throttled_ok.txt", "get_throttled_ok.txt", False),
    ("get_throttled_ok.txt", "get_throttled_occurred_since_boot.txt", True),  # during the job
    ("get_throttled_ok.txt", "get_throttled_undervoltage_now.txt", True),
    ("get_throttled_occurred_since_boot.txt", "get_throttled_occurred_since_boot.txt", None),
    ("get_throttled_occurred_since_boot.txt", "get_throttled_undervoltage_now.txt", True),
])
def test_rpi_throttled(before: str, after: str, expected: bool | None) -> None:
    def state(name: str) -> dict:
        return {"throttled_flags": rpi.parse_get_throttled(capture("rpi/" + name))}

    assert rpi.throttled(state(before), state(after)) is expected


# Coral ------------------------------------------------------------------------------------------

def test_lsusb_finds_the_edge_tpu_in_both_states() -> None:
    before = coral.parse_lsusb(capture("coral/lsusb_before_firmware.txt"))
    assert [d["id"] for d in before] == ["1a6e:089a"]
    assert "firmware not yet loaded" in before[0]["state"]
    after = coral.parse_lsusb(capture("coral/lsusb_initialised.txt"))
    assert [(d["bus"], d["device"], d["id"]) for d in after] == [("001", "004", "18d1:9302")]


def test_usb_edgetpus_from_sysfs(tmp_path: Path) -> None:
    for name, vid, pid in (("2-1", "1a6e", "089a"), ("1-1", "1d6b", "0002"),
                           ("3-2", "18d1", "9302")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "idVendor").write_text(vid + "\n")
        (tmp_path / name / "idProduct").write_text(pid + "\n")
    found = coral.usb_edgetpus(str(tmp_path))
    assert [(d["path"], d["id"]) for d in found] == [("2-1", "1a6e:089a"), ("3-2", "18d1:9302")]


def test_libedgetpu_versions() -> None:
    board = coral.parse_dpkg_edgetpu(capture("coral/dpkg_l_edgetpu_devboard.txt"))
    assert board == {"libedgetpu1-std": "15.0"}
    host = coral.parse_dpkg_edgetpu(capture("coral/dpkg_l_libedgetpu_amd64.txt"))
    assert host == {"libedgetpu-dev": "15.0", "libedgetpu1-max": "15.0"}
    # `dpkg-query -W -f '${Package} ${Version}\n'`, what the probe runs
    assert coral.parse_dpkg_edgetpu("libedgetpu1-std 16.0\n") == {"libedgetpu1-std": "16.0"}


def test_coral_throttled_by_trip_point() -> None:
    hot = {"edgetpu_temperatures": {"apex_0": {"temp_c": 86.0, "trip_point0_c": 85.0}}}
    cool = {"edgetpu_temperatures": {"apex_0": {"temp_c": 50.0, "trip_point0_c": 85.0}}}
    assert coral.throttled({}, hot) is True
    assert coral.throttled({}, cool) is False
    assert coral.throttled({}, {}) is None


# the probes on this machine and through the real agent ------------------------------------------

def test_probes_on_a_machine_without_the_tools() -> None:
    """Here (no Jetson, Pi or Coral) the probes report absence instead of guessing or failing."""
    assert boards.fingerprint("linux") == {} and boards.state("linux") == {}
    tpu = boards.fingerprint("coral")["coral"]["edgetpu"]
    assert tpu["present"] is (bool(tpu["pcie"]) or bool(tpu["usb"]))
    assert "probe_error" not in boards.state("rpi")["rpi"]
    assert boards.throttled({}, {}, "rpi") is None


def test_each_board_kind_is_the_module_named_after_it() -> None:
    """A profile kind other than plain Linux has its module in boards/, with the three probes."""
    from harness.config import DEVICE_KINDS

    for kind in DEVICE_KINDS:
        module = boards.board(kind)
        if kind in ("local", "linux"):
            assert module is None
        else:
            assert module is not None, kind
            assert all(callable(getattr(module, fn, None))
                       for fn in ("fingerprint", "state", "throttled")), kind
    assert boards.board("jetson") is jetson
    assert boards.board("_private") is None and boards.board("../jetson") is None
    assert boards.power_monitor("rpi") is None and boards.tune_operations("coral", {}) == []


def fake_tool(bindir: Path, name: str, script: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def run_agent_job(model: Path, kind: str, bindir: Path | None = None,
                  duration_s: float = 0.05) -> dict[str, Any]:
    """The real agent on a short job for a device `kind`, with stand-in tools from `bindir`."""
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": kind,
           "runtime": "onnxruntime",
           "model": {"path": str(model), "format": "onnx"}, "device_kind": kind,
           "options": {"threads": 1},
           "settings": {"warmup_s": 0.01, "warmup_min": 2, "duration_s": duration_s,
                        "min_iterations": 5, "max_duration_s": 2.0}}
    env = dict(os.environ)
    if bindir is not None:
        env["PATH"] = f"{bindir}:{os.environ['PATH']}"
    proc = subprocess.run([sys.executable, "-m", "harness.agent"], input=json.dumps(job),
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["status"] == "ok", result["error"]
    return result


def test_agent_flags_a_pi_that_throttled_during_the_job(tmp_path: Path) -> None:
    """The real agent runs a real job with device_kind rpi; vcgencmd is a stand-in that prints
    the published captures: all fine before the job, under-voltage throttling after."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("get_throttled_ok.txt", "get_throttled_undervoltage_now.txt",
                 "measure_temp_pi3bplus.txt", "measure_clock_arm_pi3bplus.txt"):
        (bindir / name).write_text(capture("rpi/" + name))
    counter = tmp_path / "calls"
    fake_tool(bindir, "vcgencmd", f"""d={bindir}
case "$1" in
  measure_temp) cat "$d/measure_temp_pi3bplus.txt" ;;
  measure_clock) cat "$d/measure_clock_arm_pi3bplus.txt" ;;
  get_throttled)
    echo x >> {counter}
    if [ "$(wc -l < {counter})" -le 1 ]; then cat "$d/get_throttled_ok.txt";
    else cat "$d/get_throttled_undervoltage_now.txt"; fi ;;
  *) exit 1 ;;
esac
""")
    result = run_agent_job(make_tiny_onnx(tmp_path / "m.onnx"), "rpi", bindir)
    before, after = result["state_before"]["rpi"], result["state_after"]["rpi"]
    assert before["throttled_flags"]["raw"] == "0x0"
    assert after["throttled_flags"]["raw"] == "0x50005"
    assert before["soc_temp_c"] == 62.3 and before["arm_clock_hz"] == 1_400_000_000
    assert result["throttled"] is True


def test_agent_jetson_state_with_stand_in_tools(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "q.txt").write_text(capture("jetson/nvpmodel_q_orin_nano_15w.txt"))
    (bindir / "show.txt").write_text(capture("jetson/jetson_clocks_show_orin_nano.txt"))
    (bindir / "ts.txt").write_text(capture("jetson/tegrastats_agx_orin.txt"))
    fake_tool(bindir, "nvpmodel", f'[ "$1" = -q ] && cat {bindir}/q.txt\n')
    fake_tool(bindir, "jetson_clocks", f'[ "$1" = --show ] && cat {bindir}/show.txt\n')
    fake_tool(bindir, "sudo", 'shift; exec "$@"\n')  # `sudo -n CMD` when not root
    fake_tool(bindir, "tegrastats", f"while :; do cat {bindir}/ts.txt; sleep 0.1; done\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    code = ("import json; from harness.agent import probes; "
            "print(json.dumps([probes.fingerprint('jetson'), probes.state('jetson')]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)
    fp, st = json.loads(proc.stdout)
    assert fp["jetson"]["power_mode"] == "15W"
    board = st["jetson"]
    assert board["nvpmodel"] == {"power_mode": "15W", "power_mode_id": 0}
    assert board["jetson_clocks"]["machine"].startswith("NVIDIA Jetson Orin Nano")
    assert board["tegrastats"]["power_mw"]["VDD_CPU_CV"]["mw"] == 400


def test_jetson_power_and_energy_from_tegrastats(tmp_path: Path) -> None:
    """A job on a Jetson samples tegrastats during the timed loop: the stand-in prints the
    published AGX Orin capture, whose total input rail is VIN_SYS_5V0 4032 mW."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    line = capture("jetson/tegrastats_agx_orin.txt")
    (bindir / "ts.txt").write_text(line)
    fake_tool(bindir, "tegrastats", f"while :; do cat {bindir}/ts.txt; sleep 0.05; done\n")
    result = run_agent_job(make_tiny_onnx(tmp_path / "m.onnx"), "jetson", bindir,
                           duration_s=0.5)
    watts = result["power"]
    assert watts["source"] == "tegrastats" and watts["rail"] == "VIN_SYS_5V0"
    assert watts["samples"] >= 2
    assert watts["mean_w"] == pytest.approx(4.032)
    assert watts["rails_mean_w"]["VDD_GPU_SOC"] == pytest.approx(2.399)
    assert watts["energy_mj_per_inference"] == pytest.approx(
        4.032 * result["latency"]["mean_ms"])


def test_no_power_sensor_means_no_power_figure(tmp_path: Path) -> None:
    result = run_agent_job(make_tiny_onnx(tmp_path / "m.onnx"), "linux")
    assert result["power"] is None
