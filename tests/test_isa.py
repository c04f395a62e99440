"""The instruction-set part of the fingerprint, parsed from real /proc/cpuinfo captures (sources in
tests/fixtures/cpuinfo/README.md) and read from this machine."""

from __future__ import annotations

from pathlib import Path

from harness.agent import isa, probes

CAPTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


def parse(name: str, machine: str) -> dict:
    return isa.kernel_flags((CAPTURES / name).read_text(), machine)


def test_x86_with_vnni_and_amx() -> None:
    got = parse("x86_64-xeon-amx.txt", "x86_64")
    assert got["family"] == "x86"
    for flag in ("avx2", "avx512f", "avx512_vnni", "amx_int8"):
        assert flag in got["flags"]
    assert got["isa"].startswith("x86 ") and "avx512_vnni" in got["isa"]


def test_x86_avx2_only_is_told_apart() -> None:
    got = parse("x86_64-epyc-7302p-avx2.txt", "x86_64")
    assert got["flags"] == ["sse4_2", "avx", "fma", "avx2", "f16c"]
    assert got["isa"] == "x86 sse4_2 avx fma avx2 f16c"
    assert got["isa"] != parse("x86_64-xeon-amx.txt", "x86_64")["isa"]


def test_arm_features() -> None:
    got = parse("aarch64-neoverse-n1.txt", "aarch64")
    assert got == {"family": "arm", "flags": ["asimd", "asimdhp", "asimddp"],
                   "isa": "arm asimd asimdhp asimddp"}
    # the family comes from the flags when the machine name is not given
    assert parse("aarch64-neoverse-n1.txt", "")["family"] == "arm"


def test_unreadable_cpuinfo_says_nothing_rather_than_guessing() -> None:
    assert isa.kernel_flags("", "x86_64") == {"family": "x86", "flags": [], "isa": None}


def test_this_machine_fingerprint_names_its_isa() -> None:
    fp = probes.fingerprint()
    if Path("/proc/cpuinfo").exists():
        assert fp["isa"] and fp["isa"].split()[0] in ("x86", "arm")
        assert set(fp["cpu_flags"]) <= set(isa.KERNEL_FLAGS["x86"] + isa.KERNEL_FLAGS["arm"])
