"""User-facing errors of the host side.

Every error a user can cause (bad YAML, unknown device, missing file, unreachable host) is an
`EdgebenchError`: the CLI prints its message as one line on stderr and exits with its `exit_code`.
Messages name the file, field, host or model they are about. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class EdgebenchError(Exception):
    """An error caused by input the user can fix; printed without a traceback."""

    exit_code = 2


class ConfigError(EdgebenchError):
    """A profile or suite file is missing, malformed or has an invalid field."""

    def __init__(self, path: object, message: str, field: str | None = None) -> None:
        self.path = str(path)
        self.field = field
        self.message = message  # what is wrong, without the file and field
        where = f"{self.path}: {field}" if field else self.path
        super().__init__(f"{where}: {message}")


class UnknownNameError(EdgebenchError):
    """A name (runtime, device, technique, model...) that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")


class TransportError(EdgebenchError):
    """A device cannot be reached, authenticated or talked to."""

    exit_code = 3


class AccessError(TransportError):
    """The device answers but this side's way in is wrong: a key file that does not exist or is
    encrypted, a key the device refuses, a host key that changed. Trying again cannot help, so
    the nightly does not retry it."""


class StoreError(EdgebenchError):
    """The result database is unusable or a run id does not exist."""
