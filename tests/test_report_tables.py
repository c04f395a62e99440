"""Tables: numbers in the CSV match the frame, Markdown keeps every caveat, LaTeX is escaped and
compiles (with pdflatex, when it is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.report import frame, tables
from harness.store import Store
from tests.test_report_synthetic import add_job, demo_store, lognormal_ns, sessions_ns


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str, list]:
    store, run = demo_store(tmp_path_factory.mktemp("tables") / "x.db")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    return df, run, tables.report_tables(df, run)


def _by_name(report_tables: list, name: str) -> tables.Table:
    return next(t for t in report_tables if t.name == name)


def test_one_table_per_device_plus_summary_and_across_devices(demo) -> None:
    _, _, report_tables = demo
    names = [t.name for t in report_tables]
    assert names == ["summary", "device_jetson", "device_pi5", "across_devices"]
    assert "Device" not in _by_name(report_tables, "device_pi5").text.columns


def test_the_summary_keeps_a_devices_rows_together_in_measured_order(demo) -> None:
    """Found in a review: devices measured in parallel store their results interleaved, and the
    summary alternated between devices row by row."""
    df, run, _ = demo
    order = np.argsort(df.groupby("device").cumcount().to_numpy(), kind="stable")
    interleaved = df.iloc[order]  # as two devices finishing in turn store them
    assert list(interleaved["device"][:4]) == ["pi5", "jetson", "pi5", "jetson"]
    summary = _by_name(tables.report_tables(interleaved, run), "summary").text
    devices = list(summary["Device"])
    assert devices == sorted(devices)
    for device in ("pi5", "jetson"):  # each device's rows in the order they were measured
        assert list(summary["Model"][summary["Device"] == device]) == list(
            interleaved["model"][interleaved["device"] == device])


def test_csv_holds_the_frame_numbers_under_headers_with_units(demo, tmp_path: Path) -> None:
    df, _, report_tables = demo
    df = df.sort_values("device", kind="stable")  # the summary's order: a device's rows together
    paths = _by_name(report_tables, "summary").write(tmp_path)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "summary.tex"]
    csv = pd.read_csv(paths[0])
    assert len(csv) == len(df)
    # the text's "(95% CI)" is not in a CSV header: a CSV cell holds the figure alone, its
    # bounds are columns of their own
    assert not [h for h in csv.columns if "95% CI" in h]
    np.testing.assert_allclose(csv["Median [ms]"], df["latency_median_ms"])
    np.testing.assert_allclose(csv["Median CI95 low [ms]"], df["latency_ci95_low_ms"])
    np.testing.assert_allclose(csv["Median CI95 high [ms]"], df["latency_ci95_high_ms"])
    np.testing.assert_allclose(csv["Speedup CI95 low [x]"], df["speedup_ci95_low"])
    np.testing.assert_allclose(csv["Speedup [x]"], df["speedup"])
    np.testing.assert_allclose(csv["Top-1 [%]"], df["accuracy_top1"] * 100)
    np.testing.assert_allclose(csv["Top-1 CI95 low [%]"], df["accuracy_top1_low"] * 100)
    # the top-5 interval too, which the CSV had lost
    np.testing.assert_allclose(csv["Top-5 CI95 low [%]"], df["accuracy_top5_low"] * 100)
    np.testing.assert_allclose(csv["Top-5 CI95 high [%]"], df["accuracy_top5_high"] * 100)
    np.testing.assert_allclose(csv["Throughput [img/s]"], df["throughput_wall_ips"])
    np.testing.assert_allclose(csv["Model memory [MiB]"], df["model_mb"])
    np.testing.assert_array_equal(csv["Sessions"].fillna(0), df["sessions"].fillna(0))
    np.testing.assert_allclose(csv["Size [MB]"], df["size_bytes"].astype(float) / 1e6)
    for header in (
        "p90 [ms]",
        "p99 [ms]",
        "Params [M]",
        "MACs [M]",
        "Peak RSS [MiB]",
        "Delta top-1 [pp]",
        "Size ratio",
    ):
        assert header in csv.columns
    # No power meter in this run: no energy column rather than a column of blanks.
    assert "Energy [mJ/img]" not in csv.columns


def test_markdown_shows_na_flags_failures_and_the_intervals(demo) -> None:
    df, _, report_tables = demo
    text = tables.to_markdown(_by_name(report_tables, "device_pi5"))
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert re.search(r"\| +n/a +\|", lines["mobilenet_v3"])  # latency-only: n/a accuracy
    assert "accuracy_outside_host_interval, throttled" in lines["resnet_18&v2-int8"]
    assert "high_between_session_spread" in lines["mobilenet_v3-fp16"]
    assert "high_between_session_spread" not in lines["resnet_18&v2"]
    assert "failed" in lines["mobilenet_v3-int8"]
    assert "DequantizeLinear<axis=1>" in lines["mobilenet_v3-int8"]
    row = df[(df["device"] == "pi5") & (df["model"] == "resnet_18&v2-int8")].iloc[0]
    expected = (
        f"{row['speedup']:.2f} [{row['speedup_ci95_low']:.2f}, {row['speedup_ci95_high']:.2f}]"
    )
    assert expected in lines["resnet_18&v2-int8"]
    assert "1.00 (baseline)" in lines["resnet_18&v2"]
    median = (
        f"{row['latency_median_ms']:.3f} [{row['latency_ci95_low_ms']:.3f}, "
        f"{row['latency_ci95_high_ms']:.3f}]"
    )
    top1 = f"69.00 [{row['accuracy_top1_low'] * 100:.2f}, {row['accuracy_top1_high'] * 100:.2f}]"
    assert median in lines["resnet_18&v2-int8"] and top1 in lines["resnet_18&v2-int8"]
    assert re.search(r"\| +5/5 +\|", lines["resnet_18&v2-int8"])  # sessions done, planned


def test_a_top5_keeps_its_interval_in_the_csv(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", samples_ns=lognormal_ns(5, seed=1), accuracy_top1=0.7,
            accuracy_top5=0.9, accuracy_top5_low=0.88, accuracy_top5_high=0.92)
    table = tables.build_table(frame.with_baselines(frame.results_frame(store, [run])), "t", "t")
    assert table.numbers[["Top-5 [%]", "Top-5 CI95 low [%]", "Top-5 CI95 high [%]"]].iloc[0] \
        .tolist() == pytest.approx([90.0, 88.0, 92.0])


def test_energy_appears_when_measured(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["jetson"])
    add_job(
        store,
        run,
        "net",
        device="jetson",
        samples_ns=lognormal_ns(5, seed=1),
        energy_mj_per_inference=12.5,
        power_w=2.5,
    )
    df = frame.with_baselines(frame.results_frame(store, [run]))
    table = tables.build_table(df, "t", "t")
    assert table.numbers["Energy [mJ/img]"].tolist() == [12.5]
    assert table.text["Power [W]"].tolist() == ["2.50"]


def test_a_failed_row_says_its_error_kind_once_beside_its_status(demo, tmp_path: Path) -> None:
    """From a review: the Error column wrote "op_unsupported: <message>" beside Notes saying
    unsupported. The kind goes with the status in Notes ("failed: ModelLoadError", as the
    bench's table says it), the Error column has the message; a kind that is the status is
    said once. The CSV, read without Notes' text, keeps the kind before its message."""
    _, _, report_tables = demo
    table = _by_name(report_tables, "device_pi5")
    lines = {line.split("|")[1].strip(): line for line in tables.to_markdown(table).splitlines()
             if line.startswith("|")}
    cells = [c.strip() for c in lines["mobilenet_v3-int8"].strip().strip("|").split("|")]
    assert cells[-2:] == ["failed: ModelLoadError",
                          "unsupported op DequantizeLinear<axis=1> in mobilenet_v3-int8.onnx"]
    csv = table.numbers.set_index("Model").loc["mobilenet_v3-int8"]
    assert csv["Notes"] == "failed"
    assert csv["Error"] == ("ModelLoadError: unsupported op DequantizeLinear<axis=1> in "
                            "mobilenet_v3-int8.onnx")
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", device="pi5")
    add_job(store, run, "net-int8", device="pi5", status="unsupported",
            error_kind="unsupported", error_message="no int8 kernels here")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    store.close()
    shown = tables.build_table(df, "t", "t").shown.set_index("Model").loc["net-int8"]
    assert (shown["Notes"], shown["Error"]) == ("unsupported", "no int8 kernels here")


def test_latex_is_booktabs_and_escapes_names(demo) -> None:
    _, run, report_tables = demo
    latex = tables.to_latex(_by_name(report_tables, "device_pi5"))
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "\\hline" not in latex
    # The paper names the base model and technique; constant columns go to the caption.
    assert "resnet\\_18\\&v2 & int8 &" in latex
    assert "Runtime: onnxruntime; threads: 4." in latex
    # flags as short labels, each named once in the caption: the table keeps to the page
    assert "throttled" in latex
    # each label with its meaning: the caption is read where no README is
    assert "Notes (flags): spread, the session medians spread more than 5\\% (log sd)" in latex
    assert "; top-1 off, top-1 on the device, scored on other images than the host" in latex
    # a flag whose label is its name is explained too (`loaded` on every row went unexplained)
    assert "; throttled, the device throttled (thermal or power) during a session" in latex
    assert "& spread" in latex and "& high\\_between\\_session\\_spread" not in latex
    assert "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%" in latex
    assert "resnet_18&v2" not in latex
    assert "DequantizeLinear" not in latex  # errors stay out of the paper table
    assert "Top-1 &" in latex and "[\\%] (95\\,\\% CI) &" in latex and "$\\times$" in latex
    # the headline keeps its interval in the paper too: "median [low, high]"
    assert "[ms] (95\\,\\% CI)" in latex
    assert re.search(r"& \d+\.\d{3} \[\d+\.\d{3}, \d+\.\d{3}\] &", latex)
    body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", latex).group(1)
    assert len(body) == 6
    for line in body:
        assert line.endswith("\\\\")
        unescaped = re.findall(r"(?<!\\)[&%_#$]", line.replace("$\\times$", ""))
        assert unescaped.count("&") == len(spec) - 1
        assert set(unescaped) <= {"&"}


def test_latex_says_once_in_its_caption_what_every_ok_row_shares() -> None:
    """As the page says it above the table: a failed row whose threads were not recorded (n/a)
    kept the Threads column; the caption says them once for the ok rows."""
    text = pd.DataFrame({"Device": ["pi5"] * 3, "Model": ["net", "net-int8", "net-prune"],
                         "Threads": ["2", "2", "n/a"], "Notes": ["", "", "failed"]})
    table = tables.Table("t", "Results", text, text,
                         caption_if_constant={"Device": "device", "Threads": "threads"},
                         flags=[[], [], ["failed"]])
    latex = tables.to_latex(table)
    assert "\\caption{Results. Device: pi5. Every ok row: threads 2." in latex
    assert "Threads" not in latex.split("\\midrule", 1)[0]
    # recorded and other than the ok rows': the column stays
    other = text.assign(Threads=["2", "2", "4"])
    latex = tables.to_latex(tables.Table("t", "Results", other, other,
                                         caption_if_constant=table.caption_if_constant,
                                         flags=table.flags))
    assert "\\caption{Results. Device: pi5." in latex and "Every ok row" not in latex
    assert "Threads" in latex.split("\\midrule", 1)[0]


def test_latex_escapes_every_special_character() -> None:
    df = pd.DataFrame({"name": ["a_b&c%d$e#f{g}h~i^j\\k<l>m|n"]})
    table = tables.Table("t_1", "caption with_underscore & 50%", df, df)
    latex = tables.to_latex(table)
    assert (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}h\\textasciitilde i\\textasciicircum j\\textbackslash k"
        "\\textless{}l\\textgreater{}m\\textbar{}n"
    ) in latex
    assert "\\caption{caption with\\_underscore \\& 50\\%}" in latex
    assert tables.latex_escape("x~y\\z") == "x\\textasciitilde y\\textbackslash z"
    assert "\\label{tab:t-1}" in latex


@pytest.mark.skipif(
    shutil.which("pdflatex") is None,
    reason="pdflatex not installed (apt-get install texlive-latex-recommended)",
)
def test_latex_tables_compile(demo, tmp_path: Path) -> None:
    _, _, report_tables = demo
    for table in report_tables:
        table.write(tmp_path)
    inputs = "\n".join(f"\\input{{{t.name}.tex}}" for t in report_tables)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
        "\\usepackage{graphicx}\n"
        f"\\begin{{document}}\n{inputs}\n\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000


def test_markdown_cells_with_pipes_and_newlines_stay_in_their_cell(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "a|b", status="failed", error_message="line one\nshape | mismatch")
    df = frame.with_baselines(frame.results_frame(store, [run]))
    table = tables.build_table(df, "t", "t")
    lines = [line for line in tables.to_markdown(table).splitlines() if line.startswith("|")]
    assert len(lines) == 3  # header, rule, one row
    unescaped = re.findall(r"(?<!\\)\|", lines[2])
    assert len(unescaped) == len(table.shown.columns) + 1
    assert "line one shape \\| mismatch" in lines[2]


@pytest.fixture(scope="module")
def quick_tables(tmp_path_factory: pytest.TempPathFactory) -> list[tables.Table]:
    from tests.test_report_figures import quick_store

    store, run = quick_store(tmp_path_factory.mktemp("quick") / "q.db")
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    return tables.report_tables(df, run)


def test_an_interval_beyond_a_thousand_times_its_figure_is_written_as_a_limit(
        quick_tables) -> None:
    """Found: 48.2 [0.0, 7006531499428986.0], from two sessions 230x apart."""
    assert tables.format_interval(48.034, 3e-13, 7.0e15, ",.3f") == "48.034 [<0.048, >48,000]"
    assert tables.format_interval(0.081, 0.0801, 0.0822, ",.3f") == "0.081 [0.080, 0.082]"
    assert tables.format_interval(1.37, 1e-6, 8.2e6, ".2f") == "1.37 [<0.00137, >1,370]"
    summary = _by_name(quick_tables, "summary")
    cells = " ".join(summary.text["Median [ms] (95% CI)"]) + " ".join(
        summary.text["Speedup [x] (95% CI)"])
    # no figure of seven digits or more before its decimal point (a limit below the figure,
    # such as <0.0000588, has its zeros after it)
    assert not re.search(r"(?<![\d.])\d{7}", cells.replace(",", "")), cells
    assert ">6,200]" in cells
    assert tables.REACH_NOTE in tables.to_markdown(summary)


def test_a_median_above_its_pooled_p90_is_marked_and_explained(quick_tables) -> None:
    """Found: torch's headline 48.2 ms beside a p90 of 0.6 ms, with nothing to say that one is
    the median of two session medians and the other pooled over samples."""
    summary = _by_name(quick_tables, "summary")
    p90 = dict(zip(summary.text["Model"], summary.text["p90 [ms]"], strict=True))
    assert p90["resnet18"].endswith(tables.BELOW_MEDIAN)
    assert not p90["cnn"].endswith(tables.BELOW_MEDIAN)
    markdown = tables.to_markdown(summary)
    assert "pooled p90 below the row's median" in markdown
    assert "combined over sessions as their geometric mean" in markdown
    assert "pools every timed" in markdown
    latex = tables.to_latex(summary)
    assert "\\textdagger{}" in latex and tables.BELOW_MEDIAN not in latex


def test_a_speedup_is_the_ratio_of_the_two_median_cells(demo) -> None:
    """Found by an audit: the Median cells were medians of the session medians and the speedup a
    ratio of their geometric means, so a table's baseline Median over a variant's disagreed with
    its Speedup (0.654 beside 0.64). The Median is now the geometric mean the speedup is a ratio
    of: with paired sessions the two agree (to the CSV's 12 significant digits)."""
    df, _, report_tables = demo
    numbers = _by_name(report_tables, "summary").numbers.set_index(["Device", "Model"])
    paired = df[~df["is_baseline"] & df["speedup_paired"].fillna(False).astype(bool)]
    assert len(paired) == 6
    for row in paired.itertuples():
        ratio = (numbers.at[(row.device, row.baseline), "Median [ms]"]
                 / numbers.at[(row.device, row.model), "Median [ms]"])
        assert numbers.at[(row.device, row.model), "Speedup [x]"] == pytest.approx(
            ratio, rel=1e-9), row.model


def test_latex_captions_are_self_contained(quick_tables) -> None:
    """Found: a caption sent the paper's reader to "the results README" for its flags. A
    caption says what its flags, columns, dataset and protocol are."""
    for table in quick_tables:
        latex = tables.to_latex(table)
        caption = latex.split("\\caption{", 1)[1].split("\\label", 1)[0]
        assert "README" not in caption, table.name
        assert "ratio of the geometric means" in caption, table.name
        assert "quick protocol (\\texttt{--quick})" in caption, table.name
        assert "2 sessions" in caption, table.name
    summary = tables.to_latex(_by_name(quick_tables, "summary"))
    assert "spread, the session medians spread more than 5" in summary
    assert "Top-1: on digits, 449 images" in summary


def test_csv_figures_carry_no_float_noise(tmp_path: Path) -> None:
    """Found in a lab's report: `Size [MB] 1.9999999999999998e-05`, `Params [M]
    0.15589799999999998` and `p90 [ms] 0.11799880000000007` (an interpolation between two
    samples in ms) where the figures are 20 bytes, 155,898 parameters and 0.1179988 ms. The CSV
    is for machines: it says the figures; the text the tables show is unchanged."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", samples_ns=lognormal_ns(5, seed=1), size_bytes=20, params=155_898,
            macs=301_234_567, latency_p90_ms=0.11799880000000007)
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    written = {t.name: t for t in tables.report_tables(df, run)}
    csv = written["summary"].write(tmp_path)[0].read_text()
    header, row = csv.splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=False))
    assert values["Size [MB]"] == "2e-05"
    assert values["Params [M]"] == "0.155898"
    assert values["MACs [M]"] == "301.234567"
    assert values["p90 [ms]"] == "0.1179988"
    text = written["summary"].text.iloc[0]
    assert (text["Size [MB]"], text["Params [M]"]) == ("0.000", "0.156")
    assert text["p90 [ms]"] == "0.118" + tables.BELOW_MEDIAN  # below the 5 ms median: marked
    # every float of every table: at most 12 significant digits, and the figure to that
    for table in written.values():
        for name in table.numbers.columns:
            for value in table.numbers[name]:
                if isinstance(value, float) and not np.isnan(value):
                    assert len(repr(value).split("e")[0].replace(".", "").lstrip("0-")) <= 12


def test_every_table_says_which_isa_measured_it(demo, tmp_path: Path) -> None:
    """Found: the page and the figures named the CPU's instruction set, the tables did not, so
    a table copied into a paper lost which ISA gave its int8 speed and top-1. The note under
    each table (its LaTeX caption too) names it per device, and the CSV per row."""
    df, _, report_tables = demo
    isa = df["isa"].dropna().unique().tolist()
    assert len(isa) == 1 and isa[0]
    for table in report_tables:
        devices = ["pi5"] if table.name == "device_pi5" else \
            ["jetson"] if table.name == "device_jetson" else ["jetson", "pi5"]
        said = "CPU ISA: " + "; ".join(f"{d} {isa[0]}" for d in devices) + "."
        assert said in table.note, table.name
        assert tables.latex_escape(said) in " ".join(tables.to_latex(table).split()), table.name
    csv = pd.read_csv(_by_name(report_tables, "summary").write(tmp_path)[0])
    assert csv["CPU ISA"].tolist() == df["isa"].tolist()
    pivot = pd.read_csv(_by_name(report_tables, "across_devices").write(tmp_path)[0])
    assert set(pivot["pi5 CPU ISA"]) == set(pivot["jetson CPU ISA"]) == {isa[0]}


def test_a_latency_of_microseconds_keeps_three_significant_digits(tmp_path: Path) -> None:
    """Found in an audit: tables wrote latency with 3 decimals in ms, so a 4 us GPU figure
    read "0.004 [0.004, 0.005]"."""
    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", samples_ns=sessions_ns(0.00412, seed=1))
    add_job(store, run, "big", samples_ns=sessions_ns(88.1, seed=2))
    table = tables.build_table(frame.with_baselines(frame.results_frame(store, [run])), "t", "t")
    small, big = table.text["Median [ms] (95% CI)"]
    assert re.fullmatch(r"0\.00\d{3} \[0\.00\d{3}, 0\.00\d{3}\]", small), small
    assert re.fullmatch(r"\d\d\.\d{3} \[\d\d\.\d{3}, \d\d\.\d{3}\]", big), big
    assert re.fullmatch(r"0\.00\d{3}", table.text["p90 [ms]"].iloc[0].rstrip(tables.BELOW_MEDIAN))
    across = tables.across_devices(frame.with_baselines(frame.results_frame(store, [run])))
    cells = dict(zip(across.text["Model"], across.text["pi5 [ms] (x)"], strict=True))
    assert re.fullmatch(r"0\.00\d{3} \(1\.00\)", cells["net"]), cells
    assert re.fullmatch(r"\d\d\.\d{3} \(1\.00\)", cells["big"]), cells
