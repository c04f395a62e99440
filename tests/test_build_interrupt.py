"""A build stopped by Ctrl-C or SIGTERM ends as interrupted (one line, exit 130), always.

Found in an audit: a SIGINT sent to `edgebench build` printed `Exception ignored in: <function
_xla_gc_callback ...> KeyboardInterrupt`, the build ran to its end and exited 0. JAX (which the
TFLite exporter brings in) registers a gc callback, and Python only prints a KeyboardInterrupt
raised inside one. The tests deliver the signal exactly there, in a gc callback of their own,
through the real command in a real process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.artifacts import load_manifest
from tests.conftest import REPO, interrupt_inside_gc, run_cli

# `edgebench build SUITE --build-dir DIR`, interrupted inside a gc callback once `DIR/m.onnx`
# exists
INTERRUPT_INSIDE_GC = interrupt_inside_gc("""
def ready():
    return (Path(args[1]) / "m.onnx").exists()
""", '["edgebench", "build", args[0], "--build-dir", args[1]]')


def _python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


@pytest.mark.slow
def test_an_interrupt_python_swallowed_in_a_gc_callback_still_stops_the_build(
        tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\ndatasets: {digits: {type: digits}}\n"
                     "models: {m: {arch: digits_cnn, dataset: digits, recipes: [a, b]}}\n"
                     "recipes:\n"
                     "  a: {steps: [quantize_dynamic]}\n"
                     "  b: {steps: [{quantize_static: {calibration_size: 16}}]}\n")
    build = tmp_path / "build"
    proc = subprocess.run(_python(INTERRUPT_INSIDE_GC, str(suite), str(build)), cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines()[-1].startswith("edgebench: interrupted; "), \
        proc.stderr
    assert "KeyboardInterrupt" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert not proc.stdout  # no summary: the build did not end
    assert not (build / "m-b.onnx").exists()  # stopped, not run to its end
    # what it left is built again or reused whole, never taken half-written
    again = run_cli("build", str(suite), "--build-dir", str(build))
    assert again.returncode == 0, again.stderr
    for name in ("m", "m-a", "m-b"):
        assert load_manifest(build / f"{name}.onnx.manifest.json").name == name


# build_suite with a worker process, as `edgebench build` runs it on a machine of 2 CPUs or more
WITH_A_WORKER = """
import sys
from pathlib import Path

from rich.console import Console

from harness.compress.build import build_suite
from harness.entry import interrupted

try:
    build_suite(Path(sys.argv[1]), Path(sys.argv[2]), console=Console(stderr=True), workers=1)
except KeyboardInterrupt:
    sys.exit(interrupted())
"""


def _workers_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler of its own for `sig` (SigCgt of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (sig - 1) & 1)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_stopped_by_an_interrupt_are_no_failures(tmp_path: Path) -> None:
    """SIGINT to the build's own process alone (as a script's `send_signal` does): its worker,
    stopped by it, used to be reported as `failed there: the build process for there ended with
    status -15 before it was built`, beside a warning of leaked semaphores."""
    suite = tmp_path / "two.yaml"
    suite.write_text("seed: 0\nformats: [onnx]\n"
                     "datasets: {a: {type: digits}, b: {type: digits}}\n"
                     "models:\n"  # long trainings: neither ends before the interrupt
                     "  here: {arch: digits_cnn, dataset: a, train: {epochs: 2000, threads: 1}}\n"
                     "  there: {arch: digits_cnn, dataset: b, train: {epochs: 2000, threads: 1}}\n")
    build = tmp_path / "build"
    proc = subprocess.Popen(_python(WITH_A_WORKER, str(suite), str(build)), cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120  # against a hang, not a measurement
        while not _workers_of(proc.pid):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no worker started"
            time.sleep(0.2)
        # the worker has imported torch and taken SIGTERM (its build runs): a fixed sleep let
        # a slow machine interrupt it while importing, which tested nothing
        while not ((workers := _workers_of(proc.pid))
                   and all(_catches(worker, signal.SIGTERM) for worker in workers)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the worker's build never began"
            time.sleep(0.2)
        time.sleep(1)  # into its training
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    assert "failed" not in err and "ended with status" not in err, err
    assert "leaked" not in err, err
    assert err.strip().splitlines()[-1].startswith("edgebench: interrupted"), err
    assert not list(build.glob("*.onnx"))
