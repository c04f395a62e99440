"""`results/README.md` documents exactly the columns of `harness/results.py`, the one schema."""

from __future__ import annotations

import re
from pathlib import Path

from harness.results import (
    FINGERPRINT_COLUMNS,
    PROFILE_FIELDS,
    PROFILE_OP_FIELDS,
    RESULT_FIELDS,
    RUN_COLUMNS,
    SESSION_FIELDS,
)

README = Path(__file__).resolve().parent.parent / "results" / "README.md"


def documented(table: str) -> list[str]:
    """Column names in the first cell of each row of the README's section for `table`."""
    text = README.read_text()
    section = re.search(rf"^## Table `{table}`.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, f"results/README.md has no section for table {table}"
    names: list[str] = []
    for line in section.group(0).splitlines():
        if line.startswith("| ") and not line.startswith(("| column", "|---")):
            names += [n.strip() for n in line.split("|")[1].split(",")]
    return names


def test_every_column_is_documented_once_and_nothing_else() -> None:
    for table, fields in (("runs", [c.name for c in RUN_COLUMNS]),
                          ("results", list(RESULT_FIELDS)), ("sessions", list(SESSION_FIELDS)),
                          ("fingerprints", [c.name for c in FINGERPRINT_COLUMNS]),
                          ("profiles", list(PROFILE_FIELDS)),
                          ("profile_ops", list(PROFILE_OP_FIELDS))):
        names = documented(table)
        assert sorted(names) == sorted(fields), table
        assert len(names) == len(set(names)), f"{table}: a column is documented twice"



def test_sessions_of_one_measurement_on_differing_devices_are_found() -> None:
    from harness.results import comparable_fingerprint, mixed_sessions

    fp = {"kernel": "6.1.0", "isa": "x86 avx2", "uptime_s": 10, "cpu_count": 2,
          "gpu": {"absent": "no NVML"}, "jetson": {"nvpmodel": {"mode": "MAXN"},
                                                   "soc_temp_c": 41.0}}
    assert comparable_fingerprint(fp) == {"kernel": "6.1.0", "isa": "x86 avx2", "cpu_count": 2,
                                          "jetson.nvpmodel.mode": "MAXN"}
    # a word that merely contains a momentary one is no momentary key: runtime versions count
    software = {"runtimes": {"onnxruntime": "1.20.0", "tflite_runtime": "2.14.0"},
                "mem_free_mb": 812, "mem_avail_mb": 1024, "loadavg": [0.1, 0.2, 0.3],
                "temperatures_c": {"cpu": 40.0}, "cpu_cur_freq_khz": 1800000}
    assert comparable_fingerprint(software) == {"runtimes.onnxruntime": "1.20.0",
                                                "runtimes.tflite_runtime": "2.14.0"}
    same = {"fingerprint": fp, "runtime_version": "1.20.0"}
    # what changes from moment to moment (uptime, temperatures) is the same device
    warmer = {"fingerprint": dict(fp, uptime_s=99, jetson={"nvpmodel": {"mode": "MAXN"},
                                                           "soc_temp_c": 60.0}),
              "runtime_version": "1.20.0"}
    assert mixed_sessions([same, warmer, same]) == []
    assert mixed_sessions([same, {**same, "runtime_version": "1.21.0"}]) == ["runtime_version"]
    low_power = dict(fp, jetson={"nvpmodel": {"mode": "15W"}})
    assert mixed_sessions([same, {**same, "fingerprint": dict(low_power, kernel="6.6.0")}]) == [
        "jetson.nvpmodel.mode", "kernel"]
    assert mixed_sessions([same, {"status": "failed"}]) == []  # a session that probed nothing

