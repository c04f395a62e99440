"""What the command line prints, as a new user reads it: tables that fit the terminal without
splitting a word or a number, a closed pipe that ends with 141 (not the regression exit code 1),
follow-up commands that work when pasted, help that says what the code does, units and plurals.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.agent.protocol import DEFAULT_SETTINGS, QUICK_SETTINGS
from harness.cli import build_parser, main
from harness.store import Store
from tests.conftest import EDGEBENCH, REPO, run_cli
from tests.test_cli_bench import _demo_like_records
from tests.test_report_synthetic import add_job, sessions_ns

WIDTHS = [160, 140, 120, 100, 80, 60]

# the demo's longest names, as the audit printed them
MODELS = [("resnet18-prune50_latency", 11.4), ("digits_cnn-int8_dynamic", 0.0905),
          ("mobilenet_v3_small", 2.52), ("resnet18", 69.7)]


@pytest.fixture()
def two_runs(tmp_path: Path) -> tuple[Path, str, str]:
    """Two runs of four models with the demo's names and magnitudes, on one device; B's spread
    is wide enough for "inconclusive" (the word the audit saw split)."""
    path = tmp_path / "x.db"
    store = Store(path)
    runs = []
    for k in range(2):
        run = store.begin_run("edgebench bench", None, ["local"])
        for i, (model, ms) in enumerate(MODELS):
            for runtime in ("onnxruntime", "tflite"):
                add_job(store, run, model, runtime=runtime, device="local", threads=2,
                        accuracy_top1=0.992 - 0.003 * k if i == 1 else None,
                        samples_ns=sessions_ns(ms * (1 + 0.3 * k), between_sd=0.01 + 0.3 * k,
                                               seed=10 * k + i, sessions=5 - 3 * k))
        store.finish_run(run)
        runs.append(run)
    store.close()
    return path, runs[0], runs[1]


def _tokens(text: str) -> set[str]:
    return set(text.split())


def assert_fits_whole(text: str, width: int, cells: list[str]) -> None:
    """No line wider than `width`, and every word of every cell (a number, an interval's bound
    with its bracket and comma, a verdict's word) printed whole on one line."""
    lines = text.splitlines()
    assert max(map(len, lines)) <= width, "\n" + text
    printed = _tokens(text)
    missing = sorted({t for cell in cells for t in cell.split()} - printed)
    assert not missing, f"split or cut at {width} columns: {missing}\n{text}"
    assert "…" not in text


def _comparison_cells(path: Path, a: str, b: str, text: str) -> list[str]:
    """The cells of the comparison as `compare` formats them: the names, each ratio with its
    interval, verdict and top-1 change, and the sessions (where `text` does not say that
    optional column was left out)."""
    from harness.report.compare import compare_runs
    from harness.report.console import format_interval

    with Store(path, readonly=True) as store:
        rows = list(compare_runs(store, a, b).table.itertuples())
    cells = []
    for r in rows:
        cells += [r.model, r.runtime, r.verdict,
                  format_interval(r.ratio, r.ratio_ci95_low, r.ratio_ci95_high, ".3f")]
        if r.top1_a == r.top1_a and r.top1_b == r.top1_b:  # not NaN
            cells.append(f"{100 * r.top1_a:.1f} \u2192 {100 * r.top1_b:.1f} "
                         f"({100 * (r.top1_b - r.top1_a):+.1f})")
        if "Sessions A/B left out" not in " ".join(text.split()):
            cells.append(f"{r.sessions_a}/{r.sessions_b}")
    return cells


def _comparison_medians(path: Path, a: str, b: str) -> list[str]:
    """Each median as `compare` prints it: 3 significant digits."""
    from harness.report.compare import compare_runs
    from harness.report.console import format_median_interval

    with Store(path, readonly=True) as store:
        rows = list(compare_runs(store, a, b).table.itertuples())
    return [format_median_interval(m, None, None) for r in rows
            for m in (r.median_a_ms, r.median_b_ms)]


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_keeps_every_figure_and_verdict_whole(two_runs, width: int) -> None:
    """The audit: at 140 columns `inconclusi`/`ve` and `[0.795,`/`1.386]`; at 100 `0.09`/`1`,
    `medi`/`an`."""
    from rich.console import Console

    from harness.report.compare import compare_runs
    from harness.report.console import render_comparison

    path, a, b = two_runs
    console = Console(width=width, record=True, color_system=None)
    with Store(path, readonly=True) as store:
        render_comparison(compare_runs(store, a, b), console)
    text = console.export_text()
    assert_fits_whole(text, width, _comparison_cells(path, a, b, text))
    assert_fits_whole(text, width, _comparison_medians(path, a, b))
    assert "inconclusive" in _tokens(text)
    if width >= 100:  # a table, one row per measurement, each figure on one line at 120 up
        assert any(" resnet18-prune50_latency " in line for line in text.splitlines())
        for header in ("median", "Verdict", "Model"):
            assert header in _tokens(text)


def test_compare_into_a_pipe_takes_the_width_from_columns(two_runs) -> None:
    """Piped with COLUMNS=100 it printed 160 wide, and wrapped all the same."""
    path, a, b = two_runs
    proc = run_cli("compare", a, b, "--db", str(path), env={"COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert_fits_whole(proc.stdout, 100, _comparison_cells(path, a, b, proc.stdout))
    assert_fits_whole(proc.stdout, 100, _comparison_medians(path, a, b))


@pytest.mark.parametrize("width", WIDTHS)
def test_bench_summary_never_splits_a_figure(width: int) -> None:
    """At 80 columns its interval wrapped over three lines, at 60 `sta`/`tus` and `0.0`/`811`."""
    from rich.console import Console

    from harness import cli

    for devices in (("local",), ("rpi5-lab-01", "jetson-orin-02")):
        records = _demo_like_records(devices)
        records[1]["status"], records[1]["error_kind"] = "failed", "transport"
        console = Console(width=width, record=True, color_system=None)
        console.print(cli._summary_table(records, width))
        text = console.export_text()
        assert_fits_whole(text, width, [r["model"] for r in records]
                          + ["status", "failed:", "transport"])
        from harness.report.console import format_median_interval  # the figures' format is new

        assert_fits_whole(text, width, [format_median_interval(
            r["latency_median_ms"], r["latency_ci95_low_ms"], r["latency_ci95_high_ms"])
            for r in records])


def test_fitted_table_folds_rows_below_any_table_and_keeps_every_column() -> None:
    from rich.console import Console

    from harness.report.console import fitted_table

    console = Console(width=40, record=True, color_system=None)
    console.print(fitted_table({"model": ["resnet18-prune50_latency"],
                                "median ms [95% CI]": ["11.4 [0.0, 17600.0]"],
                                "p90 ms": ["18.2"]}, 40, names=("model",),
                               optional=("p90 ms",), left=("model",)))
    text = console.export_text()
    assert_fits_whole(text, 40, ["resnet18-prune50_latency", "11.4 [0.0, 17600.0]", "18.2"])
    assert "left out" not in text  # a block has room for every column


# a closed pipe ----------------------------------------------------------------------------------


def _into_closed_pipe(*args: str) -> tuple[int, str]:
    """Run `edgebench ARGS` with stdout into a pipe whose reader has gone (`| head -1` once it
    has its line); its exit status and stderr."""
    proc = subprocess.Popen([*EDGEBENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO)
    assert proc.stdout is not None
    proc.stdout.close()  # before it writes: its first write meets a closed pipe
    err = proc.communicate(timeout=300)[1].decode()
    return proc.returncode, err


def test_a_closed_pipe_is_141_not_the_regression_exit_code(two_runs) -> None:
    """`compare ... | head -1` exited 1, as --fail-on-regression does for a regression: rich's
    Console ends a broken pipe with SystemExit(1)."""
    path, a, b = two_runs
    for args in (["compare", a, b, "--db", str(path)], ["compare", a, b, "--db", str(path),
                                                        "--fail-on-regression"],
                 ["db", "stats", "--db", str(path)], ["devices", "list"]):
        code, err = _into_closed_pipe(*args)
        assert code == 141, (args, err)
        assert "Traceback" not in err and "error" not in err, (args, err)


def test_the_bench_summary_into_a_closed_pipe_is_141(tmp_path: Path, tiny_onnx: Path) -> None:
    code, err = _into_closed_pipe("bench", "--device", "local", "--model", str(tiny_onnx),
                                  "--quick", "--sessions", "1", "--db", str(tmp_path / "r.db"))
    assert code == 141, err
    assert "Traceback" not in err


# follow-up commands -----------------------------------------------------------------------------


def test_the_hint_after_a_bench_names_its_database(tmp_path: Path, tiny_onnx: Path) -> None:
    """It printed `edgebench report --run ID`, which pasted read results/edgebench.db."""
    db = tmp_path / "my results" / "r.db"
    db.parent.mkdir()
    proc = run_cli("bench", "--device", "local", "--model", str(tiny_onnx), "--quick",
                   "--sessions", "1", "--db", str(db), env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    hint = re.search(r"`(edgebench report [^`]*)`", proc.stdout)
    assert hint, proc.stdout
    assert shlex.split(hint.group(1))[-2:] == ["--db", str(db)]
    pasted = run_cli(*shlex.split(hint.group(1))[1:], "--out", str(tmp_path / "report"))
    assert pasted.returncode == 0, pasted.stderr


def test_maintenance_hints_name_the_database(two_runs, capsys) -> None:
    path, a, _ = two_runs
    assert main(["db", "stats", "--db", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"edgebench db vacuum --db {shlex.quote(str(path))}" in out
    with Store(path) as store:
        store.conn.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (a,))
    assert main(["db", "delete", a, "--db", str(path)]) != 0
    assert f"--resume {a} --db {shlex.quote(str(path))}" in " ".join(
        capsys.readouterr().err.split())


def test_the_default_database_is_not_named(tmp_path: Path) -> None:
    from harness.report.console import db_option
    from harness.store import DEFAULT_DB

    assert db_option(DEFAULT_DB) == "" and db_option(str(DEFAULT_DB.resolve())) == ""
    assert db_option(tmp_path / "a b.db") == f" --db '{tmp_path / 'a b.db'}'"


# help -------------------------------------------------------------------------------------------


def _help(capsys, *command: str) -> str:
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_quick_help_is_the_protocols_settings(capsys) -> None:
    """It said "warm-up 0.1 s, timed 0.5 s / 20"; the agent warms up 0.05 s / 3 runs."""
    text = _help(capsys, "bench")
    for settings in (QUICK_SETTINGS, DEFAULT_SETTINGS):
        assert (f"warm-up {settings['warmup_s']:g} s and at least {settings['warmup_min']} runs, "
                f"timed at least {settings['duration_s']:g} s and "
                f"{settings['min_iterations']} runs, capped at "
                f"{settings['max_duration_s']:g} s") in text
    assert "0.5 s / 20" not in text


def _action(command: list[str], dest: str) -> Any:
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if a.dest.endswith("command"))
        parser = sub.choices[name]  # type: ignore[index]
    return next(a for a in parser._actions if a.dest == dest)


@pytest.mark.parametrize("command,dest", [
    (["build"], "build_dir"), (["bench"], "build_dir"), (["nightly"], "build_dir"),
    (["export"], "run"), (["export"], "format"), (["compare"], "run_a"), (["compare"], "run_b")])
def test_every_option_has_help(command: list[str], dest: str) -> None:
    assert _action(command, dest).help


def test_help_states_lookups_and_requirements_as_they_are() -> None:
    devices_dir = _action(["devices", "list"], "devices_dir").help
    assert "$EDGEBENCH_DEVICES" in devices_dir and "./devices/" in devices_dir
    keep = _action(["db", "prune"], "keep_samples_for")
    assert keep.required and "required" in keep.help and "(30)" not in keep.help


@pytest.mark.parametrize("command", ["compare", "nightly"])
def test_a_bad_threshold_names_its_flag(command: str, capsys) -> None:
    args = ["a", "b"] if command == "compare" else ["--farm", "f.yaml", "--suite", "s.yaml"]
    with pytest.raises(SystemExit) as exit_info:
        main([command, *args, "--threshold", "-1"])
    assert exit_info.value.code == 2
    assert "--threshold" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["report", "--out", ""], ["build", "s.yaml", "--build-dir", ""], ["db", "stats", "--db", ""],
    ["export", "--format", "csv", "--out", " "], ["bench", "--model", ""],
    ["nightly", "--farm", "", "--suite", "s.yaml"], ["devices", "list", "--devices-dir", ""]])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(argv, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    # Found: `report --out ''` wrote reports/<run>/ and `build --build-dir ''` built 23
    # artifacts into the current folder (an unset shell variable gives '').
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    flag = next(a for a in argv if a.startswith("--") and a != "--format")
    assert f"argument {flag}: an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--model", "--suite"])
def test_a_file_option_given_twice_is_refused_not_the_first_dropped(flag: str, tmp_path: Path,
                                                                    capsys) -> None:
    # Found: `bench --model a.onnx --model b.onnx` measured b alone and said nothing of a.
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", flag, "a", flag, "b", "--db", str(tmp_path / "r.db")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgebench bench: error: argument {flag}: given twice (a, b); "), err
    assert len(err.splitlines()) == 1 and not (tmp_path / "r.db").exists()


@pytest.mark.parametrize("argv, says", [
    (["bench"], "edgebench bench: error: one of the arguments --suite --model is required "
                "(see edgebench bench --help)"),
    (["export"], "edgebench export: error: the following arguments are required: --format "
                 "(see edgebench export --help)"),
    ([], "edgebench: error: the following arguments are required: COMMAND "
         "(see edgebench --help)")])
def test_a_usage_error_is_one_line_naming_the_help(argv, says: str, capsys) -> None:
    # Found: argparse printed the command's whole usage (two to four lines) before the error.
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == says + "\n"


# wording and units ------------------------------------------------------------------------------


def test_the_bench_summary_says_mib_and_percent() -> None:
    """Its "model MB" was memory in MiB next to a 0.64 MB file, and then "memory MiB" read as the
    process's (67 MiB in the report's peak RSS, 13 here); top-1 read 0.992 there and 99.2 in the
    report and compare."""
    from rich.console import Console

    from harness import cli

    console = Console(width=200, record=True, color_system=None)
    console.print(cli._summary_table(_demo_like_records(), 200))
    text = console.export_text()
    assert "model" in text and "MiB" in text and "model MB" not in text
    assert "memory" not in text  # the line under the table says which memory
    assert "top-1 %" in text and " 99.2 " in text and "0.992" not in text


def test_a_bound_a_thousand_times_off_its_figure_is_written_as_the_limit() -> None:
    """Two sessions 230x apart (a torch model on a loaded host, from the audit) gave
    "48.2 [0.0, 7006531499428986.0]" in the bench's table: a bound that far from its figure is
    written as the limit, as in the report's tables; one within reach keeps the figure's
    decimals."""
    from harness.report.console import format_interval, format_median_interval

    assert format_median_interval(48.2, 3.3e-13, 7006531499428986.0) == "48.2 [<0.0482, >48,200]"
    assert format_interval(2.2, 0.07, 65.06, ".2f") == "2.20 [0.07, 65.06]"
    assert format_interval(1.0, 0.0009, 1001.0, ".2f") == "1.00 [<0.001, >1,000]"
    assert format_interval(0.5, 0.0, 1.0, ".3f", reach=None) == "0.500 [0.000, 1.000]"


def test_a_median_and_its_bounds_have_the_same_decimals() -> None:
    from harness.report.console import format_median_interval

    assert format_median_interval(0.071, 0.0645, 0.08) == "0.0710 [0.0645, 0.0800]"
    assert format_median_interval(57.3, 2.6, 1190.4) == "57.3 [2.6, 1190.4]"
    assert format_median_interval(1234.5, 1200.0, 1300.0) == "1234 [1200, 1300]"
    assert format_median_interval(0.5, None, None) == "0.500"


def test_counts_agree_with_their_nouns(two_runs, capsys) -> None:
    from harness.report.profile import placement_text

    path, a, _ = two_runs
    assert main(["db", "prune", "--keep-samples-for", "1", "--db", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "in 1 run outside the newest 1 run;" in out, out
    assert main(["db", "delete", a, "--db", str(path), "--force"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "deleted 1 run " in out and "8 measurements" in out
    assert "(1 partition)" in placement_text({"ops_total": 4, "ops_delegated": 4,
                                              "partitions": 1})


def test_the_comparison_says_measurements(two_runs, capsys) -> None:
    """"Jobs" on the console and "measurements" in the README, for the same thing."""
    path, a, b = two_runs
    assert main(["compare", a, b, "--db", str(path)]) == 0
    assert "job" not in capsys.readouterr().out.lower()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compare two runs measurement by measurement" in capsys.readouterr().out


def test_db_stats_keeps_the_run_id_whole_at_100_columns(two_runs, capsys) -> None:
    """It cut the id to `20261129-…`, the id `db delete` and `db prune` are given."""
    path, a, b = two_runs
    proc = run_cli("db", "stats", "--db", str(path), env={"COLUMNS": "100"})
    assert proc.returncode == 0, proc.stderr
    assert_fits_whole(proc.stdout, 100, [a, b])


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("pipes and SIGPIPE exit codes as on POSIX")


def test_a_follow_up_command_for_a_database_named_like_an_option_can_be_pasted() -> None:
    """`db stats --db -x.db` suggested `edgebench db vacuum --db -x.db`, which argparse reads as
    two options."""
    from harness.report.console import db_option

    assert db_option("-x.db") == " --db ./-x.db"
    assert db_option("a b.db") == " --db 'a b.db'"
