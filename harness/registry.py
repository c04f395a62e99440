"""The one name -> implementation registry: profiles, suites and the CLI name things by string.

Modelled on timm's `register_model` and labgrid's `target_factory`: a decorator (or `add`) files an
implementation under a name, and looking up a name that is not there fails with the list of names
that are (`UnknownNameError`). Techniques (`compress.techniques.TECHNIQUES`), models and datasets
(`zoo.models.MODELS`, `zoo.datasets.DATASETS`), transports and runtimes each keep one `Registry`.
An entry may also be declared lazily as ``"package.module:attr"``: its name is known at once, but
the module is imported on first `get`, so a heavy or optional dependency (paramiko, an inference
engine) costs nothing until that implementation is used. The host's view of the agent's runtimes,
`RUNTIMES`, is such a registry built from the agent's own table, which stays in the agent because
the agent imports nothing from the rest of `harness`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, cast

from harness.agent.runtimes import RUNTIME_MODULES
from harness.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Implementations of one kind (``"technique"``, ``"transport"``...) by name."""

    def __init__(self, kind: str, lazy: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        for name, target in (lazy or {}).items():
            self.add_lazy(name, target)

    def add(self, name: str, item: T) -> T:
        """File `item` under `name`; a second registration of one name is a bug."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        # A module declared lazily may register itself when imported; that fills the entry.
        self._lazy.pop(name, None)
        self._items[name] = item
        return item

    def add_lazy(self, name: str, target: str) -> None:
        """Declare `name` as ``"package.module:attr"``, imported on first `get`."""
        module, sep, attr = target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"{self.kind} {name!r}: lazy target {target!r} is not 'module:attr'")
        if name in self._items or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._lazy[name] = target

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`: ``@REGISTRY.register("name")``."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        """The implementation named `name`; UnknownNameError lists the known names.

        A lazy entry's ImportError propagates: callers decide whether a missing optional
        dependency means "unsupported here" or a broken install.
        """
        if name in self._items:
            return self._items[name]
        target = self._lazy.get(name)
        if target is None:
            raise UnknownNameError(self.kind, name, self.names())
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        if name not in self._items:  # the import may have registered it already
            item = cast(T, getattr(module, attr))
            self._lazy.pop(name, None)
            self._items[name] = item
        return self._items[name]

    def names(self) -> list[str]:
        """Every known name, lazy ones included, sorted; imports nothing."""
        return sorted({*self._items, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


# The runtimes the agent can run, seen from the host (planning, `--runtime` validation). The agent
# keeps its own name -> module table because it is copied to devices without the rest of harness;
# this is the one place the host reads it. `get` imports the engine, so the host calls it only
# where it runs a model itself.
RUNTIMES: Registry[Any] = Registry("runtime", lazy={
    name: f"harness.agent.runtimes{module}:RUNTIME" for name, module in RUNTIME_MODULES.items()
})
