"""`edgebench devices clean` and the mtimes it relies on, through a real OpenSSH server.

The device is this machine, so its cache is a temporary folder here: old entries are made by
setting their mtimes back, as many days of disuse would have left them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
import yaml

from harness.store import Store
from harness.transport.base import agent_bundle
from harness.transport.clean import clean_cache
from harness.transport.ssh import SSHTransport
from tests.conftest import make_tiny_onnx, run_cli
from tests.sshd import SSHServer, sshd

pytestmark = pytest.mark.ssh
__all__ = ["sshd"]

DAY = 86400.0
OLD = 40 * DAY  # beyond the default 30 days


def age(path: Path, seconds: float) -> None:
    """Make `path` look last used `seconds` ago (its own mtime; a link's, not its target's)."""
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def put(path: Path, size: int, idle_s: float) -> Path:
    path.write_bytes(b"x" * size)
    age(path, idle_s)
    return path


def agent_folder(path: Path, idle_s: float) -> Path:
    """A `<sha>.d` as the job server leaves it: files, a __pycache__, a stamp."""
    (path / "edgebench_agent" / "__pycache__").mkdir(parents=True)
    put(path / "edgebench_agent" / "job.py", 300, idle_s)
    put(path / "edgebench_agent" / "__pycache__" / "job.cpython-312.pyc", 200, idle_s)
    put(path / "compiled-cpython-312-O0", 0, idle_s)
    age(path / "edgebench_agent" / "__pycache__", idle_s)
    age(path / "edgebench_agent", idle_s)
    age(path, idle_s)
    return path


ENGINE = "TensorrtExecutionProvider_TRTKernel_graph_main_graph_5294795976646608892_0_0"


def engine_folder(cache: Path, model_sha: str, idle_s: float) -> Path:
    """`tensorrt/<sha>` as the agent and ORT-TRT leave it: a folder per engine settings with an
    engine and its profile. Plain stand-ins for what ORT-TRT writes: TensorRT cannot run here."""
    folder = cache / "tensorrt" / model_sha
    (folder / "fp16").mkdir(parents=True)
    put(folder / "fp16" / f"{ENGINE}_fp16_sm87.engine", 900, idle_s)
    put(folder / "fp16" / f"{ENGINE}_fp16_sm87.profile", 40, idle_s)
    age(folder / "fp16", idle_s)
    age(folder, idle_s)
    return folder


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A cache with every kind of name in it, and things outside it that links point to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target_file = put(outside / "precious.bin", 50, OLD)
    target_dir = outside / "folder"
    target_dir.mkdir()
    put(target_dir / "keep.txt", 5, OLD)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    c = {
        "cache": cache, "target_file": target_file, "target_dir": target_dir,
        "fresh": put(cache / sha("fresh"), 1000, DAY),  # used yesterday
        "old": put(cache / sha("old"), 2000, OLD),
        "old_zip": put(cache / sha("agent-old"), 300, OLD),
        "old_folder": agent_folder(cache / f"{sha('agent-old')}.d", OLD),
        # the zip untouched for long, its folder used yesterday: one unit, in use
        "used_zip": put(cache / sha("agent-used"), 400, OLD),
        "used_folder": agent_folder(cache / f"{sha('agent-used')}.d", DAY),
        # a folder whose zip is gone
        "orphan_folder": agent_folder(cache / f"{sha('agent-gone')}.d", OLD),
        "old_part": put(cache / f"{sha('up')}.part-0123abcd", 70, 2 * 3600),
        "young_part": put(cache / f"{sha('up2')}.part-89abcdef", 80, 60),
        "old_tmp": agent_folder(cache / f"{sha('agent-old')}.d.tmp-0123456789ab", 2 * 3600),
        "old_aside": agent_folder(cache / f"{sha('agent-old')}.d.old-ba9876543210", 2 * 3600),
        "foreign": put(cache / "notes.txt", 10, OLD),
        "foreign_sha_like": put(cache / f"{sha('x')}.bak", 10, OLD),
        "foreign_upper": put(cache / sha("y").upper(), 10, OLD),
        # TensorRT engines: each model's go with its entry, by the latest mtime of the unit
        "old_engines": engine_folder(cache, sha("old"), OLD),
        "fresh_engines": engine_folder(cache, sha("fresh"), OLD),  # its model used yesterday
        "orphan_engines": engine_folder(cache, sha("model-gone"), OLD),
        "young_orphan_engines": engine_folder(cache, sha("model-gone2"), DAY),
        "trt": cache / "tensorrt",
    }
    trt = c["trt"]
    # engines of the older flat layout (stand-ins for ORT-TRT's files), now read by nothing
    c["flat_engine"] = put(trt / f"{ENGINE}_sm87.engine", 600, OLD)
    c["flat_profile"] = put(trt / f"{ENGINE}_sm87.profile", 30, OLD)
    c["young_flat_engine"] = put(trt / f"{ENGINE}_fp16_sm87.engine", 500, DAY)
    # the timing cache, shared by all models, and things not ORT's: never touched
    c["timing_cache"] = put(trt / "TensorrtExecutionProvider_cache_sm87.timing", 70, OLD)
    c["trt_foreign"] = put(trt / "calibration.flatbuffers", 20, OLD)
    c["trt_link"] = trt / sha("link")
    c["trt_link"].symlink_to(target_dir)
    c["trt_engine_link"] = trt / f"{ENGINE}_link.engine"
    c["trt_engine_link"].symlink_to(target_file)
    for link in (c["trt_link"], c["trt_engine_link"]):
        age(link, OLD)
    age(trt, OLD)
    # links named as entries, pointing out of the cache: neither they nor their targets go
    c["link_file"] = cache / sha("link")
    c["link_file"].symlink_to(target_file)
    c["link_dir"] = cache / f"{sha('link')}.d"
    c["link_dir"].symlink_to(target_dir)
    age(c["link_file"], OLD)
    age(c["link_dir"], OLD)
    # a link inside a folder that goes: removed as a link, its target untouched
    (c["old_folder"] / "escape").symlink_to(target_dir)
    age(c["old_folder"], OLD)
    return c


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def folder_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def name(layout: dict[str, Path], key: str) -> str:
    """How `devices clean` names a cache item: its path from the cache folder."""
    return str(layout[key].relative_to(layout["cache"]))


REMOVED = ("old", "old_zip", "old_folder", "orphan_folder", "old_part", "old_tmp", "old_aside",
           "old_engines", "orphan_engines", "flat_engine", "flat_profile")
KEPT = ("fresh", "used_zip", "used_folder", "young_part", "fresh_engines",
        "young_orphan_engines", "young_flat_engine")
OTHER = ("foreign", "foreign_sha_like", "foreign_upper", "link_file", "link_dir", "trt_foreign",
         "trt_link", "trt_engine_link")


def test_clean_removes_only_unused_entries_and_leftovers(sshd: SSHServer,
                                                         layout: dict[str, Path]) -> None:
    cache = layout["cache"]
    expected_bytes = sum(folder_bytes(layout[k]) if layout[k].is_dir() else
                         layout[k].stat().st_size for k in REMOVED)
    outside_before = tree(layout["target_dir"].parent)
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        report = clean_cache(transport, older_than_days=30)
    assert sorted(r["name"] for r in report.removed) == sorted(name(layout, k) for k in REMOVED)
    assert report.removed_bytes == expected_bytes
    for key in REMOVED:
        assert not os.path.lexists(layout[key]), key
    for key in (*KEPT, *OTHER, "timing_cache"):
        assert os.path.lexists(layout[key]), key
    for key in ("link_file", "link_dir", "trt_link", "trt_engine_link"):
        assert layout[key].is_symlink(), key
    assert tree(layout["target_dir"].parent) == outside_before  # nothing outside touched
    assert layout["target_file"].read_bytes() == b"x" * 50
    assert sorted(r["name"] for r in report.kept) == sorted(name(layout, k) for k in KEPT)
    assert {o["name"] for o in report.other} == {name(layout, k) for k in OTHER}
    assert report.errors == []
    # a second cleaning finds nothing more to do
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        assert clean_cache(transport, older_than_days=30).removed == []


def test_older_than_is_the_window(sshd: SSHServer, layout: dict[str, Path]) -> None:
    with SSHTransport(sshd.profile(cache_dir=str(layout["cache"]))) as transport:
        report = clean_cache(transport, older_than_days=50)
    # only the leftovers are past their hour; every entry and engine was used within 50 days
    assert sorted(r["name"] for r in report.removed) == sorted(
        layout[k].name for k in ("old_part", "old_tmp", "old_aside"))
    assert layout["old"].exists() and layout["old_folder"].exists()
    assert layout["orphan_engines"].exists() and layout["flat_engine"].exists()


def test_dry_run_removes_nothing(sshd: SSHServer, layout: dict[str, Path]) -> None:
    cache = layout["cache"]
    before = tree(cache)
    device = sshd.profile_file(cache.parent / "dev.yaml", cache_dir=str(cache))
    proc = run_cli("devices", "clean", str(device), "--dry-run")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert tree(cache) == before
    assert f"would remove {len(REMOVED)} entries" in proc.stdout
    assert "dry run: nothing removed" in proc.stdout
    for key in REMOVED:
        size = (folder_bytes(layout[key]) if layout[key].is_dir()
                else layout[key].stat().st_size) / 1e6
        assert f"would remove {name(layout, key)} ({size:.1f} MB" in proc.stdout


def test_cli_says_what_it_removed_and_what_remains(sshd: SSHServer,
                                                   layout: dict[str, Path]) -> None:
    cache = layout["cache"]
    device = sshd.profile_file(cache.parent / "dev.yaml", cache_dir=str(cache))
    proc = run_cli("devices", "clean", str(device), "--older-than", "30")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = " ".join(proc.stdout.split())
    assert f"removed {layout['old'].name}" in out
    assert f"cache {cache}: removed {len(REMOVED)} entries" in out
    assert f"kept {len(KEPT)} entries used in the last 30 days" in out
    assert "notes.txt" in out and "tensorrt/calibration.flatbuffers" in out  # left alone, said
    assert ".timing" not in out  # the cache's own, kept for every model
    assert not layout["old"].exists() and layout["fresh"].exists()


@pytest.mark.parametrize("how", ["link", "anyone_can_write"])
def test_a_tensorrt_folder_not_plainly_ours_is_left_alone(sshd: SSHServer,
                                                          layout: dict[str, Path],
                                                          how: str) -> None:
    trt = layout["trt"]
    if how == "link":  # tensorrt/ pointing out of the cache: its target is not the cache's
        real = layout["target_dir"].parent / "engines"
        trt.rename(real)
        trt.symlink_to(real)
    else:
        trt.chmod(0o777)
        real = trt
    before = tree(real)
    with SSHTransport(sshd.profile(cache_dir=str(layout["cache"]))) as transport:
        report = clean_cache(transport, older_than_days=30)
    assert tree(real) == before
    assert not any(r["name"].startswith("tensorrt") for r in report.removed + report.kept)
    assert {"name": "tensorrt", "kind": "link" if how == "link" else "folder"} in [
        {k: o[k] for k in ("name", "kind")} for o in report.other]
    assert not layout["old"].exists()  # the rest of the cache is cleaned as ever


@pytest.mark.parametrize("cache_dir", ["/", "~", "~/"])
def test_refuses_root_and_home(sshd: SSHServer, tmp_path: Path, cache_dir: str) -> None:
    """What the host can tell from the profile is refused with it (by the device's rule), before
    any connection: no bench or check ever fills such a cache."""
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=cache_dir)
    # --dry-run: should the refusal ever break, this test still removes nothing
    proc = run_cli("devices", "clean", str(device), "--dry-run")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"{device}: cache_dir: {cache_dir!r}: it is the" in lines[0]
    assert "devices clean refuses to clean it" in lines[0]
    assert "removed" not in proc.stdout


@pytest.mark.parametrize("how", ["path", "link"])
def test_refuses_the_home_folder_the_host_cannot_tell(sshd: SSHServer, tmp_path: Path,
                                                      how: str) -> None:
    """The device's home written out, or a link to it: only the device knows, and refuses."""
    home = os.path.realpath(Path.home())
    cache_dir = home
    if how == "link":
        (tmp_path / "home").symlink_to(home)
        cache_dir = str(tmp_path / "home")
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=cache_dir)
    proc = run_cli("devices", "clean", str(device), "--dry-run")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "device loopback-ssh" in lines[0] and "refusing to clean" in lines[0]
    assert f"cache_dir {home}: it is the home folder itself" in lines[0]
    assert "removed" not in proc.stdout


def test_refuses_a_folder_anyone_can_write(sshd: SSHServer, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    old = put(shared / sha("someone else's"), 10, OLD)
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(shared))
    proc = run_cli("devices", "clean", str(device))
    assert proc.returncode != 0
    assert f"refusing to clean cache_dir {shared}: anyone can write to it" in proc.stderr
    assert old.exists()


def test_refuses_a_cache_dir_that_is_a_file(sshd: SSHServer, tmp_path: Path) -> None:
    not_dir = put(tmp_path / "file", 3, OLD)
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(not_dir))
    proc = run_cli("devices", "clean", str(device))
    assert proc.returncode != 0 and "it is not a folder" in proc.stderr
    assert not_dir.exists()


def test_absent_cache_is_not_created(sshd: SSHServer, tmp_path: Path) -> None:
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(tmp_path / "none"))
    proc = run_cli("devices", "clean", str(device))
    assert proc.returncode == 0, proc.stderr
    assert "no cache at" in proc.stdout and not (tmp_path / "none").exists()


def test_local_device_has_no_cache() -> None:
    proc = run_cli("devices", "clean", "local")
    assert proc.returncode == 0, proc.stderr
    assert "keeps no cache" in proc.stdout


def test_older_than_below_a_day_is_refused() -> None:
    proc = run_cli("devices", "clean", "local", "--older-than", "0")
    assert proc.returncode == 2 and "at least 1" in proc.stderr


def bench(device: Path, model: Path, db: Path) -> dict:
    proc = run_cli("bench", "--device", str(device), "--model", str(model), "--quick",
                   "--db", str(db))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    with Store(db) as store:
        row = sorted(store.results(), key=lambda r: r["started_at"])[-1]
    assert row["status"] == "ok", row["error_message"]
    return row


def test_use_moves_mtime_forward_and_clean_then_bench_pushes_again(
        sshd: SSHServer, tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "tiny.onnx")
    cache = tmp_path / "cache"
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(cache))
    db = tmp_path / "results.db"
    bench(device, model, db)
    agent = agent_bundle()[1]
    model_sha = hashlib.sha256(model.read_bytes()).hexdigest()
    used = [cache / model_sha, cache / agent, cache / f"{agent}.d"]
    assert all(p.exists() for p in used)
    # what a Jetson would have built from it (stand-ins: TensorRT cannot run here), long ago
    engines = engine_folder(cache, model_sha, OLD)

    # entries trusted by a later connection (not pushed again) are marked used by it
    for p in used:
        age(p, OLD)
    long_ago = time.time() - OLD + DAY
    assert bench(device, model, db)["bytes_pushed"] == 0
    for p in used:
        assert p.stat().st_mtime > long_ago, p.name
    assert run_cli("devices", "clean", str(device)).returncode == 0
    assert all(p.exists() for p in used)  # used just now: kept
    assert engines.exists()  # and the model's engines with it, however old themselves

    # unused for 40 days: removed, and the next bench pushes and unpacks them again
    for p in used:
        age(p, OLD)
    proc = run_cli("devices", "clean", str(device))
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in used)
    assert not engines.exists()
    row = bench(device, model, db)
    assert row["bytes_pushed"] == model.stat().st_size + len(agent_bundle()[0])
    assert all(p.exists() for p in used)


@pytest.mark.farm
def test_clean_a_farm_device_through_its_labgrid_place(tmp_path: Path) -> None:
    from benchmarks.loopback_labgrid import LabgridMissing, LoopbackLab

    server = SSHServer(tmp_path / "sshd-dev0").start()
    try:
        try:
            lab = LoopbackLab(tmp_path / "lab", {"dev0": server}).start()
        except LabgridMissing as err:
            pytest.skip(str(err))
        try:
            cache = server.root / "device cache"  # the place's cache_dir, with a space
            cache.mkdir(mode=0o700)
            old, fresh = put(cache / sha("old"), 2000, OLD), put(cache / sha("new"), 10, DAY)
            farm = tmp_path / "farm.yaml"
            farm.write_text(yaml.safe_dump(lab.farm_data(wait_s=30), sort_keys=False))
            env = {"EDGEBENCH_LABGRID_STATE": str(tmp_path / "labgrid-state")}
            proc = run_cli("devices", "clean", "dev0", "--farm", str(farm), env=env)
            assert proc.returncode == 0, proc.stderr + proc.stdout
            assert "removed 1 entry," in proc.stdout
            assert not old.exists() and fresh.exists()
            who = lab.client("who")
            assert who.returncode == 0 and "dev0" not in who.stdout  # released afterwards
        finally:
            lab.stop()
    finally:
        server.stop()


def test_a_python_that_is_not_there_names_its_field(sshd: SSHServer, tmp_path: Path) -> None:
    """As `devices check` says it: the profile field to fix, not the shell's "line 1"."""
    (tmp_path / "cache").mkdir()
    missing = str(tmp_path / "python3.99")
    device = sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(tmp_path / "cache"),
                               python=missing)
    proc = run_cli("devices", "clean", str(device))
    assert (proc.returncode, proc.stderr.strip()) == (
        2, f"edgebench: error: device loopback-ssh (127.0.0.1): cannot clean its cache: "
           f"{missing} not found there (profile field python)")
