"""`edgebench export --samples`: the raw samples of a run as a long table, written one session
at a time so that memory holds one session whatever the size of the run."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.errors import EdgebenchError
from harness.report import _open

SAMPLE_COLUMNS = ("job_id", "session", "seq", "latency_ns")


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
                with pq.ParquetWriter(str(out), arrow) as writer:
                    for job_id, session, ns in store.iter_session_samples(job_ids):
                        if ns.size:
                            writer.write_table(pa.table([
                                pa.array([job_id] * ns.size, pa.string()),
                                pa.array(np.full(ns.size, session, np.int32)),
                                pa.array(np.arange(ns.size, dtype=np.int32)),
                                pa.array(ns)], schema=arrow))
                            written += ns.size
                return written
            with (open(out, "w", encoding="utf-8", newline="") if out is not None
                  else _stdout()) as stream:
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


def _stdout() -> Any:
    return contextlib.nullcontext(sys.stdout)
