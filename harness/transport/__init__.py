"""Transports: how the host reaches a device (`local`, `ssh`); `transport_for` picks one."""

from harness.transport.base import transport_for

__all__ = ["transport_for"]
