"""`edgebench export`: one run's tables as csv, json or parquet. The plain export is the run's
`results` rows; `--sessions` is one row per session and `--operators` the top operators of each
profile, each row led by the columns that name its measurement, so that it can be grouped without
a join; `--samples` is the raw samples as a long table, written one session at a time so that
memory holds one session whatever the size of the run. A file (`--out`) is written under a
temporary name beside it and renamed at the end, so that an interrupted or failed export leaves
the file that was there before, never a part of the new one that reads as whole (a CSV cut at a
line end does)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness import results as schema
from harness.errors import EdgebenchError
from harness.report import _open

SAMPLE_COLUMNS = ("job_id", "session", "seq", "latency_ns")

# What names a measurement, copied from its `results` row onto each of its sessions and operators.
MEASUREMENT_KEYS = ("run_id", "job_id", "device", "model", "baseline", "technique", "precision",
                    "format", "runtime", "accelerator", "threads", "batch")
_KEY_COLUMNS = tuple(c for n in MEASUREMENT_KEYS for c in schema.RESULT_COLUMNS if c.name == n)
# `fingerprint`: the device the session ran on (`Store.sessions`), the measurement's where the
# session kept none of its own (stored before schema 5, or failed before probing the device).
SESSION_EXPORT_COLUMNS = (
    *_KEY_COLUMNS, *(c for c in schema.SESSION_COLUMNS if c.name not in ("job_id", "samples")),
    schema.Column("fingerprint", "json"))
_PROFILE_SUMMARY = ("tool", "timed", "iterations", "total_ms", "placement")
OPERATOR_EXPORT_COLUMNS = (
    *_KEY_COLUMNS, *(c for c in schema.PROFILE_COLUMNS if c.name in _PROFILE_SUMMARY),
    schema.Column("cpu_fallback", "bool"),
    *(c for c in schema.PROFILE_OP_COLUMNS if c.name != "job_id"))


def export_table(db: Path, run: str, table: str, fmt: str, out: Path | None = None) -> int:
    """Write one run's `results`, `sessions` or `operators` rows (columns above); returns the
    rows written. A run with none writes the header alone (an empty list in JSON)."""
    with _open(db) as store:
        records = store.results([store.resolve_run(run)])
        jobs = [r["job_id"] for r in records]
        if table == "sessions":
            rows, columns = _session_rows(store.sessions(jobs), records), SESSION_EXPORT_COLUMNS
        elif table == "operators":
            rows = _operator_rows(store.profiles(jobs), store.profile_ops(jobs), records)
            columns = OPERATOR_EXPORT_COLUMNS
        else:
            rows, columns = records, schema.RESULT_COLUMNS
    write_rows(rows, columns, fmt, out)
    return len(rows)


def _session_rows(sessions: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    by_job = {r["job_id"]: r for r in records}
    order = {job: i for i, job in enumerate(by_job)}  # the results export's: as first stored
    rows = []
    for session in sorted(sessions, key=lambda s: (order[s["job_id"]], s["session"])):
        record = by_job[session["job_id"]]
        rows.append({**{k: record[k] for k in MEASUREMENT_KEYS}, **session,
                     "fingerprint": session["fingerprint"] or record["device_fingerprint"]})
    return rows


def _operator_rows(profiles: Sequence[dict[str, Any]], ops: Sequence[dict[str, Any]],
                   records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    by_job = {r["job_id"]: r for r in records}
    profile_of = {p["job_id"]: p for p in profiles}
    order = {job: i for i, job in enumerate(by_job)}
    rows = []
    for op in sorted(ops, key=lambda o: (order[o["job_id"]], o["rank"])):
        record, profile = by_job[op["job_id"]], profile_of.get(op["job_id"], {})
        placement = profile.get("placement")
        rows.append({**{k: record[k] for k in MEASUREMENT_KEYS},
                     **{k: profile.get(k) for k in _PROFILE_SUMMARY},
                     "cpu_fallback": bool(placement.get("cpu_fallback")) if placement else None,
                     **op})
    return rows


def write_rows(rows: Sequence[dict[str, Any]], columns: Sequence[schema.Column], fmt: str,
               out: Path | None) -> None:
    """Rows as a table of `columns`: JSON keeps the JSON columns as nested objects, CSV and
    parquet hold them as JSON text; CSV and JSON go to stdout when `out` is None."""
    from harness.report.frame import frame_from_rows

    names = [c.name for c in columns]
    try:
        if fmt == "json":
            text = json.dumps([{n: r.get(n) for n in names} for r in rows], indent=1,
                              ensure_ascii=False) + "\n"
            if out is None:
                sys.stdout.write(text)
            else:
                with written_whole(out) as part:
                    part.write_text(text, encoding="utf-8")
            return
        df = frame_from_rows(rows, columns)
        for name in (c.name for c in columns if c.kind == "json"):
            df[name] = [None if v is None else json.dumps(v, sort_keys=True) for v in df[name]]
        if out is None:
            df.to_csv(sys.stdout, index=False)
            return
        with written_whole(out) as part:
            if fmt == "csv":
                df.to_csv(part, index=False)
            else:
                df.to_parquet(part, index=False)
    except BrokenPipeError:
        raise  # the reader of stdout stopped early (`| head`): not an error of ours
    except OSError as err:
        where = out if out is not None else "standard output"
        raise EdgebenchError(f"{where}: cannot write the export ({err})") from err


def export_samples(db: Path, run: str, fmt: str, out: Path | None = None) -> int:
    """Write the raw samples of one run as a long table (SAMPLE_COLUMNS), one session at a time,
    so that memory holds one session whatever the size of the run; returns the rows written.

    Parquet gets one row group per session; CSV goes to `out` or stdout. Sessions whose samples
    were pruned (`edgebench db prune`) have no rows.
    """
    if fmt not in ("csv", "parquet"):
        raise EdgebenchError(f"samples export as {fmt!r}: use csv or parquet, the long table "
                             "would be one JSON document held in memory")
    if fmt == "parquet" and out is None:
        raise EdgebenchError("parquet is a binary format; give an output file (--out FILE)")
    arrow = pa.schema([("job_id", pa.string()), ("session", pa.int32()), ("seq", pa.int32()),
                       ("latency_ns", pa.int64())])
    written = 0
    with _open(db) as store:
        run_id = store.resolve_run(run)
        job_ids = [r["job_id"] for r in store.results([run_id])]
        try:
            if fmt == "parquet":
                assert out is not None
                with written_whole(out) as part, pq.ParquetWriter(str(part), arrow) as writer:
                    for job_id, session, ns in store.iter_session_samples(job_ids):
                        if ns.size:
                            writer.write_table(pa.table([
                                pa.array([job_id] * ns.size, pa.string()),
                                pa.array(np.full(ns.size, session, np.int32)),
                                pa.array(np.arange(ns.size, dtype=np.int32)),
                                pa.array(ns)], schema=arrow))
                            written += ns.size
                return written
            with contextlib.ExitStack() as stack:
                if out is None:
                    stream = sys.stdout
                else:
                    part = stack.enter_context(written_whole(out))
                    stream = stack.enter_context(open(part, "w", encoding="utf-8", newline=""))
                stream.write(",".join(SAMPLE_COLUMNS) + "\n")
                for job_id, session, ns in store.iter_session_samples(job_ids):
                    prefix = f"{job_id},{session},"
                    stream.writelines(f"{prefix}{i},{v}\n" for i, v in enumerate(ns.tolist()))
                    written += ns.size
        except BrokenPipeError:
            raise  # the reader of stdout stopped early (`| head`): not an error of ours
        except OSError as err:
            where = out if out is not None else "standard output"
            raise EdgebenchError(f"{where}: cannot write the samples export ({err})") from err
    return written


@contextlib.contextmanager
def written_whole(out: Path) -> Iterator[Path]:
    """A temporary file beside `out` to write the export into; renamed to `out` once the block
    ends without an error, deleted whatever stopped it (Ctrl-C included). The file gets the
    mode a file written in place would have: that of the file it replaces, else what the umask
    leaves (the temporary file is private, and a group's shared export became so). A link is
    written through, as the shell's `>` writes, not replaced by a file of its own."""
    out = Path(os.path.realpath(out)) if os.path.islink(out) else Path(out)
    if out.is_dir():
        raise EdgebenchError(f"--out {out}: is a folder; give the file to write")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    except OSError as err:  # said of the folder: the temporary name means nothing to the user
        raise OSError(err.errno, f"{err.strerror}: {out.parent}") from None
    os.close(fd)
    part = Path(name)
    try:
        yield part
        part.chmod(_mode_for(out))
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)


def _mode_for(out: Path) -> int:
    """The permission bits of the file at `out`, else those a new file gets under the umask."""
    try:
        return out.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
