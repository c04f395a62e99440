"""`edgebench bench` end to end on the local device, and every kind of bad input it must reject."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import Store
from tests.conftest import (
    EDGEBENCH,
    REPO,
    interrupt_inside_gc,
    make_tiny_onnx,
    once_a_session_is_stored,
    rows,
    run_cli,
    wait_for_sessions,
)


def bench(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    proc = run_cli("bench", "--quick", "--db", str(tmp_path / "r.db"), *args)
    return proc.returncode, proc.stdout, proc.stderr


def test_a_bench_that_measured_nothing_on_a_device_says_so_and_exits_1(tmp_path: Path) -> None:
    """Found in an audit: a device on which every measurement was unsupported (here Abs on
    bfloat16, for which this onnxruntime has no CPU kernel) exited 0, as if measured, so a CI
    job stayed green with nothing measured. Its result stays in the store."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 4])
    graph = helper.make_graph([helper.make_node("Abs", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "abs_bf16.onnx"
    onnx.save(model, str(path))
    code, out, err = bench(tmp_path, "--model", str(path), "--sessions", "1")
    assert code == 1, err + out
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgebench: error: device local measured nothing: its one "
                           "measurement was unsupported (abs_bf16: onnxruntime "), last
    assert "Abs" in last
    assert rows(tmp_path / "r.db", "SELECT status FROM results") == [("unsupported",)]


def test_bench_local_quick_stores_rows(tmp_path: Path, tiny_onnx: Path,
                                       tiny_tflite: Path) -> None:
    code, out, err = bench(tmp_path, "--model", str(tiny_onnx), "--threads", "1")
    assert code == 0, err
    assert "edgebench results" in out and "tiny" in out
    assert "model MiB: the memory the model adds" in out  # which memory the column is
    code, out, err = bench(tmp_path, "--model", str(tiny_tflite), "--device", "local")
    assert code == 0, err
    with Store(tmp_path / "r.db") as store:
        runs = store.runs()
        assert [r.status for r in runs] == ["finished", "finished"]
        onnx_row, tflite_row = store.results()
        assert (onnx_row["runtime"], tflite_row["runtime"]) == ("onnxruntime", "tflite")
        for row in (onnx_row, tflite_row):
            assert row["status"] == "ok"
            assert row["device"] == "local"
            assert row["sessions"] == row["sessions_planned"] == 2  # --quick
            assert row["n"] >= 2 * 5
            assert len(store.samples(row["job_id"])) == row["n"]
            assert [s["session"] for s in store.sessions([row["job_id"]])] == [0, 1]
            assert row["latency_ci95_low_ms"] <= row["latency_median_ms"] \
                <= row["latency_ci95_high_ms"]
            assert row["peak_rss_mb"] > 0
            assert row["device_fingerprint"]["cpu_count"] >= 1
            assert row["settings"]["duration_s"] == 0.2  # --quick protocol recorded
            assert row["timed_scope"] == "runtime" and row["isa"]
            assert row["bytes_pushed"] == 0  # local: used in place
            assert row["accuracy_top1"] is None  # no dataset: n/a
            assert row["size_bytes"] > 0 and len(row["model_sha256"]) == 64
        assert onnx_row["threads"] == 1
        assert tflite_row["threads"] >= 1  # defaulted to the CPUs available, and recorded


def test_corrupt_model_among_good_ones(tmp_path: Path) -> None:
    """A per-job problem is a failed row; the rest of the run and the store are intact."""
    good = make_tiny_onnx(tmp_path / "good.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    code, _, err = bench(tmp_path, "--model", str(good))
    assert code == 0, err
    code, _, err = bench(tmp_path, "--model", str(corrupt))
    assert code == 1
    assert "corrupt.onnx" in err
    with Store(tmp_path / "r.db") as store:
        good_row, bad_row = store.results()
        assert good_row["status"] == "ok"
        assert bad_row["status"] == "failed"
        assert bad_row["error_kind"] == "model_invalid"
        assert "corrupt.onnx" in bad_row["error_message"]


def test_wrong_input_shape_from_manifest(tmp_path: Path) -> None:
    from harness.artifacts import from_model_file, write_manifest

    model = make_tiny_onnx(tmp_path / "m.onnx")
    art = from_model_file(model)
    write_manifest(art.__class__(**{**art.__dict__, "input_shape": (1, 3, 224, 224)}))
    code, _, err = bench(tmp_path, "--model", str(model))
    assert code == 1
    (row,) = Store(tmp_path / "r.db").results()
    assert row["error_kind"] == "input_shape"
    assert "[1, 1, 8, 8]" in row["error_message"] and "[1, 3, 224, 224]" in row["error_message"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{tmp}/absent.onnx"], "absent.onnx: model file not found"),
        (["--model", "{tmp}/folder.onnx"], "folder.onnx: a folder, not a model file"),
        (["--model", "{tmp}/model.xyz"], "cannot tell the model format"),
        (["--model", "{onnx}", "--runtime", "tensorflow"], "unknown runtime 'tensorflow'"),
        (["--model", "{onnx}", "--runtime", "tflite"], "nothing to run"),
        (["--model", "{onnx}", "--device", "jetson-nano-9"], "unknown device 'jetson-nano-9'"),
        (["--model", "{onnx}", "--device", "{tmp}/broken.yaml"], "broken.yaml: malformed YAML"),
        (["--model", "{onnx}", "--device", "{tmp}/badfield.yaml"],
         "badfield.yaml: ssh.port: 70000 is not a TCP port"),
        (["--model", "{onnx}", "--device", "{tmp}/password.yaml"], "ssh.password"),
        (["--model", "{onnx}", "--sessions", "4", "--max-sessions", "3"],
         "--max-sessions 3 is fewer than the 4 sessions"),
    ],
    ids=["missing", "folder", "suffix", "runtime", "format", "device", "yaml", "field", "password",
         "max-sessions"],
)
def test_bad_input_one_clear_line(tmp_path: Path, tiny_onnx: Path, args: list[str],
                                  message: str) -> None:
    (tmp_path / "model.xyz").write_bytes(b"x")
    (tmp_path / "folder.onnx").mkdir()  # what an unzipped download may be called
    (tmp_path / "broken.yaml").write_text("name: x\nruntimes: [onnxruntime\n")
    (tmp_path / "badfield.yaml").write_text(
        "name: x\ntransport: ssh\nssh: {host: 127.0.0.1, port: 70000}\n")
    (tmp_path / "password.yaml").write_text(
        "name: x\ntransport: ssh\nssh: {host: 127.0.0.1, password: hunter2}\n")
    args = [a.format(tmp=tmp_path, onnx=tiny_onnx) for a in args]
    # a result measured earlier must survive the bad command
    assert bench(tmp_path, "--model", str(tiny_onnx))[0] == 0
    code, _, err = bench(tmp_path, *args)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("edgebench: error: ")
    assert message in lines[0]
    assert "Traceback" not in err
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM results WHERE status='ok'").fetchone()[0] == 1


def test_devices_list_and_check_local() -> None:
    proc = run_cli("devices", "list")
    assert proc.returncode == 0, proc.stderr
    assert "local" in proc.stdout
    proc = run_cli("devices", "check", "local", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["runtimes"]["onnxruntime"]["available"] is True
    assert info["fingerprint"]["cpu_count"] >= 1
    # the instruction set every figure is labelled by, said where the device is checked
    proc = run_cli("devices", "check", "local")
    assert proc.returncode == 0, proc.stderr
    isa = info["fingerprint"]["isa"] or "unknown (no CPU flags found)"  # any CPU, any ISA
    assert f"  ISA: {isa}\n" in proc.stdout, proc.stdout


def test_devices_check_names_the_cpus_of_cpu_affinity_the_device_lacks(tmp_path: Path) -> None:
    """Found: `cpu_affinity: [0, 99]` on a 2-CPU device passed `devices check` ("everything the
    profile needs is present"), then every bench job failed with `cpu_affinity`."""
    usable = sorted(os.sched_getaffinity(0))
    absent = max(usable) + 64
    profile = tmp_path / "pinned.yaml"
    profile.write_text(f"name: pinned\nruntimes: [onnxruntime]\n"
                       f"cpu_affinity: [{usable[0]}, {absent}]\n")
    proc = run_cli("devices", "check", str(profile))
    said = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"missing for this profile: CPU {absent} of cpu_affinity" in said, said
    assert f"fix cpu_affinity in {profile}" in said and "everything the profile" not in said
    proc = run_cli("devices", "check", str(profile), "--json")
    assert json.loads(proc.stdout)["usable_cpus"] == usable
    profile.write_text(f"name: pinned\nruntimes: [onnxruntime]\ncpu_affinity: [{usable[-1]}]\n")
    proc = run_cli("devices", "check", str(profile))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "everything the profile needs is present" in proc.stdout


def test_profile_runtime_options_reach_the_engine(tmp_path: Path, tiny_onnx: Path) -> None:
    profile = tmp_path / "noopt.yaml"
    profile.write_text("name: noopt\nruntimes: [onnxruntime]\nthreads: 1\n"
                       "runtime_options: {onnxruntime: {graph_optimization_level: disable}}\n")
    code, _, err = bench(tmp_path, "--model", str(tiny_onnx), "--device", str(profile))
    assert code == 0, err
    # a level ONNX Runtime does not have is refused with the profile, before anything runs
    profile.write_text("name: noopt\nruntimes: [onnxruntime]\n"
                       "runtime_options: {onnxruntime: {graph_optimization_level: turbo}}\n")
    code, _, err = bench(tmp_path, "--model", str(tiny_onnx), "--device", str(profile))
    assert code == 2
    assert err.strip() == (f"edgebench: error: {profile}: runtime_options.onnxruntime."
                           "graph_optimization_level: must be one of disable, basic, extended, "
                           "all, got 'turbo'"), err
    [ok] = Store(tmp_path / "r.db").results()
    assert ok["runtime_options"]["graph_optimization_level"] == "disable"
    assert ok["threads"] == 1 and ok["runtime_options"]["intra_op_threads"] == 1


def test_tuning_record_is_stored(tmp_path: Path, tiny_onnx: Path) -> None:
    """`tune: true` is attempted per job and what happened is stored with the result."""
    profile = tmp_path / "tuned.yaml"
    profile.write_text("name: tuned\nruntimes: [onnxruntime]\ntune: true\nthreads: 1\n")
    code, _, err = bench(tmp_path, "--model", str(tiny_onnx), "--device", str(profile))
    assert code == 0, err
    (row,) = Store(tmp_path / "r.db").results()
    assert row["tune"]["requested"] is True
    assert "cpu_governor" in row["tune"]["operations"]
    code, _, err = bench(tmp_path, "--model", str(tiny_onnx))  # local.yaml: tune is off
    assert Store(tmp_path / "r.db").results()[-1]["tune"] is None


def test_ctrl_c_exits_130_under_python_m_even_inside_a_string_exec(tmp_path: Path) -> None:
    """A Ctrl-C that lands while a library runs exec() on a string (dataclass and attrs classes
    are made so, at import) made `python -m harness.cli` die by SIGINT (-2) after printing that
    it was interrupted: CPython remembered the KeyboardInterrupt past our handler."""
    (tmp_path / "interrupted_cli.py").write_text(
        "import sys\n"
        "from harness import cli\n"
        "def interrupted(args):\n"
        "    exec('raise KeyboardInterrupt', {})\n"
        "cli.cmd_db_stats = interrupted  # the parser is built in main(), after this\n"
        "sys.exit(cli.main(['db', 'stats', '--db', sys.argv[1]]))\n")
    proc = subprocess.run([sys.executable, "-m", "interrupted_cli", str(tmp_path / "x.db")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}"))
    assert "interrupted" in proc.stderr, proc.stderr
    assert proc.returncode == 130, proc.stderr


def console_script(folder: Path) -> Path:
    """The `edgebench` script as installers write it from pyproject.toml's [project.scripts]."""
    import tomllib

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = target["edgebench"].split(":")
    script = folder / "edgebench"
    script.write_text(f"import re\nimport sys\nfrom {module} import {function}\n"
                      "if __name__ == '__main__':\n"
                      "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
                      f"    sys.exit({function}())\n")
    return script


def test_ctrl_c_while_the_command_is_still_imported_exits_130_without_a_traceback(
        tmp_path: Path) -> None:
    """The console script under `-X importtime`, which writes a line to stderr as each module
    finishes importing: SIGINT is sent after the 2nd, 4th, 8th... line past the `harness`
    package's, so that it lands further and further into the command's import (rich, numpy, the
    store), until `harness.cli` has been imported before it. Every run stopped in the import
    (fewer modules imported than by a run left alone) ends as a Ctrl-C later does: the one line,
    exit 130, never a traceback nor a death by SIGINT."""
    from harness.entry import INTERRUPTED, INTERRUPTED_STARTING

    script = console_script(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def module(line: bytes) -> bytes:
        return line.split(b"|")[-1].strip()

    def run(after: int | None) -> tuple[subprocess.Popen[bytes], list[bytes], bool]:
        """Stderr's lines, and whether the signal was sent before harness.cli was imported."""
        with subprocess.Popen([sys.executable, "-X", "importtime", str(script), "devices",
                               "list"], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env) as proc:
            assert proc.stderr is not None
            err, early = b"", False
            while after is not None and (chunk := os.read(proc.stderr.fileno(), 65536)):
                err += chunk
                lines = [module(line) for line in err.split(b"\n")[:-1]]
                if b"harness" in lines and len(lines) - 1 - lines.index(b"harness") >= after:
                    early = b"harness.cli" not in lines
                    proc.send_signal(signal.SIGINT)
                    break
            err += proc.stderr.read()
            proc.wait(timeout=60)
        assert b"Traceback" not in err and proc.returncode in (0, 130), err.decode()
        return proc, err.splitlines(), early

    left_alone, lines, _ = run(None)
    assert left_alone.returncode == 0
    imported = sum(line.startswith(b"import time:") for line in lines)
    landed = 0
    for after in (2 ** k for k in range(1, 13)):
        proc, lines, early = run(after)
        if not early:
            break  # the command was imported: the signal stopped it, or came after its end
        said = [line.decode() for line in lines if not line.startswith(b"import time:")]
        if said == [INTERRUPTED] or (said == [] and proc.returncode == 0):
            continue  # sent in the import's last moments, it arrived once the command ran
        assert proc.returncode == 130 and said == [INTERRUPTED_STARTING]
        assert sum(line.startswith(b"import time:") for line in lines) < imported
        landed += 1
    assert landed >= 4  # in as many places of the import


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_bench_stopped_mid_run_keeps_what_it_measured(tmp_path: Path, tiny_onnx: Path,
                                                       sig: signal.Signals) -> None:
    """Ctrl-C, and SIGTERM as `kill` or a CI job's timeout sends it, end a bench alike: the
    sessions measured are in the store, the run is marked interrupted, exit 130. SIGTERM used
    to end the process at once, leaving the run `running` for ever. On a stderr that is no
    terminal (here a pipe, as `2>log`) the bars were stopped twice, and a blank line came
    before the last one."""
    db = tmp_path / "r.db"
    proc = subprocess.Popen([*EDGEBENCH, "bench", "--model", str(tiny_onnx), "--sessions", "30",
                             "--db", str(db)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_sessions(db, "local", 2, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted; finished jobs are in the store" in err and "Traceback" not in err
    assert "\n\n" not in err, err
    ((run,),) = rows(db, "SELECT run_id FROM runs")
    assert f"--resume {run} measures what it has not stored" in err
    assert rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert rows(db, "SELECT COUNT(*) FROM sessions WHERE status = 'ok'")[0][0] >= 2



def _demo_like_records(devices: tuple[str, ...] = ("local",)) -> list[dict]:
    """Rows as the store gives them, with the demo suite's longest names and the flags a noisy
    machine raises."""
    models = ["digits_cnn", "digits_cnn-int8_static", "digits_cnn-int8_dynamic",
              "resnet18-prune50_latency", "mobilenet_v3_small"]
    return [{"device": d, "model": m, "runtime": rt, "status": "ok", "error_kind": None,
             "latency_median_ms": 0.0622 * (i + 1), "latency_ci95_low_ms": 0.0532 * (i + 1),
             "latency_ci95_high_ms": 0.0789 * (i + 1), "latency_p90_ms": 0.0861 * (i + 1),
             "sessions": 5, "sessions_planned": 5, "model_mb": 11.5, "accuracy_top1": 0.992,
             "flags": ["high_between_session_spread", "high_cov", "loaded"]}
            for d in devices for i, m in enumerate(models) for rt in ("onnxruntime", "tflite")]


@pytest.mark.parametrize("width", [140, 120, 100])
def test_summary_table_never_cuts_a_name(width: int) -> None:
    """The bench's closing table: at 140 columns (what it prints to a file or a CI log) every
    name and figure is whole on its row; narrower, p90, the model's memory and the sessions are
    left out and the caption says so (the names then stacked in one column where needed), the
    names stay whole and nothing is cropped."""
    from rich.console import Console

    from harness import cli

    for devices in (("local",), ("rpi5-lab-01", "jetson-orin-02")):
        records = _demo_like_records(devices)
        console = Console(width=width, record=True, color_system=None)
        console.print(cli._summary_table(records, width))
        text = console.export_text()
        lines = text.splitlines()
        assert max(map(len, lines)) <= width
        assert "…" not in text
        words = set(text.split())
        for r in records:
            assert {r["model"], r["runtime"], r["device"] if len(devices) > 1 else ""} <= \
                words | {""}
            if width == 140:  # one line per measurement
                row = next(line for line in lines if f" {r['model']} " in line
                           and r["runtime"] in line and (len(devices) == 1 or r["device"] in line))
                median = cli.format_median_interval(
                    r["latency_median_ms"], r["latency_ci95_low_ms"], r["latency_ci95_high_ms"])
                assert median in row
        assert ("on local" in lines[0]) == (len(devices) == 1)
        header = next(line for line in lines if " model " in line and " runtime " in line)
        assert ("p90 ms" in header) == (width == 140)
        assert ("left out to fit" in text) == ("p90 ms" not in header)


def test_flag_lines_name_and_count_each_flag_shown() -> None:
    from harness import cli

    records = _demo_like_records()
    records[0]["flags"] = ["loaded"]
    lines = cli._flag_lines(records)
    assert [line.split()[:4] for line in lines] == [
        ["9", "of", "10", "spread"], ["9", "of", "10", "cov"], ["10", "of", "10", "loaded:"]]
    assert "(high_between_session_spread)" in lines[0] and "5%" in lines[0]


def test_fitted_table_prints_text_as_it_is() -> None:
    """Cells are text, never rich markup: a name with brackets prints as written."""
    from rich.console import Console

    from harness.report.console import fitted_table

    console = Console(width=80, record=True, color_system=None)
    console.print(fitted_table({"model": ["[bold]net[/bold]", "a[0]"], "ms": ["1.5 [1.2, 1.9]",
                                                                          "2"]},
                               80, names=("model",), left=("model",)))
    text = console.export_text()
    assert "[bold]net[/bold]" in text and "a[0]" in text and "1.5 [1.2, 1.9]" in text


# `edgebench bench --model M --db DB ...`, interrupted inside a gc callback once DB holds a
# session (looked at no more than every 0.1 s)
INTERRUPT_INSIDE_GC = interrupt_inside_gc(
    once_a_session_is_stored("args[1]"),
    '["edgebench", "bench", "--model", args[0], "--db", args[1], "--quick", '
     '"--sessions", "40"]')


def test_a_ctrl_c_python_swallowed_in_a_callback_still_stops_the_bench(tmp_path: Path) -> None:
    """Found in CI: a Ctrl-C that landed in a weakref callback (importlib's module lock) was
    printed as "Exception ignored ... KeyboardInterrupt", the bench ran its 20 sessions to the
    end and exited 0. The interrupt is remembered and raised between sessions."""
    model = make_tiny_onnx(tmp_path / "m.onnx")
    db = tmp_path / "r.db"
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_INSIDE_GC, str(model), str(db)],
                          cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert "Exception ignored" not in proc.stderr and "Traceback" not in proc.stderr
    assert rows(db, "SELECT status FROM runs") == [("interrupted",)]
    assert rows(db, "SELECT COUNT(*) FROM sessions")[0][0] < 40


def test_python_m_harness_entry_runs_the_command() -> None:
    """Found by a new user: `python -m harness.entry` (the console script's module, where the
    script is not installed) exited 0 having done nothing."""
    done = subprocess.run([sys.executable, "-m", "harness.entry", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("edgebench "), done
