"""Hostile and careless input, each as it was found: nothing is lost, nothing is touched outside
edgebench's own folders, and each fault gives one line naming the file, field, host or model."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.artifacts import from_model_file, load_manifest, write_manifest
from harness.cli import main
from harness.errors import ConfigError, TransportError
from harness.store import Store
from harness.transport.ssh import SSHTransport
from tests.conftest import make_tiny_onnx
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


def test_result_database_on_read_only_storage_can_be_read(db, tmp_path: Path) -> None:  # noqa: F811
    # Found: report/export/compare said "not a usable result database" for a valid WAL database
    # on read-only storage (SQLite could not create its -shm file there).
    path, a, b = db
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    copy = shelf / "x.db"
    copy.write_bytes(path.read_bytes())
    with Store(copy) as store:  # a WAL database, as bench leaves it
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
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
