"""Reading the YAML files a user hands edgebench (device profiles, suites), defensively.

PyYAML's safe loader builds no objects, but it still accepts what no profile or suite means and
what hangs or crashes the code that walks the result: a key given twice (the last one wins
silently), an anchor that contains itself, and aliases that multiply (a "billion laughs" file of a
few hundred bytes expands to billions of nodes). Here a file is bounded in size, duplicate keys
and recursive anchors are refused, and the expanded size of the document is bounded, each with a
`ConfigError` naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from harness.errors import ConfigError

MAX_BYTES = 1 << 20  # a profile or suite is a few KB
MAX_NODES = 100_000  # after expanding aliases


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: PyYAML's own error says so below
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: Node) -> None:
    """Refuse an anchor inside itself and a document that aliases expand beyond MAX_NODES."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise yaml.composer.ComposerError(
                None, None, "an anchor refers to itself (recursive alias)", node.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child) if not isinstance(child, ScalarNode) else 1
            if total > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"expands to more than {MAX_NODES} values (aliases)",
                    node.start_mark)
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def load(path: Path) -> Any:
    """The YAML document in `path`; ConfigError (file, line) for anything unreadable or hostile.
    FileNotFoundError is left to the caller, whose message knows what the file was for."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ConfigError(path, f"cannot read ({err.strerror or err})") from err
    if len(raw) > MAX_BYTES:
        raise ConfigError(path, f"larger than {MAX_BYTES // 1024} KiB; not a profile or suite")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(path, f"not UTF-8 text (byte {raw[err.start]:#04x} on line {line})"
                          ) from None
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()  # type: ignore[no-untyped-call]
        if root is None:
            return None
        _check_expansion(root)
        return loader.construct_document(root)  # type: ignore[no-untyped-call]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(path, f"malformed YAML: {where}{problem}") from None
    except RecursionError:
        raise ConfigError(path, "malformed YAML: nested too deeply") from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
