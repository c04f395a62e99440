"""harness.registry: one name -> implementation registry, eager and lazy entries."""

from __future__ import annotations

import sys

import pytest

from harness.errors import UnknownNameError
from harness.registry import RUNTIMES, Registry


def test_register_get_and_unknown_name_lists_the_known_ones() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("b")
    def b() -> int:
        return 2

    reg.add("a", 1)
    assert reg.get("a") == 1 and reg.get("b") is b
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert "a" in reg and "c" not in reg
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", 3)


def test_lazy_entry_is_known_before_import_and_imported_on_get() -> None:
    sys.modules.pop("colorsys", None)
    reg: Registry[object] = Registry("thing", lazy={"hls": "colorsys:rgb_to_hls"})
    assert reg.names() == ["hls"] and "hls" in reg
    assert "colorsys" not in sys.modules  # names and membership import nothing
    import colorsys

    assert reg.get("hls") is colorsys.rgb_to_hls
    with pytest.raises(ValueError, match="module:attr"):
        reg.add_lazy("bad", "colorsys")


def test_lazy_module_that_registers_itself_fills_its_entry() -> None:
    reg: Registry[object] = Registry("thing", lazy={"x": "json:dumps"})
    reg.add("x", "registered on import")  # what a module's decorator does when imported
    assert reg.get("x") == "registered on import"


def test_missing_optional_dependency_raises_import_error() -> None:
    reg: Registry[object] = Registry("thing", lazy={"gone": "no_such_module_here:X"})
    with pytest.raises(ImportError):
        reg.get("gone")


def test_host_runtimes_come_from_the_agent_table() -> None:
    from harness.agent.runtimes import RUNTIME_MODULES

    assert RUNTIMES.names() == sorted(RUNTIME_MODULES)
