"""Per-operator profiles and placement: real ONNX Runtime, LiteRT and torch profilers through the
agent, the fallback rule, the profile session of `bench --profile` in the store, the CLI table
and the report."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import onnx
import pytest

from harness import results
from harness.agent import protocol
from harness.agent.runtimes import accelerator_fallback, get_runtime
from harness.agent.runtimes.onnxruntime import summarize_profile
from harness.store import Store
from tests.conftest import run_agent_job, run_cli


def profile_job(path: Path, fmt: str, runtime: str, iterations: int = 7,
                **options: Any) -> dict[str, Any]:
    return protocol.measure_job("p", {"path": str(path), "format": fmt}, runtime, session=5,
                                device_kind="local", options=dict(options, threads=1),
                                settings=protocol.QUICK_SETTINGS, profile_iterations=iterations)


def test_onnxruntime_profile_has_every_node_with_its_provider(tiny_onnx: Path) -> None:
    result = run_agent_job(profile_job(tiny_onnx, "onnx", "onnxruntime", iterations=7))
    assert result["status"] == "ok", result["error"]
    # a profile session times no latency: it is never one of the timed sessions
    assert result["latency"] is None and result["samples_ns"] == []
    # warmed up by count alone: ORT's profiler records every run from the session's start
    assert result["warmup_n"] == protocol.QUICK_SETTINGS["warmup_min"]
    profile = result["profile"]
    assert profile["tool"] == "onnxruntime" and profile["timed"] is True
    graph = onnx.load(tiny_onnx).graph
    assert sorted(op["op_type"] for op in profile["ops"]) == sorted(n.op_type for n in graph.node)
    assert all(op["provider"] == "CPUExecutionProvider" for op in profile["ops"])
    assert all(op["calls"] == 1 and op["time_ms"] > 0 for op in profile["ops"])
    # only the profiled runs: warm-up and the first inference ran under the profiler too
    assert profile["iterations"] == 7
    assert len(profile["raw"]) == 7 * len(graph.node)
    placement = profile["placement"]
    assert placement["providers"]["CPUExecutionProvider"]["nodes"] == len(graph.node)
    assert placement["cpu_fallback"] is False


def test_fallback_rule() -> None:
    asked = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert accelerator_fallback(["CPUExecutionProvider"], ["CPUExecutionProvider"], ["Conv"]) == []
    assert accelerator_fallback(asked, asked, ["Shape", "MemcpyToHost"]) == []
    assert accelerator_fallback(asked, ["CPUExecutionProvider"]) == [
        "CUDAExecutionProvider asked for but not in force"]
    assert accelerator_fallback(asked, asked, ["Conv", "Shape", "Conv"]) == [
        "ran on the CPU: Conv"]


def test_a_model_on_the_cpu_where_cuda_was_asked_for_is_flagged(tiny_onnx: Path) -> None:
    """ORT's real profile events, read as if the profile had asked for CUDA: what a device with
    a CUDA provider that failed to initialise reports (ORT then drops it silently)."""
    runtime = get_runtime("onnxruntime")
    runtime.load(str(tiny_onnx), runtime.prepare_profile({"threads": 1}))
    import numpy as np

    runtime.set_input(np.zeros((1, 1, 8, 8), np.float32))
    events_profile = runtime.profile(runtime.run, 3)
    runtime.close()
    assert events_profile["placement"]["cpu_fallback"] is False
    raw = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 10**9}] + [
        {"cat": "Node", "name": e["name"] + "_kernel_time", "ts": 1, "dur": e["dur"],
         "args": {"op_name": e["op_name"], "provider": e["provider"]}}
        for e in events_profile["raw"]]
    asked = {"requested": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "in_force": ["CPUExecutionProvider"]}
    flagged = summarize_profile(raw, 1, asked)
    placement = flagged["placement"]
    assert placement["cpu_fallback"] is True
    assert "CUDAExecutionProvider asked for but not in force" in placement["fallback_reasons"]
    assert any("MatMul" in r for r in placement["fallback_reasons"])
    # ... and the measurement carries the flag
    row = _measurement_with_profile({"status": "ok", "profile": flagged})
    assert "cpu_fallback" in row["flags"] and row["placement"]["cpu_fallback"] is True


def _measurement_with_profile(profile_result: dict[str, Any]) -> dict[str, Any]:
    from harness.artifacts import Artifact
    from harness.config import DeviceProfile
    from harness.runner import PlannedJob

    device = DeviceProfile(name="local", kind="local", transport="local")
    job = PlannedJob("j1", device, Artifact("m", Path("m.onnx"), "onnx", "0" * 64, 1), "onnx")
    session = {"status": "ok", "latency": {"median_ms": 1.0, "n": 3}, "fingerprint": {}}
    srow = results.session_row("j1", 0, session, started_at="t", bytes_pushed=0,
                               orchestration_s=0.0)
    return results.measurement_row("r", job, "t", [session], [srow], [[10**6] * 3], 1,
                                   profile_result)


def test_litert_placement_counts_delegated_operators(tiny_tflite: Path) -> None:
    with_xnnpack = run_agent_job(profile_job(tiny_tflite, "tflite", "tflite", xnnpack=True))
    without = run_agent_job(profile_job(tiny_tflite, "tflite", "tflite", xnnpack=False))
    for result in (with_xnnpack, without):
        assert result["status"] == "ok", result["error"]
    on, off = with_xnnpack["placement"], without["placement"]
    assert on["ops_total"] == off["ops_total"] > 0
    assert on["ops_delegated"] == on["ops_total"] and on["partitions"] == 1
    assert off["ops_delegated"] == 0 and off["partitions"] == 0
    assert (on["in_force"], off["in_force"]) == (["XNNPACK"], [])
    assert on["cpu_fallback"] is off["cpu_fallback"] is False  # XNNPACK is the CPU itself
    profile = with_xnnpack["profile"]
    assert profile["tool"] == "litert_ops" and profile["timed"] is False
    assert {op["provider"] for op in profile["ops"]} == {"XNNPACK"}
    assert {op["provider"] for op in without["profile"]["ops"]} == {"CPU"}
    # No times, so no operator gets a share of them; its types are shared by operator count.
    row, ops = results.profile_rows("j", with_xnnpack, started_at="t")
    assert ops and all(op["share"] is None and op["time_ms"] is None for op in ops)
    assert sum(t["share"] for t in row["op_types"].values()) == pytest.approx(1.0)


def test_torch_profiler_on_the_cpu(tiny_pt2: Path) -> None:
    result = run_agent_job(profile_job(tiny_pt2, "torch", "torch", iterations=5))
    assert result["status"] == "ok", result["error"]
    profile = result["profile"]
    assert profile["tool"] == "torch.profiler" and profile["iterations"] == 5
    types = {op["op_type"] for op in profile["ops"]}
    assert "aten::addmm" in types  # the Linear layer
    assert all(op["provider"] == "CPU" and op["time_ms"] > 0 for op in profile["ops"])


def test_bench_profile_stores_one_untimed_session_and_shows_it(tmp_path: Path,
                                                               tiny_onnx: Path) -> None:
    db = tmp_path / "r.db"
    proc = run_cli("bench", "--model", str(tiny_onnx), "--quick", "--profile", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert "Per-operator profiles" in proc.stdout and "MatMul" in proc.stdout
    # each measurement under its own title, where it ran and its ISA beneath, not as operators
    assert re.search(r"^tiny · onnxruntime on local", proc.stdout, re.M), proc.stdout
    assert re.search(r"^placement: CPUExecutionProvider 4 nodes", proc.stdout, re.M)
    assert re.search(r"^ISA \S+", proc.stdout, re.M), proc.stdout
    assert re.search(r"local: done \S* 3/3", proc.stderr), proc.stderr  # 2 timed + profile
    with Store(db, readonly=True) as store:
        (row,) = store.results()
        assert row["sessions"] == 2  # the timed ones; the profile session is not among them
        assert len(store.sessions([row["job_id"]])) == 2
        (prof,) = store.profiles([row["job_id"]])
        ops = store.profile_ops([row["job_id"]])
        data = store.profile_data(row["job_id"])
    assert prof["tool"] == "onnxruntime" and prof["status"] == "ok" and prof["timed"] is True
    assert [op["rank"] for op in ops] == [1, 2, 3, 4]
    assert sum(op["share"] for op in ops) == pytest.approx(1.0)
    assert ops[0]["time_ms"] >= ops[-1]["time_ms"]
    assert set(prof["op_types"]) == {"Flatten", "MatMul", "Relu"}
    assert prof["op_types"]["MatMul"]["ops"] == 2
    assert data is not None and len(data["raw"]) == 20 * 4  # every node of every iteration
    assert row["placement"]["providers"]["CPUExecutionProvider"]["nodes"] == 4
    assert "cpu_fallback" not in row["flags"]

    out = tmp_path / "report"
    proc = run_cli("report", "--db", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    page = (out / "index.html").read_text()
    assert 'id="operators"' in page and "top-operators" in page and "MatMul_1" in page


def test_profile_iterations_are_checked() -> None:
    job = profile_job(Path("x.onnx"), "onnx", "onnxruntime")
    job["profile"] = {"iterations": 0}
    with pytest.raises(protocol.ProtocolError, match="profile"):
        protocol.validate_job(job)


def test_profile_blob_round_trips() -> None:
    profile = {"tool": "x", "ops": [{"name": "a", "time_ms": 1.5}], "raw": list(range(100))}
    blob = results.encode_profile(profile)
    assert results.decode_profile(blob) == profile
    assert len(blob) < len(json.dumps(profile))


def test_profile_tables_are_in_a_fresh_store(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db"):
        pass
    conn = sqlite3.connect(tmp_path / "s.db")
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"profiles", "profile_ops"} <= names


def test_operator_names_print_as_they_are(tmp_path: Path, tiny_onnx: Path) -> None:
    """Node names come from the model file: `[bold]` in one is text, not rich markup."""
    model = onnx.load(str(tiny_onnx))
    for i, node in enumerate(model.graph.node):
        node.name = f"[bold]{node.op_type}{i}[/bold]"
    hostile = tmp_path / "hostile.onnx"
    onnx.save(model, str(hostile))
    proc = run_cli("bench", "--model", str(hostile), "--quick", "--profile",
                   "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\[bold\]MatMul\d\[/bold\]", proc.stdout), proc.stdout


def test_the_accelerator_in_force_names_a_measurement(tiny_onnx: Path, tiny_tflite: Path
                                                      ) -> None:
    """`accelerator` is what compare and the figures tell apart beside the ISA: None for the
    CPU alone (real ONNX Runtime and LiteRT-with-XNNPACK sessions), else what ran the model."""
    for path, fmt, options in ((tiny_onnx, "onnx", {}), (tiny_tflite, "tflite",
                                                          {"xnnpack": True})):
        session = run_agent_job(profile_job(path, fmt, "onnxruntime" if fmt == "onnx"
                                           else "tflite", **options))
        assert session["status"] == "ok", session["error"]
        assert results.accelerator_label(session.get("accelerator"), session["placement"],
                                         session["fingerprint"]) is None, session["placement"]
    # what the agent reports on a Jetson (TensorRT EP, no NVML) and on a CUDA box (NVML)
    trt = {"requested": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
           "in_force": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                        "CPUExecutionProvider"]}
    assert results.accelerator_label(None, trt, {"gpu": {"absent": "no NVML"}}) == \
        "TensorrtExecutionProvider+CUDAExecutionProvider"
    nvml = {"gpu": {"driver": "580.65", "gpus": [{"name": "NVIDIA H200", "index": 0}]}}
    cuda = {"requested": ["CUDAExecutionProvider"],
            "in_force": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
    assert results.accelerator_label(None, cuda, nvml) == "CUDAExecutionProvider on NVIDIA H200"
    # asked for CUDA, got the CPU: no accelerator (and the cpu_fallback flag says why)
    assert results.accelerator_label(None, {**cuda, "in_force": ["CPUExecutionProvider"]},
                                     nvml) is None
    # a Coral: operators on the Edge TPU, or none of them
    edgetpu = {"requested": ["libedgetpu.so.1"], "ops_total": 4, "ops_delegated": 3,
               "partitions": 1}
    assert results.accelerator_label(None, edgetpu) == "libedgetpu.so.1"
    assert results.accelerator_label(None, {**edgetpu, "ops_delegated": 0}) is None
    # the PyTorch runtime on CUDA describes its GPU itself
    gpu = {"name": "NVIDIA H200", "sm_count": 132, "compute_capability": "9.0"}
    assert results.accelerator_label(gpu, cuda, nvml) == "NVIDIA H200 (sm 9.0, 132 SMs)"


def test_an_untimed_profile_is_not_titled_as_the_top_operators_by_time() -> None:
    """LiteRT lists operators without times: the table showed its first five under "top 5"."""
    from rich.console import Console

    from harness.report.profile import TOP_SHOWN, console_table

    record = {"job_id": "j", "model": "net", "runtime": "tflite", "device": "pi5", "isa": "arm"}
    ops = [{"job_id": "j", "rank": i + 1, "name": f"op{i}", "op_type": "CONV_2D",
            "provider": "CPU", "time_ms": None, "share": None} for i in range(8)]
    shown = {}
    for timed in (False, True):
        console = Console(record=True, width=160)
        console.print(console_table([record], [{"job_id": "j", "timed": timed}], ops))
        shown[timed] = " ".join(console.export_text().split())  # a title wraps at the table
    assert f"no times from this engine: its first {TOP_SHOWN} operators" in shown[False]
    assert "no times from this engine" not in shown[True]


def _profile_of_types(times: dict[str, float]) -> dict[str, Any]:
    """A profile session's agent result with one operator per type, of these times (ms)."""
    return {"status": "ok", "profile": {
        "tool": "torch.profiler", "iterations": 5, "timed": True,
        "ops": [{"name": name, "op_type": name, "provider": "CPU", "calls": 1, "time_ms": ms}
                for name, ms in times.items()]}}


def test_operator_types_are_shown_largest_first_after_the_store(tmp_path: Path) -> None:
    """The store writes JSON with sorted keys: the report showed the first 8 types
    alphabetically and hid mobilenet_v3_small's convolutions (53.5%) and batch norms (20.7%)."""
    from harness.report.profile import TYPES_SHOWN, html_section

    # shares of mobilenet_v3_small.pt2's profile; the small ones come first alphabetically
    times = {"aten::add": 0.5, "aten::addmm": 0.9, "aten::clone": 0.2, "aten::copy_": 0.3,
             "aten::empty": 0.1, "aten::hardsigmoid": 0.4, "aten::hardswish": 1.1,
             "aten::mean": 0.6, "aten::mkldnn_convolution": 10.7, "aten::mul": 0.7,
             "aten::native_batch_norm": 4.14, "aten::relu": 0.45}
    result = _profile_of_types(times)
    row, ops = results.profile_rows("j1", result, started_at="t")
    record = _measurement_with_profile(result)
    with Store(tmp_path / "s.db") as store:
        store.add_profile(row, ops, record)
        (prof,) = store.profiles(["j1"])
    ranked = sorted(times, key=lambda t: -times[t])
    assert list(prof["op_types"]) == ranked
    page = html_section([record], [prof], ops)
    types_table = page.split('class="op-types"', 1)[1]
    shown = re.findall(r"<tr><td>([^<]+)</td>", types_table)
    assert shown == ranked[:TYPES_SHOWN]
    # and the HTML orders what it is given, wherever it came from
    alphabetical = {**prof, "op_types": dict(sorted(prof["op_types"].items()))}
    again = html_section([record], [alphabetical], ops).split('class="op-types"', 1)[1]
    assert re.findall(r"<tr><td>([^<]+)</td>", again) == ranked[:TYPES_SHOWN]


def test_a_profile_session_records_the_load_others_put_on_the_cpus(tiny_onnx: Path) -> None:
    """The timed sessions record `others_cpus`; the profile session recorded nothing, so a
    profile taken under load read like any other."""
    result = run_agent_job(profile_job(tiny_onnx, "onnx", "onnxruntime"))
    assert result["status"] == "ok", result["error"]
    profile = result["profile"]
    assert isinstance(profile["others_cpus"], float) and profile["others_cpus"] >= 0
    assert result["others_cpus"] == profile["others_cpus"]
    assert profile["cpu_count"] == result["fingerprint"]["cpu_count"]
    assert "loadavg_1m" in profile
    # kept in the whole profile, which a resumed bench reads back for the row's flags
    row, _ = results.profile_rows("j", result, started_at="t")
    assert results.decode_profile(row["data"])["others_cpus"] == profile["others_cpus"]


def test_a_loaded_profile_session_is_flagged_and_said(tiny_onnx: Path) -> None:
    """The rule of the timed sessions' `loaded` flag, on the profile session's own figures."""
    result = run_agent_job(profile_job(tiny_onnx, "onnx", "onnxruntime"))
    assert result["status"] == "ok", result["error"]
    quiet = {**result, "profile": {**result["profile"], "others_cpus": 0.1}}
    busy = {**result, "profile": {**result["profile"], "others_cpus": 1.5}}
    assert "profile_loaded" not in _measurement_with_profile(quiet)["flags"]
    row = _measurement_with_profile(busy)
    assert "profile_loaded" in row["flags"] and "loaded" not in row["flags"]
    assert row["stable"] is True  # the timed figures are not the profile's
    prof, _ = results.profile_rows("j", busy, started_at="t")
    assert "loaded: others kept 1.50 CPUs busy" in prof["note"]
    assert results.profile_rows("j", quiet, started_at="t")[0]["note"] is None


def test_profiled_times_are_shown_beside_the_timed_median(tmp_path: Path,
                                                          tiny_onnx: Path) -> None:
    """ONNX Runtime's profiler made a 0.0685 ms model 0.637 ms of nodes: the profile's total
    is no latency, and the CLI and the report say so beside the headline."""
    db = tmp_path / "r.db"
    proc = run_cli("bench", "--model", str(tiny_onnx), "--quick", "--profile", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    said = " ".join(proc.stdout.split())
    with Store(db, readonly=True) as store:
        (row,) = store.results()
        (prof,) = store.profiles([row["job_id"]])
    from harness.report.console import format_value

    total, median = (format_value(prof["total_ms"], ".3g"),
                     format_value(row["latency_median_ms"], ".3g"))
    assert (f"{total} ms of operators per inference under the profiler, beside the timed "
            f"median of {median} ms") in said, said
    assert "profiled times include the profiler's own overhead" in said
    out = tmp_path / "report"
    assert run_cli("report", "--db", str(db), "--out", str(out)).returncode == 0
    page = " ".join((out / "index.html").read_text().split())
    assert f"beside the timed median of {median} ms" in page
    assert "include the profiler's own overhead" in page


def test_torch_operator_types_count_calls_and_names_are_not_repeated(tiny_pt2: Path) -> None:
    """torch's profiler aggregates by operator: every type showed "Operators 1", and the
    Operator and Type columns were the same."""
    from harness.report.profile import html_section

    result = run_agent_job(profile_job(tiny_pt2, "torch", "torch", iterations=5))
    assert result["status"] == "ok", result["error"]
    row, ops = results.profile_rows("j1", result, started_at="t")
    calls = {op["op_type"]: op["calls"] for op in result["profile"]["ops"]}
    assert {t: v["calls"] for t, v in row["op_types"].items()} == calls
    assert max(calls.values()) > 1  # aten::view, aten::empty: more than one call per inference
    record = {"job_id": "j1", "model": "tiny", "runtime": "torch", "device": "local",
              "isa": "x86", "accelerator": None}
    page = html_section([record], [row], ops)
    top = page.split("top-operators", 1)[1].split("</table>", 1)[0]
    assert "<th>Type</th>" not in top and "<th>Operator</th>" in top
    types = page.split('class="op-types"', 1)[1]
    shown = re.findall(r"<tr><td>([^<]+)</td><td class=\"num\">(\d+)</td>", types)
    assert shown and {name: int(n) for name, n in shown} == {name: calls[name] for name, _ in shown}
    assert "<th>Calls</th>" in types.split("</thead>", 1)[0]
    # ONNX Runtime's node names are not their types: the column stays
    onnx_ops = [{"job_id": "j2", "rank": 1, "name": "MatMul_1", "op_type": "MatMul",
                 "provider": "CPUExecutionProvider", "calls": 1, "time_ms": 1.0, "share": 1.0}]
    onnx_page = html_section([{**record, "job_id": "j2"}], [{"job_id": "j2", "timed": True}],
                             onnx_ops)
    assert "<th>Type</th>" in onnx_page


def test_an_accelerator_is_not_called_a_gpu() -> None:
    """The label read "GPU AzureExecutionProvider" for any execution provider or delegate."""
    from rich.console import Console

    from harness.report.profile import console_table, html_section

    for accelerator in ("AzureExecutionProvider", "libedgetpu.so.1"):
        record = {"job_id": "j", "model": "net", "runtime": "onnxruntime", "device": "d",
                  "isa": "arm", "accelerator": accelerator}
        prof = {"job_id": "j", "timed": True, "tool": "onnxruntime", "iterations": 3}
        page = html_section([record], [prof], [])
        assert f"accelerator <code>{accelerator}</code>" in page and "GPU" not in page
        console = Console(record=True, width=160)
        console.print(console_table([record], [prof], []))
        text = console.export_text()
        assert f"accelerator {accelerator}" in text and "GPU" not in text


def test_bench_profile_with_every_job_failed_prints_no_empty_heading(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    proc = run_cli("bench", "--model", str(bad), "--quick", "--profile", "--runtime",
                   "onnxruntime", "--db", str(tmp_path / "r.db"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Per-operator profiles (top" not in proc.stdout
    assert "Per-operator profiles: none" in proc.stdout
