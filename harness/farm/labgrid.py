"""Devices in a labgrid lab: reserve and acquire a place through the coordinator, read its
`NetworkService`, measure over edgebench's SSH transport, release the place.

`LabgridClient` is one connection to a coordinator (labgrid's own `ClientSession`, gRPC, on an
event loop in a thread of its own, so the device threads of a run can share it). `acquire(place)`
files a reservation for that place (`name=PLACE`, as `labgrid-client reserve name=PLACE` does),
waits for the coordinator to allocate it, up to the profile's `wait_s`, then acquires the place and
returns the address, user and port of its `NetworkService`. When the place is held, `on_wait` (the
caller's, else the client's) hears at once who holds it and for how long we will wait; a place
still held after that time is given up with `PlaceBusy`, naming the holder (each command words
what it does then: the nightly skips the device, a bench fails). Acquisitions are counted, so a
nightly that holds a place for its health check and its queue acquires it once. `release` releases
the place (only if we hold it: `fromuser`), cancels the reservation; `release_all` (also at exit)
stops acquisitions still waiting, cancelling their reservations, and lets go of everything this
process still holds, on errors and Ctrl-C too; `places_released_on_interrupt` does it the moment
a nightly or a bench is interrupted (SIGTERM too). An acquisition stopped while its
CreateReservation was under way never reads the token of the reservation the coordinator may have
filed; it cancels the reservations of that place under our labgrid name that neither this process
nor another live run's lock file knows.

Stale acquisitions: labgrid keeps a place acquired when its client dies. Once the reservation is
filed, a lock file `<state>/<coordinator>--<place>.json` records this process (pid and its start
time), the reservation token and the run; once the place is acquired it records too the place's
`changed` time as the coordinator stamped it at our acquisition (`acquired_at`). On the next run,
a lock file naming a process that no longer runs was left by a killed run, and the place is
released (its reservation cancelled) and acquired afresh, with a message saying so, only if it is
acquired under our own labgrid name (`host/user`) and has not changed since `acquired_at`: the
same user releasing it and acquiring it by hand since (`labgrid-client acquire`) changes it, and
keeps it. A run killed after AcquirePlace but before it wrote `acquired_at` cannot be told from a
hand acquisition under its reservation; such a place is left acquired, with a message saying how
to release it. A place acquired under our name with no lock file was acquired by hand and is
treated like anyone else's; one whose lock file names a live process belongs to another run.

`LabgridTransport` is the `labgrid` transport: an `SSHTransport` to the acquired address.
"""

from __future__ import annotations

import asyncio
import atexit
import getpass
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import CancelledError
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from harness.config import DeviceProfile, LabgridSettings
from harness.errors import TransportError
from harness.signals import sigterm_as_interrupt
from harness.transport.base import AgentRun, CommandResult, Transport

T = TypeVar("T")

CONNECT_TIMEOUT_S = 15.0
RPC_TIMEOUT_S = 30.0
POLL_S = 1.0  # how often a waiting reservation is polled (and so kept alive)
STATE_ENV = "EDGEBENCH_LABGRID_STATE"


# Told when an acquisition has to wait: (place, holder, the wait in seconds).
OnWait = Callable[[str, str, float], None]


class PlaceBusy(TransportError):
    """The place stayed held by someone else for longer than the wait allowed. The message is
    the one a bench or a check gives up with; the nightly words its own (it skips the device)."""

    def __init__(self, place: str, holder: str, waited_s: float, note: str | None = None
                 ) -> None:
        self.place, self.holder, self.waited_s, self.note = place, holder, waited_s, note
        if waited_s > 0:
            message = f"labgrid place {place} is held by {holder}; gave up after waiting " \
                      f"{waited_s:g} s for it"
        else:
            message = f"labgrid place {place} is held by {holder}; not waiting for it (wait 0 s)"
        super().__init__(message + (f"; {note}" if note else ""))


class _LabgridLog(logging.Filter):
    """labgrid's client logs why the coordinator cannot be reached on the root logger; keep the
    last such line for our one error message instead of a second, stray line on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if "labgrid" in record.pathname and record.levelno >= logging.ERROR:
            self.last = record.getMessage().split("\n")[0]
            return False
        return True


_LOG = _LabgridLog()
logging.getLogger().addFilter(_LOG)


@dataclass(frozen=True)
class Lease:
    place: str
    token: str  # the reservation's
    address: str
    port: int
    user: str | None
    note: str | None = None  # e.g. a stale acquisition released on the way


def lock_file(coordinator: str, place: str) -> Path:
    """Where a run of this host records its hold on `place` (see "Stale acquisitions")."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", coordinator)
    return state_dir() / f"{slug}--{place}.json"


def identity() -> str:
    """Our name at the coordinator, `host/user`, as labgrid's client names itself."""
    host = os.environ.get("LG_HOSTNAME", socket.gethostname())
    return f"{host}/{os.environ.get('LG_USERNAME', getpass.getuser())}"


def state_dir() -> Path:
    return Path(os.environ.get(STATE_ENV) or "~/.cache/edgebench/labgrid").expanduser()


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), None if it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def _alive(lock: dict[str, Any]) -> bool:
    """The process a lock file names still runs (the same pid, started at the same time)."""
    pid = lock.get("pid")
    if not isinstance(pid, int):
        return False
    start = _process_start(pid)
    return start is not None and start == lock.get("start")


class LabgridClient:
    """One connection to a labgrid coordinator, shared by the threads of this process."""

    def __init__(self, coordinator: str) -> None:
        self.coordinator = coordinator
        self.me = identity()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"labgrid-{coordinator}")
        self._thread.start()
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, Lease]] = {}  # place -> (holders, lease)
        self._releasing = 0  # releases under way in other threads; `close` waits for them
        self._released = threading.Condition(self._lock)
        self.session: Any = None
        self.run_id: str | None = None  # written into lock files, for people reading them
        self.on_wait: OnWait | None = None  # for acquisitions whose caller gives none
        # told a new lease's note (a stale acquisition released); the nightly reads notes itself
        self.on_note: Callable[[str], None] | None = None
        self._acquiring: set[asyncio.Task[Any]] = set()  # touched on the loop's thread only
        try:
            self._run(self._connect(), CONNECT_TIMEOUT_S)
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise

    # plumbing -------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise TransportError(f"labgrid coordinator {self.coordinator} did not answer in "
                                 f"{timeout_s:g} s") from None

    async def _connect(self) -> None:
        from labgrid.remote.client import ClientSession, Error

        session = ClientSession(self.coordinator, self.loop)
        try:
            await asyncio.wait_for(session.start(), CONNECT_TIMEOUT_S)
        except (TimeoutError, Error, OSError) as err:
            await session.close()
            why = _LOG.last or str(err) or "timeout"
            raise TransportError(
                f"labgrid coordinator {self.coordinator} cannot be reached ({why}); "
                "is labgrid-coordinator running there, and is the farm file's coordinator "
                "right?") from err
        self.session = session

    async def _rpc(self, name: str, request: Any) -> Any:
        import grpc

        try:
            return await getattr(self.session.stub, name)(request, timeout=RPC_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise TransportError(f"labgrid coordinator {self.coordinator}: {name}: "
                                 f"{err.details() or err.code().name}") from err

    async def _sync(self) -> None:
        if not await self.session.sync_with_coordinator():
            raise TransportError(f"labgrid coordinator {self.coordinator} went away")

    def _lock_file(self, place: str) -> Path:
        return lock_file(self.coordinator, place)

    # places ---------------------------------------------------------------------------------

    def places(self) -> dict[str, Any]:
        """Place name -> labgrid `Place` as the coordinator last told us."""
        self._run(self._sync(), RPC_TIMEOUT_S)
        return dict(self.session.places)

    def holder(self, place: str) -> str | None:
        """Who holds `place` now: the acquirer, else the owner of its reservation."""
        return self._run(self._holder(place), RPC_TIMEOUT_S)

    async def _holder(self, name: str) -> str | None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        place = self.session.places.get(name)
        if place is None:
            return None
        if place.acquired:
            return str(place.acquired)
        if place.reservation:
            found = await self._rpc("GetReservations", pb2.GetReservationsRequest())
            for res in found.reservations:
                if res.token == place.reservation:
                    return f"{res.owner} (reservation {res.token})"
        return None

    def release_if_stale(self, place: str) -> str | None:
        """Release `place` if a killed run of ours left it acquired (see the module doc); the
        note saying so, else None."""
        return self._run(self._release_if_stale_named(place), 3 * RPC_TIMEOUT_S)

    async def _release_if_stale_named(self, name: str) -> str | None:
        await self._sync()
        place = self.session.places.get(name)
        return None if place is None else await self._release_if_stale(place)

    def acquire(self, settings: LabgridSettings, on_wait: OnWait | None = None) -> Lease:
        """Reserve and acquire the place (or count one more holder of it); `on_wait` (else the
        client's) is told at once when someone else holds it; PlaceBusy after `settings.wait_s`
        of that."""
        with self._lock:
            if settings.place in self._held:
                count, lease = self._held[settings.place]
                self._held[settings.place] = (count + 1, lease)
                return lease
        try:
            lease = self._run(self._acquire(settings.place, settings.wait_s,
                                            on_wait or self.on_wait),
                              settings.wait_s + 4 * RPC_TIMEOUT_S)
        except CancelledError:  # release_all stopped it: this process is letting go of all
            raise TransportError(f"labgrid place {settings.place}: stopped waiting for it"
                                 ) from None
        with self._lock:
            self._held[settings.place] = (1, lease)
        if lease.note and self.on_note is not None:
            self.on_note(lease.note)
        return lease

    async def _acquire(self, name: str, wait_s: float, on_wait: OnWait | None) -> Lease:
        task = asyncio.current_task()
        assert task is not None
        self._acquiring.add(task)
        try:
            return await self._reserve_and_acquire(name, wait_s, on_wait)
        finally:
            self._acquiring.discard(task)

    async def _reserve_and_acquire(self, name: str, wait_s: float, on_wait: OnWait | None
                                   ) -> Lease:
        from labgrid.remote.common import Reservation, ReservationState
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        await self._sync()
        place = self.session.places.get(name)
        if place is None:
            known = ", ".join(sorted(self.session.places)) or "(none)"
            raise TransportError(f"labgrid coordinator {self.coordinator} has no place {name!r}; "
                                 f"its places: {known}")
        note = await self._release_if_stale(place)
        request = pb2.CreateReservationRequest(
            filters={"main": pb2.Reservation.Filter(filter={"name": name})}, prio=0)
        try:
            token = (await self._rpc("CreateReservation", request)).reservation.token
        except asyncio.CancelledError:
            # Stopped (Ctrl-C, a timeout) with the request sent: the coordinator may have filed
            # the reservation, whose token was in the answer we will never read. Left, it would
            # keep the place from everyone for a minute.
            await asyncio.shield(self._cancel_unanswered_reservation(name))
            raise
        lock = {"pid": os.getpid(), "start": _process_start(os.getpid()), "token": token,
                "run": self.run_id, "place": name, "coordinator": self.coordinator,
                "identity": self.me, "acquired": False,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path = self._lock_file(name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(json.dumps(lock, indent=1))
        started = time.monotonic()
        acquired = told = False
        try:
            while True:
                polled = await self._rpc("PollReservation", pb2.PollReservationRequest(token=token))
                res = Reservation.from_pb2(polled.reservation)
                if res.state in (ReservationState.allocated, ReservationState.acquired):
                    break
                if res.state is not ReservationState.waiting:
                    raise TransportError(f"labgrid place {name}: reservation {token} is "
                                         f"{res.state.name}")
                if time.monotonic() - started >= wait_s:
                    await self._sync()
                    holder = await self._holder(name) or "someone else"
                    raise PlaceBusy(name, holder, wait_s, note)
                if not told and on_wait is not None:
                    told = True
                    await self._sync()
                    on_wait(name, await self._holder(name) or "someone else", wait_s)
                await asyncio.sleep(POLL_S)
            await self._rpc("AcquirePlace", pb2.AcquirePlaceRequest(placename=name))
            acquired = True
            await self._sync()
            # Only now: a lock file saying "acquired" before the place was ours let the next
            # run release a place the same user acquired by hand after this run was killed.
            # `changed` is the coordinator's stamp of our acquisition; any release or acquire
            # since changes it.
            path.write_text(json.dumps(
                {**lock, "acquired": True, "acquired_at": self.session.places[name].changed},
                indent=1))
            address, port, user = self._network_service(self.session.places[name])
        except BaseException:
            await self._let_go(name, token, release=acquired)
            raise
        return Lease(name, token, address, port, user, note)

    async def _cancel_unanswered_reservation(self, name: str) -> None:
        """Cancel the reservations of `name` filed under our labgrid name that no run knows the
        token of: not held by this process, not in the lock file of another live run."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        with self._lock:
            known = {lease.token for _, lease in self._held.values()}
        try:
            lock = json.loads(self._lock_file(name).read_text())
        except (OSError, ValueError):
            lock = {}
        if isinstance(lock, dict) and lock.get("pid") != os.getpid() and _alive(lock):
            known.add(str(lock.get("token")))
        try:
            found = await self._rpc("GetReservations", pb2.GetReservationsRequest())
            for res in found.reservations:
                if res.owner == self.me and res.token not in known and "main" in res.filters \
                        and dict(res.filters["main"].filter) == {"name": name}:
                    await self._rpc("CancelReservation",
                                    pb2.CancelReservationRequest(token=res.token))
        except TransportError:
            pass  # the coordinator is gone: so is the reservation, or it expires in a minute

    async def _release_if_stale(self, place: Any) -> str | None:
        """Release `place` if a killed run of ours left it acquired; say so, else None."""
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        path = self._lock_file(place.name)
        try:
            lock = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        pid = lock.get("pid")
        if _alive(lock):
            return None  # another run of this host holds it: it is waited for like anyone's
        note = None
        killed = f"{lock.get('run') or 'unknown run'}, pid {pid}, since {lock.get('since')}"
        acquired_at = lock.get("acquired_at")
        if place.acquired == self.me and acquired_at is not None and \
                place.changed == acquired_at:
            await self._rpc("ReleasePlace",
                            pb2.ReleasePlaceRequest(placename=place.name, fromuser=self.me))
            note = (f"labgrid place {place.name}: released the acquisition left by a killed run "
                    f"({killed})")
        elif place.acquired == self.me and acquired_at is None and \
                place.reservation == lock.get("token"):
            # Acquired under the killed run's reservation: by that run just before it died,
            # or by hand by the same user while the reservation lasted (a minute). Releasing
            # someone's place is worse than leaving one acquired, and saying so.
            note = (f"labgrid place {place.name} is acquired by {self.me} under the reservation "
                    f"of a run killed while it acquired the place ({killed}); left acquired, as "
                    "it may have been acquired by hand since: if nobody uses it, "
                    f"`labgrid-client -p {place.name} release`")
        elif place.acquired == self.me:
            # Ours by name, but changed since the killed run acquired it (acquired by hand since)
            # or recorded by an older edgebench without the stamp: waited for like anyone's,
            # and said, since the holder the wait names is this very user.
            note = (f"labgrid place {place.name} is acquired by {self.me}, this user, but not by "
                    f"the edgebench run that last held it, killed ({killed}); left acquired, as "
                    "it was acquired by hand since or by an older edgebench: if nobody uses it, "
                    f"`labgrid-client -p {place.name} release`")
        if lock.get("token"):
            try:
                await self._rpc("CancelReservation",
                                pb2.CancelReservationRequest(token=lock["token"]))
            except TransportError:
                pass  # expired already
        path.unlink(missing_ok=True)
        await self._sync()
        return note

    def _network_service(self, place: Any) -> tuple[str, int, str | None]:
        for exporter, group, cls, rname in (tuple(p) for p in place.acquired_resources):
            if cls != "NetworkService":
                continue
            try:
                entry = self.session.resources[exporter][group][rname]
            except KeyError:
                break
            if not entry.avail:
                raise TransportError(f"labgrid place {place.name}: its NetworkService "
                                     f"({exporter}/{group}) is not available")
            args = entry.args
            return str(args["address"]), int(args.get("port") or 22), args.get("username")
        raise TransportError(f"labgrid place {place.name} has no NetworkService resource; add "
                             "one to its exporter and match it to the place "
                             f"(`labgrid-client -p {place.name} add-match "
                             "EXPORTER/GROUP/NetworkService`)")

    def release(self, place: str) -> None:
        """One holder less; the last one releases the place and cancels its reservation."""
        with self._lock:
            if place not in self._held:
                return
            count, lease = self._held[place]
            if count > 1:
                self._held[place] = (count - 1, lease)
                return
            del self._held[place]
            self._releasing += 1
        try:
            self._run(self._let_go(place, lease.token), 3 * RPC_TIMEOUT_S)
        finally:
            with self._lock:
                self._releasing -= 1
                self._released.notify_all()

    async def _let_go(self, name: str, token: str, release: bool = True) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        try:
            if release:  # fromuser: released only if we hold it, never one who took it since
                await self._rpc("ReleasePlace", pb2.ReleasePlaceRequest(placename=name,
                                                                        fromuser=self.me))
            await self._rpc("CancelReservation", pb2.CancelReservationRequest(token=token))
        except TransportError:
            pass  # the reservation expires by itself; a held place is found stale next time
        else:
            self._lock_file(name).unlink(missing_ok=True)

    def release_all(self) -> None:
        try:  # first the waits, so that none acquires a place after the others are let go
            self._run(self._stop_acquiring(), 3 * RPC_TIMEOUT_S)
        except TransportError:
            pass
        with self._lock:
            held = [(place, lease) for place, (_, lease) in self._held.items()]
            self._held.clear()
        for place, lease in held:
            try:
                self._run(self._let_go(place, lease.token), 3 * RPC_TIMEOUT_S)
            except TransportError:
                pass
        # A device thread may be releasing its place right now (a bench's queue ends as it is
        # interrupted): closing the session under it would leave that place acquired.
        with self._lock:
            self._released.wait_for(lambda: self._releasing == 0, timeout=3 * RPC_TIMEOUT_S)

    async def _stop_acquiring(self) -> None:
        """Cancel the acquisitions under way; each cancels its reservation (and releases its
        place if it got that far) on the way out."""
        tasks = [t for t in self._acquiring if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2 * RPC_TIMEOUT_S)

    def close(self) -> None:
        self.release_all()
        try:
            self._run(self._close(), RPC_TIMEOUT_S)
        except TransportError:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _close(self) -> None:
        await self.session.stop()
        await self.session.close()


_clients: dict[str, LabgridClient] = {}
_clients_lock = threading.Lock()


def client_for(coordinator: str) -> LabgridClient:
    """The process's one client of `coordinator`, connected on first use."""
    with _clients_lock:
        client = _clients.get(coordinator)
        if client is None:
            client = _clients[coordinator] = LabgridClient(coordinator)
        return client


@atexit.register
def close_all() -> None:
    """Release every place this process holds (at exit, after Ctrl-C or an error too)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - at exit, one coordinator must not stop the others
            pass


@contextmanager
def places_released_on_interrupt() -> Iterator[None]:
    """Within this block SIGTERM is Ctrl-C, and on either (or any error) every place this
    process holds is released at once: threads measuring on them may be stuck in a job, and a
    killed process would leave its places acquired until the next run found them stale."""
    with sigterm_as_interrupt():
        try:
            yield
        except BaseException:
            close_all()
            raise


class LabgridTransport(Transport):
    """A device in a labgrid place: acquired on `open`, reached over SSH, released on `close`."""

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)
        if profile.labgrid is None:
            raise TransportError(f"device {profile.name}: transport labgrid needs labgrid "
                                 "settings (coordinator, place)")
        self.settings: LabgridSettings = profile.labgrid
        self.client: LabgridClient | None = None
        self.lease: Lease | None = None
        self.ssh: Any = None

    def open(self) -> None:
        from harness.transport.ssh import SSHTransport

        self.client = client_for(self.settings.coordinator)
        self.lease = self.client.acquire(self.settings)
        assert self.profile.ssh is not None
        ssh = replace(self.profile.ssh, host=self.lease.address, port=self.lease.port,
                      user=self.lease.user or self.profile.ssh.user)
        try:
            self.ssh = SSHTransport(replace(self.profile, transport="ssh", ssh=ssh))
            self.ssh.open()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            if self.ssh is not None:
                self.ssh.close()
        finally:
            self.ssh = None
            if self.client is not None and self.lease is not None:
                self.client.release(self.lease.place)
            self.lease = None

    def _ssh(self) -> Any:
        if self.ssh is None:
            raise TransportError(f"device {self.profile.name}: labgrid place "
                                 f"{self.settings.place} is not acquired")
        return self.ssh

    def stage(self, path: Path, sha256: str) -> str:
        ssh = self._ssh()
        try:
            return str(ssh.stage(path, sha256))
        finally:
            self.bytes_pushed = ssh.bytes_pushed

    def prefetch(self, files: Sequence[tuple[Path, str]]) -> None:
        self._ssh().prefetch(files)

    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        ssh = self._ssh()
        try:
            return ssh.run_agent(job, timeout_s)  # type: ignore[no-any-return]
        finally:
            self.bytes_pushed = ssh.bytes_pushed  # the agent itself may have been pushed

    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        return self._ssh().run_command(argv, timeout_s)  # type: ignore[no-any-return]

    @property
    def host(self) -> str:
        if self.lease is None:
            return f"labgrid place {self.settings.place}"
        return f"{self.lease.address}:{self.lease.port} (labgrid place {self.settings.place})"
