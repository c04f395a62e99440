"""The `edgebench` command: the contract that users, the Makefile and CI rely on.

Every user error is an `EdgebenchError`: one line on stderr, a non-zero exit, nothing else lost.
Heavy imports (torch, pandas) happen inside the commands that need them, so `edgebench devices
list` or a bad argument answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import shlex
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from harness import __version__
from harness.agent.protocol import DEFAULT_SETTINGS, QUICK_SETTINGS
from harness.config import (
    DEVICES_DIR,
    MAX_THREADS,
    find_devices_dir,
    is_profile_path,
    list_profiles,
    load_profile,
)
from harness.entry import INTERRUPTED, interrupted
from harness.errors import EdgebenchError
from harness.report.console import (
    FLAG_LABELS,
    cli_console,
    db_option,
    decimals_for,
    fitted_table,
    flag_legend,
    format_median_interval,
    format_percent,
    in_legend_order,
    plural,
)
from harness.report.console import format_value as _fmt
from harness.report.stats import THRESHOLD, TOP1_THRESHOLD_POINTS
from harness.results import measured_nothing, runtime_label
from harness.runner import DEFAULT_SESSIONS, QUICK_SESSIONS
from harness.signals import remembered_interrupts, sigterm_as_interrupt
from harness.store import DEFAULT_DB, Store, check_existing, check_folder

if TYPE_CHECKING:
    from harness.artifacts import Artifact
    from harness.bench import BenchPlan, ResumeState
    from harness.runner import BenchOptions, PlannedJob
    from harness.store import RunInfo

# Piped output (CI logs, `| tee`) gets a wide table rather than rich's 80-column default, unless
# COLUMNS says otherwise; a closed pipe ends any command with 141 (`cli_console`).
out = cli_console()
err_console = cli_console(stderr=True)


# devices ----------------------------------------------------------------------------------------


def _farm_file(args: argparse.Namespace) -> Path | None:
    """--farm FILE, else devices/farm.yaml where there is one."""
    from harness.farm.farmfile import default_farm_file

    if getattr(args, "farm", None):
        return Path(args.farm)
    found = default_farm_file(args.devices_dir)
    return found if found.is_file() else None


def _load_device(args: argparse.Namespace, name: str) -> Any:
    """A profile by name or path, else (a plain name with no profile) a device of the farm."""
    from harness.farm.farmfile import load_farm

    farm_path = _farm_file(args)
    if farm_path is None or is_profile_path(name) or (
            find_devices_dir(args.devices_dir) / f"{name}.yaml").is_file():
        return load_profile(name, args.devices_dir)
    farm = load_farm(farm_path)
    found = farm.device(name)
    if found is None:
        known = [*list_profiles(args.devices_dir), *(d.name for d in farm.devices)]
        raise EdgebenchError(f"unknown device {name!r}: no profile in {args.devices_dir}/ and no "
                             f"place of {farm_path}; known: {', '.join(known)}")
    return found


def cmd_devices_list(args: argparse.Namespace) -> int:
    folder = find_devices_dir(args.devices_dir)
    table = Table(title=f"Device profiles in {escape(str(folder))}/")
    for col in ("name", "kind", "transport", "host", "runtimes"):
        table.add_column(col)
    # one broken profile must not hide the others: each is listed or said, and the exit says so
    profiles, broken = [], []
    for name in list_profiles(args.devices_dir):
        try:
            profiles.append(load_profile(name, args.devices_dir))
        except EdgebenchError as err:
            broken.append(str(err))
    farm_path = _farm_file(args)
    if farm_path is not None:
        from harness.farm.farmfile import load_farm

        profiles += load_farm(farm_path).devices
    for p in profiles:
        host = "-"
        if p.labgrid:
            host = f"labgrid {p.labgrid.coordinator} place {p.labgrid.place}"
        elif p.ssh:
            host = f"{p.ssh.user + '@' if p.ssh.user else ''}{p.ssh.host}:{p.ssh.port}"
        table.add_row(escape(p.name), p.kind, p.transport, escape(host), ", ".join(p.runtimes))
    out.print(table)
    for line in broken:
        err_console.print(f"edgebench: error: {line}", markup=False, highlight=False,
                          soft_wrap=True)
    return 2 if broken else 0


def rapl_text(rapl: dict[str, Any] | None) -> str:
    """What `devices check` says of the CPU package's energy counters (RAPL)."""
    if not rapl:
        return "not probed (an agent from before RAPL was read)"
    if "absent" in rapl:
        return f"none: {rapl['absent']}"
    zones = ", ".join(rapl.get("zones") or ())
    if not rapl.get("readable"):
        return f"RAPL ({zones}) present but unreadable, no energy figure: {rapl.get('unreadable')}"
    return (f"RAPL ({zones}): energy per inference of the whole CPU package where no board "
            "monitor or NVML measures")


def cmd_devices_check(args: argparse.Namespace) -> int:
    from harness.agent import protocol
    from harness.transport.base import transport_for

    profile = _load_device(args, args.device)
    job = protocol.check_job(profile.kind, profile.runtime_options)
    _tell_farm_waits([profile], "")
    with transport_for(profile) as transport:
        where = transport.host
        run = transport.run_agent(job, timeout_s=120)
    result = run.result
    if result.get("status") != protocol.STATUS_OK or "check" not in result:
        error = result.get("error") or {}
        raise EdgebenchError(f"device {profile.name}: agent check failed: "
                             f"{error.get('message', 'no answer')}")
    info = result["check"]
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    fp = info["fingerprint"]
    out.print(f"[bold]{escape(profile.name)}[/] ({profile.kind}, {profile.transport}"
              + (f", {escape(where)})" if profile.labgrid else ")"))
    out.print(f"  python {info['python']['version']} ({info['python']['executable']}), "
              f"numpy {fp.get('numpy') or 'MISSING'}")
    agent = info.get("agent") or {}
    if agent:
        where = escape(str(agent.get("path")))
        out.print(f"  agent: bytecode in {where}" if agent.get("bytecode") else
                  f"  agent: {where}, no bytecode: its modules are compiled at every session's "
                  f"start ({escape(str(agent.get('from_zip_because', 'none written')))})",
                  soft_wrap=True)  # a path broken over lines cannot be copied
    out.print(f"  {fp.get('cpu_model')}, {fp.get('cpu_count')} CPUs, "
              f"{_fmt(fp.get('mem_total_mb'), '.0f')} MB, {fp.get('os')}, "
              f"kernel {fp.get('kernel')}")
    usable = usable_cpus(info)
    lacking = sorted(set(profile.cpu_affinity or ()) - set(usable or ()))
    if profile.cpu_affinity:
        out.print(f"  cpu_affinity {list(profile.cpu_affinity)}; the agent may run on CPUs "
                  f"{cpu_ranges(usable) if usable is not None else 'unknown'}")
    if profile.threads and usable and profile.threads > len(usable):
        # allowed (up to 4 a CPU), but the threads then take turns and latency says so
        out.print(f"  [yellow]note:[/] threads {profile.threads} is more than the "
                  f"{len(usable)} CPU{'s' if len(usable) != 1 else ''} the agent may run on "
                  "here: the threads take turns, and every latency includes their waits",
                  soft_wrap=True)
    # what int8 kernels, speed and even accuracy depend on, and what every figure is labelled by
    out.print(f"  ISA: {escape(str(fp.get('isa') or 'unknown (no CPU flags found)'))}",
              soft_wrap=True)
    gpu = fp.get("gpu") or {}
    gpus = ", ".join(f"{g.get('name')} ({_fmt(g.get('memory_total_mb'), '.0f')} MB)"
                     for g in gpu.get("gpus") or [])
    out.print(f"  GPU: {escape(gpus)}, driver {gpu.get('driver')}, CUDA {gpu.get('cuda_driver')}"
              if gpus else f"  GPU: none found ({escape(str(gpu.get('absent', 'not probed')))})")
    out.print(f"  CPU energy: {escape(rapl_text(fp.get('rapl')))}", soft_wrap=True)
    table = Table("runtime", "present", "version / reason", "profile wants it")
    # what is missing, each with the profile's field that asks for it (None: every runtime needs
    # it), so that the line below says where to take it out
    missing: list[tuple[str, str | None]] = [] if fp.get("numpy") else [("numpy", None)]
    too_old = (info.get("python") or {}).get("too_old")
    if too_old:  # no job of the agent runs on this Python: the first thing to fix
        missing.insert(0, ("Python 3.8 or newer", "python"))
    for name, rt in info["runtimes"].items():
        wanted = name in profile.runtimes
        if wanted and not rt["available"]:
            missing.append((name, "runtimes"))
        table.add_row(name, "yes" if rt["available"] else "no",
                      rt.get("version") or rt.get("reason", ""), "yes" if wanted else "")
        if not (wanted and rt["available"]):
            continue
        options = profile.runtime_options.get(name) or {}
        # execution providers the profile asks for (TensorRT, CUDA) must be in this build
        if "providers" in rt:
            for provider in options.get("providers") or []:
                if provider not in rt["providers"]:
                    missing.append((f"{name} {provider}", f"runtime_options.{name}.providers"))
                    table.add_row(f"  {provider}", "no", "not in this "
                                  f"{name} build: " + ", ".join(rt["providers"]), "yes")
        # the GPU a torch profile runs on (`device: cuda`) must be one torch can use here
        device = options.get("device")
        if device is not None and device != "cpu":
            seen = (rt.get("devices") or {}).get(device) or {
                "available": False, "reason": "not tried by this device's agent"}
            if not seen["available"]:
                missing.append((f"{name} device {device}", f"runtime_options.{name}.device"))
            table.add_row(f"  device {device}", "yes" if seen["available"] else "no",
                          seen.get("name") or seen.get("reason", ""), "yes")
    for name in profile.runtimes:
        if name not in info["runtimes"]:
            missing.append((name, "runtimes"))
            why = ("needs numpy first" if ("numpy", None) in missing
                   else "this agent has no such runtime")
            table.add_row(name, "no", why, "yes")
    out.print(table)
    for name, rt in info["runtimes"].items():
        if rt.get("warning"):  # present, and may yet fail every job: said, not refused
            out.print(f"  [yellow]note:[/] {escape(name)}: {escape(str(rt['warning']))}; if it "
                      "was built against that numpy, every job of it fails there "
                      "(runtime_unusable): install the numpy it declares", soft_wrap=True)
    state = info.get("state") or {}
    temps = ", ".join(f"{k} {v:.0f}°C" for k, v in (state.get("temperatures_c") or {}).items())
    govs = sorted(set((state.get("governors") or {}).values()))
    out.print(f"  state: governor {', '.join(govs) or 'n/a'}; temperatures {temps or 'n/a'}")
    if missing:
        source = profile.source or "the profile"
        fields = sorted({f for _, f in missing if f and f != "python"})
        if too_old:
            ways = [f"set python in {source} to a Python 3.8 or newer that has them"]
        else:
            them = "them" if len(missing) > 1 else "it"
            ways = [f"install {them} on the device for {info['python']['executable']}"]
            if ("numpy", None) in missing:  # another interpreter there may have them all
                ways.append(f"set python in {source} to an interpreter that has them")
        if fields:
            ways.append(f"change {' and '.join(fields)} in {source}")
        out.print(f"[red]missing for this profile:[/] "
                  f"{escape(', '.join(what for what, _ in missing))} "
                  f"({escape(', or '.join(ways))})", soft_wrap=True)
    if usable is not None and lacking:
        # every job pins itself to cpu_affinity and fails naming it (agent/job.py: pin)
        out.print(f"[red]missing for this profile:[/] CPU{'s' if len(lacking) > 1 else ''} "
                  f"{', '.join(map(str, lacking))} of cpu_affinity (the agent may run on CPUs "
                  f"{cpu_ranges(usable)} only, so every bench job would fail; fix cpu_affinity "
                  f"in {escape(str(profile.source or 'the profile'))})", soft_wrap=True)
    if missing or (usable is not None and lacking):
        return 1
    out.print("[green]everything the profile needs is present[/]")
    return 0


def usable_cpus(info: dict[str, Any]) -> list[int] | None:
    """The CPUs the agent may run on, from `devices check`: its affinity, or where an agent
    does not say (not Linux), every CPU it counts; None where neither is known."""
    if info.get("usable_cpus") is not None:
        return [int(c) for c in info["usable_cpus"]]
    count = (info.get("fingerprint") or {}).get("cpu_count")
    return list(range(count)) if isinstance(count, int) and count > 0 else None


def cpu_ranges(cpus: list[int]) -> str:
    """CPU numbers as `0-3, 6`."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][-1] + 1:
            runs[-1].append(cpu)
        else:
            runs.append([cpu])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"


def _days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # An entry is used from its connection's start to its end without being touched again, so
    # a window shorter than a day could take away what a long nightly is still using.
    if not value >= 1 or value > 36500:
        raise argparse.ArgumentTypeError(f"must be a number of days, at least 1, got {text!r}")
    return value


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_devices_clean(args: argparse.Namespace) -> int:
    from harness.transport.base import TRANSPORTS, transport_for
    from harness.transport.clean import clean_cache

    profile = _load_device(args, args.device)
    if not TRANSPORTS.get(profile.transport).has_cache:
        out.print(f"device {escape(profile.name)} keeps no cache: the {profile.transport} "
                  "transport uses models and data where they are on this machine; nothing to "
                  "clean", highlight=False)
        return 0
    _tell_farm_waits([profile], "")
    with transport_for(profile) as transport:
        report = clean_cache(transport, args.older_than, dry_run=args.dry_run)
    cache = escape(report.cache)
    if report.absent:
        out.print(f"device {escape(profile.name)}: no cache at {cache}; nothing to clean",
                  highlight=False, soft_wrap=True)
        return 0
    verb = "would remove" if report.dry_run else "removed"
    for row in report.removed:
        idle = f"unused {row['idle_s'] / 86400:.1f} days"
        out.print(f"  {verb} {escape(row['name'])} ({_mb(row['bytes'])}, {idle})",
                  highlight=False)
    out.print(f"device {escape(profile.name)}, cache {cache}: {verb} "
              f"{plural(len(report.removed), 'entry', 'entries')}, {_mb(report.removed_bytes)}"
              + (" (dry run: nothing removed)" if report.dry_run else " reclaimed"),
              highlight=False, soft_wrap=True)
    other = ", ".join(escape(o["name"]) + ("/" if o["kind"] == "folder" else "")
                      for o in report.other)
    out.print(f"  kept {plural(len(report.kept), 'entry', 'entries')} used in the last "
              f"{plural_days(args.older_than)} "
              f"({_mb(report.kept_bytes)})"
              + (f"; left alone (not the cache's own): {other}" if other else "")
              + (f"; {_mb(report.free_bytes)} free on its disk"
                 if report.free_bytes is not None else ""), highlight=False, soft_wrap=True)
    for row in report.errors:
        err_console.print(f"edgebench: cannot remove {row['name']} from {report.cache}: "
                          f"{row['error']}", highlight=False, markup=False, soft_wrap=True)
    return 1 if report.errors else 0


# build / bench ----------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> int:
    from harness.compress.build import build_suite

    report = build_suite(Path(args.suite), Path(args.build_dir), console=err_console,
                         say_summary=False)
    # the result, once, on stdout (the build's progress is on stderr)
    out.print(f"{report.summary}; {plural(len(report.artifacts), 'artifact')} in "
              f"{args.build_dir}", markup=False, highlight=False, soft_wrap=True)
    _say_build_failures(report.failures)
    return 1 if report.failures else 0


def _say_build_failures(failures: list[tuple[str, str]]) -> None:
    # each failure was already printed with its reason as the build went; name them once more
    if failures:
        names = ", ".join(entry for entry, _ in failures)
        err_console.print(f"[red]{plural(len(failures), 'suite entry', 'suite entries')} "
                          f"failed to build:[/] {escape(names)}",
                          highlight=False)


def follow_up(command: str, run: str | None, db: str | Path) -> str:
    """A command to run next, as printed for a user to paste: "edgebench report --run ID", with
    `--db PATH` when the database is not the default one, shell-quoted."""
    return (f"edgebench {command}" + (f" {shlex.quote(run)}" if run is not None else "")
            + db_option(db))


def _summary_table(records: list[dict[str, Any]], width: int) -> Any:
    """The bench's results, one row per measurement, in `width` columns: names and figures never
    cut (`fitted_table`: a narrow terminal loses p90, then the model's memory, then the session
    count, and says so; narrower still, rows fold). Flags are short labels explained under the
    table (`_flag_lines`); the report and `export` keep every figure and flag as stored."""
    devices = sorted({r["device"] for r in records})
    one_device = len(devices) == 1  # named in the title instead of on every row
    columns: dict[str, list[Any]] = {}  # Text: names from users' files are never markup
    if not one_device:
        columns["device"] = [Text(r["device"]) for r in records]
    columns["model"] = [Text(r["model"]) for r in records]
    columns["runtime"] = [runtime_label(r) for r in records]  # `torch fp16`: what it ran in
    columns["status"] = [r["status"] if r["status"] == "ok" else
                         Text(f"{r['status']}: {r['error_kind']}", style="red") for r in records]
    columns["median ms [95% CI]"] = [
        format_median_interval(r["latency_median_ms"], r.get("latency_ci95_low_ms"),
                               r.get("latency_ci95_high_ms")) for r in records]
    columns["p90 ms"] = [_fmt(r["latency_p90_ms"], f".{decimals_for(r['latency_median_ms'])}f")
                         for r in records]
    columns["sessions"] = [f"{r['sessions']}/{r['sessions_planned']}" for r in records]
    # the memory the model adds to the runtime's (results/README.md), not the file's size
    columns["model MiB"] = [_fmt(r["model_mb"], ".1f") for r in records]
    columns["top-1 %"] = [format_percent(r["accuracy_top1"]) for r in records]
    columns["flags"] = [", ".join(FLAG_LABELS.get(f, f) for f in r.get("flags") or ())
                        for r in records]
    return fitted_table(
        columns, width, names=("device", "model", "runtime"), wraps=("status", "flags"),
        optional=("p90 ms", "model MiB", "sessions"),
        left=("device", "model", "runtime", "status", "flags"),
        title="edgebench results" + (f" on {escape(devices[0])}" if one_device else ""))


# Under the table: "memory" there read as the process's, which the report gives as peak RSS.
MODEL_MIB_LINE = ("  model MiB: the memory the model adds to its runtime's (peak RSS of the timed "
                  "window less the RSS before the model loaded, what its load freed handed back "
                  "first); the report has the peak RSS, loading included")


def _flag_lines(records: list[dict[str, Any]]) -> list[str]:
    """What the summary table's flags mean, those it shows only, each with how many rows."""
    flags = [f for r in records for f in r.get("flags") or ()]
    return [f"  {flags.count(name)} of {len(records)} {line}"
            for name, line in zip(in_legend_order(flags), flag_legend(flags), strict=True)]


BUILD_DIR_HELP = "where built artifacts and their manifests go (default models/build)"


def protocol_text(settings: dict[str, Any]) -> str:
    """A session's protocol in a few words, from its settings (`harness.agent.protocol`), so
    that the help cannot drift from what the agent does."""
    return (f"warm-up {settings['warmup_s']:g} s and at least {settings['warmup_min']} runs, "
            f"timed at least {settings['duration_s']:g} s and {settings['min_iterations']} "
            f"runs, capped at {settings['max_duration_s']:g} s")


def _bounded(kind: Callable[[str], Any], low: float, high: float, what: str, *,
             high_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind(text)` in [low, high] ([low, high) with `high_open`), else
    "must be WHAT, not TEXT" after the option's name, which argparse gives (nan and inf are
    refused with the rest)."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        inside = low <= value < high if high_open else low <= value <= high
        if not inside:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    return parse


_threshold = _bounded(float, 0, 1, "a fraction in [0, 1), e.g. 0.05", high_open=True)
_top1_points = _bounded(float, 0, 100, "percentage points in [0, 100), e.g. 0.1", high_open=True)
_session_count = _bounded(int, 1, 1000, "a number of sessions between 1 and 1000")
_thread_count = _bounded(int, 1, MAX_THREADS, f"a number of threads between 1 and {MAX_THREADS}")
_wait_seconds = _bounded(float, 0, 7 * 24 * 3600, "seconds between 0 and a week")

TOP1_THRESHOLD_HELP = ("a change of top-1 on the same images counts as lower or higher beyond "
                       "these percentage points (default "
                       f"{TOP1_THRESHOLD_POINTS:g}), and of one image at least")
SESSIONS_DEFAULT_HELP = f"default {DEFAULT_SESSIONS}, {QUICK_SESSIONS} with --quick"


def _path(text: str) -> str:
    """A file or folder argument: an empty one (an unset shell variable) would mean the current
    folder, and a build or report would land there."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder")
    return text


class _Once(argparse.Action):
    """An option that takes one value: given twice, argparse kept the last one silently
    (`--model a.onnx --model b.onnx` measured b alone)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None:
            raise argparse.ArgumentError(self, f"given twice ({before}, {values}); {self.help}")
        setattr(namespace, self.dest, values)


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or not all(1 <= d <= 1 << 16 for d in shape):
        raise argparse.ArgumentTypeError(f"--input-shape {text!r}: give sizes such as 1,3,224,224")
    return shape


def cmd_bench(args: argparse.Namespace) -> int:
    devices = [_load_device(args, d) for d in args.device or ["local"]]
    names = [d.name for d in devices]
    if len(set(names)) != len(names):
        raise EdgebenchError(f"device given twice: {', '.join(names)}")
    if args.wait is not None:
        if not any(d.labgrid for d in devices):
            raise EdgebenchError("--wait is how long to wait for a farm device's labgrid "
                                 f"place; {', '.join(names)} is no farm device")
        devices = [dataclasses.replace(d, labgrid=dataclasses.replace(d.labgrid, wait_s=args.wait))
                   if d.labgrid else d for d in devices]
    if any(d.labgrid for d in devices):  # each place is acquired for its device's whole queue
        from harness.farm.labgrid import places_released_on_interrupt

        _tell_farm_waits(devices, "--wait SECONDS to change that; ")
        with places_released_on_interrupt():
            return _bench(args, devices)
    with sigterm_as_interrupt():  # a CI timeout or `kill` ends the run as Ctrl-C does
        return _bench(args, devices)


def _tell_farm_waits(devices: list[Any], hint: str) -> None:
    """Connect to the coordinators of the farm devices among `devices` (one that is down: one
    clear error, nothing built), and have them say at once when a place is held by someone else,
    not after the wait, and when a place a killed run left acquired was released."""
    from harness.farm.labgrid import client_for

    def held(place: str, holder: str, wait_s: float) -> None:
        if wait_s > 0:
            _say(f"labgrid place {place} is held by {holder}; waiting up to {wait_s:g} s for it "
                 f"({hint}Ctrl-C stops waiting)")

    for coordinator in sorted({d.labgrid.coordinator for d in devices if d.labgrid}):
        client = client_for(coordinator)
        client.on_wait, client.on_note = held, _say


def _say(text: str) -> None:
    err_console.print(text, highlight=False, markup=False, soft_wrap=True)


def _check_local_threads(args: argparse.Namespace, devices: list[Any]) -> None:
    """The agent's own limit on threads, said before anything runs where the device is this
    machine: past it, every session would fail and be stored as a failed run."""
    from harness.agent.job import JobError, checked_threads

    if args.threads is None or not any(d.transport == "local" for d in devices):
        return
    try:
        checked_threads({"threads": args.threads, "force_threads": args.force_threads},
                        os.cpu_count() or 1)
    except JobError as err:
        raise EdgebenchError(f"--threads: {err} (local)") from None


def _bench(args: argparse.Namespace, devices: list[Any]) -> int:
    """A bench run, in the order a user is told things: what the arguments, the profiles, the
    model file and the database alone refuse, before a build; the build before a run is begun;
    the run's summary once the database is closed, the exit status last."""
    from harness import bench
    from harness.store import new_run_id

    options = _bench_options(args)
    _check_bench_arguments(args, devices)
    # a model that cannot be read is said before a database is made for it
    artifacts = _model_artifacts(args) if args.model else None
    what = bench.what_record(Path(args.suite) if args.suite else None,
                             Path(args.model) if args.model else None)
    resumed = _run_to_resume(args, devices, options, what)
    failures: list[tuple[str, str]] = []
    if artifacts is None:
        artifacts, failures = _built_artifacts(args.suite, args.build_dir)
    plan = bench.plan_bench(artifacts, devices, options,
                            resumed.run_id if resumed else new_run_id(), what, args.input_shape)
    if resumed is not None:
        bench.check_jobs(resumed, plan)
    command = "edgebench " + " ".join(sys.argv[1:])
    state = _begin_run(args.db, plan, command, args.suite, resuming=resumed is not None)
    with Store(args.db) as store, _progress_bars() as bars:
        progress = _BenchProgress(bars, plan, devices, state)
        _measure(store, plan, state, command, args.suite, progress)
        ended = bench.finish(store, plan)
        by_job = {r["job_id"]: r for r in store.results([plan.run_id])}
        progress.end(by_job)
        records = [by_job[j.job_id] for j in plan.jobs if j.job_id in by_job]
        job_ids = [r["job_id"] for r in records]
        profiled = (store.profiles(job_ids), store.profile_ops(job_ids)) if args.profile \
            else None
    _print_results(records, profiled, plan.run_id, args.db, ended)
    return _exit_status(records, failures)


def _bench_options(args: argparse.Namespace) -> BenchOptions:
    from harness import runner

    settings = {"timed_scope": args.timed_scope} if args.timed_scope else {}
    return runner.BenchOptions(runtimes=tuple(args.runtime or ()), threads=args.threads,
                               quick=args.quick, sessions=args.sessions,
                               max_sessions=args.max_sessions, settings=settings,
                               force_threads=args.force_threads, profile=args.profile)


def _check_bench_arguments(args: argparse.Namespace, devices: list[Any]) -> None:
    if args.input_shape and not args.model:
        raise EdgebenchError("--input-shape goes with --model; a suite's models set input_size")
    _check_local_threads(args, devices)
    for device in devices:  # what a profile alone says cannot work, before a build and a run
        if device.ssh is not None and device.transport in ("ssh", "labgrid"):
            from harness.transport.sshconn import check_key_settings

            check_key_settings(f"device {device.name}", device.ssh)


def _model_artifacts(args: argparse.Namespace) -> list[Artifact]:
    """--model's file as the one artifact to measure, in --input-shape where given."""
    from harness.artifacts import from_model_file

    artifacts = [from_model_file(Path(args.model))]
    if args.input_shape:
        artifacts = [dataclasses.replace(a, input_shape=args.input_shape) for a in artifacts]
    return artifacts


def _run_to_resume(args: argparse.Namespace, devices: list[Any], options: BenchOptions,
                   what: dict[str, Any]) -> RunInfo | None:
    """The run --resume takes up, if it can. The database is opened with or without --resume: one
    that cannot take the results, or a run --resume cannot take up, is said before the build."""
    from harness import bench

    with Store(args.db) as store:
        return bench.check_run(store, args.resume, what, [d.name for d in devices],
                               bench.options_record(options, args.input_shape)) \
            if args.resume else None


def _built_artifacts(suite: str, build_dir: str) -> tuple[list[Artifact], list[tuple[str, str]]]:
    """The suite's artifacts, built or found built, and the entries that failed to build (each
    said as the build went, then named once more); none built at all is an error."""
    from harness.compress.build import build_suite

    report = build_suite(Path(suite), Path(build_dir), console=err_console)
    _say_build_failures(report.failures)
    if not report.artifacts:
        raise EdgebenchError(f"{suite}: no artifact could be built")
    return report.artifacts, report.failures


def _begin_run(db: str, plan: BenchPlan, command: str, suite: str | None, *, resuming: bool
               ) -> ResumeState | None:
    """Record the run as begun, or as taken up again; a resumed run says what it holds already
    and what it will measure, and returns that."""
    from harness import bench

    with Store(db) as store:
        bench.begin(store, plan, command, suite, resuming=resuming)
        if not resuming:
            return None
        state = bench.resume_state(store, plan)
        _say(bench.describe(state, plan.run_id))
        return state


class _Bars(Progress):
    """rich's Progress, stopped once however often it is told to. A bench stopped by Ctrl-C or
    SIGTERM stops its bars before its last line, and its `with` block stops them again; where
    stderr is no terminal (`2>log`) each stop ends a line, and the second left a blank line
    before the interruption's."""

    def stop(self) -> None:
        if self.live.is_started:
            super().stop()


def _progress_bars() -> Progress:
    return _Bars(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        # redrawn twice a second: the bar shares the cores with a local device's sessions
        console=err_console, transient=False, refresh_per_second=2)


class _BenchProgress:
    """A bench's progress on stderr, one bar per device counted in sessions (a profile is one
    more). Between the bars: a failed start's reason once per device, however many models it
    failed, and a resumed run's changed device or runtime once, not for every measurement."""

    def __init__(self, bars: Progress, plan: BenchPlan, devices: list[Any],
                 state: ResumeState | None) -> None:
        self.bars, self.plan = bars, plan
        sessions, profile = plan.options.session_count, plan.options.profile
        self.per_job = sessions + profile  # the profile session is one more, untimed
        self.tasks = {d.name: bars.add_task(
            escape(f"{d.name}: {sessions} sessions each" + (" and a profile" if profile else "")),
            total=self.per_job * sum(j.device.name == d.name for j in plan.jobs))
            for d in devices}
        if state is not None:
            self._count_stored(state)
        # a failure's line said: how often since
        self.repeated: dict[tuple[str, str, str], int] = {}
        self.warned: set[tuple[str, str]] = set()

    def _count_stored(self, state: ResumeState) -> None:
        """What the resumed run holds already: a finished measurement whole, the others as far
        as they went."""
        todo = {j.job_id for j in state.todo}
        for job in self.plan.jobs:
            held = len(state.stored.get(job.job_id, ())) + (job.job_id in state.profiled)
            self.bars.advance(self.tasks[job.device.name],
                              held if job.job_id in todo else self.per_job)

    def on_event(self, kind: str, job: PlannedJob, record: dict[str, Any] | None) -> None:
        if record is None:
            return
        task = self.tasks[job.device.name]
        bar = self.bars.tasks[task]
        if bar.total is not None and bar.completed >= bar.total:
            self.bars.update(task, total=bar.total + 1)  # a round past the planned ones
        doing = "profiling" if kind == "profile" else "measuring"
        self.bars.update(task, description=escape(f"{job.device.name}: {doing} "
                                                 f"{job.artifact.name} on {job.runtime}"))
        self.bars.advance(task)
        if kind == "done" and record["status"] != "ok" and record["sessions"] == 0:
            self.bars.advance(task, self.per_job - 1)  # no more sessions of a failed start
            said = (job.device.name, str(record["status"]), str(record["error_message"]))
            self.repeated[said] = self.repeated.get(said, -1) + 1
            if self.repeated[said]:  # a device that fails every model: its reason once
                return
            self.bars.console.print(
                f"[red]{record['status']}[/] " + escape(
                    f"{job.device.name} {job.artifact.name} {job.runtime}: "
                    f"{record['error_message']}"), highlight=False)

    def on_change(self, job: PlannedJob, changes: list[tuple[str, Any, Any]]) -> None:
        from harness import resume

        line = resume.change_warning(self.plan.run_id, job, changes)
        if (job.device.name, line) not in self.warned:
            self.warned.add((job.device.name, line))
            self.bars.console.print(escape(line), highlight=False, soft_wrap=True)

    def end(self, by_job: dict[str, dict[str, Any]]) -> None:
        """Each device's bar ends on done, or on not reached; then how many more measurements
        failed as a line said already."""
        from harness import runner

        for name, task in self.tasks.items():
            mine = [by_job[j.job_id] for j in self.plan.jobs
                    if j.device.name == name and j.job_id in by_job]
            # not "done" for a device that measured nothing because it could not be reached
            lost = mine and all(r["error_kind"] in ("transport", runner.LOST) for r in mine)
            self.bars.update(task, description=escape(
                f"{name}: {'not reached' if lost else 'done'}"))
        for (device, status, _), more in self.repeated.items():
            if more:  # "failed", or "unsupported" (a runtime that lacks what the file needs)
                self.bars.console.print(escape(f"{device}: {more} more measurement"
                                               f"{'s' if more != 1 else ''} {status} the same "
                                               "way"), highlight=False)


def _measure(store: Store, plan: BenchPlan, state: ResumeState | None, command: str,
             suite: str | None, progress: _BenchProgress) -> None:
    """Run the plan, or what a resumed run still lacks. Stopped by Ctrl-C, SIGTERM or an error,
    every session measured stays, the run is closed as interrupted or failed, and the last line
    says how to take it up."""
    from harness import runner

    try:
        # a Ctrl-C that Python lost in a gc or weakref callback is raised between sessions
        # (`main` remembers it)
        runner.run_plan(store, state.todo if state else plan.jobs, plan.options, command=command,
                        suite=suite, on_event=progress.on_event, run_id=plan.run_id,
                        stored=state.stored if state else None,
                        profiles=state.profiles if state else None, on_change=progress.on_change)
    except BaseException as err:
        # an error is not an interruption: the run says it failed (a resume takes it up all the
        # same), so that nobody reads it as stopped by hand
        store.finish_run(plan.run_id, "interrupted" if isinstance(err, KeyboardInterrupt)
                         else "failed")
        progress.bars.stop()
        how = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed (below)"
        _say(f"run {plan.run_id} {how}: the same command with --resume {plan.run_id} "
             "measures what it has not stored")
        raise


def _print_results(records: list[dict[str, Any]],
                   profiled: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None,
                   run_id: str, db: str, ended: str) -> None:
    """The summary table and what its columns and flags mean, the profiles asked for, and the
    command that reports the run."""
    out.print(_summary_table(records, out.width))
    out.print(MODEL_MIB_LINE, highlight=False, markup=False, soft_wrap=True)
    for line in _flag_lines(records):
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if profiled is not None:
        from harness.report.profile import console_table

        out.print(console_table(records, *profiled))
    out.print(f"run [bold]{run_id}[/] stored in {escape(db)}; "
              f"`{escape(follow_up('report --run', run_id, db))}`", soft_wrap=True)
    if ended == "incomplete":  # sessions lost with a device: said as an interruption says it
        _say(f"run {run_id} incomplete: the same command with --resume {run_id} measures what "
             "it has not stored")


def _exit_status(records: list[dict[str, Any]], failures: list[tuple[str, str]]) -> int:
    """3 when a device could not be used; 1 when a measurement failed, a suite entry did not
    build or a device measured nothing; else 0."""
    from harness import runner

    bad = [r for r in records if r["status"] == "failed"]
    # a device that could not be used, from the start or once it went away mid-run: the exit
    # status and the last line say why, for each such device (a cron mail may hold that alone)
    unreachable = [r for r in bad if r["error_kind"] in ("transport", runner.LOST)]
    if unreachable:
        why = {str(r["device"]): str(r["error_message"]) for r in reversed(unreachable)}
        err_console.print("edgebench: error: " + "; ".join(
            f"device {device}: {message}" for device, message in sorted(why.items())),
            highlight=False, markup=False, soft_wrap=True)  # one line
        return 3
    nothing = measured_nothing(records)
    if nothing:  # a run that measured nothing on a device is no success, though nothing failed
        err_console.print("edgebench: error: " + "; ".join(
            f"device {device} {why}" for device, why in nothing.items()),
            highlight=False, markup=False, soft_wrap=True)  # one line
    return 1 if bad or failures or nothing else 0


def cmd_nightly(args: argparse.Namespace) -> int:
    from harness.farm import command as nightly_command
    from harness.farm.summary import baseline_text
    from harness.report.compare import is_regression
    from harness.report.nightly import rebuilt_line

    def say(text: str) -> None:  # one line each, whatever the width: a command to paste
        err_console.print(escape(text), highlight=False, soft_wrap=True)

    result = nightly_command.run(nightly_command.NightlyArgs(
        farm=Path(args.farm), suite=Path(args.suite), db=Path(args.db),
        out=Path(args.out) if args.out else None, nightly_id=args.id, baseline=args.baseline,
        fail_on_regression=args.fail_on_regression, build_dir=Path(args.build_dir),
        quick=args.quick, sessions=args.sessions, threads=args.threads,
        threshold=args.threshold, top1_threshold=args.top1_threshold,
        command="edgebench " + " ".join(sys.argv[1:])),
        say, console=err_console)
    summary = result.summary
    devices = summary["devices"]
    mine = [[m for m in summary["measurements"] if m["device"] == d["name"]] for d in devices]
    out.print(fitted_table(  # Text: names and messages are never markup
        {"device": [Text(d["name"]) for d in devices],
         "status": [Text(d["status"]) for d in devices],
         "measurements": [str(len(m)) for m in mine],
         "regressions": [str(sum(map(is_regression, m))) for m in mine],
         "not gated": [str(sum(1 for x in m if x.get("not_gated"))) for m in mine],
         "why": [Text(d["message"] or "") for d in devices]},
        out.width, names=("device",), wraps=("why",), left=("device", "status", "why"),
        title=f"nightly {escape(result.nightly_id)} (baseline "
              f"{escape(baseline_text(summary))})"))
    if summary.get("not_gated"):  # a caveat the exit code does not carry: said, not hidden
        out.print(f"{plural(summary['not_gated'], 'measurement')} not gated: they ran ok with "
                  "no baseline measurement to compare with, or one they cannot be judged against "
                  "(another instruction set, accelerator, precision or timed scope; summary.json "
                  "says why, each)",
                  highlight=False, markup=False, soft_wrap=True)
    if rebuilt_line(summary):
        out.print(rebuilt_line(summary), highlight=False, markup=False, soft_wrap=True)
    failed_builds = summary.get("build_failures") or []
    if failed_builds:  # measured on no device: not in the table's rows
        out.print(f"{plural(len(failed_builds), 'suite entry', 'suite entries')} did not build "
                  "(measured on no device): "
                  + "; ".join(f"{f['entry']}: {f['error']}" for f in failed_builds),
                  highlight=False, markup=False, soft_wrap=True)
    out.print(f"trend report, summary.json and junit.xml in {escape(str(result.out))}/; "
              f"run {result.nightly_id} in {escape(str(args.db))}", highlight=False)
    # what a cron mail or a CI log needs most, last: the exit status and what it means
    out.print(f"exit {result.exit_code}: {summary['exit_meaning']}", highlight=False,
              markup=False, soft_wrap=True)
    return result.exit_code


# results ----------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import run_report

    folder = run_report(Path(args.db), args.run, Path(args.out) if args.out else None,
                        style=args.style)
    out.print(f"report written to {folder}/ (open {folder}/index.html)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.report import run_compare

    return run_compare(Path(args.db), args.run_a, args.run_b, threshold=args.threshold,
                       top1_threshold=args.top1_threshold,
                       allow_different_devices=args.allow_different_devices,
                       fail_on_regression=args.fail_on_regression, as_json=args.json)


def cmd_export(args: argparse.Namespace) -> int:
    from harness.report import run_export

    run_export(Path(args.db), args.run, args.format, Path(args.out) if args.out else None,
               table=args.table)
    return 0


def cmd_db_stats(args: argparse.Namespace) -> int:
    with _existing_store(args.db, readonly=True) as store:
        stats = store.stats()
    mib = 1024 * 1024
    out.print(f"{args.db}: {stats.file_bytes / mib:.1f} MiB, {stats.free_bytes / mib:.1f} MiB "
              f"free inside (`{follow_up('db vacuum', None, args.db)}` gives it back)",
              highlight=False, markup=False)
    out.print(fitted_table(
        {"table or index": [Text(name) for name in stats.tables],
         "MiB": [f"{size / mib:.2f}" for size in stats.tables.values()]},
        out.width, names=("table or index",), left=("table or index",), title="size by table"))
    # the run id whole: it is what `db delete` and `db prune` are given
    runs = fitted_table(
        {"run": [Text(r.run_id) for r in stats.runs],
         "started": [r.started_at[:19].replace("T", " ") for r in stats.runs],
         "measurements": [str(r.measurements) for r in stats.runs],
         "sessions": [str(r.sessions) for r in stats.runs],
         "with samples": [str(r.sessions_with_samples) for r in stats.runs],
         "samples": [str(r.samples) for r in stats.runs],
         "sample MiB": [f"{r.sample_bytes / mib:.2f}" for r in stats.runs],
         "bytes/sample": [f"{r.sample_bytes / r.samples:.2f}" if r.samples else "-"
                          for r in stats.runs]},
        out.width, names=("run",), wraps=("started",), optional=("bytes/sample", "with samples"),
        left=("run", "started"), title="size by run")
    out.print(runs)
    return 0


def plural_days(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


def cmd_db_prune(args: argparse.Namespace) -> int:
    with _existing_store(args.db) as store:
        pruned = store.prune_samples(args.keep_samples_for)
        out.print(f"dropped the raw samples of {plural(pruned.sessions, 'session')} in "
                  f"{plural(pruned.runs, 'run')} {pruned.window}; "
                  "every result and session row is kept", highlight=False)
        if args.vacuum:
            _say_vacuum(*store.vacuum())
    return 0


def cmd_db_delete(args: argparse.Namespace) -> int:
    if bool(args.runs) == bool(args.keep_runs_for):
        raise EdgebenchError("db delete: give the runs to delete, or --keep-runs-for N|Nd to "
                             "delete every run older than those (not both)")
    with _existing_store(args.db) as store:
        window = ""
        if args.keep_runs_for:
            if re.fullmatch(r"0+d?", args.keep_runs_for.strip().lower()):
                raise EdgebenchError(f"db delete --keep-runs-for {args.keep_runs_for}: that "
                                     "keeps no run; delete the database file instead")
            old, window = store.runs_outside(args.keep_runs_for, "--keep-runs-for")
            if not old:
                out.print(f"no run {window}: nothing deleted", highlight=False)
                return 0
            runs = [info for info in map(store.run, old) if info]
        else:
            runs = [info for info in (store.run(store.resolve_run(r)) for r in args.runs)
                    if info]
        live = [info for info in runs if info.status == "running"]
        if live and not args.force:
            again = ("nightly ... --id" if live[0].is_nightly else "bench ... --resume")
            raise EdgebenchError(
                f"{args.db}: run {live[0].run_id} is marked running: a bench or nightly may "
                f"still be writing it, or it was killed and can be taken up again "
                f"(`{follow_up(again, live[0].run_id, args.db)}`); give --force to delete it "
                "anyway")
        ids = list(dict.fromkeys(info.run_id for info in runs))
        deleted = store.delete_runs(ids)
        which = f"{window}, {ids[0]} to {ids[-1]}" if window and len(ids) > 1 else \
            f"{window}, {ids[0]}" if window else ", ".join(ids)
        out.print(f"deleted {plural(deleted.runs, 'run')} ({which}): "
                  f"{plural(deleted.measurements, 'measurement')}, "
                  f"{plural(deleted.sessions, 'session')} with their samples and profiles",
                  highlight=False, soft_wrap=True)  # one line: run ids to copy
        if args.vacuum:
            _say_vacuum(*store.vacuum())
    return 0


def cmd_db_vacuum(args: argparse.Namespace) -> int:
    with _existing_store(args.db) as store:
        _say_vacuum(*store.vacuum())
    return 0


def _say_vacuum(before: int, after: int) -> None:
    out.print(f"compacted: {before / 1024 / 1024:.1f} MiB -> {after / 1024 / 1024:.1f} MiB",
              highlight=False)


def _existing_store(db: str, *, readonly: bool = False) -> Store:
    # Store() makes a database of a missing or empty file; maintenance commands must not.
    check_existing(Path(db))
    return Store(db, readonly=readonly, create=False)


# What a Ctrl-C leaves, by command: a bench or nightly keeps each session as it ends; an export
# is written under a temporary name and renamed at the end; the other commands' writes (`db`) are
# transactions, or they write nothing of their own.
INTERRUPTED_BY_COMMAND = {
    "bench": INTERRUPTED, "nightly": INTERRUPTED,
    # an artifact counts once its sidecar is written, last: a half-written one is built again
    "build": "edgebench: interrupted; the artifacts built so far are kept, the next build makes "
             "the rest",
    "export": "edgebench: interrupted; nothing was written (a file already at --out is as it was)",
}


# parser -----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Says a usage error in one line naming the command's help, not after its whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edgebench",
        description="Measure what model compression buys on real edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"edgebench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", default=str(DEFAULT_DB), type=_path,
                       help=f"result database (default {DEFAULT_DB})")
        return p

    def with_devices_dir(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--devices-dir", type=lambda text: Path(_path(text)), default=DEVICES_DIR,
                       help=f"where device profiles live (default: $EDGEBENCH_DEVICES if set, "
                            f"else ./{DEVICES_DIR}/ if there is one, else the {DEVICES_DIR}/ of "
                            "the edgebench checkout)")
        return p

    devices = sub.add_parser("devices", help="list, check and clean devices")
    dsub = devices.add_subparsers(dest="devices_command", required=True, metavar="ACTION")
    farm_help = "farm file whose places are devices too (default devices/farm.yaml if present)"
    listing = with_devices_dir(dsub.add_parser("list", help="profiles found in devices/"))
    listing.add_argument("--farm", type=_path, help=farm_help)
    listing.set_defaults(func=cmd_devices_list)
    check = with_devices_dir(dsub.add_parser(
        "check", help="connect, fingerprint, list runtimes present"))
    check.add_argument("device", help="profile name (devices/NAME.yaml), YAML path, or a farm "
                       "device (a labgrid place: acquired for the check, then released)")
    check.add_argument("--farm", type=_path, help=farm_help)
    check.add_argument("--json", action="store_true", help="print the raw description")
    check.set_defaults(func=cmd_devices_check)
    clean = with_devices_dir(dsub.add_parser(
        "clean", help="remove cache entries a device has not used for a while"))
    clean.add_argument("device", help="profile name (devices/NAME.yaml), YAML path, or a farm "
                       "device")
    clean.add_argument("--farm", type=_path, help=farm_help)
    clean.add_argument("--older-than", type=_days, default=30.0, metavar="DAYS",
                       help="remove entries no connection used for DAYS days (default 30, at "
                            "least 1); leftovers of interrupted uploads after an hour")
    clean.add_argument("--dry-run", action="store_true",
                       help="say what would be removed, remove nothing")
    clean.set_defaults(func=cmd_devices_clean)

    build = sub.add_parser("build", help="compress and export every artifact of a suite")
    build.add_argument("suite", type=_path, help="suite YAML, e.g. models/demo.yaml")
    build.add_argument("--build-dir", type=_path, default="models/build", help=BUILD_DIR_HELP)
    build.set_defaults(func=cmd_build)

    bench = with_devices_dir(with_db(sub.add_parser("bench", help="measure models on devices")))
    bench.add_argument("--device", action="append",
                       help="profile name or YAML path, or a farm device (its labgrid place is "
                       "acquired for the bench, then released); repeat for several devices "
                       "(default local)")
    bench.add_argument("--farm", type=_path, help=farm_help)
    what = bench.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", type=_path, action=_Once,
                      help="suite YAML; its artifacts are built first if needed")
    what.add_argument("--model", type=_path, action=_Once,
                      help="one model file (.onnx, .tflite, .pt2); for several, a bench each")
    bench.add_argument("--runtime", action="append",
                       help="only this runtime (repeatable); default: the profile's runtimes")
    bench.add_argument("--threads", type=_thread_count, help="inference threads (default: "
                       "profile, else one per CPU; at most 4 per device CPU)")
    bench.add_argument("--force-threads", action="store_true",
                       help="allow --threads beyond 4 per device CPU")
    bench.add_argument("--quick", action="store_true",
                       help=f"short protocol for tests and CI ({protocol_text(QUICK_SETTINGS)}; "
                            f"default {protocol_text(DEFAULT_SETTINGS)})")
    bench.add_argument("--sessions", type=_session_count,
                       help="fresh agent processes per measurement, interleaved across the "
                            f"artifacts ({SESSIONS_DEFAULT_HELP}; 1 gives no interval)")
    bench.add_argument("--max-sessions", type=_session_count,
                       help="add rounds of sessions, up to this many, to measurements whose "
                            "headline 95%% interval is wider than +/-2%% of the median")
    bench.add_argument("--timed-scope", choices=("runtime", "end_to_end"),
                       help="what the timer covers: the runtime's own run on bound inputs "
                            "(default) or numpy in and out")
    bench.add_argument("--input-shape", type=_input_shape, metavar="N,C,H,W",
                       help="with --model: the input shape to measure, for dynamic dimensions")
    bench.add_argument("--profile", action="store_true",
                       help="one extra, untimed session per measurement under the engine's "
                       "per-operator profiler; stored, printed and in the report")
    bench.add_argument("--wait", type=_wait_seconds, metavar="SECONDS",
                       help="for a farm device whose labgrid place someone else holds: how long "
                       "to wait for it before giving up (default: the farm's wait_s; 0: give "
                       "up at once)")
    bench.add_argument("--resume", metavar="RUN_ID",
                       help="take up an interrupted bench run (id, unique prefix or 'latest') "
                       "with the command it began with: only the sessions it has not stored are "
                       "measured, into that run")
    bench.add_argument("--build-dir", type=_path, default="models/build", help=BUILD_DIR_HELP)
    bench.set_defaults(func=cmd_bench)

    night = with_db(sub.add_parser(
        "nightly", help="a suite on every device of a labgrid farm: resumable, gated, trended"))
    night.add_argument("--farm", type=_path, required=True,
                       help="farm file, e.g. devices/farm.yaml")
    night.add_argument("--suite", type=_path, required=True, help="suite YAML, built once")
    night.add_argument("--out", type=_path, help="folder for the trend report, summary.json and "
                       "junit.xml (default reports/<nightly id>)")
    night.add_argument("--id", help="the nightly's id (default: a new one); give the id of a "
                       "killed nightly to measure only what it is missing")
    night.add_argument("--baseline", default="previous",
                       help="run to compare with: 'previous' (default: each device's last "
                       "nightly that measured it ok) or a run id")
    night.add_argument("--fail-on-regression", action="store_true",
                       help="exit 1 when a measurement is slower beyond the threshold with "
                            "confidence, has a lower top-1, or is newly failing")
    night.add_argument("--threshold", type=_threshold, default=THRESHOLD,
                       help=f"smallest relative change that counts (default {THRESHOLD:g})")
    night.add_argument("--top1-threshold", type=_top1_points, default=TOP1_THRESHOLD_POINTS,
                       metavar="POINTS",
                       help=TOP1_THRESHOLD_HELP)
    night.add_argument("--quick", action="store_true",
                       help=f"short protocol (tests, CI): {protocol_text(QUICK_SETTINGS)}")
    night.add_argument("--sessions", type=_session_count,
                       help=f"sessions per measurement ({SESSIONS_DEFAULT_HELP})")
    night.add_argument("--threads", type=_thread_count,
                       help="inference threads (default: each device's profile)")
    night.add_argument("--build-dir", type=_path, default="models/build", help=BUILD_DIR_HELP)
    night.set_defaults(func=cmd_nightly)

    report = with_db(sub.add_parser("report", help="tables, plots and an HTML page for a run"))
    report.add_argument("--run", default="latest",
                        help="run id, unique prefix or 'latest' (default)")
    report.add_argument("--out", type=_path, help="output folder (default reports/<run_id>)")
    report.add_argument("--style", choices=("html", "paper"), default="html",
                        help="paper: also single- and double-column PDF figures, figures.tex and "
                        "LaTeX tables in OUT/paper/")
    report.set_defaults(func=cmd_report)

    compare = with_db(sub.add_parser("compare",
                                     help="compare two runs measurement by measurement"))
    compare.add_argument("run_a", help="the run compared against (A, the baseline): run id, "
                         "unique prefix or 'latest'")
    compare.add_argument("run_b", help="the run judged (B): slower or faster than A")
    compare.add_argument("--threshold", type=_threshold, default=THRESHOLD,
                         help=f"smallest relative change that counts, T (default {THRESHOLD:g}): "
                              "slower or faster only when the whole 95%% CI is beyond 1 +/- T")
    compare.add_argument("--top1-threshold", type=_top1_points,
                         default=TOP1_THRESHOLD_POINTS,
                         metavar="POINTS",
                         help=TOP1_THRESHOLD_HELP)
    compare.add_argument("--fail-on-regression", action="store_true",
                         help="exit non-zero when any measurement is slower beyond the "
                              "threshold with confidence, has a lower top-1 on the same images, "
                              "or is newly failing (the nightly gate)")
    compare.add_argument("--allow-different-devices", action="store_true",
                         help="compare runs whose device fingerprints differ")
    compare.add_argument("--json", action="store_true",
                         help="print the comparison as JSON (every pair with its figures, "
                              "interval and verdicts) instead of the table")
    compare.set_defaults(func=cmd_compare)

    export = with_db(sub.add_parser(
        "export", help="print a run's results (or sessions, operators, samples) as "
                       "CSV/JSON/Parquet; columns in results/README.md"))
    export.add_argument("--run", default="latest",
                        help="run id, unique prefix or 'latest' (default)")
    export.add_argument("--format", choices=("csv", "json", "parquet"), required=True,
                        help="csv or json (to stdout or --out), parquet (--out only)")
    export.add_argument("--out", type=_path,
                        help="file to write (default stdout; required for parquet)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--samples", dest="table", action="store_const", const="samples",
                       help="the run's raw samples as a long table (job_id, session, seq, "
                            "latency_ns), written one session at a time; csv or parquet")
    which.add_argument("--sessions", dest="table", action="store_const", const="sessions",
                       help="one row per session, pruned ones too: its measurement's run_id, "
                            "job_id, device, model... then the session's own columns and the "
                            "device fingerprint it ran on (its measurement's where the session "
                            "kept none, as before schema 5; its fingerprint_sha256 is empty)")
    which.add_argument("--operators", dest="table", action="store_const", const="operators",
                       help="the top operators of each profile (`bench --profile`), one row "
                            "each, with its measurement's columns and the profile's tool, "
                            "timing and placement")
    export.set_defaults(func=cmd_export, table="results")

    db = sub.add_parser("db", help="size, retention and compaction of the result database")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    with_db(dbsub.add_parser("stats", help="size by table and by run")).set_defaults(
        func=cmd_db_stats)
    prune = with_db(dbsub.add_parser(
        "prune", help="drop the raw samples of older runs; summaries and statistics stay"))
    prune.add_argument("--keep-samples-for", required=True, metavar="N|Nd",
                       help="keep raw samples of the newest N runs (e.g. 30) or of the last N "
                            "days (e.g. 30d); required, no default")
    prune.add_argument("--vacuum", action="store_true", help="compact the file afterwards")
    prune.set_defaults(func=cmd_db_prune)
    delete = with_db(dbsub.add_parser(
        "delete", help="remove runs whole: results, sessions, samples and profiles"))
    delete.add_argument("runs", nargs="*", metavar="RUN", help="run id, unique prefix or latest")
    delete.add_argument("--keep-runs-for", metavar="N|Nd",
                        help="instead of RUN: delete every run older than the newest N runs "
                             "that measured something (e.g. 100) or than the last N days "
                             "(e.g. 90d)")
    delete.add_argument("--force", action="store_true",
                        help="delete a run marked running too (in progress, or killed)")
    delete.add_argument("--vacuum", action="store_true", help="compact the file afterwards")
    delete.set_defaults(func=cmd_db_delete)
    vacuum = with_db(dbsub.add_parser("vacuum", help="compact the file (after a prune or delete)"))
    vacuum.set_defaults(func=cmd_db_vacuum)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("bench", "nightly"):  # they make a database where there is none
            check_folder(Path(args.db))
        # a Ctrl-C whose KeyboardInterrupt Python lost (raised in a gc or weakref callback,
        # which only prints it) stops the command all the same: between its steps where it
        # looks (`signals.raise_if_interrupted`), at its end at the latest
        with remembered_interrupts():
            return int(args.func(args))
    except EdgebenchError as err:
        err_console.print(f"edgebench: error: {err}", highlight=False, markup=False,
                          soft_wrap=True)
        return err.exit_code
    except sqlite3.Error as err:  # what the store did not foresee, said in one line all the same
        from harness.store import storage_error

        where = getattr(args, "db", None) or "result database"
        disk = storage_error(where, err, f"running {args.command}")  # full, failing: exit 3
        err_console.print(f"edgebench: error: {disk or f'{where}: {err}'}",
                          highlight=False, markup=False, soft_wrap=True)
        # a nightly's 1 is "regression" (a success to its systemd unit): never a broken store's
        return disk.exit_code if disk is not None else 3 if args.command == "nightly" else 1
    except KeyboardInterrupt:
        return interrupted(INTERRUPTED_BY_COMMAND.get(args.command, "edgebench: interrupted"))
    except BrokenPipeError:
        # `edgebench export ... | head`: the reader has what it wanted; no traceback, and no
        # second error when Python flushes stdout on exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
