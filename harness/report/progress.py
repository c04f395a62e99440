"""How much of its plan a run holds, and how a report says so: a report of a run that was
interrupted, is still being measured, or ended incomplete must not read like one of a finished
run. The plan is what `edgebench bench` or `nightly` recorded in `runs.plan` (its measurements
and sessions per measurement); for a run that recorded none (an older edgebench's), its rows'
`sessions_planned` say what each stored measurement lacks. The same sentences go to the
console, the HTML page and the paper's captions.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.agent.protocol import RETRYABLE_KINDS
from harness.report.console import is_missing

if TYPE_CHECKING:
    import pandas as pd

    from harness.store import RunInfo

# What a run's status says about it, for "Run X <this>"; a status not named here is shown as is.
STATUS_PHRASES = {
    "finished": "finished",
    "running": "is still being measured",
    "interrupted": "was interrupted",
    "incomplete": "ended incomplete",
    "failed": "failed",
}


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    status: str
    measurements: int  # stored
    measurements_planned: int | None  # None: the run recorded no plan (a nightly, an old bench)
    sessions: int  # stored, of the measurements that did not fail
    sessions_planned: int | None
    resume: str | None  # the command that completes the run; None: it cannot be resumed

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def complete(self) -> bool:
        """Finished, with every planned session of every measurement that did not fail."""
        return self.finished and (self.sessions_planned is None
                                  or self.sessions >= self.sessions_planned) and (
            self.measurements_planned is None or self.measurements >= self.measurements_planned)


def _planned_sessions(plan: dict[str, Any] | None) -> int | None:
    options = (plan or {}).get("options") or {}
    value = options.get("sessions")
    return int(value) if isinstance(value, int) else None


def run_progress(info: RunInfo, df: pd.DataFrame) -> RunProgress:
    """What `df` (the run's result rows) holds of the plan of `info`."""
    jobs = (info.plan or {}).get("jobs")
    per_job = _planned_sessions(info.plan)
    ok = df[df["status"] == "ok"] if len(df) else df
    # a measurement that failed to reach its device is still to measure (`--resume` does),
    # not a measurement held: its planned sessions count, and it does not
    unreached = df[(df["status"] != "ok") & df["error_kind"].isin(RETRYABLE_KINDS)] \
        if len(df) and "error_kind" in df else df.iloc[0:0]
    sessions = int(sum(int(s) for s in ok["sessions"] if not is_missing(s))) if len(ok) else 0
    planned_rows = [int(p) for rows in (ok, unreached) if len(rows)
                    for p in rows["sessions_planned"] if not is_missing(p)]
    planned: int | None = sum(planned_rows) if planned_rows or jobs is not None else None
    if isinstance(jobs, list) and per_job is not None and planned is not None:
        stored = set(df["job_id"]) if len(df) else set()
        planned += per_job * sum(1 for j in jobs if j.get("job_id") not in stored)
    return RunProgress(
        run_id=info.run_id, status=info.status, measurements=len(df) - len(unreached),
        measurements_planned=len(jobs) if isinstance(jobs, list) else None,
        sessions=sessions, sessions_planned=planned, resume=resume_command(info))


def resume_command(info: RunInfo) -> str | None:
    """The command that measures what the run lacks: a nightly's own command with its `--id`,
    a bench's with `--resume`; None for a bench that recorded no plan (nothing to resume)."""
    words = (info.command or "").split()
    if info.is_nightly:
        return " ".join(_without_option(words, "--id") + ["--id", shlex.quote(info.run_id)])
    if info.plan is None:
        return None
    if not words or words[:2] != ["edgebench", "bench"]:
        words = ["edgebench", "bench", "..."]  # the command it was begun with is not known
    return " ".join(_without_option(words, "--resume") + ["--resume", shlex.quote(info.run_id)])


def _without_option(words: list[str], option: str) -> list[str]:
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            out.append(word)
    return out


def _counts(progress: RunProgress) -> str:
    """ "1 of 6 planned sessions stored (1 of 1 measurements)", as far as the plan is known."""
    if progress.measurements == 0:
        planned = (f" of the {progress.measurements_planned} it planned"
                   if progress.measurements_planned else "")
        # not "no measurement is stored": the row of one that could not reach its device is
        # (`db stats` counts it), though it is no measurement and a resume measures it
        return f"nothing is measured yet{planned}"
    sessions = (f"{progress.sessions} of {progress.sessions_planned} planned sessions stored"
                if progress.sessions_planned is not None
                else f"{progress.sessions} session{'s' if progress.sessions != 1 else ''} stored")
    measurements = (f"{progress.measurements} of {progress.measurements_planned} measurements"
                    if progress.measurements_planned is not None
                    else f"{progress.measurements} measurement"
                    f"{'s' if progress.measurements != 1 else ''}")
    return f"{sessions} ({measurements})"


def state(progress: RunProgress) -> str:
    """ "was interrupted", "is still being measured", ...: how the run stands."""
    return STATUS_PHRASES.get(progress.status, f"has status {progress.status!r}")


def caveat(progress: RunProgress) -> str | None:
    """Plain sentences that say a run is not complete, what it holds and what completes it; None
    for a complete run."""
    if progress.complete:
        return None
    if progress.finished:  # finished, yet short of its plan (sessions of a lost device)
        head = f"Run {progress.run_id} finished short of its plan: {_counts(progress)}."
    else:
        head = f"Run {progress.run_id} {state(progress)}: {_counts(progress)}."
    what = " Its figures are of the sessions stored so far." if progress.measurements else ""
    return f"{head}{what} {_completion(progress)}"


def in_brief(progress: RunProgress) -> str | None:
    """ "was interrupted: 1 of 6 planned sessions stored (1 of 1 measurements)", for a table's
    caption after "run X, which"; None for a complete run."""
    if progress.complete:
        return None
    how = "finished short of its plan" if progress.finished else state(progress)
    return f"{how}: {_counts(progress)}"


def _completion(progress: RunProgress) -> str:
    if progress.resume is None:
        return ("It recorded no plan, so it cannot be resumed: bench it anew for complete "
                "results.")
    if progress.status == "running":
        return (f"If its process is gone (killed), `{progress.resume}` completes it; report "
                "again when it has finished.")
    return f"`{progress.resume}` completes it."


__all__ = ["RunProgress", "caveat", "in_brief", "resume_command", "run_progress", "state"]
