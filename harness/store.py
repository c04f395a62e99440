"""The SQLite result store (`results/edgebench.db` by default).

Three tables: `runs` (one per `edgebench bench`/`nightly` invocation), `results` (one row per job,
the fields of DESIGN.md plus a few that make rows self-explaining) and `samples` (raw per-iteration
latencies, keyed by job_id). Each finished job is committed on its own, in WAL mode, so killing the
host mid-run loses only the job in flight. The schema version lives in `PRAGMA user_version`; a
database of another version is refused with a message rather than silently misread.

`results/README.md` documents every column; keep the two in step.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import __version__
from harness.errors import StoreError

SCHEMA_VERSION = 1
DEFAULT_DB = Path("results/edgebench.db")

# (name, SQL type). Order is the export order. JSON columns hold JSON text.
RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT NOT NULL"),
    ("job_id", "TEXT PRIMARY KEY"),
    ("started_at", "TEXT"),
    ("device", "TEXT"),
    ("device_kind", "TEXT"),
    ("device_fingerprint", "TEXT"),  # JSON
    ("model", "TEXT"),
    ("model_sha256", "TEXT"),
    ("base_model", "TEXT"),
    ("baseline", "TEXT"),
    ("technique", "TEXT"),
    ("lineage", "TEXT"),  # JSON
    ("precision", "TEXT"),
    ("format", "TEXT"),
    ("runtime", "TEXT"),
    ("runtime_version", "TEXT"),
    ("runtime_options", "TEXT"),  # JSON
    ("threads", "INTEGER"),
    ("batch", "INTEGER"),
    ("status", "TEXT"),
    ("error_kind", "TEXT"),
    ("error_message", "TEXT"),
    ("load_s", "REAL"),
    ("first_inference_ms", "REAL"),
    ("n", "INTEGER"),
    ("latency_median_ms", "REAL"),
    ("latency_mean_ms", "REAL"),
    ("latency_std_ms", "REAL"),
    ("latency_min_ms", "REAL"),
    ("latency_max_ms", "REAL"),
    ("latency_p90_ms", "REAL"),
    ("latency_p95_ms", "REAL"),
    ("latency_p99_ms", "REAL"),
    ("latency_cov", "REAL"),
    ("latency_ci95_low_ms", "REAL"),
    ("latency_ci95_high_ms", "REAL"),
    ("throughput_ips", "REAL"),
    ("stable", "INTEGER"),
    ("stop_reason", "TEXT"),
    ("throttled", "INTEGER"),
    ("rss_before_mb", "REAL"),
    ("peak_rss_mb", "REAL"),
    ("rss_delta_mb", "REAL"),
    ("gpu_mem_mb", "REAL"),
    ("power_w", "REAL"),
    ("energy_mj_per_inference", "REAL"),
    ("accuracy_top1", "REAL"),
    ("accuracy_top5", "REAL"),
    ("accuracy_n", "INTEGER"),
    ("ref_top1_agreement", "REAL"),
    ("ref_max_abs_diff", "REAL"),
    ("host_top1", "REAL"),
    ("host_top5", "REAL"),
    ("parity_top1_agreement", "REAL"),
    ("parity_max_abs_diff", "REAL"),
    ("params", "INTEGER"),
    ("macs", "INTEGER"),
    ("size_bytes", "INTEGER"),
    ("bytes_pushed", "INTEGER"),
    ("dataset", "TEXT"),
    ("timed_scope", "TEXT"),
    ("settings", "TEXT"),  # JSON
    ("state_before", "TEXT"),  # JSON
    ("state_after", "TEXT"),  # JSON
    ("tune", "TEXT"),  # JSON: device tuning applied for the job (before / reached / restored)
    ("orchestration_s", "REAL"),
    ("harness_version", "TEXT"),
)
RESULT_FIELDS = tuple(name for name, _ in RESULT_COLUMNS)
JSON_FIELDS = frozenset(
    {"device_fingerprint", "lineage", "runtime_options", "settings", "state_before", "state_after",
     "tune"}
)

RUN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "TEXT PRIMARY KEY"),
    ("started_at", "TEXT NOT NULL"),
    ("finished_at", "TEXT"),
    ("status", "TEXT NOT NULL"),  # running | finished | interrupted
    ("command", "TEXT"),
    ("suite", "TEXT"),
    ("devices", "TEXT"),  # JSON list
    ("harness_version", "TEXT"),
)


def _create_sql() -> list[str]:
    results = ",\n  ".join(f"{n} {t}" for n, t in RESULT_COLUMNS)
    runs = ",\n  ".join(f"{n} {t}" for n, t in RUN_COLUMNS)
    return [
        f"CREATE TABLE runs (\n  {runs}\n)",
        f"CREATE TABLE results (\n  {results},\n"
        "  FOREIGN KEY (run_id) REFERENCES runs(run_id)\n)",
        "CREATE INDEX results_run ON results(run_id)",
        "CREATE TABLE samples (\n  job_id TEXT NOT NULL REFERENCES results(job_id),\n"
        "  seq INTEGER NOT NULL,\n  latency_ns INTEGER NOT NULL,\n"
        "  PRIMARY KEY (job_id, seq)\n) WITHOUT ROWID",
    ]


def utc_now() -> str:
    """UTC ISO-8601 with microseconds, so runs started within one second still sort in order."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def new_run_id() -> str:
    # Sortable by time, unique enough for one host: 20261128-041723-3f9a
    import secrets

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    started_at: str
    finished_at: str | None
    status: str
    command: str | None
    suite: str | None
    devices: list[str]
    harness_version: str | None


class Store:
    """A handle on one result database. Use as a context manager or call `close()`."""

    def __init__(self, path: Path | str = DEFAULT_DB) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30)
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"{self.path}: cannot open result database ({err})") from err
        self.conn.row_factory = sqlite3.Row
        try:
            self._migrate()
        except sqlite3.DatabaseError as err:
            self.conn.close()
            raise StoreError(f"{self.path}: not a usable result database ({err})") from err

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self.conn.execute("PRAGMA journal_mode=WAL")
            return
        if version != 0:
            raise StoreError(
                f"{self.path}: schema version {version}, this edgebench reads {SCHEMA_VERSION}"
            )
        tables = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        if tables:
            raise StoreError(f"{self.path}: has tables but no edgebench schema version")
        self.conn.execute("PRAGMA journal_mode=WAL")
        with self.conn:
            for stmt in _create_sql():
                self.conn.execute(stmt)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # runs ---------------------------------------------------------------------------------------

    def begin_run(self, command: str, suite: str | None, devices: Sequence[str]) -> str:
        run_id = new_run_id()
        with self.conn:
            self.conn.execute(
                "INSERT INTO runs (run_id, started_at, status, command, suite, devices,"
                " harness_version) VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (run_id, utc_now(), command, suite, json.dumps(list(devices)), __version__),
            )
        return run_id

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?",
                (utc_now(), status, run_id),
            )

    def runs(self) -> list[RunInfo]:
        rows = self.conn.execute("SELECT * FROM runs ORDER BY started_at, rowid").fetchall()
        return [
            RunInfo(**{**dict(r), "devices": json.loads(r["devices"] or "[]")}) for r in rows
        ]

    def resolve_run(self, run: str = "latest") -> str:
        """A run id from `latest`, a full id or a unique prefix of one."""
        if run == "latest":
            row = self.conn.execute(
                "SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no runs yet; run `edgebench bench` first")
            return str(row[0])
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? || '%'", (run,)
        ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise StoreError(f"{self.path}: no run {run!r}")
        raise StoreError(f"{self.path}: run id prefix {run!r} is ambiguous")

    # results ------------------------------------------------------------------------------------

    def add_result(self, record: Mapping[str, Any], samples_ns: Iterable[int] = ()) -> None:
        """Store one finished job and its raw samples in a single transaction."""
        unknown = set(record) - set(RESULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        row = {name: _to_sql(name, record.get(name)) for name in RESULT_FIELDS}
        row["harness_version"] = row["harness_version"] or __version__
        placeholders = ", ".join("?" for _ in RESULT_FIELDS)
        with self.conn:
            self.conn.execute(
                f"INSERT INTO results ({', '.join(RESULT_FIELDS)}) VALUES ({placeholders})",
                [row[name] for name in RESULT_FIELDS],
            )
            self.conn.executemany(
                "INSERT INTO samples (job_id, seq, latency_ns) VALUES (?, ?, ?)",
                ((row["job_id"], i, int(ns)) for i, ns in enumerate(samples_ns)),
            )

    def results(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Result rows as dicts (JSON columns decoded), in the order they were stored."""
        query = "SELECT * FROM results"
        params: list[str] = []
        if run_ids:
            query += f" WHERE run_id IN ({', '.join('?' for _ in run_ids)})"
            params = list(run_ids)
        query += " ORDER BY rowid"  # the order jobs finished in
        return [_from_sql(dict(r)) for r in self.conn.execute(query, params)]

    def samples(self, job_id: str) -> list[int]:
        rows = self.conn.execute(
            "SELECT latency_ns FROM samples WHERE job_id = ? ORDER BY seq", (job_id,)
        )
        return [int(r[0]) for r in rows]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self.conn:
            yield self.conn


def _to_sql(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def _from_sql(row: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_FIELDS:
        if row.get(name) is not None:
            row[name] = json.loads(row[name])
    for name in ("stable", "throttled"):
        if row.get(name) is not None:
            row[name] = bool(row[name])
    return row
