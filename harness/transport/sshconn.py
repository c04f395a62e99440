"""One SSH connection to a device (paramiko): connecting, host keys, jump host, remote commands.

Authentication is by key file (that key alone, so a wrong key fails clearly) or, without one, the
SSH agent and the default keys; never by password. Host keys are checked against known_hosts, and
an unknown host is refused with the command that trusts it unless the profile says
`trust_on_first_use` (which says on stderr which key it trusted); a changed key is always
refused. A jump host, if the profile names one, is
reached with the same credentials and forwards to the device. The connection reconnects on demand
(`ensure`) after it drops, and tells its owner through `on_connect`, which forgets what it knew of
the old connection. Remote commands run on channels of this one connection: `exec` runs one to the
end, `start` leaves one running (the job server). Every failure to connect raises
`TransportError` naming the host and what to do about it.
"""

from __future__ import annotations

import getpass
import logging
import os
import select
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from harness.config import SSHSettings
from harness.errors import AccessError, TransportError

# paramiko logs what goes wrong in its transport thread (a silent port's banner timeout) with a
# traceback; with no handler of its own that reaches stderr through logging's last resort, on top
# of the one line this module raises for the same fault.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

READ_CHUNK = 65536
# exit-status can overtake the last data of a channel; how long to wait for its end of output
EOF_GRACE_S = 2.0


def drain(chan: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
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


# What paramiko raises when it had no key at all to offer.
NO_KEYS = "No authentication methods available"
# The private key classes paramiko tries on a key file, in its order (SSHClient._auth).
KEY_CLASSES = (paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key)


def default_keys() -> list[Path]:
    """The ~/.ssh/id_* files paramiko tries when the profile names no key file."""
    found = []
    for name in ("rsa", "ecdsa", "ed25519"):
        for folder in (".ssh", "ssh"):
            path = Path(f"~/{folder}/id_{name}").expanduser()
            if path.is_file():
                found.append(path)
    return found


def key_problem(path: str | Path) -> Exception | None:
    """Why paramiko cannot use the private key in `path` (PasswordRequiredException if it is
    encrypted), None if it can."""
    problem: Exception | None = None
    for key_class in KEY_CLASSES:
        try:
            key_class.from_private_key_file(str(path))
            return None
        except paramiko.PasswordRequiredException as err:
            return err
        except (paramiko.SSHException, ValueError) as err:
            problem = problem or err
        except OSError as err:
            return err
    return problem


def encrypted_key_file(where: str, key_file: str) -> str:
    return (f"{where}: key file {key_file} (ssh.key_file) is encrypted; load it into ssh-agent "
            f"(`ssh-add {key_file}`) and remove ssh.key_file from the profile")


def check_key_file(where: str, key_file: str) -> None:
    """AccessError, naming the file and `ssh.key_file`, unless it is a private key paramiko can
    use; paramiko's own words ("not a valid OPENSSH private key file") name neither."""
    path = Path(key_file)
    if path.is_dir():
        raise AccessError(f"{where}: key file {key_file} (ssh.key_file) is a folder; set "
                          f"ssh.key_file to the private key file in it, such as "
                          f"{path / 'id_ed25519'}")
    if not path.exists():
        raise AccessError(f"{where}: key file {key_file} does not exist (ssh.key_file)")
    problem = key_problem(path)
    if problem is None:
        return
    if isinstance(problem, paramiko.PasswordRequiredException):
        raise AccessError(encrypted_key_file(where, key_file))
    if isinstance(problem, OSError):
        raise AccessError(f"{where}: cannot read key file {key_file} (ssh.key_file): "
                          f"{problem.strerror or problem}")
    if key_file.endswith(".pub"):
        raise AccessError(f"{where}: key file {key_file} (ssh.key_file) is a public key; set "
                          f"ssh.key_file to its private key, {key_file[:-len('.pub')]}")
    raise AccessError(f"{where}: key file {key_file} (ssh.key_file) is not a private key "
                      f"paramiko can read ({problem}); set ssh.key_file to the private key "
                      "whose .pub is in the device's authorized_keys")


def check_key_settings(where: str, settings: SSHSettings) -> None:
    """AccessError if the profile's `ssh.key_file` is set and cannot be used: said before a
    bench builds and begins a run whose every measurement would fail on it."""
    if settings.key_file:
        check_key_file(where, str(Path(settings.key_file).expanduser()))


def no_key_to_offer(where: str) -> str:
    agent = ("no SSH agent runs (SSH_AUTH_SOCK is unset)" if not os.environ.get("SSH_AUTH_SOCK")
             else "the SSH agent holds no key")
    return (f"{where}: no key to log in with: the profile has no ssh.key_file, {agent}, and "
            f"{Path('~/.ssh').expanduser()} has no id_rsa, id_ecdsa or id_ed25519; set "
            "ssh.key_file to the private key whose .pub is in the device's authorized_keys")


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
        raise AccessError(
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
        # What was trusted is said once, so it can be compared with the device's own key.
        print(f"edgebench: trusted the host key of {hostname} on first use ({key.get_name()} "
              f"{key_fingerprint(key)}) and added it to {self.known_hosts}", file=sys.stderr,
              flush=True)


@dataclass(frozen=True)
class Exec:
    """How a remote command ended: `why` is "timeout" or "connection lost ..." if it did not."""

    status: int | None
    stdout: bytes
    stderr: bytes
    why: str | None = None


class SSHConnection:
    """One connection to a device, reconnected when it has dropped."""

    def __init__(self, settings: SSHSettings,
                 on_connect: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_connect = on_connect
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.connects = 0

    @property
    def where(self) -> str:
        s = self.settings
        return f"{s.user or getpass.getuser()}@{s.host}:{s.port}"

    def open(self) -> None:
        """Connect unless connected; raise TransportError saying why the device is unusable."""
        if self.active():
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
        self._check_quiet_login()
        self.connects += 1
        if self.on_connect is not None:
            self.on_connect()

    def _check_quiet_login(self) -> None:
        """Refuse a login that prints on stdout (a shell startup file, a ForceCommand): every
        command's output, SFTP and the agent's protocol would start with its text."""
        done = self.exec("true", timeout_s=self.settings.command_timeout_s)
        if done.why is None and done.status != 0:  # a nologin or false shell says so on stdout
            self.close()
            said = (done.stdout + done.stderr).decode(errors="replace").strip().splitlines()
            raise TransportError(
                f"{self.where}: the login runs no command (`true` exited {done.status}"
                + (f", saying {said[0][:60]!r}" if said else "") + "): the user's shell is "
                "nologin or false, or a ForceCommand refuses it; give ssh.user a login shell")
        if done.why is None and done.stdout:
            self.close()
            first = done.stdout.decode(errors="replace").strip().splitlines() or [""]
            raise TransportError(
                f"{self.where}: the login prints {first[0][:60]!r} on stdout before every "
                "command (a shell startup file or ForceCommand); edgebench needs that output "
                "gone or on stderr")

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
        if key_file:
            check_key_file(where, key_file)
        started = time.monotonic()
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
            raise AccessError(
                f"{where}: host key CHANGED ({err.key.get_name()} {key_fingerprint(err.key)}, "
                f"known_hosts has {key_fingerprint(err.expected_key)}); this can be an attack. "
                f"If the device was reinstalled, remove the old key with `ssh-keygen -f "
                f"{known_hosts} -R {shlex.quote(known_hosts_name(host, port))}`") from err
        except paramiko.PasswordRequiredException as err:
            client.close()
            if key_file:
                raise AccessError(encrypted_key_file(where, key_file)) from err
            # paramiko's look_for_keys tried ~/.ssh/id_*: one of those is locked
            locked = [str(k) for k in default_keys() if isinstance(
                key_problem(k), paramiko.PasswordRequiredException)] or ["~/.ssh/id_*"]
            keys = (f"key {locked[0]} is" if len(locked) == 1
                    else f"keys {' and '.join(locked)} are")
            raise AccessError(
                f"{where}: the default {keys} encrypted and no SSH agent offered a key the device "
                f"accepts (the profile has no ssh.key_file); load it into ssh-agent "
                f"(`ssh-add {locked[0]}`) or set ssh.key_file to an unencrypted key") from err
        except paramiko.AuthenticationException as err:
            client.close()
            what = f"key {key_file}" if key_file else "the SSH agent's and ~/.ssh's keys"
            raise AccessError(
                f"{where} refused {what} ({err}); add the public key to "
                f"~{user or ''}/.ssh/authorized_keys on the device or fix ssh.key_file/ssh.user"
            ) from err
        except TimeoutError as err:
            client.close()
            raise TransportError(f"cannot connect to {where}: timed out after "
                                 f"{s.connect_timeout_s:g} s") from err
        except (paramiko.SSHException, OSError, EOFError) as err:
            silent = self._no_ssh_answer(client, host, port, time.monotonic() - started)
            client.close()
            if str(err) == NO_KEYS:  # nothing to offer: no key file, no agent key, no ~/.ssh key
                raise AccessError(no_key_to_offer(where)) from err
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            raise TransportError(silent or f"cannot connect to {where}: {reason}") from err
        return client

    def _no_ssh_answer(self, client: paramiko.SSHClient, host: str, port: int,
                       waited_s: float) -> str | None:
        """Why a port that took the TCP connection gave no SSH session, if that is what
        happened: it said nothing (a hung board, a port that is not SSH's), closed it at once (an
        sshd at MaxStartups) or stopped within the handshake. paramiko's own words for these are
        about its internals ("Error reading SSH protocol banner", "No existing session")."""
        transport = client.get_transport()
        if transport is None or transport.session_id is not None:
            return None  # no TCP connection, or the handshake was done: its own error says why
        timeout = self.settings.connect_timeout_s
        if transport.remote_version:
            return (f"the SSH handshake with {host}:{port} did not finish within {timeout:g} s "
                    "(ssh.connect_timeout_s)")
        if waited_s < timeout * 0.9:
            return (f"{host}:{port} closed the connection before saying anything: not an SSH "
                    "port, or its sshd refuses new connections for now (MaxStartups)")
        return (f"no SSH server answered on {host}:{port} within {timeout:g} s "
                "(ssh.connect_timeout_s): the device may hang, or the port is not SSH's")

    def active(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def close(self) -> None:
        for thing in (self._sftp, self._client, self._jump):
            if thing is not None:
                try:
                    thing.close()
                except (OSError, paramiko.SSHException, EOFError):
                    pass
        self._sftp = self._client = self._jump = None

    def ensure(self) -> paramiko.Transport:
        """The live connection's transport, reconnecting if it has dropped."""
        if not self.active():
            self.open()
        assert self._client is not None
        transport = self._client.get_transport()
        assert transport is not None
        return transport

    def sftp(self) -> paramiko.SFTPClient:
        """The connection's SFTP session (one, opened on first use)."""
        self.ensure()
        if self._sftp is None:
            assert self._client is not None
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, OSError, EOFError) as err:
                raise TransportError(f"{self.where}: cannot open SFTP: {err}") from err
        return self._sftp

    def start(self, command: str, what: str) -> paramiko.Channel:
        """Start `command` (`what` names it in errors) and leave it running; its channel carries
        its stdin, stdout and stderr."""
        transport = self.ensure()
        try:
            chan = transport.open_session(timeout=self.settings.command_timeout_s)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as err:
            raise TransportError(f"cannot start {what} on {self.where}: {err}") from err
        return chan

    def exec(self, command: str, stdin: bytes = b"", timeout_s: float | None = None) -> Exec:
        """Run `command` to its end (or `timeout_s`); raise TransportError only to connect."""
        transport = self.ensure()
        try:
            chan = transport.open_session(timeout=self.settings.command_timeout_s)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
        except (paramiko.SSHException, OSError, EOFError) as err:
            return Exec(None, b"", b"", f"connection lost ({err or type(err).__name__})")
        out, err_buf = bytearray(), bytearray()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        exited_at: float | None = None
        why = None
        try:
            while True:
                got = drain(chan, out, err_buf)
                if not transport.is_active():
                    why = "connection lost"
                    break
                if chan.closed or (chan.exit_status_ready() and chan.eof_received):
                    drain(chan, out, err_buf)
                    break
                if chan.exit_status_ready():
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
        return Exec(status, bytes(out), bytes(err_buf), why)
