"""Reports on stored results: tables, plots, run comparisons, exports, and a static HTML page.

The three entry points below are what the `edgebench report`, `compare` and `export` commands
call. pandas and matplotlib are imported inside them, not at the top of this module, so that the
CLI (and everything else outside `harness.report`) starts without them; this package is the only
place in edgebench that uses either.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import EdgebenchError

if TYPE_CHECKING:
    import pandas as pd

    from harness.report.frame import SessionReader
    from harness.store import RunInfo, Store

EXPORT_FORMATS = ("csv", "json", "parquet")
EXPORT_TABLES = ("results", "sessions", "operators", "samples")
# The files a report wrote, relative to its folder: the only ones a later report there deletes.
WRITTEN_LIST = ".edgebench-report.json"
# Where `--style paper` writes (`paper.PAPER_DIR`): a report of another style leaves it alone.
PAPER_DIR = "paper"


def _open(db: Path) -> Store:
    # imported here: the store imports the schema, which imports this package's statistics
    from harness.store import Store, no_database

    # Store() would create an empty database; reading commands must not leave one behind.
    if not Path(db).is_file() and not Path(db).is_dir():  # a folder: said by the store
        raise no_database(Path(db))

    return Store(db, readonly=True)


REPORT_STYLES = ("html", "paper")


def run_report(
    db: Path,
    run: str = "latest",
    out: Path | None = None,
    runs_for_trends: int = 30,
    style: str = "html",
    say: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of one run (tables, plots, index.html) and return its folder.

    The folder is `reports/<run_id>/` unless `out` is given. Trends use this run and up to
    `runs_for_trends - 1` earlier runs comparable to it (the same suite, where the store names
    it, and the same protocol settings) that have any of its measurements, those measurements
    only, each judged against the previous run by the rule of `edgebench compare`.
    `style="paper"` also writes `paper/`: every figure as a single- and a double-column PDF,
    `figures.tex` and the booktabs tables (`report.paper`).
    A run that is not complete (interrupted, still running) is said at the top of the page, in
    the captions, and by `say` (default: a line on stderr).
    """
    if style not in REPORT_STYLES:
        raise EdgebenchError(f"unknown report style {style!r}; known: {', '.join(REPORT_STYLES)}")
    from harness.report import frame, progress

    with _open(db) as store:
        run_id = store.resolve_run(run)
        runs = store.runs()
        info = next(r for r in runs if r.run_id == run_id)
        sessions = frame.SessionReader(store)  # one read per job for CIs, plots and trends
        df = frame.with_memory_ranges(
            frame.with_baselines(frame.results_frame(store, [run_id]), sessions=sessions),
            sessions)
        note = progress.caveat(progress.run_progress(info, df))
        if note:
            (say or _to_stderr)(note)
        folder = Path(out) if out is not None else Path("reports") / run_id
        try:
            own, foreign, paper_run = _report_files(folder)
            # A report without --style paper keeps the paper/ an earlier one wrote: a paper's
            # \graphicspath may point at it, and it was deleted without a word.
            kept = set() if style == "paper" else {n for n in own if n.startswith(f"{PAPER_DIR}/")}
            staging = _staging_folder(folder)
            try:
                _write_report(store, staging, runs, run_id, info, df, sessions,
                              runs_for_trends, style)
                _install(staging, folder, own - kept, foreign, kept,
                         run_id if style == "paper" else paper_run if kept else None)
            finally:  # an interrupted report leaves the one before it whole, and no litter
                shutil.rmtree(staging, ignore_errors=True)
        except OSError as err:  # a folder that cannot be written, a full disk
            raise EdgebenchError(f"{folder}: cannot write the report ({err})") from err
    if kept:
        of_run = f" (run {paper_run})" if paper_run else ""
        (say or _to_stderr)(f"kept {folder / PAPER_DIR}/ of an earlier `--style paper` "
                            f"report{of_run}, not updated by this one; `--style paper` "
                            "rewrites it")
    return folder


def _to_stderr(line: str) -> None:
    print(f"edgebench: {line}", file=sys.stderr)


def _write_report(store: Store, folder: Path, runs: list[RunInfo], run_id: str, info: RunInfo,
                  df: pd.DataFrame, sessions: SessionReader, runs_for_trends: int,
                  style: str) -> None:
    from harness.report import compare, html, paper, plots, profile, progress, stats, tables

    status = progress.run_progress(info, df)
    report_tables = tables.report_tables(df, run_id, progress.in_brief(status))
    table_files = {t.name: t.write(folder / "tables") for t in report_tables}

    history = _history(store, runs, run_id, runs_for_trends, df)
    sessions.prefetch(history["job_id"])
    verdicts = compare.verdicts_over_runs(history, sessions.medians, threshold=stats.THRESHOLD)
    builders = plots.report_figures(
        df, history, samples=sessions.samples_ms, medians=sessions.medians,
        verdicts=verdicts, threshold=stats.THRESHOLD,
    )
    # what a caption says of data the run's rows do not hold: on the page and in the paper
    figure_notes = {"trends": plots.rebuilt_note(history)}
    paper_files: list[Path] = []
    if style == "paper":
        written, paper_files = paper.write_paper(folder, builders, df, info, report_tables,
                                                 progress.caveat(status), figure_notes)
    else:
        written = plots.write_figures(builders, folder / "plots")
    job_ids = list(df["job_id"])
    html.write_index(folder, info, df, report_tables, table_files, written,
                     pruned_sessions=store.pruned_sessions(job_ids),
                     paper_files=paper_files,
                     figure_notes=figure_notes,
                     operators=profile.html_section(
                         df[["job_id", "device", "model", "runtime", "runtime_options", "isa",
                             "accelerator", "latency_median_ms"]].to_dict("records"),
                         store.profiles(job_ids), store.profile_ops(job_ids)))


def _files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _report_files(folder: Path) -> tuple[set[str], set[str], str | None]:
    """The files an earlier report wrote into `folder` and the others there (both relative),
    and the run its `paper/` is of, where the list says.

    A folder holding files and no list of a report's own files is someone else's: refused, so
    that `--out` never deletes or overwrites a file edgebench did not write.
    """
    if not folder.exists():
        return set(), set(), None
    if not folder.is_dir():
        raise EdgebenchError(f"{folder}: --out is a file, not a folder")
    listing = folder / WRITTEN_LIST
    present = _files_in(folder)
    if not listing.is_file():
        if present:
            raise EdgebenchError(
                f"{folder}: folder holds files edgebench did not write "
                f"({sorted(present)[0]}{', ...' if len(present) > 1 else ''}); give an empty or "
                "new folder with --out"
            )
        return set(), set(), None
    try:
        written = json.loads(listing.read_text(encoding="utf-8"))
        own = set(written["files"])
        paper_run = written.get("paper_run")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise EdgebenchError(f"{listing}: unreadable list of a report's files ({err})") from err
    return (own & present, present - own - {WRITTEN_LIST},
            paper_run if isinstance(paper_run, str) else None)


def _staging_folder(folder: Path) -> Path:
    """A new hidden folder beside `folder` for the report to be written into: on the same file
    system, so that its files move into place by renaming."""
    parent = folder.absolute().parent
    for above in (parent, *parent.parents):  # mkdir says "File exists" of a file in the way
        if above.exists():
            if not above.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(above))
            break
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.edgebench-new-", dir=parent))


def _install(staging: Path, folder: Path, own: set[str], foreign: set[str], kept: set[str],
             paper_run: str | None) -> None:
    """Move the finished report from `staging` into `folder`, delete what the report before it
    wrote and this one did not (`own`, less what it keeps), and list the report's files with
    the `kept` ones, still a report's to replace, and the run its paper/ is of (last: until then
    the old list still names every file either report may have left)."""
    new = _files_in(staging)
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(new):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, folder / name)
    for name in sorted(own - new):
        (folder / name).unlink(missing_ok=True)
        _remove_empty_parents(folder, folder / name)
    listed: dict[str, Any] = {"files": sorted((new - foreign) | kept)}
    if paper_run is not None:
        listed["paper_run"] = paper_run
    text = json.dumps(listed, indent=1) + "\n"
    listing = staging / WRITTEN_LIST
    listing.write_text(text, encoding="utf-8")
    os.replace(listing, folder / WRITTEN_LIST)


def _remove_empty_parents(folder: Path, path: Path) -> None:
    # a figure left out of this report must not leave its paper/ or plots/ folder behind empty
    for parent in path.parents:
        if parent == folder or not parent.is_relative_to(folder):
            return
        try:
            parent.rmdir()
        except OSError:  # not empty: someone's files, or this report's
            return


# What makes a measurement of one run the same as one of another (`edgebench compare` pairs
# them by these): a report's trend follows its run's own measurements, and no others.
MEASUREMENT_KEY = ("device", "model", "format", "runtime", "threads", "batch")


def _history(
    store: Store, runs: list[Any], run_id: str, limit: int, current: pd.DataFrame
) -> pd.DataFrame:
    """Rows of the last `limit` runs up to `run_id` that measured what it measured (its own
    rows' `MEASUREMENT_KEY`s) the same way (the same suite, `_same_suite`, and protocol,
    `_protocols`), those rows only, with run start; the run itself always among them.

    A run of `bench --model` names no suite, so any earlier run passed `_same_suite`: the report
    of a run whose one model failed drew the trend of another model from other runs, under the
    title "0 of 1 changed speed in the last run", without the reported run on the axis. Any run
    on the same devices was taken before that: a `--quick` run and a full one were drawn as one
    trend, under a caption giving the reported run's protocol for both, and "changed in the last
    run" judged a protocol change as the code's."""
    from harness.report import frame

    order = [r.run_id for r in runs]
    info = runs[order.index(run_id)]
    own = set(_keys(current))
    protocol = _protocols(current)
    chosen: list[Any] = []
    earlier = [r for r in runs[: order.index(run_id)] if _same_suite(r, info)]
    batch = max(limit, 1)
    while earlier and len(chosen) < batch - 1:  # newest first, a batch of runs at a time
        earlier, candidates = earlier[:-batch], earlier[-batch:]
        rows = frame.results_frame(store, [r.run_id for r in candidates])
        rows = _of(rows, own)
        for r in reversed(candidates):
            mine = rows[rows["run_id"] == r.run_id]
            theirs = _protocols(mine)
            if len(mine) and (not protocol or not theirs or theirs == protocol):
                chosen.append(r)
    upto = [*reversed(chosen[: batch - 1]), info]
    history = frame.results_frame(store, [r.run_id for r in upto])
    started = {r.run_id: r.started_at for r in upto}
    begun = {r.run_id: i for i, r in enumerate(upto)}  # the order the runs were begun
    history = _of(history, own)
    return history.assign(run_started_at=history["run_id"].map(started),
                          run_order=history["run_id"].map(begun))


def _keys(rows: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Each row's `MEASUREMENT_KEY` (a missing value as None, a whole number as an int: the
    same threads read 4 from one run's rows and 4.0 from another's)."""
    def plain(value: Any) -> Any:
        if value is None or (isinstance(value, float) and value != value):
            return None
        return int(value) if isinstance(value, float) and value.is_integer() else value

    columns = [rows[c] if c in rows else [None] * len(rows) for c in MEASUREMENT_KEY]
    return [tuple(plain(v) for v in key) for key in zip(*columns, strict=True)]


def _of(rows: pd.DataFrame, keys: set[tuple[Any, ...]]) -> pd.DataFrame:
    """The rows of `rows` whose measurement is one of `keys`."""
    import pandas as pd

    return rows.loc[pd.Series([key in keys for key in _keys(rows)], index=rows.index,
                              dtype=bool)]


def _same_suite(run: Any, reported: Any) -> bool:
    """Whether `run` measured the reported run's suite, where the store names both."""
    return run.suite is None or reported.suite is None or run.suite == reported.suite


def _protocols(rows: pd.DataFrame) -> frozenset[str]:
    """The protocol settings (`results.settings`, with the defaults filled in) the rows were
    measured under, each as sorted JSON; empty where no row records them (an older store)."""
    from harness.agent.protocol import DEFAULT_SETTINGS

    found = rows.get("settings")
    if found is None:
        return frozenset()
    return frozenset(json.dumps({**DEFAULT_SETTINGS, **s}, sort_keys=True, default=str)
                     for s in found if isinstance(s, dict))


def run_compare(
    db: Path,
    run_a: str,
    run_b: str,
    *,
    threshold: float = 0.05,
    top1_threshold: float = 0.1,
    allow_different_devices: bool = False,
    fail_on_regression: bool = False,
    as_json: bool = False,
) -> int:
    """Print the comparison of run B against run A, as a table or `as_json`; 1 when gating and
    any measurement is slower beyond the threshold with confidence, has a lower top-1, or is
    newly failing."""
    from harness.report.compare import compare_runs
    from harness.report.console import render_comparison

    if not 0 <= threshold < 1:
        raise EdgebenchError(f"threshold {threshold} must be a fraction in [0, 1), e.g. 0.05")
    from harness.report.stats import check_top1_threshold

    check_top1_threshold(top1_threshold)
    with _open(db) as store:
        result = compare_runs(
            store,
            run_a,
            run_b,
            threshold=threshold,
            top1_threshold=top1_threshold,
            allow_different_devices=allow_different_devices,
        )
    if as_json:
        print(json.dumps(result.as_dict(), indent=1, allow_nan=False))
    else:
        render_comparison(result)
    return 1 if fail_on_regression and len(result.regressions) else 0


def run_export(
    db: Path, run: str, fmt: str, out: Path | None = None, *, table: str = "results"
) -> None:
    """Write one table of one run as csv/json/parquet (`harness.report.export`): its result rows
    with the documented field names, or with `table` its `sessions`, its profiles' `operators`,
    or its raw `samples`.

    CSV and JSON go to stdout when `out` is None; parquet is binary and needs `out`. JSON keeps
    the JSON columns (fingerprint, state, settings, lineage) as nested objects; CSV and parquet
    hold them as JSON text.
    """
    if fmt not in EXPORT_FORMATS:
        raise EdgebenchError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    if table not in EXPORT_TABLES:
        raise EdgebenchError(f"unknown export table {table!r}; known: {', '.join(EXPORT_TABLES)}")
    if fmt == "parquet" and out is None:
        raise EdgebenchError("parquet is a binary format; give an output file (--out FILE)")
    from harness.report.export import export_samples, export_table

    if table == "samples":
        export_samples(db, run, fmt, out)
    else:
        export_table(db, run, table, fmt, out)


__all__ = ["EXPORT_FORMATS", "EXPORT_TABLES", "REPORT_STYLES", "run_compare", "run_export",
           "run_report"]
