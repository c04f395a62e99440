"""Hostile and careless input, each as it was found: nothing is lost, nothing is touched outside
edgebench's own folders, and each fault gives one line naming the file, field, host or model."""

from __future__ import annotations

from pathlib import Path

from harness.cli import main
from tests.test_report_cli import db  # noqa: F401  (the fixture: two runs of one device)


def test_report_out_keeps_files_it_did_not_write(db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: `report --out p` deleted p/tables/*.csv and p/plots/*.png of someone else's paper.
    path, a, _ = db
    paper = tmp_path / "p"
    (paper / "tables").mkdir(parents=True)
    (paper / "plots").mkdir()
    (paper / "tables" / "experiment_data.csv").write_text("a\n")
    (paper / "plots" / "figure1.png").write_text("x\n")
    assert main(["report", "--db", str(path), "--run", a, "--out", str(paper)]) != 0
    err = capsys.readouterr().err.strip()
    assert str(paper) in err and "did not write" in err and len(err.splitlines()) == 1
    assert (paper / "tables" / "experiment_data.csv").read_text() == "a\n"
    assert (paper / "plots" / "figure1.png").read_text() == "x\n"
    assert sorted(p.name for p in paper.rglob("*")) == [
        "experiment_data.csv", "figure1.png", "plots", "tables"]


def test_report_rewrites_only_its_own_files(db, tmp_path: Path) -> None:  # noqa: F811
    path, a, _ = db
    out = tmp_path / "r"
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    stale = out / "plots" / "old_figure.png"
    stale.write_text("from an earlier report")
    listing = out / ".edgebench-report.json"
    own = '"files": [\n "plots/old_figure.png",'
    listing.write_text(listing.read_text().replace('"files": [', own))
    (out / "notes.txt").write_text("mine")  # added by the user after the report
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "index.html").is_file()
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
