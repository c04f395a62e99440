"""A report written into the folder of an earlier one, interrupted: the earlier report stays whole
(its page, tables and plots byte for byte) and nothing of the new one is left beside it; a report
that completes replaces it and deletes only what the earlier one wrote."""

from __future__ import annotations

import re
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
    paper = {n: b for n, b in after.items() if n.startswith("paper/")}
    said: list[str] = []
    run_report(db, out=out, say=said.append)  # html again: the paper's files stay, said once
    assert {n: b for n, b in _snapshot(out).items() if n.startswith("paper/")} == paper
    assert len(said) == 1 and "kept" in said[0] and "--style paper" in said[0], said
    assert (out / "notes.txt").read_text() == "mine"
    assert _staged(out) == []


def test_a_report_without_paper_style_keeps_the_paper_folder(old_report, tmp_path: Path
                                                             ) -> None:
    """Found: `report` without `--style paper` silently deleted the paper/ an earlier
    `--style paper` had written, a student's \\graphicspath target. It stays, still the
    report's own (the next `--style paper` replaces it, and deletes what it no longer
    writes), and one line says that it was kept and is not this report's."""
    db, out, _ = old_report
    run_report(db, out=out, style="paper")
    figures = (out / "paper" / "figures.tex").read_bytes()
    stale = out / "paper" / "old_figure-single.pdf"  # written by that report, not the next
    stale.write_bytes(b"%PDF")
    listing = out / ".edgebench-report.json"
    listing.write_text(listing.read_text().replace(
        '"files": [', '"files": [\n "paper/old_figure-single.pdf",'))
    said: list[str] = []
    run_report(db, out=out, say=said.append)
    assert (out / "paper" / "figures.tex").read_bytes() == figures and stale.exists()
    run_id = re.search(r"of run (\S+)\.", figures.decode()).group(1)  # type: ignore[union-attr]
    assert said == [f"kept {out / 'paper'}/ of an earlier `--style paper` report (run "
                    f"{run_id}), not updated by this one; `--style paper` rewrites it"]
    run_report(db, out=out, say=said.append)  # and again: still kept, still the paper's run
    assert stale.exists() and said[-1] == said[0]
    run_report(db, out=out, style="paper", say=said.append)
    assert not stale.exists() and (out / "paper" / "figures.tex").is_file()
    assert len(said) == 2  # a paper report says nothing of it
