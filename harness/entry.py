"""The `edgebench` console script: `harness.cli.main` behind a guard for Ctrl-C at start-up.

Importing the command (rich, numpy, the store) takes a few hundred milliseconds, and a Ctrl-C in
them ended in a traceback from whichever import it interrupted, and a death by SIGINT. Here it
ends as a Ctrl-C later does: one line on stderr, exit 130. This module imports nothing beyond
`sys`, so that the guard is in place at once and start-up is no slower.
"""

from __future__ import annotations

import sys

INTERRUPTED = "edgebench: interrupted; finished jobs are in the store"
# before the command itself was imported, nothing was read, written or measured yet
INTERRUPTED_STARTING = "edgebench: interrupted while starting; nothing was done"


def interrupted(message: str = INTERRUPTED) -> int:
    """Say that the command was stopped by Ctrl-C; its exit status."""
    print(message, file=sys.stderr, flush=True)
    # CPython (3.11, 3.12) remembers a KeyboardInterrupt that ended a string exec() (the code a
    # dataclass or attrs class is made from, at an import), even one caught since, and the
    # process then dies by SIGINT instead of exiting with 130. A string exec clears that memory.
    exec("pass")
    return 130


def main() -> int:
    try:
        from harness.cli import main as command
    except KeyboardInterrupt:
        return interrupted(INTERRUPTED_STARTING)
    try:
        return command()
    except KeyboardInterrupt:  # before the command's own handler is in place
        return interrupted()


if __name__ == "__main__":  # `python -m harness.entry`, where the console script is not installed
    sys.exit(main())
