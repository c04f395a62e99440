"""A report written into the folder of an earlier one, interrupted: the earlier report stays whole
(its page, tables and plots byte for byte) and nothing of the new one is left beside it; a report
that completes replaces it and deletes only what the earlier one wrote."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.report import plots, run_report
from tests.conftest import EDGEBENCH, REPO
from tests.test_report_synthetic import demo_store


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def old_report(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A database, the folder of its report, and that report's files."""
    db = tmp_path / "x.db"
    store, _ = demo_store(db)
    store.close()
    out = run_report(db, out=tmp_path / "out")
    return db, out, _snapshot(out)


def _staged(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.edgebench-new-*"))


def test_ctrl_c_while_writing_keeps_the_old_report(old_report) -> None:
    """Found: Ctrl-C at 3 s deleted the old index.html and plots, and nothing replaced them."""
    db, out, before = old_report
    assert "index.html" in before and any(n.startswith("plots/") for n in before)
    proc = subprocess.Popen([*EDGEBENCH, "report", "--db", str(db), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # interrupt once the new report has begun writing (its tables come before its figures),
    # or begun deleting the old one
    while (not any(p.is_file() for s in _staged(out) for p in s.rglob("*"))
           and (out / "index.html").is_file()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the report never began writing"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, err  # interrupted, not finished
    assert _snapshot(out) == before
    assert _staged(out) == []


def test_an_exception_inside_the_figures_keeps_the_old_report(old_report, monkeypatch
                                                               ) -> None:
    db, out, before = old_report

    def interrupted(*args: object, **kwargs: object) -> list[Path]:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "save", interrupted)  # where matplotlib writes the files
    with pytest.raises(KeyboardInterrupt):
        run_report(db, out=out)
    assert _snapshot(out) == before
    assert _staged(out) == []


def test_a_new_report_replaces_the_old_and_deletes_only_its_files(old_report) -> None:
    db, out, before = old_report
    (out / "notes.txt").write_text("mine")  # the user's, added after the report
    run_report(db, out=out, style="paper")
    after = _snapshot(out)
    assert after["notes.txt"] == b"mine"
    assert any(n.startswith("paper/") for n in after)
    assert set(before) - {".edgebench-report.json"} <= set(after)
    run_report(db, out=out)  # html again: the paper's files go, and their folder
    assert not (out / "paper").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert _staged(out) == []
