"""Device tuning: applied only when the job asks, restored afterwards, what was reached recorded.

The CPU governor is exercised on a cpufreq tree in a temporary directory (this machine has none to
change); nvpmodel and jetson_clocks, which cannot exist here, are stand-ins on PATH that keep their
state in a file and print in the format of the real captures (tests/fixtures/devices/jetson).
The jobs run in the real agent.
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

from harness.agent import protocol, tune
from tests.conftest import REPO, make_tiny_onnx
from tests.test_devices import capture

GOVERNORS = "conservative ondemand userspace powersave performance schedutil"


def cpufreq_tree(root: Path, governors: list[str], offered: str = GOVERNORS) -> Path:
    for i, gov in enumerate(governors):
        d = root / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_governor").write_text(gov + "\n")
        (d / "scaling_available_governors").write_text(offered + "\n")
    return root


def governors(root: Path) -> list[str]:
    return [p.read_text().strip() for p in sorted(root.glob("cpu*/cpufreq/scaling_governor"))]


def test_cpu_governor_set_and_restored(tmp_path: Path) -> None:
    root = cpufreq_tree(tmp_path, ["schedutil", "ondemand", "schedutil", "powersave"])
    tuning = tune.Tuning([tune.CPUGovernor(str(root))]).apply()
    assert governors(root) == ["performance"] * 4
    report = tuning.finish()
    assert governors(root) == ["schedutil", "ondemand", "schedutil", "powersave"]
    entry = report["operations"]["cpu_governor"]
    assert entry["before"] == {"cpu0": "schedutil", "cpu1": "ondemand", "cpu2": "schedutil",
                               "cpu3": "powersave"}
    assert entry["reached"] == {f"cpu{i}": "performance" for i in range(4)}
    assert entry["restored"] == entry["before"]
    assert report["applied"] == ["cpu_governor"]


def test_cpu_governor_not_offered_is_left_alone(tmp_path: Path) -> None:
    root = cpufreq_tree(tmp_path, ["ondemand", "ondemand"], offered="ondemand powersave")
    report = tune.Tuning([tune.CPUGovernor(str(root))]).apply().finish()
    assert governors(root) == ["ondemand", "ondemand"]
    entry = report["operations"]["cpu_governor"]
    assert entry["available"] is False and "performance is not offered" in entry["reason"]
    assert report["applied"] == []


def test_no_tuning_unless_asked() -> None:
    assert tune.start("jetson", False) is None
    assert tune.start("jetson", None) is None
    assert [op.name for op in tune.operations_for("jetson", {})] == [
        "nvpmodel", "jetson_clocks", "cpu_governor"]
    assert [op.name for op in tune.operations_for("rpi", {})] == ["cpu_governor"]


def write_tool(bindir: Path, name: str, body: str) -> None:
    path = bindir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def jetson_tools(tmp_path: Path) -> dict[str, Any]:
    """Stateful stand-ins for nvpmodel and jetson_clocks (power mode 1 = 15W, clocks on DVFS)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    mode, locked = tmp_path / "mode", tmp_path / "locked"
    mode.write_text("1\n")
    locked.write_text("0\n")
    (bindir / "locked.txt").write_text(capture("jetson/jetson_clocks_show_agx_orin_locked.txt"))
    (bindir / "dvfs.txt").write_text(capture("jetson/jetson_clocks_show_agx_orin.txt"))
    write_tool(bindir, "nvpmodel", f"""
case "$1" in
  -q) m=$(cat {mode}); if [ "$m" = 0 ]; then n=MAXN; else n=15W; fi
      printf 'NV Power Mode: %s\\n%s\\n' "$n" "$m" ;;
  -m) echo "$2" > {mode} ;;
  *) exit 2 ;;
esac
""")
    write_tool(bindir, "jetson_clocks", f"""
case "$1" in
  --show) if [ "$(cat {locked})" = 1 ]; then cat {bindir}/locked.txt;
          else cat {bindir}/dvfs.txt; fi ;;
  --store) cat {locked} > "$2" ;;
  --restore) cat "$2" > {locked} ;;
  "") echo 1 > {locked} ;;
  *) exit 2 ;;
esac
""")
    write_tool(bindir, "sudo", '[ "$1" = -n ] && shift; exec "$@"\n')
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    return {"env": env, "mode": mode, "locked": locked, "workdir": tmp_path}


def run_agent(job: dict[str, Any], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "harness.agent"], input=json.dumps(job),
                          capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=dict(env, PYTHONPATH=str(REPO)))
    return json.loads(proc.stdout)


def jetson_job(model: Path, **extra: Any) -> dict[str, Any]:
    job = {"protocol_version": protocol.PROTOCOL_VERSION, "job_id": "tuned",
           "runtime": "onnxruntime",
           "model": {"path": str(model), "format": "onnx"}, "device_kind": "jetson",
           "options": {"threads": 1},
           "settings": {"warmup_s": 0.01, "warmup_min": 2, "duration_s": 0.05,
                        "min_iterations": 5, "max_duration_s": 1.0}}
    job.update(extra)
    return job


def test_agent_tunes_a_jetson_for_the_job_and_restores_it(jetson_tools: dict[str, Any],
                                                          tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx")
    result = run_agent(jetson_job(model, tune=True), jetson_tools["env"],
                       jetson_tools["workdir"])
    assert result["status"] == "ok", result["error"]
    ops = result["tune"]["operations"]
    assert ops["nvpmodel"]["before"] == {"power_mode": "15W", "power_mode_id": 1}
    assert ops["nvpmodel"]["reached"] == {"power_mode": "MAXN", "power_mode_id": 0}
    assert ops["nvpmodel"]["restored"]["power_mode_id"] == 1
    assert ops["jetson_clocks"]["before"]["clocks_locked"] is False
    assert ops["jetson_clocks"]["reached"]["clocks_locked"] is True
    assert ops["jetson_clocks"]["restored"]["clocks_locked"] is False
    assert {"nvpmodel", "jetson_clocks"} <= set(result["tune"]["applied"])
    # measured in the tuned state, and the device is back as it was
    assert result["state_before"]["jetson"]["nvpmodel"]["power_mode"] == "MAXN"
    assert result["state_before"]["jetson"]["jetson_clocks"]["clocks_locked"] is True
    assert result["throttled"] is False  # clocks pinned, all at max: no slowdown seen
    assert jetson_tools["mode"].read_text().strip() == "1"
    assert jetson_tools["locked"].read_text().strip() == "0"
    assert not list(jetson_tools["workdir"].glob(".edgebench-jetson_clocks-*"))


def test_agent_restores_even_when_the_job_fails(jetson_tools: dict[str, Any],
                                                tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx")
    job = jetson_job(model, tune={"power_mode": 0}, input={"shape": [1, 3, 9, 9]})
    result = run_agent(job, jetson_tools["env"], jetson_tools["workdir"])
    assert result["status"] == "failed" and result["error"]["kind"] == "input_shape"
    assert result["tune"]["operations"]["nvpmodel"]["reached"]["power_mode_id"] == 0
    assert jetson_tools["mode"].read_text().strip() == "1"
    assert jetson_tools["locked"].read_text().strip() == "0"


def test_agent_without_tune_touches_nothing(jetson_tools: dict[str, Any], tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx")
    result = run_agent(jetson_job(model), jetson_tools["env"], jetson_tools["workdir"])
    assert result["status"] == "ok"
    assert "tune" not in result
    assert result["state_before"]["jetson"]["nvpmodel"]["power_mode"] == "15W"
    assert jetson_tools["mode"].read_text().strip() == "1"


def test_refused_tuning_is_recorded_and_the_job_still_runs(jetson_tools: dict[str, Any],
                                                           tmp_path: Path) -> None:
    """nvpmodel that fails (as on a board without that mode): reported, job measured anyway."""
    bindir = Path(jetson_tools["env"]["PATH"].split(":")[0])
    write_tool(bindir, "nvpmodel", """
case "$1" in
  -q) printf 'NV Power Mode: 15W\\n1\\n' ;;
  *) echo "NVPM ERROR: failed to set power mode!" >&2; exit 1 ;;
esac
""")
    model = make_tiny_onnx(tmp_path / "m.onnx")
    result = run_agent(jetson_job(model, tune=True), jetson_tools["env"], jetson_tools["workdir"])
    assert result["status"] == "ok"
    nvp = result["tune"]["operations"]["nvpmodel"]
    assert "NVPM ERROR" in nvp["error"] and nvp["reached"]["power_mode"] == "15W"
    assert "nvpmodel" not in result["tune"]["applied"]
