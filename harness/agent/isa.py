"""The CPU instruction-set extensions that change which kernels a runtime runs.

Int8 kernels, speed and even accuracy change with them: ONNX Runtime's u8s8 kernels on an x86 CPU
with AVX2 but no VNNI add pairs of products in 16 bits and can saturate, where VNNI accumulates in
32 bits. So the extensions are part of what a device is: the fingerprint records them and results
from different instruction sets are not compared as if they came from one machine.

Read from `/proc/cpuinfo` (x86 `flags`, Arm `Features`); stdlib only, Python 3.8 syntax.
"""

from __future__ import annotations

import re

# Extensions that select different inference kernels, in the order they are listed.
KERNEL_FLAGS = {
    "x86": ("sse4_2", "avx", "fma", "avx2", "f16c", "avx512f", "avx512bw", "avx512_vnni",
            "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8"),
    # asimd is Neon on AArch64 (32-bit Arm kernels call it neon); asimddp = sdot/udot, i8mm =
    # int8 matrix multiply, the ones int8 kernels use.
    "arm": ("neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2"),
}


def cpu_flags(cpuinfo: str) -> list[str]:
    """Every flag of the first CPU's `flags` (x86) or `Features` (Arm) line, as listed."""
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", cpuinfo, re.MULTILINE)
    return match.group(1).split() if match else []


def family(flags: list[str], machine: str = "") -> str | None:
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "i386", "i686") or "sse2" in flags:
        return "x86"
    if machine.startswith(("aarch64", "arm")) or "asimd" in flags or "neon" in flags:
        return "arm"
    return None


def kernel_flags(cpuinfo: str, machine: str = "") -> dict[str, object]:
    """`{"family": "x86", "flags": [...], "isa": "x86 avx2 avx512f avx512_vnni"}` for the
    fingerprint; `isa` names the extensions that matter, the same string for identical CPUs."""
    flags = cpu_flags(cpuinfo)
    fam = family(flags, machine)
    present = set(flags)
    relevant = [f for f in KERNEL_FLAGS.get(fam or "", ()) if f in present]
    return {
        "family": fam,
        "flags": relevant,
        "isa": " ".join([fam or machine or "unknown"] + relevant) if flags else None,
    }
