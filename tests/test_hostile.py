"""Hostile and careless input, each as it was found: nothing is lost, nothing is touched outside
edgebench's own folders, and each fault gives one line naming the file, field, host or model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.artifacts import DatasetFiles, from_model_file, load_manifest, write_manifest
from harness.cli import main
from harness.errors import ConfigError, StoreError, TransportError
from harness.store import Store
from harness.transport.ssh import SSHTransport
from tests.conftest import EDGEBENCH, REPO, make_tiny_onnx, run_cli
from tests.sshd import SSHServer, fresh_sshd, sshd
from tests.test_report_cli import db  # noqa: F401  (the fixture: two runs of one device)

__all__ = ["fresh_sshd", "sshd"]  # fixtures used by name below


def test_report_out_keeps_files_it_did_not_write(db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: `report --out p` deleted p/tables/*.csv and p/plots/*.png of someone else's paper.
    path, a, _ = db
    paper = tmp_path / "p"
    (paper / "tables").mkdir(parents=True)
    (paper / "plots").mkdir()
    (paper / "tables" / "experiment_data.csv").write_text("a\n")
    (paper / "plots" / "figure1.png").write_text("x\n")
    assert main(["report", "--db", str(path), "--run", a, "--out", str(paper)]) != 0
    err = capsys.readouterr().err.strip()
    assert str(paper) in err and "did not write" in err and len(err.splitlines()) == 1
    assert (paper / "tables" / "experiment_data.csv").read_text() == "a\n"
    assert (paper / "plots" / "figure1.png").read_text() == "x\n"
    assert sorted(p.name for p in paper.rglob("*")) == [
        "experiment_data.csv", "figure1.png", "plots", "tables"]


def test_report_rewrites_only_its_own_files(db, tmp_path: Path) -> None:  # noqa: F811
    path, a, _ = db
    out = tmp_path / "r"
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    stale = out / "plots" / "old_figure.png"
    stale.write_text("from an earlier report")
    listing = out / ".edgebench-report.json"
    own = '"files": [\n "plots/old_figure.png",'
    listing.write_text(listing.read_text().replace('"files": [', own))
    (out / "notes.txt").write_text("mine")  # added by the user after the report
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    assert not stale.exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "index.html").is_file()
    assert main(["report", "--db", str(path), "--run", a, "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("section, key, field", [
    ("models", "../thesis", "models.../thesis"),
    ("datasets", "../../../x", "datasets.../../../x"),
    ("recipes", "../int8", "recipes.../int8"),
])
def test_suite_keys_never_become_paths_outside_the_build_dir(
        tmp_path: Path, capsys, section: str, key: str, field: str) -> None:
    # Found: a model `../thesis` that failed to build deleted `<build>/../thesis.onnx`, one that
    # built wrote there, and a dataset `../../../x` wrote .npy files three folders up.
    build = tmp_path / "a" / "b" / "build"
    build.mkdir(parents=True)
    thesis = tmp_path / "a" / "b" / "thesis.onnx"
    thesis.write_text("my thesis model")
    bodies = {
        "models": f"models:\n  '{key}': {{arch: resnet18}}\n",
        "datasets": f"datasets:\n  '{key}': {{type: digits}}\n"
                    f"models:\n  m: {{arch: digits_cnn, dataset: '{key}'}}\n",
        "recipes": f"recipes:\n  '{key}': {{steps: [prune_structured]}}\n"
                   "models:\n  m: {arch: resnet18, recipes: ['" + key + "']}\n",
    }
    suite = tmp_path / "suite.yaml"
    suite.write_text(bodies[section])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["build", str(suite), "--build-dir", str(build)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(suite) in err and field in err, err
    assert thesis.read_text() == "my thesis model"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_manifest_hash_and_names_are_checked_before_any_path(tmp_path: Path, capsys) -> None:
    # Found: a manifest sha256 `../../etc/hostname` made the device write /etc/hostname.part-...
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    manifest = tmp_path / "m.onnx.manifest.json"
    good = {"name": "m", "format": "onnx", "path": "m.onnx", "sha256": "0" * 64, "size_bytes": 4}
    for field, value in [("sha256", "../../etc/hostname"), ("name", "../m"),
                         ("dataset.sha256.inputs", "../x")]:
        data = dict(good)
        if field == "dataset.sha256.inputs":
            data["dataset"] = {"name": "d", "inputs": "i.npy", "labels": "l.npy",
                               "sha256": {"inputs": value}}
        else:
            data[field] = value
        manifest.write_text(json.dumps(data))
        with pytest.raises(ConfigError) as err:
            load_manifest(manifest)
        assert str(manifest) in str(err.value) and field in str(err.value)
    manifest.write_text(json.dumps(dict(good, sha256="../../etc/hostname")))
    assert main(["bench", "--device", "local", "--model", str(model), "--db",
                 str(tmp_path / "x.db")]) != 0
    err_text = capsys.readouterr().err.strip()
    assert "sha256" in err_text and len(err_text.splitlines()) == 1


@pytest.mark.ssh
def test_device_cache_refuses_a_hash_that_is_a_path(sshd: SSHServer, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    outside = tmp_path / "hostname"
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        with pytest.raises(TransportError, match="not a sha256"):
            transport.cache.put_bytes(b"x", "../hostname", "a file")
    assert not list(tmp_path.glob("hostname*")) and not outside.exists()


def _dynamic_onnx(path: Path) -> Path:
    """A real ONNX classifier with input [N, 3, H, W]: any size runs, so a wrong one goes unseen."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"], axis=1),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        "dynamic", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_dynamic_input_dimensions_are_refused_unless_given(tmp_path: Path, capsys) -> None:
    # Found: a model with dynamic N/H/W was measured at 1x3x1x1 and stored as a result.
    model = _dynamic_onnx(tmp_path / "dyn.onnx")
    db_path = tmp_path / "x.db"
    bench = ["bench", "--device", "local", "--model", str(model), "--db", str(db_path),
             "--quick", "--sessions", "1", "--runtime", "onnxruntime"]
    assert main(bench) == 1
    out = capsys.readouterr()
    assert "dynamic dimensions 0, 2, 3" in out.err + out.out
    with Store(db_path) as store:
        rows = store.results([store.resolve_run("latest")])
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["input_shape"] is None

    assert main([*bench, "--input-shape", "1,3,224,224"]) == 0
    capsys.readouterr()
    with Store(db_path) as store:
        rows = store.results([store.resolve_run("latest")])
    assert [(r["status"], r["input_shape"]) for r in rows] == [("ok", [1, 3, 224, 224])]


@pytest.mark.ssh
def test_device_cache_entry_of_the_right_size_but_other_bytes_is_replaced(
        sshd: SSHServer, tmp_path: Path) -> None:
    # Found: a file under its hash name on the device was trusted when its size matched.
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=21)
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / digest).write_bytes(b"\0" * model.stat().st_size)
    with SSHTransport(sshd.profile(cache_dir=str(cache))) as transport:
        path = transport.stage(model, digest)
        assert transport.bytes_pushed == model.stat().st_size
        transport.stage(model, digest)  # checked once per connection: not hashed or pushed again
        assert transport.bytes_pushed == model.stat().st_size
    assert Path(path).read_bytes() == model.read_bytes()


def test_manifest_of_a_replaced_model_is_not_trusted(tmp_path: Path, capsys) -> None:
    # Found: the local transport measured a replaced model under the manifest's old sha256.
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=22)
    manifest = write_manifest(from_model_file(model))
    assert from_model_file(model).sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    make_tiny_onnx(model, seed=23)  # same size, other weights
    later = manifest.stat().st_mtime_ns + 10**9
    os.utime(model, ns=(later, later))
    with pytest.raises(ConfigError, match="changed after this manifest was written"):
        from_model_file(model)
    assert main(["bench", "--device", "local", "--model", str(model), "--db",
                 str(tmp_path / "x.db"), "--quick"]) != 0
    err = capsys.readouterr().err.strip()
    assert str(manifest) in err and len(err.splitlines()) == 1
    os.utime(manifest, ns=(later + 10**9, later + 10**9))  # touched, same content: trusted
    make_tiny_onnx(model, seed=22)
    os.utime(model, ns=(later + 2 * 10**9, later + 2 * 10**9))
    assert from_model_file(model).sha256 == hashlib.sha256(model.read_bytes()).hexdigest()


def _on_read_only_storage(folder: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `edgebench argv` with `folder` on a read-only file system: a read-only bind mount in a
    private mount namespace as root, the folder's permissions otherwise."""
    edgebench = [sys.executable, "-c", "import sys; from harness.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", *argv]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(edgebench, capture_output=True, text=True, timeout=300)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) (util-linux) to mount a read-only folder as root")
    inner = (f"mount --bind -o ro {shlex.quote(str(folder))} {shlex.quote(str(folder))} && "
             f"exec {shlex.join(edgebench)}")
    return subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).parents[1])


def _wal_copy(path: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the database `path` alone in a folder `shelf/x.db`, in WAL mode as bench leaves
    it; (shelf, copy)."""
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    copy = shelf / "x.db"
    copy.write_bytes(path.read_bytes())
    with Store(copy) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    return shelf, copy


def test_result_database_on_read_only_storage_can_be_read(db, tmp_path: Path) -> None:  # noqa: F811
    # Found: report/export/compare said "not a usable result database" for a valid WAL database
    # on read-only storage (SQLite could not create its -shm file there).
    path, a, b = db
    shelf, copy = _wal_copy(path, tmp_path)
    touch = _on_read_only_storage(shelf, ["devices", "list"])  # the mount itself works
    assert touch.returncode == 0, touch.stderr
    done = _on_read_only_storage(shelf, ["export", "--db", str(copy), "--run", a,
                                         "--format", "json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["run_id"] == a
    done = _on_read_only_storage(shelf, ["compare", "--db", str(copy), a, b])
    assert done.returncode == 0 and "net-int8" in done.stdout, done.stderr
    out = tmp_path / "report"
    done = _on_read_only_storage(shelf, ["report", "--db", str(copy), "--run", b,
                                         "--out", str(out)])
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").is_file()
    assert sorted(p.name for p in shelf.iterdir()) == ["x.db"]  # nothing written beside it


def test_reading_a_wal_database_leaves_nothing_beside_it(db, tmp_path: Path) -> None:  # noqa: F811
    # Found: export, compare, report and db stats of a database as bench leaves it (WAL mode)
    # left x.db-wal and x.db-shm beside it: a read-only connection may not remove them.
    path, a, b = db
    shelf, copy = _wal_copy(path, tmp_path)
    assert sorted(p.name for p in shelf.iterdir()) == ["x.db"]
    before = copy.read_bytes()
    for argv in (["export", "--run", a, "--format", "json"], ["compare", a, b], ["db", "stats"],
                 ["report", "--run", b, "--out", str(tmp_path / "report")]):
        done = subprocess.run([*EDGEBENCH, *argv, "--db", str(copy)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr)
        assert sorted(p.name for p in shelf.iterdir()) == ["x.db"], argv
    assert copy.read_bytes() == before
    with Store(copy, readonly=True) as store, pytest.raises(sqlite3.OperationalError):
        store.conn.execute("DELETE FROM runs")  # a reader still cannot write


@pytest.mark.ssh
def test_full_device_disk_is_named_not_called_corruption(sshd: SSHServer, tmp_path: Path) -> None:
    # Found: a full disk on the device read "'m.onnx' arrived corrupted".
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small tmpfs the device's disk")
    model = make_tiny_onnx(tmp_path / "m.onnx", input_shape=(1, 3, 32, 32))  # 0.4 MB
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        with SSHTransport(sshd.profile(cache_dir=str(disk / "cache"))) as transport:
            with pytest.raises(TransportError, match="device disk full") as err:
                transport.stage(model, hashlib.sha256(model.read_bytes()).hexdigest())
        assert "corrupted" not in str(err.value) and str(disk / "cache") in str(err.value)
        assert list((disk / "cache").iterdir()) == []  # the partial copy is gone
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("cache_dir", ["cache\\\\dir", "cache\\ndir"])
def test_cache_dir_with_a_backslash_or_newline_is_refused(tmp_path: Path, capsys,
                                                          cache_dir: str) -> None:
    # Found: sha256sum escaped such a name in its output and the push read "arrived corrupted".
    profile = tmp_path / "dev.yaml"
    profile.write_text(f'name: dev\ntransport: ssh\nssh: {{host: 127.0.0.1}}\n'
                       f'cache_dir: "/tmp/{cache_dir}"\n')
    assert main(["devices", "check", str(profile)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(profile) in err and "cache_dir:" in err, err
    assert "cannot hold" in err


@pytest.mark.parametrize(("cache_dir", "why"), [
    ("/", "it is the root folder"), ("//", "it is the root folder"),
    ("~", "it is the home folder itself"), ("~/", "it is the home folder itself"),
    (".", "it is the home folder itself"), ("~/..", "it holds the home folder ~"),
    ("~/.cache/../..", "it holds the home folder ~"),
])
def test_cache_dir_that_devices_clean_refuses_is_refused_with_the_profile(
        tmp_path: Path, capsys, cache_dir: str, why: str) -> None:
    # Found: `cache_dir: /` passed, `devices check` pushed the agent into / (leaving
    # /<sha256> and /<sha256>.d there), and `devices clean` then refused to clean it.
    profile = tmp_path / "dev.yaml"
    profile.write_text(f'name: dev\ntransport: ssh\nssh: {{host: 127.0.0.1, port: 1}}\n'
                       f'cache_dir: "{cache_dir}"\n')
    assert main(["devices", "check", str(profile)]) == 2  # before any connection is tried
    err = _one_line_error(capsys, str(profile), "cache_dir:", why)
    assert "devices clean refuses" in err


def test_the_profile_loader_and_devices_clean_refuse_a_cache_dir_by_one_rule(
        tmp_path: Path) -> None:
    from harness.agent import cacheclean
    from harness.config import cache_dir_place

    home = os.path.realpath(os.path.expanduser("~"))
    assert cacheclean.unsafe(home) == cache_dir_place("~") == "it is the home folder itself"
    assert cacheclean.unsafe("/") == cache_dir_place("/") == "it is the root folder"
    above = os.path.dirname(home)
    assert cacheclean.unsafe(above) == ("it is the root folder" if above == "/" else
                                        f"it holds the home folder {home}")
    assert cache_dir_place("~/..") == "it holds the home folder ~"
    for fine in ("~/.cache/edgebench", ".cache/edgebench", str(tmp_path / "cache"), "/home"):
        assert cache_dir_place(fine) is None, fine  # /home: only the device knows its home


@pytest.mark.ssh
def test_login_that_prints_is_named(fresh_sshd: SSHServer, tmp_path: Path, capsys) -> None:
    # Found: a login printing "Welcome" broke SFTP and the hash check ("arrived corrupted").
    fresh_sshd.stop()
    fresh_sshd.extra_config = ['ForceCommand echo Welcome; exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"']
    fresh_sshd.start()
    profile = fresh_sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(tmp_path / "cache"))
    assert main(["devices", "check", str(profile)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Welcome" in err and "login prints" in err, err
    assert "127.0.0.1" in err and not (tmp_path / "cache").exists()


@pytest.mark.ssh
def test_a_user_whose_shell_refuses_commands_is_named(fresh_sshd: SSHServer, tmp_path: Path,
                                                      capsys) -> None:
    # Found: a user with the nologin shell read "the login prints 'This account is currently not
    # available.' on stdout before every command ... needs that output gone".
    nologin = shutil.which("nologin") or "/usr/sbin/nologin"
    if not Path(nologin).is_file():
        pytest.skip("needs nologin(8)")
    fresh_sshd.stop()
    fresh_sshd.extra_config = [f"ForceCommand {nologin}"]  # as the user's shell would run it
    fresh_sshd.start()
    profile = fresh_sshd.profile_file(tmp_path / "dev.yaml", cache_dir=str(tmp_path / "cache"))
    assert main(["devices", "check", str(profile)]) != 0
    err = _one_line_error(capsys, "127.0.0.1", "the login runs no command (`true` exited 1",
                          "This account is currently not available", "nologin")
    assert "prints" not in err and not (tmp_path / "cache").exists()


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in err, err
    return err


@pytest.mark.parametrize("field, value", [
    ("job_timeout_s", ".nan"), ("job_timeout_s", ".inf"), ("job_timeout_s", "1e300"),
    ("ssh.connect_timeout_s", ".nan"), ("ssh.command_timeout_s", "-.inf"),
])
def test_timeouts_must_be_finite_and_bounded(tmp_path: Path, capsys, field: str,
                                             value: str) -> None:
    # Found: a NaN connect_timeout_s hung the connection and a NaN job_timeout_s crashed.
    key = field.split(".")[-1]
    ssh = {"host": "127.0.0.1"}
    top: dict[str, object] = {"name": "dev", "transport": "ssh", "ssh": ssh}
    if field.startswith("ssh."):
        ssh[key] = "VALUE"
    else:
        top[key] = "VALUE"
    profile = tmp_path / "dev.yaml"
    profile.write_text(json.dumps(top).replace('"VALUE"', value))  # JSON is YAML
    assert main(["devices", "check", str(profile)]) != 0
    _one_line_error(capsys, str(profile), field)


# Ten lines, 9 ** 10 values once expanded.
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
    for p, n in zip("abcdefghi", "bcdefghij", strict=True))


@pytest.mark.parametrize("text, says", [
    (b"name: loc\xffal\n", "not UTF-8"),
    (b"name: &n [*n]\n", "refers to itself"),
    (b"name: dev\nruntimes: &r {a: *r}\n", "refers to itself"),
    (BOMB.encode(), "expands to more than"),
    (b"name: dev\nthreads: 2\nthreads: 64\n", "'threads' is given twice"),
])
def test_hostile_yaml_gives_one_line(tmp_path: Path, capsys, text: bytes, says: str) -> None:
    # Found: invalid UTF-8 and self-referencing anchors gave tracebacks, an alias bomb hung, and a
    # key given twice won silently.
    for kind in ("profile", "suite"):
        path = tmp_path / f"{kind}.yaml"
        path.write_bytes(text)
        argv = (["devices", "check", str(path)] if kind == "profile" else
                ["build", str(path), "--build-dir", str(tmp_path / "build")])
        assert main(argv) != 0
        _one_line_error(capsys, str(path), says)
    assert not (tmp_path / "build").exists()


def test_threads_are_bounded(tmp_path: Path, capsys) -> None:
    # Found: `threads: 1e23` overflowed in the runtime, and nothing bounded threads at all.
    profile = tmp_path / "dev.yaml"
    profile.write_text("name: dev\nthreads: 100000000000000000000000\n")
    assert main(["devices", "check", str(profile)]) != 0
    _one_line_error(capsys, str(profile), "threads")
    model = make_tiny_onnx(tmp_path / "m.onnx")
    bench = ["bench", "--device", "local", "--model", str(model), "--db", str(tmp_path / "x.db"),
             "--quick", "--sessions", "1", "--runtime", "onnxruntime"]
    with pytest.raises(SystemExit) as exit_:
        main([*bench, "--threads", "100000000000000000000000"])
    assert exit_.value.code != 0  # argparse's usage, then its one line of error
    assert "argument --threads: must be a number of threads between 1 and" in \
        capsys.readouterr().err.splitlines()[-1]
    # past the agent's limit on this machine: said before anything runs (it was a stored run of
    # failed measurements and exit 1), unless forced
    too_many = 4 * (os.cpu_count() or 1) + 1
    assert main([*bench, "--threads", str(too_many)]) == 2
    _one_line_error(capsys, f"--threads: threads {too_many} is more than 4x", "--force-threads")
    assert not (tmp_path / "x.db").exists()
    assert main([*bench, "--threads", str(too_many), "--force-threads"]) == 0
    capsys.readouterr()
    with Store(tmp_path / "x.db", readonly=True) as store:
        rows = store.results([store.resolve_run("latest")])
    assert [(r["status"], r["threads"]) for r in rows] == [("ok", too_many)]


def test_a_format_listed_twice_is_refused(tmp_path: Path, capsys) -> None:
    # Found: `formats: [onnx, onnx]` built (and measured) every artifact twice.
    suite = tmp_path / "suite.yaml"
    suite.write_text("formats: [onnx, onnx]\nmodels:\n  m: {arch: resnet18}\n")
    assert main(["build", str(suite), "--build-dir", str(tmp_path / "build")]) != 0
    _one_line_error(capsys, str(suite), "formats[1]", "twice")
    assert not (tmp_path / "build").exists()


def test_run_prefix_is_text_not_a_like_pattern(tmp_path: Path, capsys) -> None:
    # Found: `--run %` matched any run (a LIKE wildcard), `--run _` too.
    db_path = tmp_path / "x.db"
    with Store(db_path) as store:
        run = store.begin_run("t", None, ["pi5"])
        store.finish_run(run)
    for pattern in ("%", "_", run[:4] + "%"):
        assert main(["export", "--db", str(db_path), "--run", pattern, "--format", "json"]) != 0
        _one_line_error(capsys, f"no run {pattern!r}")
    assert main(["export", "--db", str(db_path), "--run", run[:8], "--format", "json"]) == 0


def test_devices_are_found_from_any_working_directory(tmp_path: Path) -> None:
    # Found: run outside the repository root, `bench` found no `local` device.
    model = make_tiny_onnx(tmp_path / "m.onnx")
    env = {k: v for k, v in os.environ.items() if k != "EDGEBENCH_DEVICES"}
    edgebench = [sys.executable, "-c", "import sys; from harness.cli import main; "
                 "sys.exit(main(sys.argv[1:]))"]
    done = subprocess.run([*edgebench, "bench", "--model", str(model), "--quick", "--sessions",
                           "1", "--runtime", "onnxruntime", "--db", "x.db"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.db").is_file()
    mine = tmp_path / "lab"
    mine.mkdir()
    (mine / "bench1.yaml").write_text("name: bench1\nkind: local\ntransport: local\n")
    done = subprocess.run([*edgebench, "devices", "list"], cwd=tmp_path, capture_output=True,
                          env=dict(env, EDGEBENCH_DEVICES=str(mine)), text=True, timeout=120)
    assert done.returncode == 0 and "bench1" in done.stdout and "rpi" not in done.stdout, done


def test_one_broken_profile_hides_none_of_the_others(tmp_path: Path, capsys) -> None:
    # Found: `devices list` failed whole on one malformed profile, listing none of the others.
    folder = tmp_path / "lab"
    folder.mkdir()
    (folder / "good.yaml").write_text("name: good\nkind: local\n")
    (folder / "typo.yaml").write_text("name: typo\nruntimes: [onnxruntim]\n")
    assert main(["devices", "list", "--devices-dir", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "good" in captured.out
    assert f"profilesin{folder}/" in "".join(captured.out.split())  # the title, however wrapped
    assert captured.err.strip() == (f"edgebench: error: {folder / 'typo.yaml'}: runtimes: unknown "
                                    "runtime 'onnxruntim'; known: onnxruntime, tflite, torch")


@pytest.mark.parametrize("name", ["../pi", "lab/pi", ".pi", "[red]pi"])
def test_device_name_must_be_a_plain_name(tmp_path: Path, capsys, name: str) -> None:
    profile = tmp_path / "dev.yaml"
    profile.write_text(json.dumps({"name": name}))
    assert main(["devices", "check", str(profile)]) != 0
    _one_line_error(capsys, str(profile), "name", "not a usable device name")


def test_manifest_of_replaced_data_or_a_bad_shape_is_not_trusted(tmp_path: Path) -> None:
    model = make_tiny_onnx(tmp_path / "m.onnx", seed=24)
    inputs = tmp_path / "inputs.npy"
    inputs.write_bytes(b"first")
    labels = tmp_path / "labels.npy"
    labels.write_bytes(b"labels")
    artifact = from_model_file(model)
    data = DatasetFiles("d", inputs, labels).hashed()
    manifest = write_manifest(dataclasses.replace(artifact, dataset=data))
    assert load_manifest(manifest).dataset == data
    inputs.write_bytes(b"other")
    later = manifest.stat().st_mtime_ns + 10**9
    os.utime(inputs, ns=(later, later))
    with pytest.raises(ConfigError, match="dataset.sha256.inputs: inputs.npy changed"):
        load_manifest(manifest)
    for shape in ([1, 3, -1, 224], [], "1x3", [1, 3, 2.5, 2]):
        text = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(dict(text, dataset=None, input_shape=shape)))
        with pytest.raises(ConfigError, match="input_shape"):
            load_manifest(manifest)


@pytest.mark.parametrize("table", [[], ["--samples"], ["--sessions"], ["--operators"]],
                         ids=["rows", "samples", "sessions", "operators"])
def test_export_into_a_pipe_closed_early_ends_quietly(db, table: list[str]) -> None:  # noqa: F811
    """`edgebench export ... | head`: the reader stops early; no traceback, no 'None:' error."""
    path = db[0]
    argv = [sys.executable, "-m", "harness.cli", "export", "--db", str(path), "--format", "csv"]
    proc = subprocess.Popen(argv + table, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout is not None
    proc.stdout.close()  # before it writes anything: its first write meets a closed pipe
    err = proc.communicate()[1].decode()
    assert proc.returncode == 141, err
    assert "Traceback" not in err and "error" not in err


def test_report_that_cannot_be_written_is_one_line(db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: `report --out` under a file, or on read-only storage, ended in a traceback.
    path, a, _ = db
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    assert main(["report", "--db", str(path), "--run", a, "--out", str(note / "report")]) == 2
    _one_line_error(capsys, f"{note / 'report'}: cannot write the report", "Not a directory")
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    done = _on_read_only_storage(shelf, ["report", "--db", str(path), "--run", a,
                                         "--out", str(shelf / "report")])
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"edgebench: error: {shelf / 'report'}: cannot write the report ("), err


def test_nightly_baseline_that_does_not_exist_is_said_before_anything_runs(
        db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: `nightly --baseline RUN_ID` looked the run up only once every device had been
    # measured, so a mistyped id cost the whole night and then ended without a report.
    path, a, b = db
    farm = tmp_path / "farm.yaml"  # a coordinator nobody runs: reaching it would be an error too
    farm.write_text("coordinator: 127.0.0.1:1\nplaces:\n  p: {kind: linux}\n")
    build = tmp_path / "build"
    common = os.path.commonprefix([a, b])
    for baseline, says in (("nosuchrun", "no run 'nosuchrun'"), (common, "is ambiguous")):
        assert main(["nightly", "--farm", str(farm), "--suite", "models/demo.yaml", "--db",
                     str(path), "--baseline", baseline, "--build-dir", str(build)]) == 2
        _one_line_error(capsys, f"--baseline {baseline!r}: {path}: ", says)
    assert not build.exists()


def test_a_database_that_cannot_take_results_is_said_before_the_build(tmp_path: Path,
                                                                       capsys) -> None:
    # Found: `bench --suite` and `nightly` opened --db only once the suite was built (minutes),
    # then stopped at a file that is no result database.
    notes = tmp_path / "notes.db"
    notes.write_text("not a database, just notes\n" * 100)
    suite = tmp_path / "suite.yaml"
    suite.write_text("formats: [onnx]\nmodels:\n  m: {arch: resnet18}\n")
    farm = tmp_path / "farm.yaml"  # a coordinator nobody runs: reaching it would be an error too
    farm.write_text("coordinator: 127.0.0.1:1\nplaces:\n  p: {kind: linux}\n")
    build = tmp_path / "build"
    for argv in (["bench", "--suite", str(suite)], ["nightly", "--farm", str(farm), "--suite",
                                                     str(suite)]):
        assert main([*argv, "--db", str(notes), "--build-dir", str(build)]) == 2
        _one_line_error(capsys, f"{notes}: not a usable result database")
        assert not build.exists()
    assert notes.read_text().startswith("not a database")


def test_a_nightly_gated_against_itself_is_refused(db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: `nightly --id X --baseline X` would resume X and gate it against itself, after
    # every device had been measured.
    path, a, _b = db
    farm = tmp_path / "farm.yaml"
    farm.write_text("coordinator: 127.0.0.1:1\nplaces:\n  p: {kind: linux}\n")
    build = tmp_path / "build"
    assert main(["nightly", "--farm", str(farm), "--suite", "models/demo.yaml", "--db",
                 str(path), "--id", a, "--baseline", a, "--build-dir", str(build),
                 "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, f"--baseline {a!r} is this nightly")
    assert not build.exists()


@pytest.mark.parametrize("option, value", [("--sessions", "five"), ("--max-sessions", "0")])
def test_a_bad_session_count_names_its_option(tmp_path: Path, capsys, option: str,
                                              value: str) -> None:
    # Found: `--sessions five` said "invalid _session_count value", and `--max-sessions 0` said
    # "--sessions must be between 1 and 1000".
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--model", str(tmp_path / "m.onnx"), "--db", str(tmp_path / "x.db"),
              option, value])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"edgebench bench: error: argument {option}: must be a number of sessions between 1 and "
        f"1000, not {value!r} (see edgebench bench --help)\n")
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("argv, says", [
    (["compare", "a", "b", "--top1-threshold", "200"], "percentage points in [0, 100)"),
    (["compare", "a", "b", "--top1-threshold", "nan"], "percentage points in [0, 100)"),
    (["compare", "a", "b", "--threshold", "1"], "a fraction in [0, 1)"),
    (["bench", "--model", "m.onnx", "--wait", "inf"], "seconds between 0 and a week"),
])
def test_a_bad_number_is_refused_by_the_parser_naming_its_option(capsys, argv: list[str],
                                                                 says: str) -> None:
    """Every bounded option is checked as it is parsed, in one line naming it; a top-1
    threshold of 200 points reached the statistics before it was refused."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    option = argv[-2]
    assert f"argument {option}: must be {says}" in last and repr(argv[-1]) in last, last


def test_result_database_on_read_only_storage_is_said_to_be_read_only(
        db, tmp_path: Path) -> None:  # noqa: F811
    # Found: bench and db prune/vacuum said "not a usable result database (unable to open
    # database file)" of a sound database on read-only storage.
    path, _, _ = db
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    copy = shelf / "x.db"
    copy.write_bytes(path.read_bytes())
    before = copy.read_bytes()
    model = make_tiny_onnx(tmp_path / "m.onnx")
    for argv in (["bench", "--model", str(model), "--quick", "--sessions", "1", "--db", str(copy)],
                 ["db", "prune", "--keep-samples-for", "1", "--db", str(copy)],
                 ["db", "vacuum", "--db", str(copy)]):
        done = _on_read_only_storage(shelf, argv)
        err = done.stderr.strip()
        assert done.returncode == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"edgebench: error: {copy}: cannot write the result database: "
                              ) and "is read-only here (report, export" in err, err
    done = _on_read_only_storage(shelf, ["bench", "--model", str(model), "--db",
                                         str(shelf / "new.db")])
    assert done.stderr.strip() == (f"edgebench: error: {shelf / 'new.db'}: cannot write the "
                                   f"result database: {shelf} is read-only here"), done.stderr
    assert copy.read_bytes() == before and sorted(p.name for p in shelf.iterdir()) == ["x.db"]


def test_a_folder_of_profiles_that_is_not_one_is_named(tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Found: a mistyped --devices-dir or $EDGEBENCH_DEVICES listed no device and exited 0, and
    # `bench` called every device unknown, knowing "(none)".
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    for folder in (tmp_path / "devcies", note):
        assert main(["devices", "list", "--devices-dir", str(folder)]) == 2
        _one_line_error(capsys, f"{folder}: --devices-dir is not a folder of device profiles")
    monkeypatch.setenv("EDGEBENCH_DEVICES", str(tmp_path / "devcies"))
    assert main(["bench", "--model", str(tmp_path / "m.onnx"), "--db", str(tmp_path / "x.db")]
                ) == 2
    _one_line_error(capsys, f"{tmp_path / 'devcies'}: $EDGEBENCH_DEVICES is not a folder")
    assert not (tmp_path / "x.db").exists()


def test_an_ambiguous_run_prefix_names_the_runs_it_fits(db, capsys) -> None:  # noqa: F811
    # Found: "run id prefix '2026' is ambiguous" left the user to find the ids elsewhere.
    path = db[0]
    with Store(path, readonly=True) as store:
        runs = sorted(r.run_id for r in store.runs())
    common = os.path.commonprefix(runs)
    assert main(["report", "--db", str(path), "--run", common]) == 2
    _one_line_error(capsys, f"{path}: run id prefix {common!r} is ambiguous: 5 runs begin so "
                    f"({', '.join(runs[:3])}, ...)")


@pytest.mark.parametrize("where, says", [("", "File exists"), ("build", "Not a directory")],
                         ids=["a-file", "under-a-file"])
def test_a_build_folder_that_cannot_be_one_is_named(tmp_path: Path, capsys, where: str,
                                                    says: str) -> None:
    # Found: `build --build-dir` naming a file, or a folder under one, ended in a traceback.
    suite = tmp_path / "suite.yaml"
    suite.write_text("formats: [onnx]\nmodels:\n  m: {arch: resnet18}\n")
    note = tmp_path / "notes.txt"
    note.write_text("mine")
    build = note / where if where else note
    assert main(["build", str(suite), "--build-dir", str(build)]) == 2
    _one_line_error(capsys, f"{build}: cannot be the build folder ({says})")
    assert note.read_text() == "mine"


def test_an_empty_file_is_no_result_database_to_read_or_maintain(tmp_path: Path) -> None:
    # Found: `db prune` and `db vacuum` on a 0-byte file (made by `touch`, a copy that failed)
    # made an empty result database of it and said all was well; `db stats`, `report`, `export`
    # and `compare` said "no edgebench schema version". Each now names the file as empty and
    # leaves it as it is; `bench` makes its database there, and `nightly` too, but not before
    # its coordinators answer.
    empty = tmp_path / "empty.db"
    empty.touch()
    for argv in (["db", "stats"], ["db", "prune", "--keep-samples-for", "30d"], ["db", "vacuum"],
                 ["db", "prune", "--keep-samples-for", "1", "--vacuum"],
                 ["report", "--out", str(tmp_path / "report")], ["export", "--format", "csv"],
                 ["compare", "latest", "latest"]):
        done = run_cli(*argv, "--db", str(empty))
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.strip() == (f"edgebench: error: {empty}: the file is empty (0 bytes), "
                                       "not an edgebench result database"), (argv, done.stderr)
        assert empty.stat().st_size == 0 and os.listdir(tmp_path) == ["empty.db"], argv

    farm = tmp_path / "farm.yaml"  # a coordinator nobody runs
    farm.write_text("coordinator: 127.0.0.1:1\nplaces:\n  p: {kind: linux}\n")
    for baseline in ("previous", "some-run"):
        done = run_cli("nightly", "--farm", str(farm), "--suite", "models/demo.yaml", "--db",
                       str(empty), "--baseline", baseline, "--build-dir", str(tmp_path / "b"),
                       "--out", str(tmp_path / "out"))
        assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert ("127.0.0.1:1" if baseline == "previous" else
                f"--baseline 'some-run': {empty}: the file is empty") in done.stderr
        assert empty.stat().st_size == 0

    done = run_cli("bench", "--model", str(make_tiny_onnx(tmp_path / "m.onnx")), "--quick",
                   "--sessions", "1", "--db", str(empty))
    assert done.returncode == 0, done.stderr
    with Store(empty, readonly=True) as store:
        assert [r["status"] for r in store.results()] == ["ok"]


def _as_a_plain_user(argv: list[str]) -> list[str]:
    """`edgebench argv` without root's power to write what its permissions forbid (as root,
    setpriv drops it from the command's capabilities), so a file's mode counts as for any user."""
    edgebench = [sys.executable, "-c", "import sys; from harness.cli import main; "
                 "sys.exit(main(sys.argv[1:]))", *argv]
    if os.geteuid() != 0:
        return edgebench
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv(1) (util-linux) to run without root's file powers")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--",
            *edgebench]


def test_reading_a_read_only_database_leaves_nothing_that_stops_its_writer(
        db, tmp_path: Path) -> None:  # noqa: F811
    # Found: a reader of a read-only x.db in a folder it may write left x.db-wal and x.db-shm
    # there (SQLite's read-only connection makes them and may not remove them); the owner's
    # next bench or `db vacuum` then failed with a traceback "attempt to write a readonly
    # database".
    path, a, b = db
    shelf, copy = _wal_copy(path, tmp_path)
    copy.chmod(0o444)
    before = copy.read_bytes()
    for argv in (["export", "--run", a, "--format", "json"], ["compare", a, b], ["db", "stats"]):
        done = subprocess.run(_as_a_plain_user([*argv, "--db", str(copy)]), cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr)
        assert sorted(p.name for p in shelf.iterdir()) == ["x.db"], argv
    assert copy.read_bytes() == before
    copy.chmod(0o644)
    done = subprocess.run(_as_a_plain_user(["db", "vacuum", "--db", str(copy)]), cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _killed_writer(database: Path) -> str:
    """A bench killed with its last run still in the write-ahead log: x.db, x.db-wal and
    x.db-shm as SIGKILL leaves them; the run's id."""
    code = ("import os, sys; from harness.store import Store; s = Store(sys.argv[1]); "
            "s.conn.execute('PRAGMA wal_autocheckpoint = 0'); "
            "print(s.begin_run('edgebench bench --model m.onnx', None, ['local']), flush=True); "
            "os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code, str(database)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=True)
    assert Path(f"{database}-wal").stat().st_size > 0
    return done.stdout.strip()


def test_a_read_only_folder_shows_what_the_log_holds_or_says_why_not(
        db, tmp_path: Path) -> None:  # noqa: F811
    # Found: in a read-only folder the database was opened immutable, which ignores x.db-wal:
    # the run a killed bench left in it was silently missing from export and db stats.
    path, _, _ = db
    shelf, copy = _wal_copy(path, tmp_path)
    run = _killed_writer(copy)
    done = _on_read_only_storage(shelf, ["export", "--db", str(copy), "--run", run,
                                         "--format", "csv"])
    assert done.returncode == 0, done.stderr
    done = _on_read_only_storage(shelf, ["db", "stats", "--db", str(copy)])
    assert done.returncode == 0 and run in done.stdout, done.stderr
    Path(f"{copy}-shm").unlink()  # copied without it: the log cannot be read there
    done = _on_read_only_storage(shelf, ["db", "stats", "--db", str(copy)])
    err = done.stderr.strip()
    assert done.returncode != 0 and len(err.splitlines()) == 1, err
    assert "x.db-wal holds results not yet in the file" in err and "x.db-shm" in err


def test_an_empty_run_id_names_no_run(db, capsys) -> None:  # noqa: F811
    # Found: `db delete ""` (an unset $RUN) deleted a store's only run: every id begins with "".
    path, a, _ = db
    with Store(path) as store:
        store.delete_runs([r.run_id for r in store.runs() if r.run_id != a])
    for argv in (["db", "delete", ""], ["export", "--run", "", "--format", "csv"]):
        assert main([*argv, "--db", str(path)]) == 2
        _one_line_error(capsys, str(path), "an empty run id")
    with Store(path, readonly=True) as store:
        assert [r.run_id for r in store.runs()] == [a]


def test_db_commands_leave_another_programs_database_as_it_is(tmp_path: Path, capsys) -> None:
    # Found: `db delete` on an SQLite file without tables made it an edgebench database (WAL,
    # user_version, tables) before saying "no runs yet".
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("VACUUM").connection.close()
    before = other.read_bytes()
    for argv in (["db", "delete", "latest"], ["db", "vacuum"], ["db", "prune",
                                                                "--keep-samples-for", "0"]):
        assert main([*argv, "--db", str(other)]) == 2
        _one_line_error(capsys, str(other), "no edgebench schema version")
    assert other.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["other.db"]


def test_a_run_deleted_while_measured_stores_nothing_more(tmp_path: Path) -> None:
    # Found: `db delete --force` of a running bench left its later sessions and row in the
    # file, out of every command's reach; the bench said "stored".
    from tests.test_report_synthetic import add_job

    with Store(tmp_path / "x.db") as store:
        run = store.begin_run("edgebench bench --model m.onnx", None, ["pi5"])
        add_job(store, run, "net")
        store.delete_runs([run])
        with pytest.raises(StoreError, match=f"run {run} is no longer in the database"):
            add_job(store, run, "net")
        with pytest.raises(StoreError, match=f"run {run} is no longer in the database"):
            store.finish_run(run)
        for table in ("results", "sessions"):
            assert store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


def test_an_export_file_gets_the_mode_a_file_written_in_place_would(
        db, tmp_path: Path, capsys) -> None:  # noqa: F811
    # Found: every `export --out` file was private (0600, the temporary file's mode), and a
    # group-shared 0664 export became private when written again; a link, replaced by a file.
    path, a, _ = db
    new, shared = tmp_path / "new.csv", tmp_path / "shared.csv"
    shared.write_text("old\n")
    shared.chmod(0o664)
    umask = os.umask(0o022)
    try:
        for out in (new, shared):
            assert main(["export", "--db", str(path), "--run", a, "--format", "csv",
                         "--out", str(out)]) == 0
    finally:
        os.umask(umask)
    assert (new.stat().st_mode & 0o777, shared.stat().st_mode & 0o777) == (0o644, 0o664)
    assert shared.read_text() != "old\n"
    # Found: an `--out` that is a link (latest.csv to a dated file) was replaced by a file
    link = tmp_path / "latest.csv"
    link.symlink_to(shared.name)
    shared.write_text("old\n")
    assert main(["export", "--db", str(path), "--run", a, "--format", "csv",
                 "--out", str(link)]) == 0
    assert link.is_symlink() and shared.read_text() == new.read_text() != "old\n"
    assert main(["export", "--db", str(path), "--run", a, "--format", "csv",
                 "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, str(tmp_path), "is a folder")


def test_a_folder_given_as_the_database_is_called_one(tmp_path: Path, capsys) -> None:
    # Found: bench said "cannot open result database (unable to open database file)" and the
    # readers "no result database here" of `--db results` (the folder, not the file in it).
    model = make_tiny_onnx(tmp_path / "m.onnx")
    for argv in (["bench", "--model", str(model), "--quick"], ["db", "stats"],
                 ["export", "--format", "csv"]):
        assert main([*argv, "--db", str(tmp_path)]) == 2
        _one_line_error(capsys, str(tmp_path), "is a folder, not a result database")


def test_a_reader_run_from_another_folder_says_where_it_looked(
        tmp_path: Path, capsys, monkeypatch) -> None:
    # Found by a new user: `report` from another folder than the project's said only
    # "results/edgebench.db: no result database here", as if the results had gone.
    monkeypatch.chdir(tmp_path)
    looked = str(tmp_path / "results" / "edgebench.db")
    for argv in (["report"], ["db", "stats"], ["export", "--format", "csv"],
                 ["compare", "latest", "previous"]):
        assert main(argv) == 2
        _one_line_error(capsys, f"(looked for {looked})", "--db names another")
    assert not (tmp_path / "results").exists()  # a reader leaves no database behind


def test_a_failed_session_is_not_counted_as_holding_samples(tmp_path: Path) -> None:
    # Found: `db stats` counted a failed session (an empty samples blob) "with samples".
    from tests.test_report_synthetic import add_job

    with Store(tmp_path / "x.db") as store:
        run = store.begin_run("edgebench bench --model m.onnx", None, ["pi5"])
        add_job(store, run, "broken", status="failed")
        add_job(store, run, "net")
        (stats,) = store.stats().runs
    assert (stats.sessions, stats.sessions_with_samples) == (6, 5)


def test_a_bench_stopped_by_an_error_is_marked_failed_not_interrupted(
        tmp_path: Path, capsys) -> None:
    # Found: a database error in the middle of a bench (a suite listing a recipe twice hit a
    # UNIQUE constraint) left the run `interrupted`, as if stopped by hand. Here SQLite itself
    # refuses the third session, as a full disk would.
    model = make_tiny_onnx(tmp_path / "m.onnx")
    path = tmp_path / "r.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER full BEFORE INSERT ON sessions WHEN (SELECT COUNT(*) FROM "
                     "sessions) >= 2 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    conn.close()
    assert main(["bench", "--model", str(model), "--quick", "--sessions", "4",
                 "--db", str(path)]) == 1
    said = [line for line in capsys.readouterr().err.splitlines()
            if line.strip() and "━" not in line]  # the progress bar, as it was left
    run = _rows(path, "SELECT run_id FROM runs")[0][0]
    assert said == [f"run {run} failed (below): the same command with --resume {run} measures "
                    "what it has not stored",
                    f"edgebench: error: {path}: database or disk is full"]
    assert _rows(path, "SELECT status FROM runs") == [("failed",)]
    assert _rows(path, "SELECT COUNT(*) FROM sessions") == [(2,)]  # kept


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()
