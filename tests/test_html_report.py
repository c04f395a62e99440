"""The static HTML report: self-contained on disk, and rendered by a real headless Chromium.

The browser test drives Debian's `chromium` through playwright's Python package (no browser
download: `executable_path=/usr/bin/chromium`). It fails on any console error, page error or
request that leaves the report folder, checks that the tables and images are there and that the
tables sort, and saves a full-page screenshot next to the report.
"""

from __future__ import annotations

import contextlib
import html
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.report import run_report
from harness.report.console import FLAG_MEANINGS
from harness.report.html import table_html
from harness.report.tables import Table
from harness.store import Store
from tests.test_report_output import add_nightly_runs
from tests.test_report_synthetic import demo_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("html")
    with Store(tmp / "x.db") as store:  # trends need earlier runs: begun before `run`
        add_nightly_runs(store, [20.0, 23.0])
    store, run = demo_store(tmp / "x.db")
    store.close()
    return run_report(tmp / "x.db", run, out=tmp / "report"), run


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_page_is_self_contained(report) -> None:
    folder, run = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(page)
    files = [r for r in parser.refs if not r.startswith("#")]
    assert files, "the page links its plots and tables"
    for ref in files:
        assert "://" not in ref and not ref.startswith("/"), ref
        assert (folder / ref).is_file(), ref
    assert sum(r.endswith(".png") for r in files) == 7
    assert "link" not in parser.tags  # no external stylesheets
    assert run in page


def test_page_lists_failures_caveats_and_devices(report) -> None:
    folder, _ = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    # the error text is escaped, not interpreted as markup
    assert "unsupported op DequantizeLinear&lt;axis=1&gt; in mobilenet_v3-int8.onnx" in page
    assert "ModelLoadError" in page
    for flag in ("high_between_session_spread", "throttled", "accuracy_outside_host_interval"):
        assert f'class="badge {flag}"' in page and f"flag-{flag}" in page, flag
    assert "flag-failed" in page
    assert "Synthetic(R) CPU @ 2.0GHz" in page  # fingerprint
    assert "governor" in page  # device state
    assert "resnet_18&amp;v2" in page and "resnet_18&v2<" not in page
    assert page.count('<p class="isa"><b>ISA:</b> <code>arm neon asimd asimddp</code></p>') == 2


def test_page_explains_every_flag_it_shows(report) -> None:
    """Each flag the tables' rows carry is explained once: the summary's legend (`#flags`)
    the flags, the tables' own their statuses. The tables had a legend of all sixteen: a run
    with three had them explained twice, and a reader look for the other thirteen."""
    folder, _ = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    tables = page.split('<h2 id="tables">', 1)[1].split('<h2 id="plots">', 1)[0]
    shown = {flag for classes in re.findall(r'<td [^>]*class="([^"]*)"', tables)
             for flag in re.findall(r"\bflag-([A-Za-z0-9_]+)", classes)}
    assert {"failed", "high_between_session_spread", "throttled"} <= shown

    def explained(legend: str) -> list[str]:
        flags = re.findall(r'<dt><span class="badge ([A-Za-z0-9_]+)"', legend)
        for flag in flags:
            assert html.escape(FLAG_MEANINGS[flag]) in legend, flag
        return flags

    summary = explained(page.split('<dl class="legend" id="flags">', 1)[1].split("</dl>", 1)[0])
    own = explained(tables.split('<dl class="legend">', 1)[1].split("</dl>", 1)[0])
    assert own == ["failed"] and "failed" not in summary
    assert sorted(summary + own) == sorted(shown)
    assert '<a href="#flags">in the summary</a>' in tables
    caveats = page.split('<ul id="caveats">', 1)[1].split("</ul>", 1)[0]
    # each flagged measurement by name, with its flags; the unflagged ones are not listed
    assert caveats.count("<li>") == 3
    assert "mobilenet_v3-fp16</code> on pi5" in caveats and "resnet_18&amp;v2-int8" in caveats
    assert "pruned50" not in caveats


@pytest.mark.browser
def test_report_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium; `make test` does it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install playwright==1.65.2)"
    )
    folder, _ = report
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto((folder / "index.html").resolve().as_uri(), wait_until="load")

            assert page.title().startswith("edgebench report")
            assert page.locator("table.sortable").count() >= 5
            summary = page.locator("#T_summary")
            assert summary.locator("tbody tr").count() == 11
            assert page.locator("#failures").inner_text().count("DequantizeLinear") == 1
            for flag in ("failed", "high_between_session_spread", "throttled"):
                assert summary.locator(f"td.flag-{flag}").count() > 0, flag
            images = page.locator("img")
            assert images.count() == 7
            for i in range(images.count()):
                loaded = images.nth(i).evaluate("img => img.complete && img.naturalWidth > 300")
                assert loaded, images.nth(i).get_attribute("src")

            # Sort the summary by median latency ("median [low, high]"): numbers ascending,
            # "n/a" (failed) last.
            column = summary.locator("thead th").all_inner_texts().index("Median [ms] (95% CI)")
            summary.locator("thead th").nth(column).click()
            cells = summary.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
            numbers = [float(c.split(" [")[0]) for c in cells if c != "n/a"]
            assert numbers == sorted(numbers) and cells[-1] == "n/a"
            summary.locator("thead th").nth(column).click()
            cells = summary.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
            numbers = [float(c.split(" [")[0]) for c in cells if c != "n/a"]
            assert numbers == sorted(numbers, reverse=True)

            page.screenshot(path=str(folder / "screenshot.png"), full_page=True)
        finally:
            context.close()
    assert problems == []
    assert all(url.startswith("file://") for url in requests), requests
    assert (folder / "screenshot.png").stat().st_size > 50_000


def test_table_headers_and_cells_are_escaped() -> None:
    text = pd.DataFrame({"<script>dev</script> [ms] (x)": ["<b>1</b>"]})
    rendered = table_html(Table("t", "t", text, text))
    assert "<script>" not in rendered and "<b>" not in rendered
    assert "&lt;script&gt;dev&lt;/script&gt;" in rendered and "&lt;b&gt;1&lt;/b&gt;" in rendered


def test_a_flag_on_most_measurements_is_said_once_for_the_run() -> None:
    """On a noisy host nearly every row has a wide spread: the caveats say so once and still
    list, by name, the flags that belong to one model."""
    from harness.report.html import _summary

    rows = [{"status": "ok", "device": "pi5", "runtime": "tflite", "model": f"m{i}",
             "flags": ["high_between_session_spread"] + (["capped"] if i == 3 else [])}
            for i in range(6)]
    df = pd.DataFrame(rows).assign(stable=False, throttled=False, error_kind=None,
                                   error_message=None)
    caveats = _summary(df).split('<ul id="caveats">', 1)[1].split("</ul>", 1)[0]
    assert caveats.count("<li>") == 2
    assert "6 of 6 measurements" in caveats and "high_between_session_spread" in caveats
    assert "<code>m3</code> on pi5 (tflite)" in caveats and "capped" in caveats
    # below the share, each row is listed as before
    few = df.assign(flags=[["capped"]] + [[]] * 5)
    assert _summary(few).split('<ul id="caveats">', 1)[1].count("<li>") == 1


def test_a_gpu_run_names_the_gpu_on_the_page_and_in_captions(tmp_path: Path) -> None:
    """Where a model ran on a GPU, the device section and the paper captions name it beside the
    ISA (escaped: the name comes from the driver)."""
    from harness.report.frame import results_frame
    from harness.report.paper import run_facts
    from harness.store import Store
    from tests.test_report_synthetic import add_job

    gpu = "NVIDIA <H200> (sm 9.0, 132 SMs)"
    store = Store(tmp_path / "x.db")
    run = store.begin_run("gpu", None, ["cuda-box"])
    add_job(store, run, "net", device="cuda-box", runtime="torch", accelerator=gpu)
    add_job(store, run, "net", device="cuda-box", runtime="onnxruntime")
    store.finish_run(run)
    facts = run_facts(results_frame(store, [run]), run)
    store.close()
    # LaTeX text: OT1 would print `<` as an inverted exclamation mark
    assert "accelerator NVIDIA \\textless{}H200\\textgreater{} (sm 9.0, 132 SMs)" in facts
    # the CPU's part name as a reader can look it up, its count, then the ISA
    assert facts.startswith("Measured on cuda-box (Synthetic CPU @ 2.0GHz, 4 CPUs; CPU ISA ")
    page = (run_report(tmp_path / "x.db", run, out=tmp_path / "r") / "index.html").read_text()
    assert f"<b>Accelerator:</b> <code>{html.escape(gpu)}</code>" in page


def test_speedup_is_defined_as_what_is_computed(report) -> None:
    """Found: the page said "Speedup = baseline latency / latency" beside medians of 0.081 and
    0.124 ms and a speedup of 0.64 (0.0813 / 0.1244 = 0.654): it is the ratio of the geometric
    means of the session medians. The page, the captions and the README say so."""
    from harness.report.paper import CAPTIONS
    from tests.conftest import REPO

    folder, _ = report
    page = " ".join((folder / "index.html").read_text(encoding="utf-8").split())
    assert "baseline latency / latency" not in page
    assert "ratio of the geometric means of the two measurements&#x27; session medians" in page
    for name in ("speedup_by_technique", "speedup_heatmap"):
        assert "ratio of the geometric means" in CAPTIONS[name], name
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    section = readme.split("## Figures for a paper", 1)[1].split("## ", 1)[0]
    assert "the ratio of the geometric means of the two measurements' session medians" in section


def test_a_quick_run_says_so_in_its_caveats_and_figure_captions(tmp_path: Path) -> None:
    """Found: that a run used `--quick` (0.2 s windows, 2 sessions) was only in the command
    line at the top of the page."""
    from tests.test_report_figures import quick_store

    store, run = quick_store(tmp_path / "q.db")
    store.close()
    page = (run_report(tmp_path / "q.db", run, out=tmp_path / "r") / "index.html").read_text(
        encoding="utf-8")
    caveats = page.split('<ul id="caveats">', 1)[1].split("</ul>", 1)[0]
    assert '<li id="protocol">Measured under the quick protocol (<code>--quick</code>)' in caveats
    captions = [c for c in page.split("<figure ")[1:] if 'id="f-model_size"' not in c]
    assert len(captions) >= 5
    for caption in captions:
        caption = caption.split("<figcaption>", 1)[1].split("</figcaption>", 1)[0]
        assert "2 sessions (fresh processes, interleaved) per measurement" in caption
        assert "0.2 s timed window" in caption
    accuracy = page.split('id="f-accuracy_latency"', 1)[1].split("</figcaption>", 1)[0]
    assert "Top-1 on digits, 449 images." in accuracy


def test_the_model_size_caption_leaves_out_how_sessions_were_timed(tmp_path: Path) -> None:
    """Found: the model-size figure's caption said "2 sessions (fresh processes, interleaved)
    per measurement" and the quick protocol's timed window, on the page and in figures.tex
    (with the devices, CPUs and runtimes too): none of it bears on a file's size. Its
    caption names only the run its files are of; the timed figures' keep it all."""
    from tests.test_report_figures import quick_store

    store, run = quick_store(tmp_path / "q.db")
    store.close()
    folder = run_report(tmp_path / "q.db", run, out=tmp_path / "r", style="paper")
    page = (folder / "index.html").read_text(encoding="utf-8")
    tex = (folder / "paper" / "figures.tex").read_text(encoding="utf-8")
    page_captions = {name: caption.split("</figcaption>", 1)[0] for name, caption in re.findall(
        r'<figure id="f-(\w+)">.*?<figcaption>(.*?)</figcaption>', page, re.DOTALL)}
    tex_captions = dict(re.findall(r"\\includegraphics\[[^]]*\]\{(\w+)-single\}\n"
                                   r"  \\caption\{(.*)\}$", tex, re.MULTILINE))
    assert {"model_size", "memory"} <= page_captions.keys() & tex_captions.keys()
    for captions in (page_captions, tex_captions):
        size, memory = captions["model_size"], captions["memory"]
        for said in ("sessions (fresh processes, interleaved)", "0.2 s timed window"):
            assert said in memory and said not in size, (said, size)
        assert "Measured on" not in size and "onnxruntime" not in size
    assert "Measured on local (" in tex_captions["memory"]
    assert f"Model files of run {run}." in tex_captions["model_size"]


def test_devices_write_memory_in_whole_mib(tmp_path: Path) -> None:
    """Found: the Devices section showed `mem_total_mb 24105.55078125`, a figure to the byte in
    the wrong unit's name: memory is written in whole MiB, as the tables' memory, with GiB
    beside it."""
    from tests.test_report_synthetic import FINGERPRINT, add_job

    store = Store(tmp_path / "x.db")
    run = store.begin_run("t", None, ["pi5"])
    add_job(store, run, "net", fingerprint={
        **FINGERPRINT, "mem_total_mb": 24105.55078125,
        "gpu": {"memory_total_mb": 143771.0, "name": "H200"}, "swap_mb": 512.4},
        state_before={"time": 1795979286.0826483, "loadavg": [2.15234375, 2.193359375, 3.0]})
    store.finish_run(run)
    store.close()
    page = (run_report(tmp_path / "x.db", run, out=tmp_path / "r") / "index.html").read_text(
        encoding="utf-8")
    devices = page.split('<h2 id="devices">', 1)[1]
    assert "<dt>mem_total_mb</dt><dd>24,106 MiB (23.5 GiB)</dd>" in devices
    assert "<dt>gpu.memory_total_mb</dt><dd>143,771 MiB (140.4 GiB)</dd>" in devices
    assert "<dt>swap_mb</dt><dd>512 MiB</dd>" in devices
    assert "24105.55" not in page
    # and the state's time as a date, its load averages as `uptime` writes them (found in an
    # audit: seconds since 1970 and eight decimals)
    assert "<dt>time</dt><dd>2026-11-29 19:08:06 UTC</dd>" in devices
    assert "<dt>loadavg</dt><dd>2.15, 2.19, 3.00</dd>" in devices


# what ONNX Runtime writes when a model will not load: a path of the device's model cache, one
# word 90 characters long, and a sentence
LOAD_ERROR = (
    "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model from /home/pi/.cache/edgebench/"
    "3f9c1e7a5b2d4c6e8f0a1b3c5d7e9f1a/resnet18-prune50_latency.onnx failed: This is an invalid "
    "model. In Node, (\"/layer1/layer1.0/conv1/Conv\", Conv, \"\", -1) : (\"input\": tensor(float)"
    ",) -> (\"/layer1/layer1.0/conv1/Conv_output_0\",) , Error Unrecognized attribute: "
    "kernel_shapes for operator Conv")


def _two_devices_store(path: Path, failed: bool = False) -> tuple[Store, str]:
    """A complete run on two devices with long names: models with long names and a chain of
    techniques, every measurement flagged twice; with `failed`, a pruned model that did not
    load on one device and was unsupported on the other, with ONNX Runtime's long messages."""
    from tests.test_report_synthetic import add_job, sessions_ns

    store = Store(path)
    run = store.begin_run("edgebench bench --suite demo", "demo", ["pi5", "jetson-orin"])
    for device in ("pi5", "jetson-orin"):
        for model, baseline, technique in (
                ("mobilenet_v3_small", None, None),
                ("mobilenet_v3_small-int8", "mobilenet_v3_small", "distill>prune30>qat_int8"),
                ("resnet18", None, None), ("resnet18-prune50_latency", "resnet18", "prune50")):
            add_job(store, run, model, baseline=baseline, technique=technique, device=device,
                    accuracy_top1=0.7, throttled=True,
                    samples_ns=sessions_ns(12.0, seed=3, between_sd=0.3))
        if failed:
            add_job(store, run, "resnet18-prune50_sparse70", baseline="resnet18",
                    technique="prune50>sparse70", device=device,
                    status="failed" if device == "pi5" else "unsupported",
                    error_kind="ModelLoadError" if device == "pi5" else "unsupported",
                    error_message=LOAD_ERROR if device == "pi5" else
                    "CUDAExecutionProvider is not available on jetson-orin: onnxruntime-gpu "
                    "1.19.0 was built for CUDA 12.2 and the device has 11.4")
    store.finish_run(run)
    return store, run


def test_a_column_with_one_value_is_said_once_above_the_table() -> None:
    """The main table of a run on one device was 3,080 px wide on a 1400 px page. A column
    with one value in every row is said once above it, as the LaTeX caption says it; a figure's
    interval may go under it, and a chain of techniques break after each step."""
    text = pd.DataFrame({"Device": ["pi5", "pi5"], "Model": ["net", "net-int8"],
                         "Technique": ["fp32", "distill>qat_int8"], "Sessions": ["5/5", "5/5"],
                         "Median [ms] (95% CI)": ["1.20 [1.10, 1.30]", "n/a"]})
    rendered = table_html(Table("t", "t", text, text, numeric=frozenset(
        {"Sessions", "Median [ms] (95% CI)"}), caption_if_constant={"Device": "device"}))
    assert '<p class="meta every-row">Every row: device pi5; sessions 5/5.</p>' in rendered
    assert ">Device<" not in rendered and ">Sessions<" not in rendered
    assert '>1.20 <span class="ci">[1.10, 1.30]</span></td>' in rendered
    assert ">n/a</td>" in rendered
    assert ">net-<wbr>int8</td>" in rendered and ">distill&gt;<wbr>qat_int8</td>" in rendered
    # a single row is no reason to say anything once
    one = text.iloc[:1]
    assert ">Device<" in table_html(Table("t", "t", one, one,
                                          caption_if_constant={"Device": "device"}))


def test_a_failed_row_says_its_sessions_in_its_notes_not_every_row_over_again() -> None:
    """From a review: one failed measurement, 0/5 sessions and its threads not recorded, brought
    the Sessions and Threads columns back into a table whose every other row read 5/5 and 2;
    and "Every row: sessions 5/5" must never be said of a row that ran none. What every ok row
    shares is said once for the ok rows, and a failed row's own count stands in its Notes,
    after its status."""
    text = pd.DataFrame({"Device": ["pi5"] * 3, "Model": ["net", "net-int8", "net-prune"],
                         "Threads": ["2", "2", "n/a"], "Sessions": ["5/5", "5/5", "0/5"],
                         "Notes": ["", "throttled", "failed, throttled"]})
    flags = [[], ["throttled"], ["failed", "throttled"]]
    constant = {"Device": "device", "Threads": "threads"}
    rendered = table_html(Table("t", "t", text, text, caption_if_constant=constant,
                                flags=flags))
    assert ('<p class="meta every-row">Every row: device pi5. Every ok row: threads 2; '
            "sessions 5/5.</p>") in rendered
    assert ">Sessions<" not in rendered and ">Threads<" not in rendered
    assert ">failed, sessions 0/5, throttled</td>" in rendered
    # a failed row whose threads were recorded, and differ, keeps that column
    other = text.assign(Threads=["2", "2", "4"])
    rendered = table_html(Table("t", "t", other, other, caption_if_constant=constant,
                                flags=flags))
    assert ">Threads<" in rendered and ">4</td>" in rendered
    assert "Every ok row: sessions 5/5." in rendered
    # an ok row that ran fewer sessions is no row like the others: the column stays
    short = text.assign(Sessions=["5/5", "4/5", "0/5"])
    rendered = table_html(Table("t", "t", short, short, flags=flags))
    assert ">Sessions<" in rendered and "sessions" not in rendered.split("<table", 1)[0]


def test_a_run_with_failures_says_its_ok_rows_sessions_once(tmp_path: Path) -> None:
    """The same from the store: a run on two devices, one measurement on each failed or
    unsupported."""
    from harness.report import frame, tables

    store, run = _two_devices_store(tmp_path / "x.db", failed=True)
    df = frame.with_baselines(frame.results_frame(store, [run]), store)
    store.close()
    summary = next(t for t in tables.report_tables(df, run) if t.name == "summary")
    rendered = table_html(summary)
    assert ('<p class="meta every-row">Every row: runtime onnxruntime; threads 4. Every ok '
            "row: sessions 5/5.</p>") in rendered
    assert ">Sessions<" not in rendered
    assert ">failed: ModelLoadError, sessions 0/1</td>" in rendered
    assert ">unsupported, sessions 0/1</td>" in rendered


@contextlib.contextmanager
def _two_device_page(tmp_path: Path, failed: bool) -> Iterator[tuple[Any, Path]]:
    """The report of a run on two devices (with failures where `failed`), open in headless
    Chromium at 1400 px, and its folder; skipped without Chromium or playwright."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium; `make test` does it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (pip install playwright==1.65.2)"
    )
    store, run = _two_devices_store(tmp_path / "x.db", failed=failed)
    store.close()
    folder = run_report(tmp_path / "x.db", run, out=tmp_path / "report")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto((folder / "index.html").resolve().as_uri(), wait_until="load")
            yield page, folder
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.parametrize("failed", [False, True], ids=["all-ok", "with-failures"])
def test_the_main_table_fits_a_1400_px_page(tmp_path: Path, failed: bool) -> None:
    """Found by a paper's reader: the main table scrolled sideways at 1400 px, Top-1 out of
    sight of its Model. Every table of a run on two devices fits the page, each column there;
    in a run with failures too, whose Error column (20rem at least) made it 1586 px wide: there
    an error message wraps in its column, every word of it shown, none cut off."""
    with _two_device_page(tmp_path, failed) as (page, folder):
        widths = page.evaluate("""() => Array.from(
            document.querySelectorAll("div.scroll > table.sortable"),
            t => [t.id, t.parentElement.scrollWidth, t.parentElement.clientWidth])""")
        headers = page.locator("#T_summary thead th").all_inner_texts()
        # each error cell: its table, its text as shown, whether it runs past its column
        errors = page.evaluate("""() => Array.from(document.querySelectorAll("td.error"),
            td => [td.closest("table").id, td.innerText,
                   td.scrollWidth > td.clientWidth])""")
        page.screenshot(path=str(folder / "screenshot.png"), full_page=True)
    assert len(widths) == 4 + failed  # and the table of what did not run
    assert [name for name, scroll, room in widths if scroll > room] == []
    for name in ("Device", "Model", "Technique", "Median [ms] (95% CI)", "Top-1 [%] (95% CI)",
                 "Peak RSS [MiB]", "Notes"):
        assert name in [" ".join(h.split()) for h in headers]
    shown = [(table, "".join(text.split())) for table, text, _ in errors if text.strip()]
    if failed:
        assert ("T_summary", "".join(LOAD_ERROR.split())) in shown
        assert ("failures", "".join(LOAD_ERROR.split())) in shown
        assert sum(table == "T_summary" for table, _ in shown) == 2
    assert [table for table, _, overflows in errors if overflows] == []


def test_an_error_in_the_main_table_is_cut_with_its_whole_text_in_a_tooltip() -> None:
    """The main table shows an error's first lines, the whole message in its tooltip; in a
    table with errors the Device and the flags may break to leave the error room, and a table
    without errors is written as before."""
    text = pd.DataFrame({"Device": ["pi5", "jetson-orin"], "Model": ["net", "net-int8"],
                         "Notes": ["high_between_session_spread", "failed: ModelLoadError"],
                         "Error": ["", LOAD_ERROR]})
    rendered = table_html(Table("t", "t", text, text))
    whole = html.escape(LOAD_ERROR)
    assert f'<span class="cut" title="{whole}">{whole}</span></td>' in rendered
    assert 'class="sortable with-errors"' in rendered and 'href="#failures"' in rendered
    assert ">jetson-<wbr>orin</td>" in rendered
    assert ">high_<wbr>between_<wbr>session_<wbr>spread</td>" in rendered
    ok = text.assign(Error=["", ""])
    rendered = table_html(Table("t", "t", ok, ok))
    assert 'class="sortable"' in rendered and 'class="cut"' not in rendered
    assert ">jetson-orin</td>" in rendered and ">high_between_session_spread</td>" in rendered


@pytest.mark.browser
def test_an_error_in_the_main_table_keeps_its_row_as_tall_as_the_others(tmp_path: Path) -> None:
    """From an audit: on the page of a run on two devices with failures, the summary's Error
    column was left 67 px and ONNX Runtime's 388-character message made its row 797 px tall
    (53 lines), where the failures table shows it at full width. Each error of a main table
    now has 9rem at least (some 25 characters a line), its row no taller than a measured
    model's (three lines), the whole message in its tooltip, and the tables still fit the
    page."""
    with _two_device_page(tmp_path, True) as (page, _):
        # each error of a main table: its table, its width and its row's height, the
        # tallest row of a measured model in that table, its tooltip, and the root's rem
        errors = page.evaluate("""() => Array.from(
            document.querySelectorAll('table[id^="T_"] td.error'),
            td => [td.closest("table").id, td.getBoundingClientRect().width,
                   td.parentElement.getBoundingClientRect().height,
                   Math.max(...Array.from(td.closest("tbody").rows,
                       tr => tr.cells[td.cellIndex].innerText.trim()
                           ? 0 : tr.getBoundingClientRect().height)),
                   td.querySelector("[title]")?.getAttribute("title") ?? "",
                   td.innerText.trim()]).filter(e => e[5])""")
        rem = page.evaluate(
            "() => parseFloat(getComputedStyle(document.documentElement).fontSize)")
        widths = page.evaluate("""() => Array.from(
            document.querySelectorAll("div.scroll > table.sortable"),
            t => [t.id, t.parentElement.scrollWidth, t.parentElement.clientWidth])""")
    assert {table for table, *_ in errors} == {"T_summary", "T_device_pi5",
                                               "T_device_jetson-orin"}
    for table, width, height, ok_height, title, shown in errors:
        assert width >= 9 * rem, (table, width)
        assert height <= ok_height, (table, height, ok_height)
        assert title == shown  # the whole message, every word
    assert LOAD_ERROR in [title for *_, title, _ in errors]
    assert [name for name, scroll, room in widths if scroll > room] == []


def test_a_run_of_one_device_shows_its_rows_once(tmp_path: Path) -> None:
    """Found: `make bench`'s page showed its 23 measurements three times: the run's table,
    the device's own (the same rows) and the across-devices table (their Median and Speedup
    again). With one device the page shows the run's table and links the other two's files,
    which are still written; with two it shows all four."""
    from tests.test_report_figures import quick_store

    store, run = quick_store(tmp_path / "q.db")
    store.close()
    folder = run_report(tmp_path / "q.db", run, out=tmp_path / "one")
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'<h3 id="t-(\w+)"', page) == ["summary"]
    summary = page.split('<h3 id="t-summary"', 1)[1].split("</p>", 1)[0]
    linked = re.findall(r'href="(tables/[^"]+)"', summary)
    for name in ("summary", "device_local", "across_devices"):
        for suffix in ("csv", "md", "tex"):
            assert f"tables/{name}.{suffix}" in linked, (name, suffix)
    assert all((folder / ref).is_file() for ref in linked)

    store, run = _two_devices_store(tmp_path / "two.db")
    store.close()
    page = (run_report(tmp_path / "two.db", run, out=tmp_path / "two") / "index.html").read_text(
        encoding="utf-8")
    assert re.findall(r'<h3 id="t-([\w-]+)"', page) == [
        "summary", "device_jetson-orin", "device_pi5", "across_devices"]
    assert "as files only" not in page
