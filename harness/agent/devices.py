"""Device-kind specific probes (Jetson, Raspberry Pi, Coral) layered on the generic Linux ones.

Each function returns extra fields for `kind`, or nothing for a plain Linux machine.
"""

from __future__ import annotations

from typing import Any


def fingerprint(kind: str) -> dict[str, Any]:
    return {}


def state(kind: str) -> dict[str, Any]:
    return {}


def throttled(before: dict[str, Any], after: dict[str, Any], kind: str) -> bool | None:
    return None
