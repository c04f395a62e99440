"""`edgebench compare`: the ratio of session medians with its interval, and the verdict.

The decision rule is tested on constructed session medians (what noise alone gives, what a real
shift gives, and that the tests notice a rule that would call noise a change), then end to end on
stores written session by session.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.errors import EdgebenchError, StoreError
from harness.report import run_compare
from harness.report.compare import (
    DIFFERENT_ACCELERATOR,
    DIFFERENT_ISA,
    DIFFERENT_PRECISION,
    DIFFERENT_SCOPE,
    FASTER,
    FIXED,
    HIGHER_TOP1,
    INCONCLUSIVE,
    LOWER_TOP1,
    MIXED,
    NEWLY_FAILING,
    NO_CHANGE,
    NOT_MEASURED,
    ONLY_A,
    ONLY_B,
    OTHER_IMAGES,
    SAME_TOP1,
    SLOWER,
    TOP1_UNJUDGED,
    UNJUDGED,
    compare_runs,
    failing_verdicts,
    is_regression,
    judge,
    unjudged_sides,
    verdicts_over_runs,
)
from harness.report.frame import SessionReader, results_frame
from harness.report.stats import RUN_SD_FLOOR
from harness.store import Store
from tests.test_report_synthetic import (
    FINGERPRINT,
    ISA,
    add_job,
    exact_median_ns,
    lognormal_ns,
    sessions_ns,
)


def _medians(centre: float, sd: float, rng: np.random.Generator, n: int = 5) -> np.ndarray:
    """n session medians, log-normal around `centre` with log-sd `sd`."""
    return centre * np.exp(rng.normal(0.0, sd, n))


# A quiet device whose history measured its run-to-run log-sd (0.5%, 20 degrees of freedom):
# the unit tests of the rule below are about the sessions' own interval.
QUIET = (0.005, 20)


def _noise_verdicts(threshold: float, pairs: int = 200, sd: float = 0.03,
                    run_noise: tuple[float, int | None] | None = (0.0, None)) -> list[str]:
    """Verdicts on pairs of equal distributions; by default the sessions' own spread only."""
    rng = np.random.default_rng(2026)
    return [
        judge(_medians(10.0, sd, rng), _medians(10.0, sd, rng), threshold=threshold,
              run_noise=run_noise)[1]
        for _ in range(pairs)
    ]


def test_noise_alone_is_never_called_slower_or_faster() -> None:
    verdicts = _noise_verdicts(threshold=0.05)
    assert SLOWER not in verdicts and FASTER not in verdicts
    assert set(verdicts) <= {NO_CHANGE, INCONCLUSIVE}


def test_the_noise_test_can_fail() -> None:
    # Without a practical threshold the rule is a plain 5% significance test: over 200 pairs of
    # equal distributions it calls a handful of changes, and the test above would see them.
    verdicts = _noise_verdicts(threshold=0.0)
    assert 1 <= verdicts.count(SLOWER) + verdicts.count(FASTER) <= 25


def test_a_real_shift_beyond_the_threshold_is_called() -> None:
    rng = np.random.default_rng(1)
    a = _medians(10.0, 0.01, rng)
    ci, verdict = judge(a, _medians(11.5, 0.01, rng), run_noise=QUIET)
    assert verdict == SLOWER and ci.low > 1.05 and ci.low < 1.15 < ci.high
    assert judge(a, _medians(8.5, 0.01, rng), run_noise=QUIET)[1] == FASTER


def test_a_small_shift_with_tiny_spread_is_no_change() -> None:
    rng = np.random.default_rng(2)
    ci, verdict = judge(_medians(10.0, 0.002, rng), _medians(10.1, 0.002, rng),
                        run_noise=(0.001, 20))
    assert verdict == NO_CHANGE
    assert ci.low > 1.0  # a real 1% change: significant, yet inside +/- 5%


def test_wide_spread_is_inconclusive_even_for_a_large_shift() -> None:
    rng = np.random.default_rng(3)
    a = _medians(10.0, 0.2, rng)
    assert judge(a, _medians(10.0, 0.2, rng))[1] == INCONCLUSIVE
    assert judge(a, _medians(11.5, 0.2, rng))[1] == INCONCLUSIVE


def test_the_threshold_decides_what_counts() -> None:
    rng = np.random.default_rng(1)
    a, b = _medians(10.0, 0.01, rng), _medians(11.5, 0.01, rng)
    assert judge(a, b, threshold=0.05, run_noise=QUIET)[1] == SLOWER
    assert judge(a, b, threshold=0.20, run_noise=QUIET)[1] == NO_CHANGE
    assert judge(a, b, threshold=0.14, run_noise=QUIET)[1] == INCONCLUSIVE  # straddles 1.14


def test_without_history_small_changes_wait_for_one() -> None:
    """Without runs of history the run-to-run spread is unknown and assumed to be at least
    RUN_SD_FLOOR: the clear +15% above is inconclusive, "no change" cannot be said, and only a
    change far beyond what runs differ by is called."""
    rng = np.random.default_rng(1)
    a, b = _medians(10.0, 0.01, rng), _medians(11.5, 0.01, rng)
    ci, verdict = judge(a, b)
    assert verdict == INCONCLUSIVE and ci.run_sd == RUN_SD_FLOOR
    assert judge(a, _medians(10.0, 0.01, rng))[1] == INCONCLUSIVE
    assert judge(a, _medians(15.0, 0.01, rng))[1] == SLOWER


def test_one_session_or_none_is_never_a_verdict_on_speed() -> None:
    assert judge([10.0], [20.0])[1] == INCONCLUSIVE  # no interval from a single session
    assert judge([], [20.0, 21.0])[1] == NOT_MEASURED


def test_a_different_instruction_set_is_never_slower_or_faster() -> None:
    a, b = [10.0, 10.1, 9.9], [20.0, 20.2, 19.8]
    assert judge(a, b, isa_a=ISA, isa_b=ISA)[1] == SLOWER
    assert judge(a, b, isa_a=ISA, isa_b="arm neon asimd")[1] == DIFFERENT_ISA
    assert judge(a, b, isa_a=None, isa_b=ISA)[1] == SLOWER  # not recorded (schema 1): compared


def test_a_different_accelerator_is_never_slower_or_faster() -> None:
    a, b = [10.0, 10.1, 9.9], [20.0, 20.2, 19.8]
    assert judge(a, b, accelerator_a=H200, accelerator_b=H200)[1] == SLOWER
    assert judge(a, b, accelerator_a=H200, accelerator_b=A100)[1] == DIFFERENT_ACCELERATOR
    # a GPU on one side only: the model ran on the CPU there (None is "no accelerator")
    assert judge(a, b, accelerator_a=None, accelerator_b=H200)[1] == DIFFERENT_ACCELERATOR
    assert judge(a, b, accelerator_a=None, accelerator_b=None)[1] == SLOWER


def test_a_different_precision_is_never_slower_or_faster() -> None:
    a, b = [10.0, 10.1, 9.9], [6.6, 6.7, 6.5]
    assert judge(a, b, precision_a="fp32", precision_b="fp32")[1] == FASTER
    assert judge(a, b, precision_a="fp32", precision_b="fp16")[1] == DIFFERENT_PRECISION
    assert judge(a, b, precision_a=None, precision_b="fp16")[1] == FASTER  # not recorded


def test_a_different_timed_scope_is_never_slower_or_faster() -> None:
    a, b = [10.0, 10.1, 9.9], [20.0, 20.2, 19.8]
    assert judge(a, b, scope_a="runtime", scope_b="runtime")[1] == SLOWER
    assert judge(a, b, scope_a="runtime", scope_b="end_to_end")[1] == DIFFERENT_SCOPE
    assert judge(a, b, scope_a=None, scope_b="end_to_end")[1] == SLOWER  # not recorded


def test_the_verdicts_not_judged_on_speed_are_one_list() -> None:
    """Found in a review: the verdicts that are no speed verdict were spelled in four places
    (`judge`, the top-1 verdict, the nightly's not-gated reasons, the page's counts) and their
    columns in two (the console's table, the not-gated reason). Each comes from
    `compare.UNJUDGED` now, in the order `judge` tests them."""
    from harness.farm import command
    from harness.report import nightly

    a, b = [10.0, 10.1, 9.9], [20.0, 20.2, 19.8]
    every = dict(isa_a=ISA, isa_b="arm neon", accelerator_a=None, accelerator_b=H200,
                 precision_a="fp32", precision_b="fp16", scope_a="runtime",
                 scope_b="end_to_end", mixed=True)
    found = []
    for key in ("isa", "accelerator", "precision", "scope", "mixed"):
        found.append(judge(a, b, **every)[1])
        for side in ("_a", "_b"):
            every.pop(key + side, None)
        every.pop(key, None)
    found.append(judge([], b)[1])  # ok on both sides, no session median a log can take
    assert found == list(UNJUDGED)
    assert command.UNJUDGED is UNJUDGED
    assert [v for v in nightly.COUNTED if v in UNJUDGED] == list(UNJUDGED)
    assert TOP1_UNJUDGED < set(UNJUDGED) and DIFFERENT_SCOPE not in TOP1_UNJUDGED
    assert unjudged_sides({"accelerator_a": None, "accelerator_b": H200},
                          DIFFERENT_ACCELERATOR) == ("none", H200)
    assert unjudged_sides({"isa_a": ISA, "isa_b": "arm neon"}, DIFFERENT_ISA) == (ISA,
                                                                                  "arm neon")
    assert unjudged_sides({}, MIXED) is None


def test_a_run_timed_end_to_end_is_not_judged_against_the_runtimes_own_run(
        tmp_path: Path, tiny_onnx: Path, capsys) -> None:
    """Found: `compare A B --fail-on-regression` paired a `bench --timed-scope end_to_end` run
    with a run of the default scope and judged their ratio, without a word; where the numpy
    copies matter that is "slower" and exit 1 between two different quantities. Real
    onnxruntime through `bench`."""
    from tests.conftest import run_cli

    db = tmp_path / "r.db"
    runs = []
    for scope in ((), ("--timed-scope", "end_to_end")):
        proc = run_cli("bench", "--quick", "--db", str(db), "--model", str(tiny_onnx),
                       "--threads", "1", *scope)
        assert proc.returncode == 0, proc.stderr
        with Store(db, readonly=True) as store:
            runs.append(store.runs()[-1].run_id)
    with Store(db, readonly=True) as store:
        result = compare_runs(store, *runs)
    assert list(result.table["verdict"]) == [DIFFERENT_SCOPE]
    assert (list(result.table["timed_scope_a"]), list(result.table["timed_scope_b"])) == (
        ["runtime"], ["end_to_end"])
    assert not math.isnan(result.table["ratio"].iloc[0])  # the figures are shown, not judged
    assert list(result.table["settings_changed"]) == [""]  # the scope is the verdict's
    assert run_compare(db, *runs, fail_on_regression=True) == 0
    assert "different timed scope (runtime / end_to_end)" in capsys.readouterr().out
    # the same scope on both sides is judged as ever
    with Store(db, readonly=True) as store:
        assert compare_runs(store, runs[0], runs[0]).table["verdict"].iloc[0] != DIFFERENT_SCOPE


def test_top1_is_judged_across_timed_scopes(tmp_path: Path) -> None:
    """The timer covers more or less of the call; the answers to the same images are the
    model's: a lower top-1 is a regression whatever the scopes."""
    store = Store(tmp_path / "x.db")
    runs = []
    for side, (scope, top1) in enumerate((("runtime", 0.7), ("end_to_end", 0.69))):
        run = store.begin_run("ab"[side], None, ["pi5"])
        add_job(store, run, "net", accuracy_top1=top1, timed_scope=scope,
                samples_ns=sessions_ns(10.0 * (1 + side), between_sd=0.01, seed=side))
        runs.append(run)
    result = compare_runs(store, *runs)
    assert list(result.table["verdict"]) == [DIFFERENT_SCOPE]
    assert list(result.table["accuracy_verdict"]) == [LOWER_TOP1]
    assert list(result.regressions["model"]) == ["net"]


def test_a_quick_run_against_a_full_one_is_judged_and_said(tmp_path: Path, capsys) -> None:
    """B measured with `--quick` (0.05 s warm-up, 0.2 s windows), A with the full protocol: the
    pairs are still judged, and a line under the table says which settings differed."""
    from harness.agent.protocol import DEFAULT_SETTINGS, QUICK_SETTINGS

    store = Store(tmp_path / "x.db")
    runs = []
    for side, settings in enumerate((DEFAULT_SETTINGS, QUICK_SETTINGS)):
        run = store.begin_run("ab"[side], None, ["pi5"])
        for i, model in enumerate(("alpha", "beta")):
            add_job(store, run, model, settings=dict(settings),
                    samples_ns=sessions_ns(10.0, between_sd=0.01, seed=10 * side + i))
        runs.append(run)
    # a third run of the full protocol whose settings say nothing of the defaults: the same
    run = store.begin_run("c", None, ["pi5"])
    add_job(store, run, "alpha", settings={"timed_scope": "runtime"},
            samples_ns=sessions_ns(10.0, between_sd=0.01, seed=7))
    runs.append(run)
    result = compare_runs(store, runs[0], runs[1])
    changed = ("duration_s 1 / 0.2, max_duration_s 30 / 5, min_iterations 10 / 5, "
               "warmup_min 10 / 3, warmup_s 0.5 / 0.05")
    assert list(result.table["settings_changed"]) == [changed] * 2
    assert set(result.table["verdict"]) == {INCONCLUSIVE}  # judged: no history, so inconclusive
    assert set(compare_runs(store, runs[0], runs[2]).table["settings_changed"]) == {""}
    store.close()
    run_compare(tmp_path / "x.db", runs[0], runs[1])
    out = " ".join(capsys.readouterr().out.split())
    assert (f"2 measurements of B were timed under other protocol settings than A's, A / B: "
            f"{changed} (alpha, beta). Judged all the same") in out
    run_compare(tmp_path / "x.db", runs[0], runs[2])
    assert "protocol settings" not in capsys.readouterr().out


def test_a_torch_run_at_fp16_is_labelled_so_and_not_judged_against_fp32(
        tmp_path: Path, tiny_pt2: Path, capsys) -> None:
    """Found: a torch run at `precision: fp16` was stored as fp32 (the artifact's manifest) and
    compare called it 'inconclusive 1.51x' beside the fp32 run of the same program. Real torch
    on the CPU, at bf16 (what the CPU computes fast), through `bench`."""
    from tests.conftest import run_cli

    db = tmp_path / "r.db"
    runs = []
    for precision in ("fp32", "bf16"):
        device = tmp_path / f"{precision}.yaml"
        device.write_text(f"name: cpu\nruntimes: [torch]\nthreads: 1\n"
                          f"runtime_options: {{torch: {{precision: {precision}}}}}\n")
        proc = run_cli("bench", "--quick", "--db", str(db), "--model", str(tiny_pt2),
                       "--device", str(device))
        assert proc.returncode == 0, proc.stderr
        if precision == "bf16":  # the console row says what it ran in
            assert "torch bf16" in proc.stdout, proc.stdout
        with Store(db, readonly=True) as store:
            runs.append(store.runs()[-1].run_id)
    with Store(db, readonly=True) as store:
        rows = {r["run_id"]: r for r in store.results()}
        assert [rows[r]["precision"] for r in runs] == ["fp32", "bf16"]
        assert {rows[r]["technique"] for r in runs} == {"fp32"}  # what was done to the model
        result = compare_runs(store, *runs)
    assert list(result.table["verdict"]) == [DIFFERENT_PRECISION]
    assert list(result.table["precision_b"]) == ["bf16"]
    assert run_compare(db, *runs, fail_on_regression=True) == 0
    assert "different precision (fp32 / bf16)" in capsys.readouterr().out


H200 = "NVIDIA H200 (sm 9.0, 132 SMs)"
A100 = "NVIDIA A100-SXM4-80GB (sm 8.0, 108 SMs)"


def _two_runs(tmp_path: Path, shifts: dict[str, float], fingerprint_b=None, history: int = 3,
              **fields_b):
    """Run A: three models at 10/20/5 ms, after `history` earlier runs of the same (so compare
    has measured the run-to-run spread); run B: the same, each scaled by shifts[model], with
    `fields_b` in its rows."""
    store = Store(tmp_path / "x.db")
    medians = {"alpha": 10.0, "beta": 20.0, "gamma": 5.0}
    for h in range(history):
        run = store.begin_run(f"history {h}", None, ["pi5"])
        for i, (model, med) in enumerate(medians.items()):
            add_job(store, run, model, samples_ns=sessions_ns(med, between_sd=0.01,
                                                              seed=1000 + 10 * h + i))
        store.finish_run(run)
    runs = []
    for k, scale in enumerate(({}, shifts)):
        run = store.begin_run("ab"[k], None, ["pi5"])
        for i, (model, med) in enumerate(medians.items()):
            add_job(
                store,
                run,
                model,
                fingerprint=fingerprint_b if k else None,
                samples_ns=sessions_ns(
                    med * scale.get(model, 1.0), between_sd=0.01, seed=50 * k + i
                ),
                **(fields_b if k else {}),
            )
        store.finish_run(run)
        runs.append(run)
    return store, runs[0], runs[1]


def _welch(a: np.ndarray, b: np.ndarray, run_sd: float | None = None,
           run_df: float = math.inf) -> tuple[float, float, float]:
    """B / A of geometric means and its 95% Welch interval widened by a run-to-run log-sd
    (default: half the pooled between-session log-sd and at least 5%, what compare assumes
    without history, with the pooled degrees of freedom it rests on), written out with numpy
    and scipy."""
    la, lb = np.log(a), np.log(b)
    va, vb = la.var(ddof=1) / la.size, lb.var(ddof=1) / lb.size
    dof = min(run_df, (va + vb) ** 2 / (va**2 / (la.size - 1) + vb**2 / (lb.size - 1)))
    if run_sd is None:
        pooled = ((la.size - 1) * la.var(ddof=1) + (lb.size - 1) * lb.var(ddof=1)) / (
            la.size + lb.size - 2)
        run_sd = max(0.05, 0.5 * math.sqrt(pooled))
        dof = la.size + lb.size - 2
    half = scipy_stats.t.ppf(0.975, dof) * math.sqrt(va + vb + 2 * run_sd**2)
    diff = lb.mean() - la.mean()
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def test_no_shift_means_no_change(tmp_path: Path) -> None:
    store, a, b = _two_runs(tmp_path, {})
    result = compare_runs(store, a, b)
    assert list(result.table["verdict"]) == [NO_CHANGE] * 3
    assert result.regressions.empty
    for row in result.table.itertuples():
        assert row.ratio_ci95_low < 1.0 < row.ratio_ci95_high
        assert row.sessions_a == row.sessions_b == 5


def test_a_real_shift_is_called_and_only_there(tmp_path: Path) -> None:
    store, a, b = _two_runs(tmp_path, {"alpha": 1.15, "gamma": 0.85, "beta": 1.01})
    table = compare_runs(store, a, b).table.set_index("model")
    assert table.loc["alpha", "verdict"] == SLOWER
    assert table.loc["gamma", "verdict"] == FASTER
    assert table.loc["beta", "verdict"] == NO_CHANGE

    # The figures are those of the session medians, computed here from the raw samples.
    def medians(job_id: str) -> np.ndarray:
        return np.array([np.median(s) / 1e6 for s in store.session_samples(job_id)])

    assert table.loc["alpha", "run_sd_from"] == "history (3 d.f.)"  # 4 runs up to A
    ratio, low, high = _welch(
        medians(table.loc["alpha", "job_id_a"]), medians(table.loc["alpha", "job_id_b"]),
        run_sd=table.loc["alpha", "run_sd"], run_df=3,
    )
    assert table.loc["alpha", "ratio"] == pytest.approx(ratio, rel=1e-9)
    assert table.loc["alpha", "ratio_ci95_low"] == pytest.approx(low, rel=1e-9)
    assert table.loc["alpha", "ratio_ci95_high"] == pytest.approx(high, rel=1e-9)
    assert low > 1.05
    headline = store.results([a])[0]["latency_median_ms"]
    assert table.loc["alpha", "median_a_ms"] == headline
    # the medians the table shows are the geometric means it judges: B / A is their ratio
    assert table.loc["alpha", "ratio"] == pytest.approx(
        table.loc["alpha", "median_b_ms"] / headline, rel=1e-12)


def test_compare_runs_uses_the_runs_session_medians(tmp_path: Path) -> None:
    """Session medians set exactly (the samples around them are irrelevant): a clear +50%,
    judged without history."""
    store = Store(tmp_path / "x.db")
    runs = []
    for medians in ([10.0, 10.1, 9.9, 10.0], [15.0, 15.1, 14.9, 15.0]):
        run = store.begin_run("t", None, ["pi5"])
        add_job(
            store,
            run,
            "net",
            samples_ns=[exact_median_ns(m, seed=i) for i, m in enumerate(medians)],
        )
        runs.append(run)
    row = compare_runs(store, *runs).table.iloc[0]
    ratio, low, high = _welch(np.array([10.0, 10.1, 9.9, 10.0]), np.array([15.0, 15.1, 14.9, 15.0]))
    assert row["ratio"] == pytest.approx(ratio, rel=1e-6)
    assert row["ratio_ci95_low"] == pytest.approx(low, rel=1e-6)
    assert row["verdict"] == SLOWER


def test_fail_on_regression_sets_the_exit_code(tmp_path: Path, capsys) -> None:
    store, a, b = _two_runs(tmp_path, {"alpha": 1.15})
    store.close()
    db = tmp_path / "x.db"
    assert run_compare(db, a, b) == 0
    assert run_compare(db, a, b, fail_on_regression=True) == 1
    out = capsys.readouterr().out
    assert "slower" in out and "alpha" in out and a in out and b in out
    # the rule is said with the table (rich wraps it to the terminal's width)
    assert "whole interval lies beyond 1 \u00b1 0.05" in " ".join(out.split())
    assert run_compare(db, a, b, threshold=0.3, fail_on_regression=True) == 0
    capsys.readouterr()
    assert run_compare(db, a, a, fail_on_regression=True) == 0  # a gate's first run
    assert "A and B are the same run" in capsys.readouterr().out


def test_jobs_in_one_run_only_new_failures_and_fixes(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    a = store.begin_run("a", None, ["pi5"])
    add_job(store, a, "kept", samples_ns=sessions_ns(10, between_sd=0.01, seed=1))
    add_job(store, a, "dropped", samples_ns=sessions_ns(10, seed=2))
    add_job(store, a, "breaks", samples_ns=sessions_ns(10, seed=3))
    add_job(store, a, "mended", status="failed")
    b = store.begin_run("b", None, ["pi5"])
    add_job(store, b, "kept", samples_ns=sessions_ns(10, between_sd=0.01, seed=4))
    add_job(store, b, "added", samples_ns=sessions_ns(10, seed=5))
    add_job(store, b, "added broken", status="failed")
    add_job(store, b, "breaks", status="failed")
    add_job(store, b, "mended", samples_ns=sessions_ns(10, seed=6))
    result = compare_runs(store, a, b)
    verdicts = dict(zip(result.table["model"], result.table["verdict"], strict=True))
    assert verdicts == {
        "kept": INCONCLUSIVE,  # no history: the run-to-run spread is not known yet
        "dropped": ONLY_A,
        "breaks": NEWLY_FAILING,
        "mended": FIXED,
        "added": ONLY_B,
        "added broken": NEWLY_FAILING,  # it never ran ok: as much news as one that broke
    }
    assert sorted(result.regressions["model"]) == ["added broken", "breaks"]


def test_failing_verdicts_name_what_fails_the_gate_speed_first() -> None:
    """Slower, newly failing and lower top-1 fail the gate, each named, the speed's first;
    every other verdict, and a higher top-1, passes."""
    assert failing_verdicts({"verdict": SLOWER, "accuracy_verdict": LOWER_TOP1}) == [
        SLOWER, LOWER_TOP1]
    assert failing_verdicts({"verdict": NEWLY_FAILING}) == [NEWLY_FAILING]
    assert failing_verdicts({"verdict": FASTER, "accuracy_verdict": LOWER_TOP1}) == [LOWER_TOP1]
    for passing in ({"verdict": INCONCLUSIVE, "accuracy_verdict": HIGHER_TOP1},
                    {"verdict": NO_CHANGE, "accuracy_verdict": SAME_TOP1}, {"verdict": FIXED},
                    {"verdict": ONLY_A}, {}):
        assert failing_verdicts(passing) == [] and not is_regression(passing)


def test_fewer_of_the_same_images_right_is_a_regression(tmp_path: Path, capsys) -> None:
    """Top-1 on the same 1000 images: 3 fewer right is "lower top-1" and fails the gate, however
    the speed compares; the same top-1, a fraction of one image (rounding), or one image (0.1
    points, not more than 0.1) is the same; two images more is higher; another number of images
    is not compared; on another ISA an int8 model's top-1 moves with the kernels and is not
    judged either."""
    store = Store(tmp_path / "x.db")
    top1 = {"same": (0.7, 0.7), "rounding": (0.7, 0.7002), "worse": (0.7, 0.697),
            "one image": (0.7, 0.701), "better": (0.7, 0.702), "other images": (0.7, 0.6),
            "no accuracy": (0.7, None)}
    runs = []
    for side in (0, 1):
        run = store.begin_run("ab"[side], None, ["pi5"])
        for i, (model, pair) in enumerate(top1.items()):
            add_job(store, run, model, accuracy_top1=pair[side],
                    accuracy_n=500 if model == "other images" and side else 1000,
                    samples_ns=sessions_ns(10, between_sd=0.01, seed=10 * side + i))
        store.finish_run(run)
        runs.append(run)
    result = compare_runs(store, *runs)
    verdicts = dict(zip(result.table["model"], result.table["accuracy_verdict"], strict=True))
    assert verdicts == {"same": SAME_TOP1, "rounding": SAME_TOP1, "worse": LOWER_TOP1,
                        "one image": SAME_TOP1, "better": HIGHER_TOP1,
                        "other images": OTHER_IMAGES, "no accuracy": ""}
    assert list(result.regressions["model"]) == ["worse"]
    assert set(result.table["verdict"]) == {INCONCLUSIVE}  # no history: speed says nothing
    # --top1-threshold: 0.3 points lost is within 0.5 points
    lenient = compare_runs(store, *runs, top1_threshold=0.5)
    assert lenient.regressions.empty and set(lenient.table["accuracy_verdict"]) == {
        SAME_TOP1, OTHER_IMAGES, ""}
    store.close()
    assert run_compare(tmp_path / "x.db", *runs, fail_on_regression=True) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "70.0 → 69.7 (-0.3) lower" in out and "1 higher top-1, 1 lower top-1" in out
    assert "by more than 0.1 points" in out
    assert run_compare(tmp_path / "x.db", *runs, top1_threshold=0.5, fail_on_regression=True) == 0
    for bad in (-1.0, math.nan, 100.0):
        with pytest.raises(EdgebenchError, match="--top1-threshold"):
            run_compare(tmp_path / "x.db", *runs, top1_threshold=bad)

    other = copy.deepcopy(FINGERPRINT)
    other["isa"] = "arm neon asimd"
    store = Store(tmp_path / "isa.db")
    runs = []
    for side, (top, fingerprint) in enumerate(((0.7, None), (0.6, other))):
        run = store.begin_run("ab"[side], None, ["pi5"])
        add_job(store, run, "int8", accuracy_top1=top, fingerprint=fingerprint,
                samples_ns=sessions_ns(10, seed=side))
        runs.append(run)
    result = compare_runs(store, *runs, allow_different_devices=True)
    assert list(result.table["accuracy_verdict"]) == [DIFFERENT_ISA]
    assert result.regressions.empty


def test_a_measurement_of_mixed_sessions_gets_no_verdict(tmp_path: Path, capsys) -> None:
    """A side whose sessions ran on devices or runtimes that differ (a board swapped, a bench
    resumed after an upgrade) is no one device's figure: 15% slower and 10 points lower, it is
    neither slower nor lower top-1, and the gate passes; the table says why."""
    store, a, b = _two_runs(tmp_path, {"alpha": 1.15}, flags=["mixed_sessions"],
                            accuracy_top1=0.6)
    result = compare_runs(store, a, b)
    assert set(result.table["verdict"]) == {MIXED}
    assert set(result.table["accuracy_verdict"]) <= {MIXED, ""}
    assert result.regressions.empty
    store.close()
    assert run_compare(tmp_path / "x.db", a, b, fail_on_regression=True) == 0
    assert "mixed sessions" in capsys.readouterr().out
    # ... and the same runs unflagged: alpha is slower, a regression
    store, a, b = _two_runs(tmp_path / "plain", {"alpha": 1.15})
    assert SLOWER in set(compare_runs(store, a, b).table["verdict"])


def test_a_different_instruction_set_is_refused_and_when_allowed_not_judged(
    tmp_path: Path, capsys
) -> None:
    other = copy.deepcopy(FINGERPRINT)
    other["isa"] = "arm neon asimd"  # the same board without the dot-product extension
    store, a, b = _two_runs(tmp_path, {"alpha": 1.15}, fingerprint_b=other)
    with pytest.raises(EdgebenchError, match=r"pi5: isa"):
        compare_runs(store, a, b)
    result = compare_runs(store, a, b, allow_different_devices=True)
    assert set(result.table["verdict"]) == {DIFFERENT_ISA}
    assert result.regressions.empty  # 15% slower, but on other kernels: not a regression
    assert set(result.table["isa_b"]) == {"arm neon asimd"} and set(result.table["isa_a"]) == {ISA}
    store.close()
    assert (
        run_compare(tmp_path / "x.db", a, b, allow_different_devices=True, fail_on_regression=True)
        == 0
    )
    assert "different instruction set" in capsys.readouterr().out


def test_a_model_on_another_accelerator_is_not_judged(tmp_path: Path, capsys) -> None:
    """The same device name and fingerprint, the model on the GPU in B (a profile switched
    `device: cuda` on): no fingerprint difference protects this pair, the accelerator does."""
    store, a, b = _two_runs(tmp_path, {"alpha": 0.2}, accelerator=H200)
    result = compare_runs(store, a, b)
    assert result.fingerprint_differences == {}
    assert set(result.table["verdict"]) == {DIFFERENT_ACCELERATOR}
    assert set(result.table["accelerator_b"]) == {H200}
    assert set(result.table["accelerator_a"]) == {None}
    store.close()
    assert run_compare(tmp_path / "x.db", a, b, fail_on_regression=True) == 0
    out = capsys.readouterr().out
    assert "different accelerator" in out and "NVIDIA H200" in out


def test_another_gpu_is_refused_and_when_allowed_not_judged(tmp_path: Path) -> None:
    with_gpu = {**FINGERPRINT, "gpu": {"driver": "580.65", "gpus": [{"name": "NVIDIA A100"}]}}
    store = Store(tmp_path / "x.db")
    runs = []
    for name, gpu, scale in (("a", H200, 1.0), ("b", A100, 1.3)):
        fp = copy.deepcopy(with_gpu)
        fp["gpu"]["gpus"][0]["name"] = gpu.split(" (")[0]
        run = store.begin_run(name, None, ["cuda"])
        add_job(store, run, "net", device="cuda", runtime="torch", fingerprint=fp,
                accelerator=gpu, samples_ns=sessions_ns(10.0 * scale, between_sd=0.01, seed=3))
        runs.append(run)
    with pytest.raises(EdgebenchError, match=r"cuda: gpu\.gpus"):
        compare_runs(store, *runs)
    result = compare_runs(store, *runs, allow_different_devices=True)
    assert list(result.table["verdict"]) == [DIFFERENT_ACCELERATOR]
    assert result.regressions.empty  # 30% slower, but on another GPU: not a regression


def test_different_fingerprints_are_refused_unless_allowed(tmp_path: Path, capsys) -> None:
    other = copy.deepcopy(FINGERPRINT)
    other["cpu_model"] = "Another CPU"
    other["temp_c"] = 55.0  # momentary, not part of what a device is
    store, a, b = _two_runs(tmp_path, {}, fingerprint_b=other)
    with pytest.raises(EdgebenchError, match=r"cpu_model") as err:
        compare_runs(store, a, b)
    assert a in str(err.value) and b in str(err.value) and "temp" not in str(err.value)
    result = compare_runs(store, a, b, allow_different_devices=True)
    assert result.fingerprint_differences == {"pi5": ["cpu_model"]}
    assert set(result.table["verdict"]) == {NO_CHANGE}  # same instruction set: judged
    store.close()
    assert run_compare(tmp_path / "x.db", a, b, allow_different_devices=True) == 0
    assert "differs between the runs" in capsys.readouterr().out


def test_a_gpu_probe_that_found_nothing_is_no_difference(tmp_path: Path) -> None:
    """Runs from before GPUs were probed have no `gpu` in their fingerprint; one that found no
    NVML is the same device. A GPU that appears is a difference."""
    none_found = {**FINGERPRINT, "gpu": {"absent": "NVML: NVML Shared Library Not Found"}}
    store, a, b = _two_runs(tmp_path, {}, fingerprint_b=none_found)
    assert compare_runs(store, a, b).fingerprint_differences == {}
    store.close()
    with_gpu = {**FINGERPRINT, "gpu": {"driver": "580.65", "gpus": [{"name": "NVIDIA H200"}]}}
    store, a, b = _two_runs(tmp_path / "2", {}, fingerprint_b=with_gpu)
    with pytest.raises(EdgebenchError, match=r"gpu\.driver"):
        compare_runs(store, a, b)
    store.close()


def test_unknown_run_and_missing_database(tmp_path: Path) -> None:
    store, a, _ = _two_runs(tmp_path, {})
    store.close()
    with pytest.raises(StoreError, match="nosuchrun"):
        run_compare(tmp_path / "x.db", a, "nosuchrun")
    with pytest.raises(StoreError, match="missing.db"):
        run_compare(tmp_path / "missing.db", "latest", "latest")
    assert not (tmp_path / "missing.db").exists()


def test_fingerprints_are_compared_job_by_job(tmp_path: Path) -> None:
    """A fingerprint names the job's runtime version, so jobs of one run differ legitimately."""

    def fingerprint(runtime: str, version: str) -> dict:
        return {**FINGERPRINT, "runtimes": {runtime: version}}

    store = Store(tmp_path / "x.db")
    runs = []
    for k, tflite_version in enumerate(("2.3.0", "2.3.0", "2.4.0")):
        run = store.begin_run("t", None, ["pi5"])
        jobs = [
            ("onnxruntime", fingerprint("onnxruntime", "1.32.0"), 10.0),
            ("tflite", fingerprint("tflite", tflite_version), 9.0),
        ]
        for runtime, fp, median in jobs if k != 1 else jobs[::-1]:  # job order must not matter
            add_job(
                store,
                run,
                "net",
                runtime=runtime,
                fingerprint=fp,
                samples_ns=lognormal_ns(median, seed=k),
            )
        add_job(store, run, "broken", status="failed", fingerprint={})
        runs.append(run)
    same = compare_runs(store, runs[0], runs[1])
    assert same.fingerprint_differences == {}
    with pytest.raises(EdgebenchError, match=r"pi5: runtimes\.tflite"):
        compare_runs(store, runs[1], runs[2])


def test_nightly_verdicts_follow_the_same_rule(tmp_path: Path) -> None:
    store = Store(tmp_path / "x.db")
    runs = []
    for night, median in enumerate((10.0, 10.02, 9.99, 10.01, 10.05, 11.5, 11.5)):
        run = store.begin_run("nightly", None, ["pi5"])
        with store.transaction() as conn:
            conn.execute(
                "UPDATE runs SET started_at = ? WHERE run_id = ?",
                (f"2026-12-0{night + 1}T02:00:00Z", run),
            )
        add_job(store, run, "net", samples_ns=sessions_ns(median, between_sd=0.01, seed=night))
        runs.append(run)
    history = results_frame(store, runs)
    started = {r.run_id: r.started_at for r in store.runs()}
    history = history.assign(run_started_at=history["run_id"].map(started))
    verdicts = verdicts_over_runs(history, SessionReader(store).medians)
    # no verdict on speed before four runs have measured the run-to-run spread; the night after
    # the step has it in its history, as spread: not "no change" until it leaves the window
    assert list(verdicts) == ["", INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE, NO_CHANGE, SLOWER,
                              INCONCLUSIVE]
    for prev, cur in zip(runs, runs[1:], strict=False):
        pair = compare_runs(store, prev, cur).table.iloc[0]
        assert verdicts[history["run_id"] == cur].iloc[0] == pair["verdict"]


def _nightly_verdicts(store: Store, nights: list[tuple[float, dict]], device: str = "pi5",
                      **fields) -> tuple[list[str], list[str]]:
    """One nightly per (median ms, row fields) of `nights`, a day apart, each measuring "net"
    on `device` with `fields`; their run ids, and each night's verdict in the nightly view."""
    runs = []
    for night, (median, extra) in enumerate(nights):
        run = store.begin_run("nightly", None, [device])
        with store.transaction() as conn:
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-{night + 1:02d}T02:00:00Z", run))
        add_job(store, run, "net", device=device, **fields, **extra,
                samples_ns=sessions_ns(median, between_sd=0.01, seed=night))
        runs.append(run)
    history = results_frame(store, runs)
    started = {r.run_id: r.started_at for r in store.runs()}
    history = history.assign(run_started_at=history["run_id"].map(started))
    return runs, list(verdicts_over_runs(history, SessionReader(store).medians))


@pytest.mark.parametrize("recorded", ["never", "not at first"])
def test_nightly_verdicts_without_an_isa_take_their_spread_as_compare_does(
        tmp_path: Path, recorded: str) -> None:
    """Found in a review: the trend compared the ISA of its history raw, its neighbours through
    `_text`. An ISA not recorded reads None in a history of such runs alone and NaN beside
    recorded ones: None equalled None, so the trend measured a run-to-run spread where compare,
    which has none without an ISA, assumed one, and called no change (and slower) where compare
    was inconclusive; NaN, unequal to itself, happened to agree."""
    store = Store(tmp_path / "x.db")
    bare = {k: v for k, v in FINGERPRINT.items() if k != "isa"}
    nights = [(m, {"fingerprint": bare} if recorded == "never" or k < 2 else {})
              for k, m in enumerate((10.0, 10.02, 9.99, 10.01, 10.05, 10.0, 10.8))]
    runs, verdicts = _nightly_verdicts(store, nights)
    for prev, cur in zip(runs, runs[1:], strict=False):
        pair = compare_runs(store, prev, cur, allow_different_devices=True).table.iloc[0]
        assert verdicts[runs.index(cur)] == pair["verdict"], (runs.index(cur), pair["run_sd_from"])


def test_nightly_verdicts_do_not_judge_across_accelerators(tmp_path: Path) -> None:
    """A farm's CUDA box whose GPU was swapped: the night of the swap is not judged, and the
    nights after it take their run-to-run spread only from runs on the new GPU."""
    store = Store(tmp_path / "x.db")
    nights = [(10.0, {"accelerator": A100})] * 5 + [(6.0, {"accelerator": H200})] * 6
    runs, verdicts = _nightly_verdicts(store, nights, device="cuda", runtime="torch")
    assert verdicts[5] == DIFFERENT_ACCELERATOR  # 40% faster: the new GPU, not the code
    # four runs on the new GPU before a verdict on speed, as for a new file
    assert verdicts[6:9] == [INCONCLUSIVE] * 3 and verdicts[9:] == [NO_CHANGE] * 2
    for prev, cur in zip(runs, runs[1:], strict=False):
        pair = compare_runs(store, prev, cur, allow_different_devices=True).table.iloc[0]
        assert verdicts[runs.index(cur)] == pair["verdict"]


def test_nightly_verdicts_and_history_keep_to_one_timed_scope(tmp_path: Path) -> None:
    """Nightlies of one file switched to `--timed-scope end_to_end`, 40% slower by the numpy
    copies: the night of the switch is not judged, and the nights after it take their run-to-run
    spread only from runs of the new scope, in the nightly view and in compare alike."""
    store = Store(tmp_path / "x.db")
    nights = [(10.0, {"timed_scope": "runtime"})] * 5 + [(14.0, {"timed_scope": "end_to_end"})] * 6
    runs, verdicts = _nightly_verdicts(store, nights)
    assert verdicts[5] == DIFFERENT_SCOPE
    # four runs of the new scope before a verdict on speed, as for a new file
    assert verdicts[6:9] == [INCONCLUSIVE] * 3 and verdicts[9:] == [NO_CHANGE] * 2
    for prev, cur in zip(runs, runs[1:], strict=False):
        pair = compare_runs(store, prev, cur).table.iloc[0]
        assert verdicts[runs.index(cur)] == pair["verdict"]


def test_run_to_run_spread_from_history_widens_the_interval(tmp_path: Path) -> None:
    """Runs of one file whose levels differ by more than their sessions do: the history of
    runs up to A gives the run-to-run spread, and the interval allows for it; runs after A are
    not part of it, so a change cannot hide in its own noise."""
    store = Store(tmp_path / "x.db")
    runs = []
    rng = np.random.default_rng(5)
    for night, level in enumerate((10.0, 10.8, 9.4, 10.3, 9.0)):
        run = store.begin_run("nightly", None, ["pi5"])
        medians = level * np.exp(rng.normal(0, 0.005, 5))
        add_job(store, run, "net",
                samples_ns=[exact_median_ns(m, seed=10 * night + i) for i, m in enumerate(medians)])
        runs.append(run)
    row = compare_runs(store, runs[3], runs[4]).table.iloc[0]
    reader = SessionReader(store)
    history = [list(reader.medians(store.results([r])[0]["job_id"])) for r in runs[:4]]
    sd, k = scipy_free_run_sd(history)
    assert row["run_sd"] == pytest.approx(sd) and row["run_sd_from"] == f"history ({k - 1} d.f.)"
    assert sd > 0.03  # the levels differ by ~6%, the sessions by 0.5%
    assert row["verdict"] == INCONCLUSIVE  # 10.3 -> 9.0 is within what runs do here
    # with the sessions' own spread only, the same pair would have been called faster
    a = reader.medians(row["job_id_a"])
    b = reader.medians(row["job_id_b"])
    assert judge(a, b, run_noise=(0.0, None))[1] == FASTER
    # Found in a review: compared the other way round (`compare NEWER OLDER`), the runs up to A
    # included B, so the change judged counted in the noise it was judged against
    back = compare_runs(store, runs[4], runs[3]).table.iloc[0]
    newest = list(reader.medians(store.results([runs[4]])[0]["job_id"]))
    sd, k = scipy_free_run_sd([*history[:3], newest])
    assert back["run_sd"] == pytest.approx(sd) and back["run_sd_from"] == f"history ({k - 1} d.f.)"


def scipy_free_run_sd(runs: list[list[float]]) -> tuple[float, int]:
    """The run-to-run log-sd: the variance of the runs' log means less what the sessions
    explain (a typical run's: the median), written out."""
    logs = [np.log(r) for r in runs]
    between = np.var([x.mean() for x in logs], ddof=1)
    within = np.median([x.var(ddof=1) / x.size for x in logs])
    return math.sqrt(max(0.0, between - within)), len(logs)


@pytest.mark.parametrize("width", [160, 100])
def test_the_comparison_table_never_cuts_a_name(tmp_path: Path, width: int) -> None:
    """The printed comparison keeps each model's name whole (at 160 columns, what it prints to
    a log, one was cut to 'digits_cnn-int8_sta…') and its headers' units, at any width."""
    from rich.console import Console

    from harness.report.console import render_comparison

    store = Store(tmp_path / "x.db")
    names = ["digits_cnn-int8_static", "resnet18-prune50_latency-distilled"]
    runs = []
    for k in range(2):
        run = store.begin_run("t", None, ["pi5"])
        for i, name in enumerate(names):
            add_job(store, run, name, samples_ns=sessions_ns(10.0, between_sd=0.01,
                                                              seed=10 * k + i))
        runs.append(run)
    console = Console(width=width, record=True, color_system=None)
    render_comparison(compare_runs(store, *runs), console)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= width
    for name in names:
        assert any(f" {name} " in line for line in lines), name
    assert "…" not in "".join(lines)
    if width == 160:
        assert any("A median [ms]" in line and "B/A [95% CI]" in line for line in lines)


@pytest.mark.parametrize("history", [0, 3])
def test_the_printed_comparison_says_where_its_run_to_run_spread_came_from(
        tmp_path: Path, history: int) -> None:
    # Found: the README said "the table says which (run_sd_from)", but only summary.json did.
    from rich.console import Console

    from harness.report.console import render_comparison

    store, a, b = _two_runs(tmp_path, {}, history=history)
    result = compare_runs(store, a, b)
    console = Console(width=200, record=True, color_system=None)
    render_comparison(result, console)
    last = console.export_text().splitlines()[-1]
    sds = result.table["run_sd"]
    if history:
        assert last == ("Run-to-run spread in the intervals: from the earlier runs of the file "
                        f"for 3 measurements (log-sd {sds.min():.3f}-{sds.max():.3f}, 3 d.f.).")
    else:
        assert last == ("Run-to-run spread in the intervals: assumed for 3 measurements with "
                        "fewer than 4 runs of their file here (log-sd 0.050, at least 0.05).")


def test_runs_of_mixed_sessions_are_no_part_of_the_run_to_run_history(tmp_path: Path) -> None:
    """Two earlier runs flagged `mixed_sessions` (a bench resumed after an upgrade, a board
    swapped), 20% away from the device's level either way: their spread is not this device's
    from run to run, so the history that judges A -> B is the clean runs alone, in compare and
    in the nightly's view alike, and an 8% slowdown is called slower, not lost in their spread."""
    store = Store(tmp_path / "x.db")
    runs = []
    rng = np.random.default_rng(7)
    levels = (10.0, 10.03, 9.98, 12.0, 8.0, 10.02, 10.0, 10.8)
    mixed = {3, 4}
    for night, level in enumerate(levels):
        run = store.begin_run("nightly", None, ["pi5"])
        with store.transaction() as conn:
            conn.execute("UPDATE runs SET started_at = ? WHERE run_id = ?",
                         (f"2026-12-{night + 1:02d}T02:00:00Z", run))
        medians = level * np.exp(rng.normal(0, 0.003, 5))
        add_job(store, run, "net",
                samples_ns=[exact_median_ns(m, seed=10 * night + i) for i, m in enumerate(medians)],
                **({"flags": ["mixed_sessions"]} if night in mixed else {}))
        runs.append(run)
    a, b = runs[-2], runs[-1]
    row = compare_runs(store, a, b).table.iloc[0]
    reader = SessionReader(store)
    clean = [list(reader.medians(store.results([r])[0]["job_id"]))
             for k, r in enumerate(runs[:-1]) if k not in mixed]
    sd, k = scipy_free_run_sd(clean)
    assert row["run_sd_from"] == f"history ({k - 1} d.f.)" and k == len(levels) - 1 - len(mixed)
    assert row["run_sd"] == pytest.approx(sd)
    assert row["verdict"] == SLOWER
    # with the mixed runs in it, the same history would have hidden the change
    every = [list(reader.medians(store.results([r])[0]["job_id"])) for r in runs[:-1]]
    sd_every, k_every = scipy_free_run_sd(every)
    assert judge(reader.medians(row["job_id_a"]), reader.medians(row["job_id_b"]),
                 run_noise=(sd_every, k_every - 1))[1] == INCONCLUSIVE

    history = results_frame(store, runs)
    started = {r.run_id: r.started_at for r in store.runs()}
    history = history.assign(run_started_at=history["run_id"].map(started))
    verdicts = list(verdicts_over_runs(history, reader.medians))
    assert verdicts[3:5] == [MIXED, MIXED]  # the pairs with a mixed side are judged as before
    for prev, cur in zip(runs, runs[1:], strict=False):
        pair = compare_runs(store, prev, cur).table.iloc[0]
        assert verdicts[runs.index(cur)] == pair["verdict"]
    assert verdicts[-1] == SLOWER


def test_a_file_rebuilt_between_the_runs_is_said(tmp_path: Path, capsys) -> None:
    """A recipe changed and its file was rebuilt under the same name (a researcher's prune 0.3
    -> 0.4): the pair is judged, as a nightly after a change must be, and the comparison says
    which measurements are of another file; an unchanged file is not named."""
    store, a, b = _two_runs(tmp_path, {}, model_sha256="f" * 64)
    table = compare_runs(store, a, b).table
    assert list(table["file_changed"]) == [True] * 3
    assert list(table["verdict"]) == [NO_CHANGE] * 3  # still judged
    same = compare_runs(store, a, a).table
    assert not same["file_changed"].any()
    store.close()
    run_compare(tmp_path / "x.db", a, b)
    out = " ".join(capsys.readouterr().out.split())
    assert ("3 measurements of B measured another file than A under the same name (rebuilt "
            "between the runs, sha256 differs): alpha, beta, gamma.") in out
    run_compare(tmp_path / "x.db", a, a)
    assert "another file" not in capsys.readouterr().out


def test_compare_json_has_every_pair_and_the_same_exit_code(tmp_path: Path, capsys) -> None:
    """`compare --json` for a paper's scripts: the pairs as the table has them, NaN as null,
    and --fail-on-regression's exit code as with the table."""
    import json

    store, a, b = _two_runs(tmp_path, {"alpha": 1.3})
    table = compare_runs(store, a, b).table.set_index("model")
    store.close()
    assert run_compare(tmp_path / "x.db", a, b, fail_on_regression=True, as_json=True) == 1
    data = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert (data["run_a"], data["run_b"], data["threshold"]) == (a, b, 0.05)
    pairs = {m["model"]: m for m in data["measurements"]}
    assert sorted(pairs) == ["alpha", "beta", "gamma"]
    assert pairs["alpha"]["verdict"] == SLOWER and pairs["alpha"]["regression"] is True
    assert pairs["beta"]["regression"] is False
    assert pairs["alpha"]["ratio_ci95_low"] == pytest.approx(table.loc["alpha", "ratio_ci95_low"])
    assert pairs["alpha"]["top1_a"] is None  # NaN in the table: no accuracy measured


def _many_models(tmp_path: Path, scales: dict[str, float], models: int = 30,
                 devices: tuple[str, ...] = ("pi5",)) -> tuple[Store, list[str]]:
    """Runs A, B and C of `models` models per device, sessions at exactly 10, 10.1, 9.9, 10 ms
    scaled in B and C by scales[model] (no history: compare assumes the run-to-run spread)."""
    store = Store(tmp_path / "x.db")
    runs = []
    for k in range(3):
        run = store.begin_run("abc"[k], None, list(devices))
        for device in devices:
            for i in range(models):
                model = f"m{i:02d}"
                scale = scales.get(model, 1.0) if k else 1.0
                add_job(store, run, model, device=device, samples_ns=[
                    exact_median_ns(m * scale, seed=s) for s, m in
                    enumerate([10.0, 10.1, 9.9, 10.0])])
        store.finish_run(run)
        runs.append(run)
    return store, runs


def test_the_measurements_of_a_comparison_are_judged_together(tmp_path: Path, capsys) -> None:
    """Found in an audit: judged alone, each of many unchanged measurements could be called
    slower by chance, and a comparison (or nightly) of 50 of them failed one time in six. A
    30% slowdown among 30 measurements compared lies beyond 1.05 alone but within what one of
    30 reaches by chance (Holm's rule); a 3x slowdown is slower however many are compared."""
    store, (a, b, _) = _many_models(tmp_path, {"m00": 1.3, "m01": 3.0})
    table = compare_runs(store, a, b).table.set_index("model")
    assert table.loc["m00", "verdict_alone"] == SLOWER
    assert table.loc["m00", "verdict"] == INCONCLUSIVE
    assert table.loc["m01", "verdict"] == table.loc["m01", "verdict_alone"] == SLOWER
    # Holm: m01 first, at 0.025 / 30; then m00 would need 0.025 / 29
    assert 0.025 / 29 < table.loc["m00", "p_slower"] < 0.025
    assert (table.drop(index=["m00", "m01"])["verdict"] == INCONCLUSIVE).all()
    store.close()
    assert run_compare(tmp_path / "x.db", a, b) == 0
    out = capsys.readouterr().out
    assert "1 measurement on its own slower (m00): inconclusive among the 30 compared" in out
    # compared alone, the same pair is slower
    small, (a1, b1, _) = _many_models(tmp_path / "one", {"m00": 1.3}, models=1)
    assert compare_runs(small, a1, b1).table.iloc[0]["verdict"] == SLOWER


def test_the_trend_judges_each_runs_measurements_together(tmp_path: Path) -> None:
    """Found in a review: the trend judged each pair alone, so the nightly's page showed in red
    as slower, and ringed, a measurement the gate (which judges them together) called
    inconclusive. Each run's pairs with their previous runs are a family, as a comparison's."""
    store, runs = _many_models(tmp_path, {"m00": 1.3, "m01": 3.0})
    history = results_frame(store, runs)
    started = {r.run_id: r.started_at for r in store.runs()}
    history = history.assign(run_started_at=history["run_id"].map(started))
    verdicts = verdicts_over_runs(history, SessionReader(store).medians)
    for a, b in zip(runs, runs[1:], strict=False):
        table = compare_runs(store, a, b).table.set_index("model")
        mine = history["run_id"] == b
        got = dict(zip(history.loc[mine, "model"], verdicts[mine], strict=True))
        assert got == table["verdict"].to_dict()
    in_b = dict(zip(history.loc[history["run_id"] == runs[1], "model"],
                    verdicts[history["run_id"] == runs[1]], strict=True))
    assert in_b["m00"] == INCONCLUSIVE and in_b["m01"] == SLOWER  # m00 is slower alone


def test_a_nightly_judges_every_devices_measurements_together(tmp_path: Path) -> None:
    """A nightly's devices may each have their own baseline run (the last that measured it
    ok), each compared apart: judged per baseline, d0's one measurement was a family of one.
    The gate judges all it gates as one family: a 27% slowdown, slower alone on d0, is
    inconclusive beside d1's measurement."""
    from harness.farm.command import _gate

    store = Store(tmp_path / "x.db")
    runs = {}
    for name, devices, scale in (("a", ["d0"], 1.0), ("b", ["d1"], 1.0),
                                 ("c", ["d0", "d1"], 1.27)):
        runs[name] = store.begin_run(name, None, devices)
        for device in devices:
            add_job(store, runs[name], "m", device=device, samples_ns=[
                exact_median_ns(m * (scale if device == "d0" else 1.0), seed=k)
                for k, m in enumerate([10.0, 10.1, 9.9, 10.0])])
        store.finish_run(runs[name])
    rows, _ = _gate(store, {"d0": runs["a"], "d1": None}, runs["c"], threshold=0.05)
    assert [r["verdict"] for r in rows if r["device"] == "d0"] == [SLOWER]
    rows, _ = _gate(store, {"d0": runs["a"], "d1": runs["b"]}, runs["c"], threshold=0.05)
    by_device = {r["device"]: r for r in rows}
    assert by_device["d1"]["baseline_run"] == runs["b"]
    assert by_device["d0"]["verdict_alone"] == SLOWER
    assert by_device["d0"]["verdict"] == INCONCLUSIVE
