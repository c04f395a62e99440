"""What a `.tflite` file says about itself, read from its flatbuffer without any engine.

An old tflite-runtime loads some newer files and then fails on them or, worse, runs them wrong;
what it cannot handle is written in the file (TFLite's `schema.fbs`), so the LiteRT runtime reads
it here before it measures. A flatbuffer is a tree of tables: a table starts with the signed
offset back to its vtable, whose 16-bit entries (after its own size and the table's) give each
field's offset in the table, 0 or beyond its end for a field left at its default. Stdlib only:
this goes to the device with the agent, and the host's tests read the same files.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

# Field numbers in schema.fbs: Model.operator_codes, Model.buffers, Buffer.offset,
# OperatorCode.version.
_MODEL_OPERATOR_CODES = 1
_MODEL_BUFFERS = 4
_BUFFER_OFFSET = 1
_OPCODE_VERSION = 2


def _field(buf: Any, table: int, field: int) -> int | None:
    """Where field number `field` of the table at `table` is stored; None where it is absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    entry = 4 + 2 * field
    if entry >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + entry)[0]
    return table + offset if offset else None


def _tables(buf: Any, at: int | None) -> list[int]:
    """The tables of the vector of tables whose offset is stored at `at` ([] where absent)."""
    if at is None:
        return []
    start = at + struct.unpack_from("<I", buf, at)[0]
    count = struct.unpack_from("<I", buf, start)[0]
    return [start + 4 + 4 * i + struct.unpack_from("<I", buf, start + 4 + 4 * i)[0]
            for i in range(count)]


def _root(buf: Any) -> int:
    return int(struct.unpack_from("<I", buf, 0)[0])


def buffers_outside(path: str) -> int:
    """How many of the model's constant buffers are stored after the flatbuffer rather than in it
    (`Buffer.offset` > 1, the schema's mark for them: LiteRT's converters write them so for a
    model over 2 GB, and some for any model); a runtime older than TFLite 2.14 reads them as
    empty and fails at the first inference ("Input tensor 9 lacks data")."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        outside = 0
        for buffer in _tables(buf, _field(buf, _root(buf), _MODEL_BUFFERS)):
            at = _field(buf, buffer, _BUFFER_OFFSET)
            if at is not None and struct.unpack_from("<Q", buf, at)[0] > 1:
                outside += 1
        return outside


def operator_version_fields(data: bytes) -> list[int | None]:
    """Where each operator code's `version` is stored in the model `data` (None: left at its
    default, 1): for a test to write a version its runtime does not have."""
    return [_field(data, code, _OPCODE_VERSION)
            for code in _tables(data, _field(data, _root(data), _MODEL_OPERATOR_CODES))]
