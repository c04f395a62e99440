"""The device agent: one JSON job on stdin, one JSON result on stdout, logs on stderr.

    python3 -m harness.agent < job.json                    (local)
    python3 ~/.cache/edgebench/<sha256> < job.json         (pushed to a device as a zip)
    python3 ~/.cache/edgebench/<sha256>.d < job.json       (that zip unpacked and compiled)
    python3 -m harness.agent --check [--kind jetson]       (what this device has, by hand)
    python3 ~/.cache/edgebench/<sha256> --serve            (the job server: many jobs, one pipe)

A job `{"check": true}` describes the device instead of measuring (`edgebench devices check`); it
needs only the stdlib, so a device without numpy can still say that numpy is what it lacks, and
a Python older than the agent needs (3.7, as the Coral Dev Board's Mendel Linux ships) that it is
too old: every runtime is then reported unusable, with that reason. A measurement job on such a
Python says so in one line on stderr and exits `PYTHON_TOO_OLD` before importing anything that
needs 3.8; older ones still (3.6 and below, which cannot read this file) are stopped the same
way by the zip's own `__main__` (`transport/base.py`).
stdout carries only the result, even if a native library prints, because fd 1 points at stderr
while the job runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from . import probes, protocol, unpack

# The oldest Python the agent runs on: its jobs use 3.8's library (statistics.NormalDist).
MIN_PYTHON = (3, 8)
# The exit status of an agent that refuses an older Python; the host names the profile's
# `python` field for it (transport/jobserver.py has the same number).
PYTHON_TOO_OLD = 98


def python_too_old(version: tuple[int, ...]) -> str | None:
    """Why a Python of `version` (major, minor, micro) cannot run the agent's jobs, None if it
    can."""
    if tuple(version[:2]) >= MIN_PYTHON:
        return None
    return "python {} is older than the {}.{} the agent needs".format(
        ".".join(str(v) for v in version), *MIN_PYTHON)


def runtimes_present(options: dict[str, Any] | None = None) -> dict[str, Any]:
    too_old = python_too_old(sys.version_info[:3])
    # What every runtime needs is listed among them when it is lacking: a Python new enough,
    # numpy. Installed or not, no runtime can be driven by this agent's jobs on an older Python.
    older = {"python": {"available": False, "reason": too_old}} if too_old else {}
    try:
        from .runtimes import RUNTIME_MODULES, available_runtimes
    except ImportError as err:  # numpy missing: no runtime can be driven
        return {**older, "numpy": {"available": False, "reason": (
            f"{err} (every runtime needs numpy: install it for {sys.executable}, or set the "
            "profile's python to an interpreter that has it)")}}
    if too_old:
        return {**older, **{name: {"available": False, "reason": too_old}
                            for name in sorted(RUNTIME_MODULES)}}
    return available_runtimes(options)


def check(kind: str = "linux", options: dict[str, Any] | None = None) -> dict[str, Any]:
    """What this device offers: for `edgebench devices check`; `options`, the profile's
    `runtime_options`, name what to try beyond that (a torch GPU)."""
    python = probes.python_info()
    too_old = python_too_old(sys.version_info[:3])
    if too_old:
        python["too_old"] = too_old
    return {
        "protocol_version": protocol.PROTOCOL_VERSION,
        "python": python,
        "fingerprint": probes.fingerprint(kind),
        # what the profile's cpu_affinity may name (every job pins itself to those CPUs)
        "usable_cpus": probes.usable_cpus(),
        "state": probes.state(kind),
        "runtimes": runtimes_present(options),
        "agent": agent_origin(),
    }


def agent_origin() -> dict[str, Any]:
    """Where this agent's code is loaded from, and whether from bytecode (`devices check`)."""
    spec = protocol.__spec__  # loaded like every other module of the agent
    cached = getattr(spec, "cached", None)
    origin: dict[str, Any] = {
        "path": os.path.dirname(os.path.dirname(spec.origin or "")) or None,
        "bytecode": isinstance(cached, str) and os.path.exists(cached),
    }
    why = os.environ.get(unpack.FROM_ZIP_ENV)
    if why:
        origin["from_zip_because"] = why
    return origin


def agent_command() -> list[str]:
    """How to start this same agent again for each job: from the pushed zip's unpacked and
    compiled folder (`unpack`), the zip itself where that cannot be, or the package here."""
    import zipfile  # the job server's question only: not on every job's start

    here = sys.argv[0]
    if zipfile.is_zipfile(here):
        folder, why = unpack.prepare(here)
        if folder is not None:
            return [sys.executable, folder]
        os.environ[unpack.FROM_ZIP_ENV] = why  # for the jobs' `devices check`
        print("edgebench agent: jobs run from the zip, compiling at every start: " + why,
              file=sys.stderr)
        return [sys.executable, here]
    if os.path.isfile(os.path.join(here, "__main__.py")):  # an unpacked folder
        return [sys.executable, here]
    return [sys.executable, "-m", __package__ or "harness.agent"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgebench-agent",
                                     description="one JSON job on stdin, one result on stdout")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--serve", action="store_true", help="run the job server")
    mode.add_argument("--check", action="store_true", help="describe this device")
    parser.add_argument("--kind", default="linux",
                        help="device kind for --check (a job carries its own device_kind)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    # Keep fd 1 for the protocol: anything a native library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.serve:
        from .serve import serve

        return serve(agent_command(), out)
    try:
        if args.check:
            answer = check(args.kind)
        else:
            try:
                job = protocol.loads(sys.stdin.read())
            except ValueError as err:
                answer = protocol.set_error(protocol.new_result("?"), protocol.STATUS_FAILED,
                                            "protocol", f"job is not valid JSON: {err}")
            else:
                if isinstance(job, dict) and job.get("check"):
                    answer = protocol.new_result(str(job.get("job_id", "check")))
                    answer["status"] = protocol.STATUS_OK
                    options = job.get("runtime_options")
                    answer["check"] = check(job.get("device_kind") or "linux",
                                            options if isinstance(options, dict) else None)
                else:
                    too_old = python_too_old(sys.version_info[:3])
                    if too_old:  # before job.py, whose imports need 3.8
                        print(too_old, file=sys.stderr)
                        return PYTHON_TOO_OLD
                    from .job import run_job

                    answer = run_job(job)
    finally:
        sys.stdout.flush()
    with out:
        out.write((protocol.dumps(answer) + "\n").encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
