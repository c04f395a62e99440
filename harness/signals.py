"""SIGTERM taken as Ctrl-C while a run measures, and interrupts that cannot be lost in a build.

`kill`, a CI job's timeout and systemd stop a process with SIGTERM, whose default ends Python at
once: the run's row stayed `running` for ever and nothing said what was kept. Within
`sigterm_as_interrupt()` it raises KeyboardInterrupt in the main thread instead, so a run stopped
either way ends alike: what finished is stored, the run is marked `interrupted`, the command says
so and exits with 130.

A KeyboardInterrupt can be lost: Python only prints one raised inside a gc callback ("Exception
ignored in: <function _xla_gc_callback ...>", JAX registers one, and the TFLite exporter brings
JAX in) and goes on, and a build interrupted there ran to its end and exited 0. Within
`remembered_interrupts()` SIGINT and SIGTERM also set a flag, which `raise_if_interrupted()`
and the end of the block turn into KeyboardInterrupt again. Every command runs inside one
(`harness.cli.main`); the build between its steps, the bench between sessions and the nightly
while it waits for its devices look for the flag.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


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


_interrupted = False


def interrupted() -> bool:
    """Whether SIGINT or SIGTERM came within the current `remembered_interrupts()` block."""
    return _interrupted


def raise_if_interrupted() -> None:
    """KeyboardInterrupt if an interrupt came, even one whose own KeyboardInterrupt was lost."""
    if _interrupted:
        raise KeyboardInterrupt


def _remember(signum: int, frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _unraisable_but_interrupts(previous: Any) -> Any:
    """An unraisable-exception hook that says nothing of a KeyboardInterrupt, which is
    remembered and raised again, and passes the rest on to `previous`."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    return hook


@contextmanager
def remembered_interrupts() -> Iterator[None]:
    """Within this block SIGINT and SIGTERM raise KeyboardInterrupt and are remembered: one
    that something swallowed is raised again by `raise_if_interrupted()`, and at the latest
    when the block ends (an error that ends the block after an interrupt becomes
    KeyboardInterrupt, chained). A signal the process ignores (a job started with `&` by a
    script ignores SIGINT) stays ignored. A no-op outside the main thread."""
    global _interrupted
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, _remember)
    except ValueError:  # not the main thread
        yield
        return
    outer, _interrupted = _interrupted, False
    hook, sys.unraisablehook = sys.unraisablehook, _unraisable_but_interrupts(sys.unraisablehook)
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException as err:
        if _interrupted:
            raise KeyboardInterrupt from err
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
        came, _interrupted = _interrupted, outer or _interrupted
    if came:
        raise KeyboardInterrupt
