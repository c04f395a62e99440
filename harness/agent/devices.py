"""Device-kind specific probes (Jetson, Raspberry Pi, Coral) layered on the generic Linux ones.

Each function returns extra fields for `kind`, or nothing for a plain Linux machine.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


def fingerprint(kind: str) -> Dict[str, Any]:
    return {}


def state(kind: str) -> Dict[str, Any]:
    return {}


def throttled(before: Dict[str, Any], after: Dict[str, Any], kind: str) -> Optional[bool]:
    return None
