"""The SQLite result store (`results/edgebench.db` by default).

Six tables, their columns defined in `harness/results.py`: `runs` (one per `edgebench bench` or
`nightly` invocation), `results` (one row per measurement: artifact x runtime x device), `sessions`
(one row per session of a measurement, with its raw per-iteration latencies as one compact blob),
`fingerprints` (each device fingerprint once, which sessions name by its sha256), and for
measurements benchmarked with `--profile`, `profiles` (the profile session: the whole
profile as compressed JSON, time per operator type, placement) and `profile_ops` (its top
operators). Each finished session is committed on its own, with its measurement's row brought up to
date in the same transaction, in WAL mode, so killing the host mid-run loses only the session in
flight. The schema version lives in `PRAGMA user_version`; a database of an older version is
upgraded in place in one transaction, one of a newer version is refused with a message rather than
silently misread.

Raw samples are stored exactly (integer nanoseconds) as little-endian int64 with the bytes of each
value regrouped by significance (the high bytes of latencies are nearly constant) and then zlib-
compressed: about 3 bytes a sample instead of a row each.

`results/README.md` documents every column; a test keeps the two in step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness import __version__
from harness.errors import StoreError
from harness.results import (
    BOOL_FIELDS,
    FINGERPRINT_COLUMNS,
    JSON_FIELDS,
    PROFILE_COLUMNS,
    PROFILE_FIELDS,
    PROFILE_OP_COLUMNS,
    PROFILE_OP_FIELDS,
    RESULT_COLUMNS,
    RESULT_FIELDS,
    RUN_COLUMNS,
    SESSION_COLUMNS,
    SESSION_FIELDS,
    Column,
    decode_profile,
    largest_first,
)

SCHEMA_VERSION = 6
# Schemas read as they are where the file cannot be upgraded (read-only commands): 3 lacks
# `runs.plan` and 3 and 4 the sessions' own fingerprints, which nothing that reads needs (their
# sessions read with none, as a resume takes them), so a report of an older database on a
# read-only share works before anything writes there.
READABLE_VERSIONS = (3, 4, 5, SCHEMA_VERSION)
DEFAULT_DB = Path("results/edgebench.db")


def encode_samples(samples_ns: Iterable[int]) -> bytes:
    """Raw nanosecond samples as a compact, exact blob (see the module doc)."""
    arr = np.asarray(list(samples_ns) if not isinstance(samples_ns, np.ndarray) else samples_ns,
                     dtype="<i8")
    shuffled = arr.view(np.uint8).reshape(-1, 8).T.copy()
    return zlib.compress(shuffled.tobytes(), 6)


def decode_samples(blob: bytes | None) -> np.ndarray:
    if not blob:
        return np.empty(0, dtype=np.int64)
    raw = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
    return raw.reshape(8, -1).T.copy().view("<i8").reshape(-1).astype(np.int64)


def _table_sql(name: str, columns: Sequence[Column], extra: str = "",
               if_not_exists: bool = False) -> str:
    body = ",\n  ".join(f"{c.name} {c.sql}" for c in columns)
    exists = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {exists}{name} (\n  {body}{extra}\n)"


def _profile_sql(if_not_exists: bool = False) -> list[str]:
    """The tables of schema 3: profile sessions and their top operators."""
    return [
        _table_sql("profiles", PROFILE_COLUMNS, if_not_exists=if_not_exists),
        _table_sql("profile_ops", PROFILE_OP_COLUMNS, ",\n  PRIMARY KEY (job_id, rank)",
                   if_not_exists=if_not_exists),
    ]


def _fingerprint_sql(if_not_exists: bool = False) -> str:
    """The table of schema 5: each distinct device fingerprint once, for the sessions."""
    return _table_sql("fingerprints", FINGERPRINT_COLUMNS, if_not_exists=if_not_exists)


def _create_sql() -> list[str]:
    return [
        _table_sql("runs", RUN_COLUMNS),
        _table_sql("results", RESULT_COLUMNS,
                   ",\n  FOREIGN KEY (run_id) REFERENCES runs(run_id)"),
        "CREATE INDEX results_run ON results(run_id)",
        _table_sql("sessions", SESSION_COLUMNS, ",\n  PRIMARY KEY (job_id, session)"),
        *_profile_sql(),
        _fingerprint_sql(),
    ]


def fingerprint_sha256(fingerprint: Mapping[str, Any]) -> tuple[str, str]:
    """A fingerprint's key in `fingerprints` and the JSON stored under it: the sha256 of that
    JSON (keys sorted, so that one fingerprint has one key however its dict was built)."""
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest(), text


def utc_now() -> str:
    """UTC ISO-8601 with microseconds, so runs started within one second still sort in order."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def new_run_id() -> str:
    # Sortable by time, unique enough for one host: 20261128-041723-3f9a
    import secrets

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class StorageError(StoreError):
    """The disk under the result database failed it (no space left, an I/O error): no fault of
    the file nor of the command's input, so exit 3, as for a device that cannot be used
    (harness/errors.py `TransportError`), not 2."""

    exit_code = 3


# SQLite's primary result codes (an extended code keeps them in its low byte)
_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def storage_error(path: Path | str, err: BaseException, doing: str) -> StorageError | None:
    """`err` in words, naming the database file, when it is the disk's fault: no space left, or
    an I/O error (SQLite's IOERR, or an OSError such as ENOSPC); None otherwise. `doing`: what
    was being done ("opening it", "storing a session"). SQLite says "disk I/O error" also when
    it cannot grow the -shm file it opens a WAL database with on a full disk."""
    import errno

    if isinstance(err, OSError):
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageError(f"{path}: no space left on its disk while {doing} "
                                f"({err.strerror}); free some and run the command again")
        if err.errno == errno.EIO:
            return StorageError(f"{path}: disk I/O error while {doing} ({err.strerror})")
        return None
    code = getattr(err, "sqlite_errorcode", None)
    if not isinstance(err, sqlite3.Error) or not isinstance(code, int):
        return None
    name = getattr(err, "sqlite_errorname", "") or str(code)
    if code & 0xFF == _SQLITE_FULL:
        return StorageError(f"{path}: no space left on its disk while {doing} ({err}); free "
                            "some and run the command again")
    if code & 0xFF == _SQLITE_IOERR:
        return StorageError(f"{path}: disk I/O error while {doing} ({name}); is its disk full "
                            "or failing?")
    return None


def check_existing(path: Path) -> None:
    """Refuse, in one line naming it, a path that holds no result database for a command that
    reads or maintains one: nothing there, or an empty file (made by `touch`, a copy that
    failed), which SQLite takes for an empty database and a writer would make one of."""
    if path.is_dir():
        raise StoreError(f"{path}: is a folder, not a result database; give the database file")
    if not path.is_file():
        raise no_database(path)
    if empty_file(path):
        raise StoreError(f"{path}: the file is empty (0 bytes), not an edgebench result database")


def no_database(path: Path) -> StoreError:
    """The error of a reading command given a database path where there is none: with where it
    looked, for a relative path (the default `results/edgebench.db`) is taken from the working
    folder, and from another folder than the project's it read as if the results had gone."""
    looked = "" if path.is_absolute() else f" (looked for {path.absolute()})"
    return StoreError(f"{path}: no result database here{looked}; `edgebench bench` makes one, "
                      "and --db names another")


def empty_file(path: Path) -> bool:
    """Whether `path` is a file of 0 bytes with no write-ahead log beside it (a database's
    pages may all be in its log yet): where `bench` and `nightly` may make their database."""
    wal = path.with_name(path.name + "-wal")
    return path.is_file() and path.stat().st_size == 0 and not (
        wal.is_file() and wal.stat().st_size > 0)


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open for reading only, leaving no file behind and hiding nothing.

    A WAL database is read with its -shm file beside it, which SQLite makes where it is missing
    and only a connection allowed to write can remove again. Where file and folder may be
    written, it is opened so (never created) with writes refused, and leaves no -wal or -shm
    behind. Otherwise: where a write-ahead log with changes lies beside it (a bench is writing,
    or was killed), it is read through that log, read-only, which needs its -shm (made where
    the folder allows; a folder that does not and has none is refused, naming the log, rather
    than showing the file without its latest results); where there is none, the file holds
    everything and is read as immutable, making nothing: a -wal and -shm made by a reader who
    may not write the file would be its owner's to remove, and until then stop every writer."""
    check_existing(path)
    folder = path.resolve().parent
    folder_writable = os.access(folder, os.W_OK | os.X_OK)
    if folder_writable and os.access(path, os.W_OK):
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, timeout=30,
                               isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        return conn
    wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
    if not (wal.is_file() and wal.stat().st_size > 0):
        return sqlite3.connect(path.resolve().as_uri() + "?mode=ro&immutable=1", uri=True,
                               timeout=30, isolation_level=None)
    if not folder_writable and not shm.is_file():
        raise StoreError(f"{path}: its write-ahead log {wal.name} holds results not yet in the "
                         f"file, and they cannot be read here without {shm.name} ({folder} is "
                         "read-only); open it once where it may be written, or copy the files "
                         "to such a folder")
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30,
                           isolation_level=None)


def check_folder(path: Path) -> None:
    """Refuse a database path whose folder is not there, but for the default database's own
    (`results/`, made on first use): a mistyped `--db` would start a new database where nobody
    looks for it."""
    if path != DEFAULT_DB and not path.parent.is_dir():
        raise StoreError(f"{path}: no folder {path.parent} for a result database; make it first, "
                         "or check the --db path")


def _check_writable(path: Path) -> None:
    """SQLite writes the file and, beside it, its journal: on read-only storage it says only
    "unable to open database file", which reads as a broken database."""
    for target in (path, path.resolve().parent):
        if target.exists() and not os.access(target, os.W_OK):
            readers = " (report, export, compare and db stats can read it)" if path.exists() \
                else ""
            raise StoreError(f"{path}: cannot write the result database: {target} is read-only "
                             f"here{readers}")


# How the command a nightly's run records begins (a bench's begins "edgebench bench").
NIGHTLY_COMMAND = "edgebench nightly"


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
    plan: dict[str, Any] | None = None  # what `bench --resume` must find again (bench runs)

    @property
    def is_nightly(self) -> bool:
        return (self.command or "").startswith(NIGHTLY_COMMAND)


class Store:
    """A handle on one result database. Use as a context manager or call `close()`."""

    def __init__(self, path: Path | str = DEFAULT_DB, *, readonly: bool = False,
                 create: bool = True) -> None:
        """`readonly`: for commands that only read; never creates, upgrades or writes the file,
        and works on read-only storage. `create=False`: for commands that maintain a database
        (`db delete`, `vacuum`, `prune`); an SQLite file without edgebench's schema is refused
        as it is, not made one."""
        self.path = Path(path)
        self._create = create
        self._known_columns: dict[str, set[str]] = {}
        try:
            if readonly:
                self.conn = _connect_readonly(self.path)
            else:
                if self.path.is_dir():
                    raise StoreError(f"{self.path}: is a folder, not a result database; give "
                                     "the database file (e.g. results/edgebench.db)")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                _check_writable(self.path)
                # autocommit: every write goes through `_tx`, which says where one starts
                self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise storage_error(self.path, err, "opening it") or StoreError(
                f"{self.path}: cannot open result database ({err})") from err
        self.conn.row_factory = sqlite3.Row
        try:
            if readonly:
                self._check_version()
            else:
                self._migrate()
        except StoreError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as err:
            self.conn.close()
            # a full or failing disk is said as such: the file may be fine
            raise storage_error(self.path, err, "opening it") or StoreError(
                f"{self.path}: not a usable result database ({err})") from err

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock at its start (so two processes creating
        or upgrading one database take turns instead of failing)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            # SQLite has rolled back already after some errors (a full disk): a ROLLBACK then
            # fails, and its error would hide the one that counts
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self) -> None:
        version = self._version()
        if version not in READABLE_VERSIONS:
            self.conn.close()
            readable = " and ".join(map(str, READABLE_VERSIONS))
            what = ("no edgebench schema version" if version == 0 else
                    f"schema version {version}, newer than this edgebench reads ({readable}); "
                    "read it with the edgebench that wrote it, or a newer one"
                    if version > max(READABLE_VERSIONS) else
                    f"schema version {version}, this edgebench reads {readable} as they are; "
                    "open it once where it is writable (e.g. `edgebench bench`) to upgrade it")
            raise StoreError(f"{self.path}: {what}")

    def _migrate(self) -> None:
        if self._version() != SCHEMA_VERSION:
            with self._tx():
                version = self._version()  # again, under the lock: another process may have won
                if version == 0 and not self._create:
                    raise StoreError(f"{self.path}: no edgebench schema version: not an edgebench "
                                     "result database")
                if version == 0:
                    tables = self.conn.execute(
                        "SELECT name FROM sqlite_master WHERE type='table'").fetchall()
                    if tables:
                        raise StoreError(f"{self.path}: has tables but no edgebench schema "
                                         "version")
                    for stmt in _create_sql():
                        self.conn.execute(stmt)
                elif 1 <= version < SCHEMA_VERSION:
                    # each step from its version on: 1 -> 2 -> ... -> SCHEMA_VERSION
                    for upgrade in UPGRADES[version - 1:]:
                        upgrade(self.conn)
                elif version != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {version}, this edgebench "
                                     f"reads {SCHEMA_VERSION} and older")
                self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._use_wal()

    def _use_wal(self, timeout_s: float = 30.0) -> None:
        """Switch the file to write-ahead logging (it stays so). Switching needs the database to
        itself and SQLite does not wait for that, so processes that created the file together
        retry here until the first one has switched it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # runs ---------------------------------------------------------------------------------------

    def begin_run(self, command: str, suite: str | None, devices: Sequence[str],
                  run_id: str | None = None, plan: Mapping[str, Any] | None = None) -> str:
        """A new run; with `run_id` (a nightly's, or a bench's being resumed) that run, taken up
        again if it exists (its command, suite, devices and plan stay as they were)."""
        if run_id is not None and self.conn.execute(
                "SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
            with self._tx():
                self.conn.execute("UPDATE runs SET status = 'running', finished_at = NULL "
                                  "WHERE run_id = ?", (run_id,))
            return run_id
        run_id = run_id or new_run_id()
        with self._tx():
            self.conn.execute(
                "INSERT INTO runs (run_id, started_at, status, command, suite, devices,"
                " harness_version, plan) VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                (run_id, utc_now(), command, suite, json.dumps(list(devices)), __version__,
                 _to_sql("plan", plan)),
            )
        return run_id

    def set_run_plan(self, run_id: str, plan: Mapping[str, Any]) -> None:
        with self._tx():
            self.conn.execute("UPDATE runs SET plan = ? WHERE run_id = ?",
                              (_to_sql("plan", plan), run_id))

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        with self._tx():
            done = self.conn.execute(
                "UPDATE runs SET finished_at = ?, status = ? WHERE run_id = ?",
                (utc_now(), status, run_id),
            )
            if not done.rowcount:
                raise self._deleted(run_id)

    def _deleted(self, run_id: str) -> StoreError:
        """What a run's writer is told when the run is gone from under it: its rows would be
        stored where no command finds or deletes them."""
        return StoreError(f"{self.path}: run {run_id} is no longer in the database (deleted by "
                          "`edgebench db delete --force` while it was measured); nothing more "
                          "of it is stored")

    def runs(self) -> list[RunInfo]:
        """Every run in the order they were begun in this store (`RUN_ORDER`)."""
        rows = self.conn.execute(f"SELECT * FROM runs ORDER BY {RUN_ORDER}").fetchall()
        return [_run_info(r) for r in rows]

    def run(self, run_id: str) -> RunInfo | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _run_info(row) if row is not None else None

    def resolve_run(self, run: str = "latest") -> str:
        """A run id from `latest`, a full id or a unique prefix of one (not an empty one, which
        every id begins with: an unset `$RUN` in a script must not name a store's only run)."""
        if not run.strip():
            raise StoreError(f"{self.path}: an empty run id; give a run id, a prefix of one or "
                             "'latest'")
        if run == "latest":
            row = self.conn.execute(
                f"SELECT run_id FROM runs ORDER BY {RUN_ORDER} DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise StoreError(f"{self.path}: no runs yet; run `edgebench bench` first")
            return str(row[0])
        # A prefix compared as text: LIKE would read `%` and `_` in it as wildcards.
        rows = self.conn.execute(
            "SELECT run_id FROM runs WHERE substr(run_id, 1, length(?1)) = ?1", (run,)
        ).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise StoreError(f"{self.path}: no run {run!r}")
        ids = sorted(str(r[0]) for r in rows)
        shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
        raise StoreError(f"{self.path}: run id prefix {run!r} is ambiguous: {len(ids)} runs "
                         f"begin so ({shown})")

    # results ------------------------------------------------------------------------------------

    def add_session(self, session: Mapping[str, Any], samples_ns: Iterable[int],
                    measurement: Mapping[str, Any]) -> None:
        """Store one finished session with its raw samples, and its measurement's row as it
        stands with this session, in a single transaction. The session's `fingerprint` (the
        device it ran on) goes into `fingerprints`, once for all the sessions that share it."""
        unknown = ((set(session) - {*SESSION_FIELDS, "fingerprint"})
                   | (set(measurement) - set(RESULT_FIELDS)))
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        srow = {name: _to_sql(name, session.get(name)) for name in SESSION_FIELDS}
        srow["samples"] = encode_samples(samples_ns)
        fingerprint = session.get("fingerprint")
        with self._tx():
            run_id = measurement.get("run_id")
            if not self.conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise self._deleted(str(run_id))
            if fingerprint:
                srow["fingerprint_sha256"], text = fingerprint_sha256(fingerprint)
                self.conn.execute("INSERT OR IGNORE INTO fingerprints (sha256, fingerprint) "
                                  "VALUES (?, ?)", (srow["fingerprint_sha256"], text))
            self._put_result(measurement)
            self.conn.execute(
                f"INSERT INTO sessions ({', '.join(SESSION_FIELDS)}) "
                f"VALUES ({', '.join('?' for _ in SESSION_FIELDS)})",
                [srow[name] for name in SESSION_FIELDS])

    def add_profile(self, profile: Mapping[str, Any], ops: Sequence[Mapping[str, Any]],
                    measurement: Mapping[str, Any]) -> None:
        """Store a measurement's profile session and its top operators, and its row as it stands
        with the profile's placement, in a single transaction; a second profile of one
        measurement replaces the first."""
        unknown = ((set(profile) - set(PROFILE_FIELDS)) | (set(measurement) - set(RESULT_FIELDS))
                   | {k for op in ops for k in op if k not in PROFILE_OP_FIELDS})
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        job_id = profile["job_id"]
        with self._tx():
            self._put_result(measurement)
            self.conn.execute("DELETE FROM profile_ops WHERE job_id = ?", (job_id,))
            self.conn.execute("DELETE FROM profiles WHERE job_id = ?", (job_id,))
            self.conn.execute(
                f"INSERT INTO profiles ({', '.join(PROFILE_FIELDS)}) "
                f"VALUES ({', '.join('?' for _ in PROFILE_FIELDS)})",
                [_to_sql(n, profile.get(n)) for n in PROFILE_FIELDS])
            self.conn.executemany(
                f"INSERT INTO profile_ops ({', '.join(PROFILE_OP_FIELDS)}) "
                f"VALUES ({', '.join('?' for _ in PROFILE_OP_FIELDS)})",
                [[_to_sql(n, op.get(n)) for n in PROFILE_OP_FIELDS] for op in ops])

    def profiles(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """`profiles` rows of these measurements, without the whole profile (`profile_data`)."""
        names = [n for n in PROFILE_FIELDS if n != "data"]
        rows = []
        for chunk in _chunks(list(job_ids)):
            rows += self.conn.execute(
                f"SELECT {', '.join(names)} FROM profiles WHERE job_id IN "
                f"({', '.join('?' for _ in chunk)}) ORDER BY rowid", chunk).fetchall()
        profiles = [_from_sql(dict(r)) for r in rows]
        for p in profiles:  # stored with sorted keys: largest first again, as documented
            if p.get("op_types"):
                p["op_types"] = largest_first(p["op_types"])
        return profiles

    def profile_ops(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Top operators of these measurements' profiles, by job and rank."""
        rows = []
        for chunk in _chunks(list(job_ids)):
            rows += self.conn.execute(
                f"SELECT {', '.join(PROFILE_OP_FIELDS)} FROM profile_ops WHERE job_id IN "
                f"({', '.join('?' for _ in chunk)}) ORDER BY job_id, rank", chunk).fetchall()
        return [_from_sql(dict(r)) for r in rows]

    def profile_data(self, job_id: str) -> dict[str, Any] | None:
        """The whole profile of a measurement (every operator, the engine's raw events)."""
        row = self.conn.execute("SELECT data FROM profiles WHERE job_id = ?",
                                (job_id,)).fetchone()
        return decode_profile(row[0]) if row else None

    def forget_sessions(self, job_id: str, sessions: Sequence[int]) -> None:
        """Delete sessions of a measurement: failures of a transport that a resumed nightly is
        about to measure again (its row is brought up to date by the sessions that follow)."""
        # A fingerprint only these sessions named stays until `vacuum`: finding it here would
        # read the sessions again, on the path of every resume.
        with self._tx():
            self.conn.executemany("DELETE FROM sessions WHERE job_id = ? AND session = ?",
                                  [(job_id, s) for s in sessions])

    def add_result(self, record: Mapping[str, Any]) -> None:
        """Store a measurement row that has no sessions (it failed before any could run)."""
        unknown = set(record) - set(RESULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        with self._tx():
            self._put_result(record)

    def _put_result(self, record: Mapping[str, Any]) -> None:
        row = {name: _to_sql(name, record.get(name)) for name in RESULT_FIELDS}
        row["harness_version"] = row["harness_version"] or __version__
        updates = ", ".join(f"{n} = excluded.{n}" for n in RESULT_FIELDS if n != "job_id")
        self.conn.execute(
            f"INSERT INTO results ({', '.join(RESULT_FIELDS)}) "
            f"VALUES ({', '.join('?' for _ in RESULT_FIELDS)}) "
            f"ON CONFLICT (job_id) DO UPDATE SET {updates}",
            [row[name] for name in RESULT_FIELDS])

    def results(self, run_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Result rows as dicts (JSON columns decoded), in the order they were first stored."""
        query = "SELECT * FROM results"
        params: list[str] = []
        if run_ids:
            query += f" WHERE run_id IN ({', '.join('?' for _ in run_ids)})"
            params = list(run_ids)
        query += " ORDER BY rowid"
        return [_from_sql(dict(r)) for r in self.conn.execute(query, params)]

    def find_results(self, **equal: Any) -> list[dict[str, Any]]:
        """Result rows whose columns equal the values given (None matches NULL), oldest first:
        e.g. every ok measurement of one file on one device, for its run-to-run spread."""
        unknown = set(equal) - set(RESULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown result fields: {sorted(unknown)}")
        where = " AND ".join(f"{name} IS ?" for name in equal) or "1"
        rows = self.conn.execute(f"SELECT * FROM results WHERE {where} ORDER BY rowid",
                                 [_to_sql(n, v) for n, v in equal.items()])
        return [_from_sql(dict(r)) for r in rows]

    def sessions(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Session rows of these measurements, without their samples, by job and session, each
        with its `fingerprint` (None for sessions stored before schema 5: their measurement's
        `device_fingerprint` is theirs). A column that a file of an older schema, read as it is,
        lacks reads as None."""
        present = self._columns("sessions")
        names = [f"s.{n}" if n in present else f"NULL AS {n}" for n in SESSION_FIELDS
                 if n != "samples"]
        # schema 5 added the column and the table it keys together
        joined = "fingerprint_sha256" in present
        names.append("f.fingerprint" if joined else "NULL AS fingerprint")
        source = ("sessions s LEFT JOIN fingerprints f ON f.sha256 = s.fingerprint_sha256"
                  if joined else "sessions s")
        rows = []
        for chunk in _chunks(list(job_ids)):
            rows += self.conn.execute(
                f"SELECT {', '.join(names)} FROM {source} WHERE s.job_id IN "
                f"({', '.join('?' for _ in chunk)}) ORDER BY s.job_id, s.session",
                chunk).fetchall()
        return [_from_sql(dict(r)) for r in rows]

    def _columns(self, table: str) -> set[str]:
        """The columns `table` has: fixed once the store is open (a writer upgraded it then, a
        reader never does), so read once."""
        if table not in self._known_columns:
            self._known_columns[table] = {
                r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        return self._known_columns[table]

    def session_samples(self, job_id: str) -> list[np.ndarray]:
        """Raw samples (ns) of each session of a measurement, in session order."""
        rows = self.conn.execute(
            "SELECT samples FROM sessions WHERE job_id = ? ORDER BY session", (job_id,))
        return [decode_samples(r[0]) for r in rows]

    def samples(self, job_id: str) -> np.ndarray:
        """All raw samples (ns) of a measurement, sessions one after the other."""
        parts = self.session_samples(job_id)
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def iter_session_samples(self, job_ids: Sequence[str]) -> Iterator[tuple[str, int, np.ndarray]]:
        """(job_id, session, samples ns) one session at a time, so that a large run is never
        held in memory whole; a pruned session yields an empty array."""
        for job_id in job_ids:
            rows = self.conn.execute(
                "SELECT session, samples FROM sessions WHERE job_id = ? ORDER BY session",
                (job_id,))
            for session, blob in rows:
                yield job_id, int(session), decode_samples(blob)

    def pruned_sessions(self, job_ids: Sequence[str]) -> int:
        """How many of these measurements' ok sessions have had their raw samples pruned."""
        count = 0
        for chunk in _chunks(list(job_ids)):
            count += self.conn.execute(
                f"SELECT COUNT(*) FROM sessions WHERE samples IS NULL AND status = 'ok' AND "
                f"job_id IN ({', '.join('?' for _ in chunk)})", chunk).fetchone()[0]
        return int(count)

    # retention ----------------------------------------------------------------------------------

    def runs_outside(self, keep: str, option: str = "--keep-samples-for"
                     ) -> tuple[list[str], str]:
        """The runs older than the newest `keep` runs that measured something (`"30"`) or than
        `keep` days before now (`"30d"`), oldest first, and that window in words. A run that
        measured nothing (stopped before its first session) takes no place among the N kept:
        counted, it took the place of a run that holds measurements. `option` names `keep` in
        the error a malformed one gets."""
        cutoff, window = _prune_cutoff(keep, option)
        if isinstance(cutoff, str):
            return [r[0] for r in self.conn.execute(
                f"SELECT run_id FROM runs WHERE started_at < ? ORDER BY {RUN_ORDER}",
                (cutoff,))], window
        kept = self.conn.execute(
            "SELECT MIN(rowid) FROM (SELECT rowid FROM runs WHERE EXISTS (SELECT 1 FROM results "
            "r JOIN sessions s ON s.job_id = r.job_id WHERE r.run_id = runs.run_id) "
            "ORDER BY rowid DESC LIMIT ?)", (cutoff,)).fetchone()[0] if cutoff else None
        if cutoff and kept is None:  # nothing measured yet: nothing to keep, nothing older
            return [], window
        return [r[0] for r in self.conn.execute(
            f"SELECT run_id FROM runs WHERE rowid < ? ORDER BY {RUN_ORDER}",
            (kept if kept is not None else 2**63 - 1,))], window

    def prune_samples(self, keep: str) -> PruneResult:
        """Drop the raw samples of every run older than the newest `keep` runs that measured
        something (`"30"`) or than `keep` days before now (`"30d"`) (`runs_outside`). Session
        rows, with their statistics, and result rows stay; only the `samples` blobs become NULL.
        The file shrinks after `vacuum()`."""
        with self._tx():
            old, window = self.runs_outside(keep)
            sessions = 0
            for chunk in _chunks(old):
                cur = self.conn.execute(
                    "UPDATE sessions SET samples = NULL WHERE samples IS NOT NULL AND job_id IN "
                    f"(SELECT job_id FROM results WHERE run_id IN "
                    f"({', '.join('?' for _ in chunk)}))", chunk)
                sessions += cur.rowcount
        return PruneResult(runs=len(old), sessions=sessions, window=window)

    def delete_runs(self, run_ids: Sequence[str]) -> DeleteResult:
        """Remove runs whole, in one transaction: their rows in `runs`, `results`, `sessions`
        (samples with them), `profiles` and `profile_ops`, and each fingerprint that no session
        left names. The file shrinks after `vacuum()`."""
        ids = list(run_ids)
        with self._tx():
            marks = ", ".join("?" for _ in ids)
            jobs = f"job_id IN (SELECT job_id FROM results WHERE run_id IN ({marks}))"
            keys = self._fingerprint_keys(jobs, ids)
            sessions = self.conn.execute(f"DELETE FROM sessions WHERE {jobs}", ids).rowcount
            self.conn.execute(f"DELETE FROM profile_ops WHERE {jobs}", ids)
            self.conn.execute(f"DELETE FROM profiles WHERE {jobs}", ids)
            results = self.conn.execute(f"DELETE FROM results WHERE run_id IN ({marks})",
                                        ids).rowcount
            runs = self.conn.execute(f"DELETE FROM runs WHERE run_id IN ({marks})",
                                     ids).rowcount
            self._drop_unused_fingerprints(keys)
        return DeleteResult(runs=runs, measurements=results, sessions=sessions)

    def _fingerprint_keys(self, where: str, params: Sequence[Any]) -> list[str]:
        """The fingerprints the sessions chosen by `where` name (none before schema 5)."""
        if "fingerprint_sha256" not in self._columns("sessions"):
            return []
        return [r[0] for r in self.conn.execute(
            f"SELECT DISTINCT fingerprint_sha256 FROM sessions WHERE {where} AND "
            "fingerprint_sha256 IS NOT NULL", params)]

    def _drop_unused_fingerprints(self, keys: Sequence[str]) -> None:
        """Delete those of `keys` that no session names any more (after sessions were deleted):
        a fingerprint is kept once for all its sessions, so it goes with the last of them."""
        for chunk in _chunks(list(keys)):
            self.conn.execute(
                f"DELETE FROM fingerprints WHERE sha256 IN ({', '.join('?' for _ in chunk)}) "
                "AND NOT EXISTS (SELECT 1 FROM sessions "
                "WHERE sessions.fingerprint_sha256 = fingerprints.sha256)",
                chunk)

    def vacuum(self) -> tuple[int, int]:
        """Compact the file (SQLite `VACUUM`), after dropping the fingerprints that no session
        names (left by `forget_sessions`); file size in bytes before and after."""
        with self._tx():
            self.conn.execute("DELETE FROM fingerprints WHERE sha256 NOT IN (SELECT "
                              "fingerprint_sha256 FROM sessions WHERE fingerprint_sha256 "
                              "IS NOT NULL)")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = self.path.stat().st_size
        self.conn.execute("VACUUM")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return before, self.path.stat().st_size

    def stats(self) -> StoreStats:
        """Bytes by table (SQLite's `dbstat`, pages actually used) and by run (its result and
        session rows, samples apart), with row and sample counts."""
        try:
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.OperationalError:  # read-only storage: the log is read, not folded in
            pass
        page = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        try:
            tables = {name: int(size) for name, size in self.conn.execute(
                "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY name")}
        except sqlite3.OperationalError:  # an SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
            tables = {}
        runs = []
        for r in self.conn.execute(
                "SELECT runs.run_id, runs.started_at,"
                " (SELECT COUNT(*) FROM results WHERE results.run_id = runs.run_id),"
                " COUNT(s.job_id), COALESCE(SUM(s.samples IS NOT NULL AND s.n > 0), 0),"
                " COALESCE(SUM(CASE WHEN s.samples IS NOT NULL THEN s.n END), 0),"
                " COALESCE(SUM(LENGTH(s.samples)), 0)"
                " FROM runs LEFT JOIN results res ON res.run_id = runs.run_id"
                " LEFT JOIN sessions s ON s.job_id = res.job_id"
                " GROUP BY runs.run_id ORDER BY runs.rowid"):
            runs.append(RunStats(*r))
        return StoreStats(file_bytes=page * pages, free_bytes=page * free, tables=tables,
                          runs=runs)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._tx() as conn:
            yield conn


@dataclass(frozen=True)
class PruneResult:
    runs: int  # runs older than the cut-off
    sessions: int  # sessions whose samples were dropped now
    window: str  # those runs in words: "outside the newest 30 runs", "older than 30 days"


@dataclass(frozen=True)
class DeleteResult:
    runs: int
    measurements: int
    sessions: int


@dataclass(frozen=True)
class RunStats:
    run_id: str
    started_at: str
    measurements: int
    sessions: int
    sessions_with_samples: int
    samples: int  # raw samples still stored (sum of n over sessions that keep theirs)
    sample_bytes: int


@dataclass(frozen=True)
class StoreStats:
    file_bytes: int
    free_bytes: int  # pages free inside the file, given back by `vacuum`
    tables: dict[str, int]  # bytes of pages used, by table or index
    runs: list[RunStats]


# Runs follow one another in the order they were begun here (rowid, which a VACUUM keeps in
# order), not by the clock: a host whose clock was set back (booted without NTP) began a nightly
# 400 days "before" the twelve it followed, so that `latest` was another run and `--baseline
# previous` found no earlier nightly, and a regression passed as not gated.
RUN_ORDER = "rowid"


def _prune_cutoff(keep: str, option: str) -> tuple[int | str, str]:
    """`30` (runs) -> 30; `30d` (days) -> the UTC timestamp 30 days ago, comparable as text with
    `runs.started_at`; each with the runs it leaves out in words (`PruneResult.window`)."""
    text = keep.strip().lower()
    days = text.endswith("d")
    try:
        value = int(text[:-1] if days else text)
    except ValueError:
        value = -1
    if value < 0 or (days and not text[:-1].isdigit()):
        raise StoreError(f"{option} {keep!r}: give a number of runs (30) or days (30d)")
    if not days:
        # SQLite's largest LIMIT: more runs than any file holds
        return min(value, 2**63 - 1), f"outside the newest {value} run{'' if value == 1 else 's'}"
    window = f"older than {value:g} day{'' if value == 1 else 's'}"
    if value * 86400 >= time.time():
        # No run is older than 1970. strftime writes a year below 1000 with fewer digits, and
        # such a cutoff sorts after every real start time: it would drop every run's samples.
        return "", window
    return (time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() - value * 86400)),
            window)


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# Version 1 kept one process per job, samples as rows, and these columns with no v2 home; they
# go into `legacy` so an upgrade loses nothing.
_V1_RENAMED = {"rss_before_mb": "rss_runtime_mb", "rss_delta_mb": "model_mb"}
_V1_LEGACY = ("throughput_ips", "stop_reason")


def _upgrade_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 -> 2 inside the caller's transaction: each v1 job becomes a measurement of one
    session that holds all its samples."""
    old = [dict(r) for r in conn.execute("SELECT * FROM results ORDER BY rowid")]
    conn.execute("ALTER TABLE results RENAME TO results_v1")
    conn.execute("DROP INDEX IF EXISTS results_run")
    for stmt in _create_sql()[1:]:
        conn.execute(stmt)
    for row in old:
        new = {k: row[k] for k in RESULT_FIELDS if k in row}
        for before, after in _V1_RENAMED.items():
            new[after] = row.get(before)
        new["legacy"] = json.dumps({k: row.get(k) for k in _V1_LEGACY})
        new["sessions"] = 1 if row.get("status") == "ok" else 0
        new["sessions_planned"] = 1
        new["flags"] = json.dumps(["single_session"] if row.get("status") == "ok" else [])
        new["latency_p50_ms"] = row.get("latency_median_ms")
        names = list(new)
        conn.execute(f"INSERT INTO results ({', '.join(names)}) "
                     f"VALUES ({', '.join('?' for _ in names)})", [new[n] for n in names])
        samples = [r[0] for r in conn.execute(
            "SELECT latency_ns FROM samples WHERE job_id = ? ORDER BY seq", (row["job_id"],))]
        session = {
            "job_id": row["job_id"], "session": 0, "started_at": row.get("started_at"),
            "status": row.get("status"), "error_kind": row.get("error_kind"),
            "error_message": row.get("error_message"), "load_s": row.get("load_s"),
            "first_inference_ms": row.get("first_inference_ms"), "n": row.get("n"),
            "median_ms": row.get("latency_median_ms"), "mean_ms": row.get("latency_mean_ms"),
            "std_ms": row.get("latency_std_ms"), "min_ms": row.get("latency_min_ms"),
            "max_ms": row.get("latency_max_ms"), "p90_ms": row.get("latency_p90_ms"),
            "p95_ms": row.get("latency_p95_ms"), "p99_ms": row.get("latency_p99_ms"),
            "cov": row.get("latency_cov"), "throttled": row.get("throttled"),
            "rss_runtime_mb": row.get("rss_before_mb"), "peak_rss_mb": row.get("peak_rss_mb"),
            "model_mb": row.get("rss_delta_mb"), "bytes_pushed": row.get("bytes_pushed"),
            "orchestration_s": row.get("orchestration_s"),
            "state_before": row.get("state_before"), "state_after": row.get("state_after"),
            "samples": encode_samples(samples),
        }
        names = list(session)
        conn.execute(f"INSERT INTO sessions ({', '.join(names)}) "
                     f"VALUES ({', '.join('?' for _ in names)})", [session[n] for n in names])
    conn.execute("DROP TABLE samples")
    conn.execute("DROP TABLE results_v1")


def _upgrade_v2(conn: sqlite3.Connection) -> None:
    """Schema 2 -> 3 inside the caller's transaction: the columns of GPU timing, accelerator and
    placement added to `results` and `sessions` (NULL in older rows: not measured), and the
    profile tables. Adds only what is missing, so it also completes a database that `_upgrade_v1`
    created with today's columns."""
    for table, columns in (("results", RESULT_COLUMNS), ("sessions", SESSION_COLUMNS)):
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column.name} {column.sql}")
    for stmt in _profile_sql(if_not_exists=True):
        conn.execute(stmt)


def _upgrade_v3(conn: sqlite3.Connection) -> None:
    """Schema 3 -> 4 inside the caller's transaction: `runs.plan`, what `bench --resume` checks
    and plans again (NULL in older runs, which therefore cannot be resumed), and
    `sessions.others_cpus` (NULL in older sessions: their `loaded` flag came from the load
    average)."""
    for table, columns in (("runs", RUN_COLUMNS), ("sessions", SESSION_COLUMNS)):
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            if column.name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column.name} {column.sql}")


def _upgrade_v4(conn: sqlite3.Connection) -> None:
    """Schema 4 -> 5 inside the caller's transaction: each session's own device fingerprint
    (`sessions.fingerprint_sha256`, a key of the new table `fingerprints`) and
    `sessions.gpu_process_mb`, NULL in older sessions: their fingerprint is their measurement's
    `device_fingerprint`, as it was, and their GPU process memory was kept only in the row's
    median."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
    for column in SESSION_COLUMNS:
        if column.name not in present:
            conn.execute(f"ALTER TABLE sessions ADD COLUMN {column.name} {column.sql}")
    conn.execute(_fingerprint_sql(if_not_exists=True))


def _upgrade_v5(conn: sqlite3.Connection) -> None:
    """Schema 5 -> 6 inside the caller's transaction: `results.host_isa`, the instruction set of
    the host whose top-1 `host_top1` is (NULL in older rows: it was only in the manifest), and
    the throughput's interval, `throughput_ci95_low_ips` and `throughput_ci95_high_ips` (NULL in
    older rows, whose throughput is the median of their sessions')."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    for column in RESULT_COLUMNS:
        if column.name not in present:
            conn.execute(f"ALTER TABLE results ADD COLUMN {column.name} {column.sql}")


# Schema version N -> N + 1, in order from 1.
UPGRADES = (_upgrade_v1, _upgrade_v2, _upgrade_v3, _upgrade_v4, _upgrade_v5)


def _run_info(row: sqlite3.Row) -> RunInfo:
    return RunInfo(**{**dict(row), "devices": json.loads(row["devices"] or "[]"),
                      "plan": json.loads(row["plan"]) if _get(row, "plan") else None})


def _get(row: sqlite3.Row, column: str) -> Any:
    """A column of a row read from a database of an older schema, None where it has none."""
    return row[column] if column in row.keys() else None


def _to_sql(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def _from_sql(row: dict[str, Any]) -> dict[str, Any]:
    for name in JSON_FIELDS & set(row):
        if row[name] is not None:
            row[name] = json.loads(row[name])
    for name in BOOL_FIELDS & set(row):
        if row[name] is not None:
            row[name] = bool(row[name])
    return row
