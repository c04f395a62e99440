"""A device over SSH (paramiko): agent and files pushed to a content-addressed cache, jobs run.

One SSH connection per device serves every job (reconnected when it drops), optionally through a
jump host with the same credentials. Authentication is by key file (that key alone, so a wrong key
fails clearly) or, without one, the SSH agent and the default keys; never by password. Host keys
are checked against known_hosts, and an unknown host is refused with the command that trusts it
unless the profile says `trust_on_first_use`; a changed key is always refused.

Files go by SFTP to `<cache_dir>/<sha256>`: uploaded under a temporary name, checked by hash on the
device, then renamed, so a file under its hash name is always complete and a second run of the same
suite pushes nothing. Every remote command is built with `shlex.quote`, and nothing is written
outside the cache directory (the agent runs with it as working directory). A lost connection, an
agent that dies or a job past its timeout gives that job a `failed` result with the reason and the
tail of the agent's stderr; the next job reconnects if it has to.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import posixpath
import re
import select
import shlex
import signal
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko

from harness.config import DeviceProfile, SSHSettings
from harness.errors import TransportError
from harness.transport.base import (
    AgentRun,
    CommandResult,
    Transport,
    agent_bundle,
    failed_run,
    parse_agent_output,
    register_transport,
)

# A shell reports "killed by signal N" as exit status 128 + N.
SIGNAL_BASE = 128
# Exit status of the wrapper script when it cannot enter the cache directory.
NO_CACHE_DIR = 97
READ_CHUNK = 65536
EOF_GRACE_S = 2.0


def _drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
    """Move whatever the channel holds into `out`/`err`; True if there was anything."""
    got = False
    while chan.recv_ready():
        chunk = chan.recv(READ_CHUNK)
        if not chunk:
            break
        out += chunk
        got = True
    while chan.recv_stderr_ready():
        chunk = chan.recv_stderr(READ_CHUNK)
        if not chunk:
            break
        err += chunk
        got = True
    return got


def _last_exception(stderr: str) -> str | None:
    """`Error: message` from the end of a Python traceback, if stderr ends with one."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines or not any(line.startswith("Traceback") for line in lines):
        return None
    match = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):? ?(.*)$", lines[-1])
    return lines[-1].strip() if match else None


def parse_jump_host(spec: str, default_user: str | None) -> tuple[str | None, str, int]:
    """`[user@]host[:port]` of a bastion as (user, host, port)."""
    user, _, hostport = spec.rpartition("@")
    host, port = hostport, 22
    if hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise TransportError(
                f"jump host {spec!r}: port {port_text!r} is not a number") from None
    if not host:
        raise TransportError(f"jump host {spec!r} names no host")
    return (user or default_user), host, port


def known_hosts_name(host: str, port: int) -> str:
    """The name OpenSSH files a host key under in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def key_fingerprint(key: paramiko.PKey) -> str:
    return key.fingerprint  # "SHA256:..." as `ssh-keygen -lf` prints it


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """Refuse a host whose key is not in known_hosts, saying how to trust it."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        host, port = hostname, 22
        if hostname.startswith("["):
            host, _, port_text = hostname[1:].partition("]:")
            port = int(port_text)
        port_opt = f"-p {port} " if port != 22 else ""
        raise TransportError(
            f"host key of {hostname} is not in {self.known_hosts} ({key.get_name()} "
            f"{key_fingerprint(key)}); if that fingerprint is the device's, trust it with "
            f"`ssh-keyscan {port_opt}{shlex.quote(host)} >> {self.known_hosts}` "
            "(or set ssh.trust_on_first_use: true in the profile)"
        )


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host once and append its key to known_hosts (never a changed key)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.known_hosts, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


@register_transport("ssh")
class SSHTransport(Transport):
    """One device reached over SSH; `open()` connects, every job reuses the connection."""

    def __init__(self, profile: DeviceProfile) -> None:
        super().__init__(profile)
        if profile.ssh is None:
            raise TransportError(f"device {profile.name}: transport ssh needs ssh settings")
        self.settings: SSHSettings = profile.ssh
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._cache_dir: str | None = None
        self._present: set[str] = set()  # hashes known to be in the cache on this connection
        self._stale_pid: int | None = None  # agent left running by a connection that dropped
        # the device-side job server (agent --serve) of this connection, and what it has sent
        self._launcher: paramiko.Channel | None = None
        self._launcher_out = bytearray()
        self._launcher_err = bytearray()
        self.connects = 0

    # connection -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.user or getpass.getuser()}@{s.host}:{s.port}"

    def open(self) -> None:
        if self._client is not None and self._active():
            return
        self.close()
        s = self.settings
        sock = None
        if s.jump_host:
            user, host, port = parse_jump_host(s.jump_host, s.user)
            self._jump = self._connect(host, port, user, None)
            try:
                sock = self._jump.get_transport().open_channel(  # type: ignore[union-attr]
                    "direct-tcpip", (s.host, s.port), ("127.0.0.1", 0),
                    timeout=s.connect_timeout_s)
            except (paramiko.SSHException, OSError) as err:
                self.close()
                raise TransportError(
                    f"jump host {s.jump_host} cannot reach {s.host}:{s.port}: {err}") from err
        self._client = self._connect(s.host, s.port, s.user, sock)
        transport = self._client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(s.keepalive_s)))
        self.connects += 1
        self._present = set()
        self._kill_stale_agent()

    def _connect(self, host: str, port: int, user: str | None,
                 sock: Any) -> paramiko.SSHClient:
        s = self.settings
        where = f"{user or getpass.getuser()}@{host}:{port}"
        known_hosts = Path(s.known_hosts).expanduser()
        client = paramiko.SSHClient()
        try:
            if known_hosts.is_file():
                client.load_host_keys(str(known_hosts))
        except (OSError, paramiko.SSHException) as err:
            raise TransportError(f"cannot read known_hosts {known_hosts}: {err}") from err
        client.set_missing_host_key_policy(
            _TrustOnFirstUse(known_hosts) if s.trust_on_first_use
            else _RefuseUnknown(str(known_hosts)))
        key_file = str(Path(s.key_file).expanduser()) if s.key_file else None
        if key_file and not Path(key_file).is_file():
            raise TransportError(f"{where}: key file {key_file} does not exist (ssh.key_file)")
        try:
            client.connect(
                host, port=port, username=user, key_filename=key_file,
                # A key file named in the profile is used alone, so a wrong key fails clearly;
                # without one, the SSH agent and the default ~/.ssh keys are tried.
                allow_agent=key_file is None, look_for_keys=key_file is None,
                timeout=s.connect_timeout_s, banner_timeout=s.connect_timeout_s,
                auth_timeout=s.connect_timeout_s, channel_timeout=s.command_timeout_s,
                sock=sock,
            )
        except TransportError:
            client.close()
            raise
        except paramiko.BadHostKeyException as err:
            client.close()
            raise TransportError(
                f"{where}: host key CHANGED ({err.key.get_name()} {key_fingerprint(err.key)}, "
                f"known_hosts has {key_fingerprint(err.expected_key)}); this can be an attack. "
                f"If the device was reinstalled, remove the old key with `ssh-keygen -f "
                f"{known_hosts} -R {shlex.quote(known_hosts_name(host, port))}`") from err
        except paramiko.PasswordRequiredException as err:
            client.close()
            raise TransportError(
                f"{where}: key file {key_file} is encrypted; load it into ssh-agent "
                f"(`ssh-add {key_file}`) and remove ssh.key_file from the profile") from err
        except paramiko.AuthenticationException as err:
            client.close()
            what = f"key {key_file}" if key_file else "the SSH agent's and ~/.ssh's keys"
            raise TransportError(
                f"{where} refused {what} ({err}); add the public key to "
                f"~{user or ''}/.ssh/authorized_keys on the device or fix ssh.key_file/ssh.user"
            ) from err
        except TimeoutError as err:
            client.close()
            raise TransportError(f"cannot connect to {where}: timed out after "
                                 f"{s.connect_timeout_s:g} s") from err
        except (paramiko.SSHException, OSError, EOFError) as err:
            client.close()
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise TransportError(f"cannot connect to {where}: {reason}") from err
        return client

    def _active(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        self._stop_launcher()
        for thing in (self._sftp, self._client, self._jump):
            if thing is not None:
                try:
                    thing.close()
                except (OSError, paramiko.SSHException, EOFError):
                    pass
        self._sftp = self._client = self._jump = None

    def _ensure(self) -> paramiko.SSHClient:
        if self._client is None or not self._active():
            self.open()
        assert self._client is not None
        return self._client

    # remote commands ------------------------------------------------------------------------

    def _exec(self, command: str, stdin: bytes = b"", timeout_s: float | None = None,
              ) -> tuple[int | None, bytes, bytes, str | None]:
        """Run `command`; (exit status or None, stdout, stderr, why it stopped early or None).

        `why` is "timeout" or "connection lost ...".
        """
        client = self._ensure()
        transport = client.get_transport()
        assert transport is not None
        try:
            chan = transport.open_session(timeout=self.settings.command_timeout_s)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as err:
            return None, b"", b"", f"connection lost ({err or type(err).__name__})"
        out, err_buf = bytearray(), bytearray()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        exited_at: float | None = None
        why = None
        try:
            while True:
                got = _drain(chan, out, err_buf)
                if not transport.is_active():
                    why = "connection lost"
                    break
                if chan.closed or (chan.exit_status_ready() and chan.eof_received):
                    _drain(chan, out, err_buf)
                    break
                if chan.exit_status_ready():
                    # exit-status can overtake the last data; wait briefly for the end of stdout
                    exited_at = exited_at or time.monotonic()
                    if time.monotonic() - exited_at > EOF_GRACE_S:
                        break
                if deadline is not None and time.monotonic() > deadline:
                    why = "timeout"
                    break
                if not got:
                    wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                    select.select([chan], [], [], max(0.0, wait))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            why = f"connection lost ({exc or type(exc).__name__})"
        status = chan.exit_status if why is None and chan.exit_status_ready() else None
        if status == -1:  # closed without an exit status
            status = None
        try:
            chan.close()
        except (OSError, paramiko.SSHException, EOFError):
            pass
        return status, bytes(out), bytes(err_buf), why

    def run_command(self, argv: Sequence[str], timeout_s: float = 30.0) -> CommandResult:
        command = shlex.join(list(argv))
        status, out, err, why = self._exec(command, timeout_s=timeout_s)
        if why is not None:
            raise TransportError(f"{self.where}: `{command}` failed: {why}"
                                 + (f" after {timeout_s:g} s" if why == "timeout" else ""))
        return CommandResult(status if status is not None else -1,
                             out.decode(errors="replace"), err.decode(errors="replace"))

    def _python_argv(self) -> list[str]:
        return shlex.split(self.profile.python or "python3")

    # the cache ------------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self._ensure()
        if self._sftp is None:
            try:
                self._sftp = client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as err:
                raise TransportError(f"{self.where}: cannot open SFTP: {err}") from err
        return self._sftp

    def cache_dir(self) -> str:
        """The absolute cache directory on the device, created (mode 700) if absent."""
        if self._cache_dir is None or self._sftp is None:
            sftp = self._sftp_client()
            raw = self.profile.cache_dir
            if raw == "~" or raw.startswith("~/"):
                home = sftp.normalize(".")
                raw = posixpath.join(home, raw[2:]) if raw != "~" else home
            elif not raw.startswith("/"):
                raw = posixpath.join(sftp.normalize("."), raw)
            path = posixpath.normpath(raw)
            self._mkdirs(sftp, path)
            self._cache_dir = path
        return self._cache_dir

    def _mkdirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            try:
                sftp.stat(current)
            except FileNotFoundError:
                try:
                    sftp.mkdir(current, mode=0o700)
                except OSError as err:
                    raise TransportError(f"{self.where}: cannot create cache directory "
                                         f"{path} ({current}: {err})") from err
            except OSError as err:
                raise TransportError(f"{self.where}: cannot use cache directory {path}: "
                                     f"{err}") from err

    def remote_path(self, sha256: str) -> str:
        return posixpath.join(self.cache_dir(), sha256)

    def _present_on_device(self, sha256: str, size: int) -> bool:
        if sha256 in self._present:
            return True
        try:
            found = self._sftp_client().stat(self.remote_path(sha256)).st_size == size
        except FileNotFoundError:
            found = False
        except (OSError, paramiko.SSHException, EOFError) as err:
            raise TransportError(f"{self.where}: cannot look into the cache: {err}") from err
        if found:
            self._present.add(sha256)
        return found

    def _remote_sha256(self, path: str) -> str | None:
        quoted = shlex.quote(path)
        py = " ".join(shlex.quote(a) for a in self._python_argv())
        script = ("import hashlib,sys;h=hashlib.sha256();f=open(sys.argv[1],'rb');"
                  "[h.update(b) for b in iter(lambda:f.read(1<<20),b'')];print(h.hexdigest())")
        inner = f"sha256sum -- {quoted} 2>/dev/null || {py} -c {shlex.quote(script)} {quoted}"
        status, out, _, why = self._exec(f"/bin/sh -c {shlex.quote(inner)}",
                                         timeout_s=self.settings.command_timeout_s)
        if why is not None or status != 0:
            return None
        text = out.decode(errors="replace").strip()
        return text.split()[0].lower() if text else None

    def _push(self, sha256: str, size: int, upload: Any, what: str) -> str:
        """Put content `sha256` in the cache unless present; `upload(sftp, path)` writes it."""
        final = self.remote_path(sha256)
        if self._present_on_device(sha256, size):
            return final
        sftp = self._sftp_client()
        partial = f"{final}.part-{uuid.uuid4().hex[:8]}"
        try:
            upload(sftp, partial)
            got = self._remote_sha256(partial)
            if got != sha256:
                raise TransportError(
                    f"{self.where}: {what} arrived corrupted (sha256 {got or 'unreadable'}, "
                    f"expected {sha256})")
            try:
                sftp.posix_rename(partial, final)
            except (OSError, paramiko.SSHException):
                sftp.rename(partial, final)
        except (OSError, paramiko.SSHException, EOFError) as err:
            raise TransportError(f"{self.where}: cannot push {what}: {err}") from err
        finally:
            try:
                sftp.remove(partial)
            except (OSError, paramiko.SSHException, EOFError):
                pass
        self.bytes_pushed += size
        self._present.add(sha256)
        return final

    def stage(self, path: Path, sha256: str) -> str:
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as err:
            raise TransportError(f"cannot stage {path}: {err.strerror}") from err
        digest = hashlib.sha256()

        def upload(sftp: paramiko.SFTPClient, remote: str) -> None:
            with open(path, "rb") as src, sftp.open(remote, "wb") as dst:
                dst.set_pipelined(True)
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
            if digest.hexdigest() != sha256:
                raise TransportError(f"{path} has sha256 {digest.hexdigest()}, not the "
                                     f"{sha256} it was staged as (changed since it was built?)")

        return self._push(sha256, size, upload, f"{path.name!r}")

    def stage_agent(self) -> str:
        data, sha256 = agent_bundle()

        def upload(sftp: paramiko.SFTPClient, remote: str) -> None:
            with sftp.open(remote, "wb") as dst:
                dst.set_pipelined(True)
                dst.write(data)

        return self._push(sha256, len(data), upload, "the agent")

    # jobs -----------------------------------------------------------------------------------

    def launcher_command(self, agent_path: str) -> str:
        """The remote command that starts the job server: POSIX sh, every word quoted.

        It runs once per connection, so the login shell's start-up (which can be slow on a
        board whose ~/.bashrc sets up a ROS workspace) is paid once, not once per job.
        """
        cache = shlex.quote(self.cache_dir())
        python = " ".join(shlex.quote(a) for a in self._python_argv())
        script = (f"cd {cache} || exit {NO_CACHE_DIR}; "
                  f"exec {python} {shlex.quote(agent_path)} --serve")
        return f"/bin/sh -c {shlex.quote(script)}"

    def _start_launcher(self) -> paramiko.Channel:
        agent = self.stage_agent()
        transport = self._ensure().get_transport()
        assert transport is not None
        try:
            chan = transport.open_session(timeout=self.settings.command_timeout_s)
            chan.exec_command(self.launcher_command(agent))
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise TransportError(f"cannot start the agent on {self.where}: {err}") from err
        self._launcher = chan
        self._launcher_out = bytearray()
        self._launcher_err = bytearray()
        return chan

    def _stop_launcher(self) -> None:
        """Close the job server's channel; it then kills any job in flight and exits."""
        chan, self._launcher = self._launcher, None
        if chan is not None:
            try:
                chan.close()
            except (OSError, paramiko.SSHException, EOFError):
                pass

    def _next_message(self, deadline: float) -> tuple[dict[str, Any] | None, str | None]:
        """The job server's next JSON line, or (None, why): "exited", "timeout" or a lost link."""
        chan = self._launcher
        assert chan is not None
        transport = chan.get_transport()
        buf = self._launcher_out
        try:
            while True:
                newline = buf.find(b"\n")
                if newline >= 0:
                    line = bytes(buf[:newline])
                    del buf[:newline + 1]
                    return json.loads(line), None
                if _drain(chan, buf, self._launcher_err):
                    continue
                if transport is None or not transport.is_active():
                    return None, "connection lost"
                if chan.closed or chan.eof_received or chan.exit_status_ready():
                    return None, "exited"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None, "timeout"
                select.select([chan], [], [], min(0.2, remaining))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            return None, f"connection lost ({exc or type(exc).__name__})"
        except ValueError as exc:  # not JSON: a broken server, as good as gone
            return None, f"connection lost (unreadable answer from the agent: {exc})"

    def _serve_job(self, job: dict[str, Any], kind: str, timeout_s: float, pid: list[int],
                   ) -> tuple[int | None, bytes, bytes, str | None]:
        """Run `job` through the job server; (exit status or None, stdout, stderr, why).

        The status is shell-like (128 + N for a job killed by signal N), as the result mapping
        in `run_agent` expects; `pid` receives the agent's pid as soon as it is known.
        """
        deadline = time.monotonic() + timeout_s
        chan = self._launcher
        if chan is None or chan.closed or chan.exit_status_ready():
            chan = self._start_launcher()
        try:
            chan.sendall((json.dumps({"job": job, "kind": kind}) + "\n").encode())
        except (paramiko.SSHException, OSError, EOFError) as err:
            return None, b"", b"", f"connection lost ({err or type(err).__name__})"
        for _ in range(2):  # first {"pid": N}, then the job's end
            message, why = self._next_message(deadline)
            if message is None:
                return self._launcher_gone(why)
            if "pid" in message:
                pid.append(int(message["pid"]))
                continue
            if "returncode" in message:
                code = int(message["returncode"])
                status = code if code >= 0 else SIGNAL_BASE - code
                return status, message["stdout"].encode(), message["stderr"].encode(), None
            self._stop_launcher()
            return None, b"", str(message).encode(), "connection lost (agent refused the job)"
        return self._launcher_gone("connection lost (no answer from the agent)")

    def _launcher_gone(self, why: str | None) -> tuple[int | None, bytes, bytes, str | None]:
        """The job server stopped answering: its exit status if it exited (127: no python)."""
        chan = self._launcher
        stderr = bytes(self._launcher_err)
        status = None
        if why == "exited" and chan is not None and chan.exit_status_ready():
            status = chan.exit_status if chan.exit_status >= 0 else None
        self._stop_launcher()
        return status, b"", stderr, None if why == "exited" else why

    def run_agent(self, job: dict[str, Any], timeout_s: float) -> AgentRun:
        job_id = str(job.get("job_id", "?"))
        started = time.perf_counter()
        pid: list[int] = []
        kind = str(job.get("device_kind") or self.profile.kind)
        try:
            status, out, err, why = self._serve_job(job, kind, timeout_s, pid)
        except TransportError as exc:
            return failed_run(job_id, "connection_lost" if self._client is None
                              or not self._active() else "transport", str(exc))
        wall = time.perf_counter() - started
        stdout = out.decode(errors="replace")
        stderr = err.decode(errors="replace")
        if why == "timeout":
            self._stop_launcher()
            self._kill_remote(pid[0] if pid else None)
            return failed_run(job_id, "timeout",
                              f"job exceeded its timeout of {timeout_s:g} s on {self.where} and "
                              "was killed", stderr, wall)
        if why is not None:
            self._stale_pid = pid[0] if pid else None
            self.close()
            return failed_run(job_id, "connection_lost",
                              f"{why} to {self.where} during the job", stderr, wall)
        if status == NO_CACHE_DIR:
            return failed_run(job_id, "transport", f"cannot enter cache directory "
                              f"{self._cache_dir} on {self.where}", stderr, wall)
        if status == 127 and not stdout.strip():
            return failed_run(job_id, "agent_start", f"{self.profile.python or 'python3'} not "
                              f"found on {self.where} (profile field python)", stderr, wall)
        if status is None:
            return failed_run(job_id, "agent_crashed", f"agent on {self.where} ended without an "
                              "exit status (killed?)", stderr, wall)
        returncode = status
        if SIGNAL_BASE < status <= SIGNAL_BASE + 64:
            returncode = -(status - SIGNAL_BASE)
        run = parse_agent_output(job_id, stdout, stderr, returncode, wall)
        error = run.result.get("error") or {}
        exception = _last_exception(stderr)
        if returncode > 0 and exception and error.get("kind") == "agent_crashed":
            hint = ""
            if exception.startswith(("ModuleNotFoundError", "ImportError")):
                hint = f" (install it for {self.profile.python or 'python3'} on the device)"
            error["message"] = (f"agent on {self.where} exited with status {returncode}: "
                                f"{exception}{hint}")
        if returncode < 0 and run.result.get("error"):
            try:
                name = signal.Signals(-returncode).name
            except ValueError:
                name = None
            if name:
                run.result["error"]["message"] = run.result["error"]["message"].replace(
                    f"signal {-returncode}", f"signal {-returncode} ({name})", 1)
        return run

    def _kill_remote(self, pid: int | None) -> None:
        """Kill an agent process that is still running on the device."""
        if pid is None:
            return
        agent_sha = agent_bundle()[1]
        # Only if that pid is still our agent wrapper: a reused pid must not be touched.
        script = (f"grep -q {shlex.quote(agent_sha)} /proc/{pid}/cmdline 2>/dev/null || "
                  f"ps -o args= -p {pid} 2>/dev/null | grep -q {shlex.quote(agent_sha)} || exit 0; "
                  f"kill -KILL {pid} 2>/dev/null; exit 0")
        try:
            self._exec(f"/bin/sh -c {shlex.quote(script)}",
                       timeout_s=self.settings.command_timeout_s)
        except TransportError:
            pass

    def _kill_stale_agent(self) -> None:
        pid, self._stale_pid = self._stale_pid, None
        self._kill_remote(pid)

