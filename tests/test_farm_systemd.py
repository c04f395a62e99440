"""The systemd unit that runs the nightly (scripts/farm/edgebench-nightly.service): the id its
command line gives a night, and what it takes for success and retries, against the nightly's
exit codes. Its command line is run for real with `/bin/sh`, an `edgebench` that prints its
arguments standing in for the nightly."""

from __future__ import annotations

import datetime
import shlex
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from harness.errors import EdgebenchError
from harness.farm.nightly import EXIT_NOT_MEASURED, EXIT_OK, EXIT_REGRESSION
from tests.conftest import REPO

UNIT = REPO / "scripts" / "farm" / "edgebench-nightly.service"


def settings(path: Path) -> dict[str, str]:
    """The unit's `Key=value` lines, continuation lines joined (what systemd reads)."""
    found: dict[str, str] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


def nightly_id(tmp_path: Path, tz: str) -> str:
    """The `--id` the unit's ExecStart gives the nightly when run in time zone `tz`."""
    line = settings(UNIT)["ExecStart"].replace("%%", "%").replace("$$", "$")  # systemd's escapes
    argv = shlex.split(line)
    assert argv[:2] == ["/bin/sh", "-c"], argv
    fake = tmp_path / ".venv" / "bin" / "edgebench"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "TZ": tz})
    args = done.stdout.splitlines()
    return args[args.index("--id") + 1]


def test_the_units_nightly_id_is_the_local_date_the_timer_fires_on(tmp_path: Path) -> None:
    """The timer fires at 01:30 local time; the id is that local date, so that a restart the
    same night resumes its run and the next night gets a new one. With the UTC date, east of
    UTC+1:30 a restart after midnight UTC got another id, and the next night's run that id."""
    for tz in ("Etc/GMT-14", "Etc/GMT+12", "Asia/Tokyo"):  # UTC+14, UTC-12 (POSIX signs), +9
        before = datetime.datetime.now(ZoneInfo(tz)).strftime("%Y%m%d")
        found = nightly_id(tmp_path, tz)
        after = datetime.datetime.now(ZoneInfo(tz)).strftime("%Y%m%d")
        assert found in (f"nightly-{before}", f"nightly-{after}"), (tz, found)
    # 26 hours apart: never the same date, whatever the time of day the test runs
    assert nightly_id(tmp_path, "Etc/GMT-14") != nightly_id(tmp_path, "Etc/GMT+12")


def test_the_unit_counts_only_0_a_success_and_retries_what_was_not_measured() -> None:
    """1 ("regression") is also Python's exit status on a crash: counted a success, a nightly
    that crashed at its end passed for a good night. 3 (something not measured, the host's disk)
    is retried, the retry measuring only what is missing; 1 and 2 are not (a retry finds the
    same)."""
    unit = settings(UNIT)
    success = {int(c) for c in unit.get("SuccessExitStatus", "").split()}
    no_retry = {int(c) for c in unit.get("RestartPreventExitStatus", "").split()}
    assert success <= {EXIT_OK}
    assert EXIT_REGRESSION in no_retry and EdgebenchError.exit_code in no_retry
    assert EXIT_NOT_MEASURED not in no_retry and unit["Restart"] == "on-failure"


@pytest.mark.skipif(not Path("/usr/bin/systemd-analyze").exists(), reason="no systemd-analyze")
def test_the_unit_files_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(UNIT),
                           str(UNIT.with_suffix(".timer"))], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
