"""Does `edgebench compare` cry wolf, and does it see a real change? Measured on this machine.

Two ONNX files of one randomly initialised ResNet18: at 224x224 and at 235x235 (10% more pixels,
so about 10% more work). Each of R independent runs (one `run_plan` each, both files interleaved
in sessions, as `edgebench bench` runs them) measures both. Then:

- every pair of runs compares the 224 file with itself: a "slower" or "faster" verdict is a false
  alarm (target: none);
- every ordered pair of different runs compares 224 in one with 235 in the other: the share
  called "slower" is the power to see 10% (target: at least 80%);
- the same two rates by simulation, with the between-session and between-run spread measured
  in these runs, so a reader can tell luck from design.

The verdict rule is the one `edgebench compare` uses (`harness.report.compare.judge`): slower only
when the whole 95% interval of the ratio of session medians is above 1 + T, the interval allowing
for the run-to-run spread estimated from the runs up to the reference one (assumed from the
sessions' spread while there are fewer than four).

Run by hand (minutes; not a test):

    .venv/bin/python benchmarks/compare_calibration.py [--runs 6] [--sessions 5] [--threads 2]
        [--cpu N ...] [--json FILE]
    .venv/bin/python benchmarks/compare_calibration.py --simulate-only  # seconds: simulations
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from harness import runner
from harness.agent.probes import fingerprint
from harness.artifacts import from_model_file
from harness.compress.export import export_onnx
from harness.config import DeviceProfile
from harness.report import stats
from harness.report.compare import history_noise, judge
from harness.store import Store
from harness.zoo.models import build_model


def export_pair(folder: Path) -> tuple[Path, Path]:
    paths = []
    for size in (224, 235):
        torch.manual_seed(0)  # the same weights at both sizes
        model = build_model("resnet18", 1000, 3)
        paths.append(export_onnx(model, (1, 3, size, size), folder / f"resnet18_{size}.onnx"))
    return paths[0], paths[1]


def measure(store: Store, files: tuple[Path, Path], runs: int, sessions: int, threads: int,
            duration_s: float, cpus: tuple[int, ...] | None) -> list[dict[int, list[float]]]:
    """Per run, {input size: session medians (ms)}."""
    profile = DeviceProfile(name="local", threads=threads, runtimes=("onnxruntime",),
                            cpu_affinity=cpus)
    options = runner.BenchOptions(sessions=sessions, settings={"duration_s": duration_s})
    artifacts = [from_model_file(f) for f in files]
    out = []
    for i in range(runs):
        jobs = runner.plan_jobs(artifacts, [profile], options)
        _, records = runner.run_plan(store, jobs, options, command=f"calibration run {i}")
        medians: dict[int, list[float]] = {}
        for size, record in zip((224, 235), records, strict=True):
            rows = store.sessions([record["job_id"]])
            medians[size] = [r["median_ms"] for r in rows if r["status"] == "ok"]
        out.append(medians)
        print(f"run {i + 1}/{runs}: 224 {np.median(medians[224]):.2f} ms "
              f"(sessions {', '.join(f'{m:.2f}' for m in medians[224])}); "
              f"235 {np.median(medians[235]):.2f} ms", flush=True)
    return out


def verdict_rates(runs: list[dict[int, list[float]]], threshold: float) -> dict[str, object]:
    def judged(i: int, j: int, size_b: int) -> str:
        noise = history_noise([runs[k][224] for k in range(i + 1)])
        return judge(runs[i][224], runs[j][size_b], threshold=threshold, run_noise=noise)[1]

    same = [judged(i, j, 224) for i, j in itertools.combinations(range(len(runs)), 2)]
    more = [judged(i, j, 235) for i, j in itertools.permutations(range(len(runs)), 2)]
    within = [stats.verdict(stats.ratio_interval(r[224], r[235], paired=True), threshold)
              for r in runs]
    return {
        "same_pairs": len(same),
        "same_false_alarms": sum(v in (stats.SLOWER, stats.FASTER) for v in same),
        "same_verdicts": {v: same.count(v) for v in sorted(set(same))},
        "plus10_pairs": len(more),
        "plus10_called_slower": sum(v == stats.SLOWER for v in more),
        "plus10_verdicts": {v: more.count(v) for v in sorted(set(more))},
        "within_run_paired_called_slower": sum(v == stats.SLOWER for v in within),
        "within_run_pairs": len(within),
    }


def spread(runs: list[dict[int, list[float]]]) -> tuple[float, float, float]:
    """Between-session log-sd (pooled within runs), extra between-run log-sd, and the measured
    log ratio of 235 to 224."""
    logs = [np.log(r[224]) for r in runs] + [np.log(r[235]) for r in runs]
    within = float(np.sqrt(np.mean([x.var(ddof=1) for x in logs])))
    means = np.array([np.log(r[224]).mean() for r in runs])
    sessions = len(runs[0][224])
    extra = float(np.sqrt(max(0.0, means.var(ddof=1) - within**2 / sessions)))
    effect = float(np.mean([np.log(r[235]).mean() - np.log(r[224]).mean() for r in runs]))
    return within, extra, effect


def simulate(within: float, extra: float, effect: float, sessions: int, threshold: float,
             history: int, trials: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Rates of false alarms (same model) and of "slower" for an effect, when each run has its own
    level (extra) and each session its own draw (within), and compare has `history` earlier runs
    of the reference to estimate the run-to-run spread from, as in the measured runs."""
    rng = np.random.default_rng(seed)

    def run(level: float) -> list[float]:
        return list(np.exp(level + rng.normal(0, extra) + rng.normal(0, within, sessions)))

    alarms = slower = 0
    for _ in range(trials):
        earlier = [run(0.0) for _ in range(history)]
        noise = history_noise(earlier)
        a, b, c = earlier[-1], run(0.0), run(effect)
        alarms += judge(a, b, threshold=threshold, run_noise=noise)[1] in (stats.SLOWER,
                                                                            stats.FASTER)
        slower += judge(a, c, threshold=threshold, run_noise=noise)[1] == stats.SLOWER
    return alarms / trials, slower / trials


def simulate_modes(slow_share: float, slow_log: float = 0.34, within: float = 0.03,
                   sessions: int = 5, threshold: float = stats.THRESHOLD, history: int = 10,
                   trials: int = 2000, seed: int = 0) -> float:
    """Rate of false alarms (same model) on a device whose runs land in a slow mode (`slow_log`
    slower, as a log) a `slow_share` of the time, each with its sessions within `within`: a
    board that switches between two speeds, which a robust spread takes for a quiet one."""
    rng = np.random.default_rng(seed)

    def run() -> list[float]:
        level = slow_log if rng.random() < slow_share else 0.0
        return list(np.exp(level + rng.normal(0, 0.01) + rng.normal(0, within, sessions)))

    alarms = 0
    for _ in range(trials):
        earlier = [run() for _ in range(history)]
        alarms += judge(earlier[-1], run(), threshold=threshold,
                        run_noise=history_noise(earlier))[1] in (stats.SLOWER, stats.FASTER)
    return alarms / trials


def print_simulations(threshold: float) -> None:
    """The figures of the README's simulated tables, without measuring anything."""
    for within, extra, sessions in ((0.02, 0.01, 5), (0.02, 0.01, 10), (0.01, 0.005, 5)):
        for t in (0.05, 0.02):
            alarm, slower = simulate(within, extra, float(np.log(1.10)), sessions, t, history=6)
            print(f"sessions log-sd {within}, runs {extra}, {sessions} sessions, T = {t:.0%}: "
                  f"+10% called slower {slower:.1%}, false alarms {alarm:.1%}")
    alarm, slower = simulate(0.15, 0.05, float(np.log(1.14)), 5, threshold, history=6)
    print(f"sessions log-sd 0.15, runs 0.05 (this VM): false alarms {alarm:.1%}, 1.14x called "
          f"slower {slower:.1%}")
    for share in (1 / 3, 1 / 10):
        print(f"runs in a mode 40% slower {share:.0%} of the time: false alarms "
              f"{simulate_modes(share, threshold=threshold):.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu", type=int, action="append",
                        help="pin the agent to this CPU (repeat for several), as a profile's "
                             "cpu_affinity does")
    parser.add_argument("--duration", type=float, default=1.0, help="timed window per session")
    parser.add_argument("--threshold", type=float, default=stats.THRESHOLD)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--simulate-only", action="store_true",
                        help="print the simulated rates of the README and measure nothing")
    args = parser.parse_args()
    if args.simulate_only:
        print_simulations(args.threshold)
        return
    print(f"host ISA: {fingerprint()['isa']}; {args.runs} runs x {args.sessions} sessions, "
          f"{args.threads} thread(s), CPUs {args.cpu or 'any'}, T = {args.threshold:.0%}")
    with tempfile.TemporaryDirectory() as tmp:
        files = export_pair(Path(tmp))
        with Store(Path(tmp) / "calibration.db") as store:
            runs = measure(store, files, args.runs, args.sessions, args.threads, args.duration,
                           tuple(args.cpu) if args.cpu else None)
    rates = verdict_rates(runs, args.threshold)
    within, extra, effect = spread(runs)
    sim_alarm, sim_slower = simulate(within, extra, effect, args.sessions, args.threshold,
                                     history=args.runs)
    sim_alarm10, sim_slower10 = simulate(within, extra, float(np.log(1.10)), args.sessions,
                                         args.threshold, history=args.runs)
    quiet_alarm, quiet_slower = simulate(0.02, 0.01, float(np.log(1.10)), args.sessions,
                                         args.threshold, history=args.runs)
    print(f"\nsame model, {rates['same_pairs']} pairs of runs: "
          f"{rates['same_false_alarms']} false alarms {rates['same_verdicts']}")
    print(f"235 vs 224, {rates['plus10_pairs']} pairs of runs: called slower in "
          f"{rates['plus10_called_slower']} {rates['plus10_verdicts']}")
    print(f"within one run (paired by session): slower in "
          f"{rates['within_run_paired_called_slower']} of {rates['within_run_pairs']}")
    print(f"measured: between-session log-sd {within:.3f}, extra between-run log-sd "
          f"{extra:.3f}, 235/224 = {np.exp(effect):.3f}")
    print(f"simulated with those spreads: false alarms {sim_alarm:.1%}, slower for the measured "
          f"effect {sim_slower:.1%}, slower for exactly +10% {sim_slower10:.1%}")
    print(f"simulated on a quiet device (session log-sd 0.02, run-to-run 0.01): false alarms "
          f"{quiet_alarm:.1%}, slower for +10% {quiet_slower:.1%}")
    if args.json:
        args.json.write_text(json.dumps(dict(
            rates, between_session_log_sd=within, between_run_log_sd=extra,
            measured_ratio=float(np.exp(effect)), simulated_false_alarm_rate=sim_alarm,
            simulated_slower_rate=sim_slower, simulated_slower_rate_plus10=sim_slower10,
            quiet_false_alarm_rate=quiet_alarm, quiet_slower_rate_plus10=quiet_slower,
            runs=runs), indent=1))


if __name__ == "__main__":
    main()
