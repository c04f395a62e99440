"""The `edgebench nightly` command from start to exit code (harness/farm/nightly.py does the
measuring): build, measure every farm device, finish the run, gate against the baseline, write
the trend report, `summary.json` and `junit.xml` into `--out`. A suite entry that does not build
is measured nowhere: it is in all three and fails the run (exit 3), as it fails a `bench`.

What the host's own disk does to a nightly is said in one line with exit 3, never 1 (which is
"regression", and a success to the systemd unit): an `--out` that cannot be written is refused
before the build, a report that cannot be written at the end says where the results are and how
to write it again, and a result database that fills up stops the nightly with its run marked
failed (`harness/store.py` `storage_error`)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.artifacts import SAFE_NAME_RULE, is_safe_name
from harness.errors import EdgebenchError, StoreError
from harness.farm import nightly
from harness.farm.farmfile import load_farm
from harness.farm.summary import summary_document, write_junit, write_summary
from harness.report.compare import NOT_MEASURED, UNJUDGED, is_regression, unjudged_sides
from harness.report.progress import resume_command
from harness.report.stats import THRESHOLD, TOP1_THRESHOLD_POINTS, check_top1_threshold
from harness.runner import BenchOptions
from harness.store import (
    NIGHTLY_COMMAND,
    StorageError,
    Store,
    check_existing,
    empty_file,
    storage_error,
)


class OutError(EdgebenchError):
    """The report folder cannot be written for a reason of the host (no space left, an I/O
    error): exit 3, "not measured" in the nightly's codes (`nightly.exit_code`), not 2."""

    exit_code = nightly.EXIT_NOT_MEASURED


@dataclass(frozen=True)
class NightlyArgs:
    farm: Path
    suite: Path
    db: Path
    out: Path | None
    nightly_id: str | None
    baseline: str  # "previous" or a run id
    fail_on_regression: bool
    build_dir: Path
    quick: bool = False
    sessions: int | None = None
    threads: int | None = None
    threshold: float = THRESHOLD
    top1_threshold: float = TOP1_THRESHOLD_POINTS  # percentage points
    command: str | None = None  # as stored in the run; must start with "edgebench nightly"


@dataclass(frozen=True)
class NightlyResult:
    nightly_id: str
    exit_code: int
    summary: dict[str, Any]
    out: Path


def run(args: NightlyArgs, say: Callable[[str], None], console: Any = None) -> NightlyResult:
    from harness.compress.build import build_suite

    farm = load_farm(args.farm)  # ConfigError before anything is built or acquired
    if not 0 <= args.threshold < 1:
        raise EdgebenchError(f"threshold {args.threshold} must be a fraction in [0, 1)")
    check_top1_threshold(args.top1_threshold)
    nightly_id = args.nightly_id or nightly.new_nightly_id()
    if not is_safe_name(nightly_id):  # it is the run id and names the report folder
        raise EdgebenchError(f"--id {nightly_id!r} is not a usable nightly id; use "
                             f"{SAFE_NAME_RULE}")
    out = args.out or Path("reports") / nightly_id
    _check_out(out)
    # a database that cannot take the results, or a baseline run it does not hold, is said
    # now, not after hours of building and measuring (and none is made before the coordinators
    # answer)
    names = [d.name for d in farm.devices]
    baseline = _check_db(args.db, args.baseline)
    if baseline == nightly_id:
        raise EdgebenchError(f"--baseline {args.baseline!r} is this nightly ({nightly_id}); "
                             "give an earlier run, or `previous`")
    if baseline is not None:  # one that measured none of these devices gates nothing
        with Store(args.db) as store:
            nightly.check_baseline(store, baseline, names)
    options = BenchOptions(quick=args.quick, sessions=args.sessions, threads=args.threads)
    if args.nightly_id is not None and args.db.exists() and not empty_file(args.db):
        with Store(args.db) as store:  # a nightly this command cannot take up: said now
            nightly.check_resume(store, nightly_id, str(args.suite), names, options)
    from harness.farm.labgrid import client_for

    for coordinator in sorted({d.labgrid.coordinator for d in farm.devices if d.labgrid}):
        client_for(coordinator)  # a coordinator that is down: one clear error, nothing begun
    report = build_suite(args.suite, args.build_dir, console=console)
    if not report.artifacts:
        raise EdgebenchError(f"{args.suite}: no artifact could be built")
    command = args.command or f"{NIGHTLY_COMMAND} --farm {args.farm} --suite {args.suite}"
    plan = nightly.plan_nightly(farm, report.artifacts, options, nightly_id, str(args.suite),
                                command)
    with Store(args.db) as store:
        if baseline is not None:  # one that shares no measurement with the plan gates nothing
            nightly.check_baseline(store, baseline, names,
                                   nightly.measurement_keys(plan.jobs, plan.options))
        if nightly.begin(store, plan, farm):
            say(f"resuming nightly {nightly_id}")
    try:
        outcomes = nightly.run_devices(args.db, plan, farm, say)
    except BaseException as err:  # Ctrl-C, SIGTERM, a full disk: the places are released
        _stopped(args.db, nightly_id, err, say)
        raise
    try:
        return _gate_and_report(args, plan, report, baseline, names, outcomes, out, say)
    except sqlite3.Error as err:  # the database failed as the run closed: said as it is
        disk = storage_error(args.db, err, f"closing nightly {nightly_id}")
        if disk is None:
            raise
        raise disk from err


def _stopped(db: Path, nightly_id: str, err: BaseException, say: Callable[[str], None]
             ) -> None:
    """Mark the nightly's run as `bench` marks its own: interrupted by Ctrl-C or SIGTERM,
    failed on an error (a full disk); and say the command that resumes it. A `StorageError`
    (the database's disk) is raised again with that command in its one line: marking the run
    may fail on the same disk, and then the run stays `running`, which `--id` takes up all the
    same once its process is gone."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    info, marked = None, False
    try:
        with Store(db) as store:
            info = store.run(nightly_id)  # read first: a full disk lets it be read
            store.finish_run(nightly_id, status)
            marked = True
    except (StoreError, sqlite3.Error):
        if not isinstance(err, StorageError):
            raise
    again = f"`{resume_command(info)}`" if info is not None else \
        f"the same command with --id {nightly_id}"
    if isinstance(err, KeyboardInterrupt) and info is not None:
        say(f"nightly {nightly_id} interrupted: sessions under way are not stored; "
            f"{again} measures what it has not stored")
    elif isinstance(err, StorageError):
        marked_as = f"its run is marked {status}" if marked else \
            "its run stays marked running (the full disk would not take its status)"
        raise StorageError(f"{err}; nightly {nightly_id} stopped, {marked_as}: sessions under way "
                           f"are not stored; {again} measures what it has not stored once "
                           "there is room") from err


def _gate_and_report(args: NightlyArgs, plan: nightly.NightlyPlan, report: Any,
                     baseline: str | None, names: list[str],
                     outcomes: list[nightly.DeviceOutcome], out: Path,
                     say: Callable[[str], None]) -> NightlyResult:
    """Close the run, gate it against its baselines, and write the report into `out`."""
    nightly_id = plan.nightly_id
    with Store(args.db) as store:
        status = nightly.finish(store, plan)
        measured = store.results([nightly_id])
        nightly.mark_measured_nothing(outcomes, measured)
        wanted = nightly.measurement_keys(plan.jobs, plan.options, measured)
        baselines = nightly.previous_baselines(store, nightly_id, wanted) \
            if args.baseline == "previous" else {name: baseline for name in names}
        measurements, differences = _gate(store, baselines, nightly_id, args.threshold,
                                          args.top1_threshold)
        regressions = sum(map(is_regression, measurements))
        code, meaning = nightly.exit_code(outcomes, regressions, args.fail_on_regression,
                                          [entry for entry, _ in report.failures],
                                          [_not_gated_kind(m) for m in measurements
                                           if m.get("not_gated")])
        summary = summary_document(
            nightly_id=nightly_id, baseline=nightly.latest(store, baselines.values()),
            baselines=baselines, status=status, exit_code=code,
            exit_meaning=meaning, fail_on_regression=args.fail_on_regression,
            outcomes=outcomes, measurements=measurements, fingerprint_differences=differences,
            threshold=args.threshold, top1_threshold=args.top1_threshold,
            build_failures=report.failures)
        info = store.run(nightly_id)
        from harness.report.nightly import write_trend

        try:
            write_trend(store, nightly_id, nightly.nightly_ids(store, nightly_id), names, out,
                        threshold=args.threshold, summary=summary,
                        top1_threshold=args.top1_threshold)
            write_summary(out / "summary.json", summary)
            write_junit(out / "junit.xml", summary)
        except OSError as err:  # measured and stored: what is lost is the report alone
            again = f"`{resume_command(info)}`" if info is not None else "the same command"
            raise OutError(
                f"{out}: the nightly's report could not be written ({_reason(err)}); nightly "
                f"{nightly_id} is measured and stored in {args.db} (its gate: exit {code}, "
                f"{meaning}); {again} writes the report again, measuring nothing") from err
    return NightlyResult(nightly_id, code, summary, out)


def _reason(err: OSError) -> str:
    """An OSError's reason and the file it is about, without Python's [Errno N]."""
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{where}"


# What a nightly writes into --out: a folder holding other files is refused, not overwritten.
OUT_FILES = {"summary.json", "junit.xml", "index.html", "trends.png", "trends.pdf",
             "accuracy.png", "accuracy.pdf"}


def _check_out(out: Path) -> None:
    """Refuse, before anything is built or measured, an `--out` that the report could not go
    into: a file, a folder holding other files, or one that cannot be made or written (its
    parent a file, a read-only file system, no space left). It is made here and a file written
    into it, so that a farm measured for hours is not lost to a traceback at the end; both are
    removed again, so that a nightly refused later (a coordinator down) leaves no folder."""
    if out.exists() and not out.is_dir():
        raise EdgebenchError(f"{out}: --out is a file, not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OUT_FILES)
        if foreign:
            raise EdgebenchError(f"{out}: folder holds files a nightly did not write "
                                 f"({foreign[0]}, ...); give an empty or new folder with --out")
    made = [p for p in (out, *out.parents) if not p.exists()]  # the deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".edgebench-probe-") as probe:
            probe.write(b"\0" * 65536)  # a page of the report, not only a folder entry
            probe.flush()
            os.fsync(probe.fileno())  # where space is taken late (ext4), it is taken now
    except OSError as err:
        host = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO)
        raise (OutError if host else EdgebenchError)(
            f"{out}: --out cannot be written ({_reason(err)}); give a folder the report can "
            "be written into") from err
    finally:
        for folder in made:
            with contextlib.suppress(OSError):  # not made, or not empty: left as it is
                folder.rmdir()


def _check_db(db: Path, baseline: str) -> str | None:
    """The baseline run's id (None for `previous`), once the database, if there is one, opens
    as a result database this user can write. An empty file (made by `touch`) is none yet: it
    becomes one when the nightly begins, as a missing one is made then."""
    if baseline != "previous":
        try:
            check_existing(db)
        except StoreError as err:
            raise StoreError(f"--baseline {baseline!r}: {err}") from err
    elif not db.exists() or empty_file(db):
        return None
    with Store(db) as store:
        if baseline == "previous":
            return None
        try:
            return store.resolve_run(baseline)
        except StoreError as err:
            raise StoreError(f"--baseline {baseline!r}: {err}") from err


def _gate(store: Store, baselines: Mapping[str, str | None], run_id: str, threshold: float,
          top1_threshold: float = TOP1_THRESHOLD_POINTS
          ) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """Each measurement of the nightly with its verdict against its device's baseline run
    (`baselines`, by device; `baseline_run` in each row), and the fingerprint differences. A
    measurement that fails with nothing to compare it with (no baseline, or a model new since
    it) never ran ok before: newly failing. One that ran ok with nothing to compare it with, or
    whose speed cannot be judged against its baseline measurement (`compare.UNJUDGED`: another
    ISA, accelerator, precision or timed scope, mixed sessions, a side with no usable session
    median), cannot be gated: it says why in `not_gated`, and is counted apart, not passed in
    silence."""
    from harness.report.compare import NEWLY_FAILING, ONLY_A, ONLY_B, judge_together
    from harness.report.nightly import gate

    results = store.results([run_id])
    errors = {r["job_id"]: r.get("error_message") for r in results if r["status"] != "ok"}
    devices = list(dict.fromkeys([*baselines, *(r["device"] for r in results)]))
    rows: list[dict[str, Any]] = []
    differences: dict[str, list[str]] = {}
    for baseline in dict.fromkeys(b for b in baselines.values() if b not in (None, run_id)):
        assert baseline is not None
        mine = {d for d, b in baselines.items() if b == baseline}
        pairs, diffs = gate(store, baseline, run_id, threshold, top1_threshold)  # compare's rule
        rows += [{**r, "baseline_run": baseline} for r in pairs if r["device"] in mine]
        differences.update({d: keys for d, keys in diffs.items() if d in mine})
    for r in results:
        if baselines.get(r["device"]) in (None, run_id):  # no baseline: figures, no verdicts
            rows.append({"device": r["device"], "model": r["model"], "format": r["format"],
                         "runtime": r["runtime"], "threads": r["threads"], "batch": r["batch"],
                         "isa_b": r["isa"], "job_id_b": r["job_id"], "status_b": r["status"],
                         "sessions_b": r["sessions"], "median_b_ms": r["latency_median_ms"],
                         "verdict": None if r["status"] == "ok" else NEWLY_FAILING,
                         "baseline_run": None})
    judge_together(rows)  # the nightly's measurements as one family, whatever their baselines
    for row in rows:
        if row.get("job_id_b") in errors:
            row["error_b"] = errors[row["job_id_b"]]
        if row.get("status_b") == "ok" and (row.get("verdict") in (None, ONLY_B) or (
                row.get("verdict") in UNJUDGED and not is_regression(row))):
            row["not_gated"] = _why_not_gated(row)
    # by device as the farm lists them; what was in a baseline and not measured now goes last
    rows.sort(key=lambda r: (r.get("verdict") == ONLY_A, devices.index(r["device"])
                             if r["device"] in devices else len(devices)))
    return rows, differences


def _not_gated_kind(row: dict[str, Any]) -> str:
    return UNJUDGED.get(str(row.get("verdict")), nightly.NO_BASELINE)


def _why_not_gated(row: dict[str, Any]) -> str:
    baseline = row.get("baseline_run")
    verdict = row.get("verdict")
    if verdict == NOT_MEASURED:  # ok on both sides, with no session median a log can take
        where = [f"in {baseline}" if not row.get("sessions_a") else "",
                 "now" if not row.get("sessions_b") else ""]
        return (f"{verdict} (no usable session median {' or '.join(filter(None, where))}): "
                f"its speed cannot be judged against {baseline}")
    if verdict in UNJUDGED:
        sides = unjudged_sides(row, str(verdict))
        then_now = "" if sides is None else f" ({sides[0]} in {baseline}, {sides[1]} now)"
        return f"{verdict}{then_now}: its speed cannot be judged against {baseline}"
    if baseline is not None:
        return f"no baseline measurement: not in {baseline}, the baseline of {row['device']}"
    return f"no baseline: no earlier nightly measured {row['device']} ok"
