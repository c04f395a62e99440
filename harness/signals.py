"""SIGTERM taken as Ctrl-C while a run measures.

`kill`, a CI job's timeout and systemd stop a process with SIGTERM, whose default ends Python at
once: the run's row stayed `running` for ever and nothing said what was kept. Within
`sigterm_as_interrupt()` it raises KeyboardInterrupt in the main thread instead, so a run stopped
either way ends alike: what finished is stored, the run is marked `interrupted`, the command says
so and exits with 130.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises KeyboardInterrupt; a no-op outside the main thread
    (where Python lets no handler be set)."""
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
