"""Per-operator profiles for people: the short table `edgebench bench --profile` prints and the
report's section (top operators per artifact, share of time per operator type, where it ran).

Both read the store's `profiles` and `profile_ops` rows (see `harness/results.py`); neither
imports pandas, so the CLI can print its table without the report's start-up cost. The whole
profile of a measurement (every operator, the engine's raw events) stays in the store
(`Store.profile_data`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from harness.report.console import format_value, is_missing, plural
from harness.results import largest_first, runtime_label

TOP_SHOWN = 5  # operators per measurement in the CLI table
TYPES_SHOWN = 8  # operator types per measurement in the report
OPS_SHOWN = 10  # operators per measurement in the report (the store keeps 20)


def _share(value: Any) -> str:
    return format_value(value * 100 if value is not None else None, ".1f") + (
        "%" if value is not None else "")


def placement_text(placement: Mapping[str, Any] | None) -> str:
    """`CPUExecutionProvider 12 nodes 3.1 ms; CUDA...` or `delegated 60/62 ops (1 partition)`;
    with the fallback's reasons when there is one."""
    if not placement:
        return ""
    parts = []
    for name, p in (placement.get("providers") or {}).items():
        parts.append(f"{name} {p.get('nodes')} nodes {format_value(p.get('time_ms'), '.3g')} ms")
    if placement.get("ops_total") is not None:
        parts.append(f"delegated {placement.get('ops_delegated')}/{placement['ops_total']} ops "
                     f"({plural(placement.get('partitions') or 0, 'partition')})")
    if not parts and placement.get("in_force"):
        parts.append("in force: " + ", ".join(map(str, placement["in_force"])))
    if placement.get("cpu_fallback"):
        parts.append("CPU FALLBACK: " + "; ".join(placement.get("fallback_reasons") or []))
    return "; ".join(parts)


def profiled_against_timed(prof: Mapping[str, Any], rec: Mapping[str, Any]) -> str:
    """`0.637 ms of operators per inference under the profiler, beside the timed median of
    0.0685 ms`: the two are not the same figure (a profiler inflates a small model several
    times over, and a loaded profile session more), which the tables say beside them."""
    if prof.get("total_ms") is None:
        return ""
    text = (f"{format_value(prof['total_ms'], '.3g')} ms of operators per inference under the "
            "profiler")
    if not is_missing(rec.get("latency_median_ms")):
        text += f", beside the timed median of {format_value(rec['latency_median_ms'], '.3g')} ms"
    return text


OVERHEAD = ("profiled times include the profiler's own overhead and are not the measured "
            "latency: compare the shares")


def _with_types(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether an operator's type says more than its name: not for torch on the CPU, whose
    profiler names each entry by its aten type."""
    return any(str(op.get("op_type")) != str(op.get("name")) for op in rows)


def _what_ran(rec: Mapping[str, Any]) -> str:
    """`ISA x86 avx2, accelerator NVIDIA H200 (...)`: the accelerator may be a GPU, an execution
    provider (TensorRT, Azure) or a delegate (an Edge TPU)."""
    return f"ISA {rec.get('isa')}" + (f", accelerator {rec['accelerator']}"
                                      if rec.get("accelerator") else "")


def console_table(records: Sequence[Mapping[str, Any]], profiles: Sequence[Mapping[str, Any]],
                  ops: Sequence[Mapping[str, Any]]) -> Any:
    """What `bench --profile` prints: under one heading, a small rich Table per profiled
    measurement, titled by model, runtime and device, of its top operators, with the profiled
    total beside the timed median, where it ran (placement, a CPU fallback) and the instruction
    set beneath."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if not profiles:  # every measurement failed before its profile session
        return Text("Per-operator profiles: none, since no measurement ran a session to profile")
    by_job = {r["job_id"]: r for r in records}
    parts: list[Any] = [Text(f"Per-operator profiles (top {TOP_SHOWN} by time per measurement, "
                             "from one extra session each, apart from the timed ones; "
                             f"{OVERHEAD})", style="bold")]
    for prof in profiles:
        rec = by_job.get(prof["job_id"], {})
        # names come from model files and profiles: Text, never rich markup
        where = placement_text(prof.get("placement"))
        # an engine without times (LiteRT's operator list) ranks by its own order, not by time
        untimed = "" if prof.get("timed", True) is not False else \
            f" (no times from this engine: its first {TOP_SHOWN} operators, in its order)"
        lines = [profiled_against_timed(prof, rec), prof.get("note") or "",
                 where and f"placement: {where}", _what_ran(rec)]
        table = Table(title=Text(f"{rec.get('model')} · {runtime_label(rec)} on "
                                 f"{rec.get('device')}{untimed}"),
                      caption=Text("\n".join(x for x in lines if x),
                                   style="bold red" if (prof.get("placement") or {}).get(
                                       "cpu_fallback") else ""),
                      title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD)
        rows = [op for op in ops if op["job_id"] == prof["job_id"]][:TOP_SHOWN]
        typed = _with_types(rows)
        for name, justify in (("operator", "left"), ("type", "left"), ("provider", "left"),
                              ("ms/inference", "right"), ("share", "right")):
            if name != "type" or typed:
                table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        if not rows:
            table.add_row(Text(prof.get("error_message") or "no operators"),
                          *[""] * (len(table.columns) - 1))
        for op in rows:
            cells: list[Any] = [Text(str(op["name"])), Text(str(op["op_type"])),
                                Text(str(op["provider"])), format_value(op.get("time_ms"), ".3g"),
                                _share(op.get("share"))]
            table.add_row(*(cells if typed else cells[:1] + cells[2:]))
        parts.append(table)
    return Group(*parts)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def html_section(records: Sequence[Mapping[str, Any]], profiles: Sequence[Mapping[str, Any]],
                 ops: Sequence[Mapping[str, Any]]) -> str:
    """The report's "Operators" section; empty when the run has no profiles."""
    if not profiles:
        return ""
    by_job = {r["job_id"]: r for r in records}
    parts = ['<h2 id="operators">Operators</h2>',
             '<p class="meta">One extra session per measurement under the engine\'s profiler '
             "(ONNX Runtime's profiler, torch.profiler; LiteRT's operator list, untimed), never "
             "one of the timed sessions. Times are per inference; shares are of the profiled "
             "time (of the operator count where the engine gives no times). The profiled "
             "times include the profiler's own overhead (several times a small model's "
             "latency) and are not the measured latency, which each profile shows beside its "
             "total: compare the shares.</p>"]
    for prof in profiles:
        rec = by_job.get(prof["job_id"], {})
        title = (f"{_e(rec.get('model'))} &mdash; {_e(runtime_label(rec))} on "
                 f"{_e(rec.get('device'))}")
        fallback = (prof.get("placement") or {}).get("cpu_fallback")
        badge = ' <span class="badge cpu_fallback">cpu_fallback</span>' if fallback else ""
        parts.append(f'<h3 class="profile">{title}{badge}</h3>')
        # every figure says what produced it: the CPU's instruction set, and the accelerator
        meta = [f"ISA <code>{_e(rec.get('isa'))}</code>"]
        if rec.get("accelerator"):
            meta.append(f"accelerator <code>{_e(rec['accelerator'])}</code>")
        meta += [f"tool <code>{_e(prof.get('tool'))}</code>",
                 f"{_e(prof.get('iterations'))} iterations"]
        if prof.get("total_ms") is not None:
            meta.append(_e(profiled_against_timed(prof, rec)) + " (the profiler's overhead "
                        "included: compare the shares)")
        if prof.get("note"):
            meta.append(_e(prof["note"]))
        if prof.get("error_message"):
            meta.append(_e(prof["error_message"]))
        where = placement_text(prof.get("placement"))
        if where:
            meta.append("placement: " + _e(where))
        parts.append(f'<p class="meta">{"; ".join(meta)}</p>')
        rows = [op for op in ops if op["job_id"] == prof["job_id"]][:OPS_SHOWN]
        if rows:
            typed = _with_types(rows)  # torch on the CPU: the type is the operator's name
            body = "".join(
                f"<tr><td class=\"num\">{op['rank']}</td><td>{_e(op['name'])}</td>"
                + (f"<td>{_e(op['op_type'])}</td>" if typed else "")
                + f"<td>{_e(op['provider'])}</td>"
                f"<td class=\"num\">{_e(op.get('calls'))}</td>"
                f"<td class=\"num\">{format_value(op.get('time_ms'), '.3g')}</td>"
                f"<td class=\"num\">{_share(op.get('share'))}</td></tr>" for op in rows)
            parts.append(
                '<div class="scroll"><table class="sortable top-operators"><thead><tr>'
                "<th>#</th><th>Operator</th>" + ("<th>Type</th>" if typed else "")
                + "<th>Provider</th><th>Calls</th>"
                f"<th>ms</th><th>Share</th></tr></thead><tbody>{body}</tbody></table></div>")
        types = list(largest_first(prof.get("op_types")).items())[:TYPES_SHOWN]
        if types:
            cells = "".join(
                f"<tr><td>{_e(name)}</td><td class=\"num\">{t.get('calls', t.get('ops'))}</td>"
                f"<td class=\"num\">{format_value(t.get('time_ms'), '.3g')}</td>"
                f"<td class=\"num\">{_share(t.get('share'))}</td>"
                f'<td><span style="display:inline-block;background:#7aa6d8;height:.7rem;'
                f'width:{(t.get("share") or 0) * 12:.2f}rem"></span></td></tr>'
                for name, t in types)
            parts.append(
                '<div class="scroll"><table class="op-types"><thead><tr><th>Operator type</th>'
                "<th>Calls</th><th>ms</th><th>Share</th><th></th></tr></thead>"
                f"<tbody>{cells}</tbody></table></div>")
    return "\n".join(parts)
