"""Scoring: the tie rule against every tie-breaking order, Wilson intervals against scipy and
published values, and the host's build scoring an artifact exactly as the device agent does."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy.stats import binomtest

from harness.agent import protocol
from harness.agent.scoring import parity, score, topk_hits, wilson_interval
from harness.artifacts import Artifact
from harness.compress import export as ex
from harness.compress.build import build_suite
from tests.test_protocol import job_for, run_agent


def in_topk_under_every_order(logits: np.ndarray, labels: np.ndarray, k: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Direct computation: rank each row under every ordering of tied classes (a stable sort of
    each column permutation), and say whether the label made the top k under all / any of them."""
    classes = logits.shape[1]
    always = np.ones(len(logits), bool)
    sometimes = np.zeros(len(logits), bool)
    for perm in itertools.permutations(range(classes)):
        perm_ = np.array(perm)
        order = np.argsort(-logits[:, perm_], axis=1, kind="stable")[:, :k]
        inside = (perm_[order] == labels[:, None]).any(axis=1)
        always &= inside
        sometimes |= inside
    return always, sometimes


@pytest.mark.parametrize("k", [1, 2, 5])
def test_tie_rule_is_a_hit_only_when_no_tie_breaking_can_change_it(k: int) -> None:
    rng = np.random.default_rng(k)
    # Few distinct values on 6 classes: most rows have ties, some straddle the k boundary.
    logits = rng.integers(0, 4, size=(300, 6)).astype(np.float32)
    labels = rng.integers(0, 6, size=300)
    hit, tie = topk_hits(logits, labels, k)
    always, sometimes = in_topk_under_every_order(logits, labels, k)
    np.testing.assert_array_equal(hit, always)
    np.testing.assert_array_equal(tie, sometimes & ~always)
    assert tie.sum() > 10 and hit.sum() > 10 and (~sometimes).sum() > 10  # all three occur
    # The three rules (argmax, argsort, argpartition) each land between the two bounds.
    for picked in (np.argsort(-logits, axis=1)[:, :k],
                   np.argpartition(-logits, k - 1, axis=1)[:, :k]):
        found = (picked == labels[:, None]).any(axis=1)
        assert np.all(found[hit]) and not np.any(found[~sometimes])
    if k in (1, 5):  # the ones `score` reports
        assert score(logits, labels)[f"top{k}_ties"] == tie.sum()


def test_ties_that_matter_and_ties_that_do_not() -> None:
    logits = np.array([
        [5, 5, 1, 0, 0, 0, 0],  # label 0 tied with class 1 for first: top-1 tie, top-5 hit
        [9, 8, 7, 6, 3, 3, 3],  # label 4 tied with 5 and 6 at the 5th place: top-5 tie
        [9, 8, 7, 6, 5, 3, 3],  # label 4 alone in 5th place: top-5 hit, top-1 miss
        [4, 4, 4, 0, 0, 0, 0],  # label 3, below the top three, tied with 4..6: top-5 tie
        [1, 1, 1, 1, 1, 1, 1],  # all equal: a tie at both k
        [0, 3, 3, 3, 3, 3, 1],  # label 1 tied with 4 others, all 5 inside the top 5: top-5 hit
        [0, 1, 2, 3, 4, 5, 6],  # label 0 last: a miss at both k, and not a tie
    ], np.float32)
    labels = np.array([0, 4, 4, 3, 2, 1, 0])
    hit1, tie1 = topk_hits(logits, labels, 1)
    hit5, tie5 = topk_hits(logits, labels, 5)
    assert hit1.tolist() == [False] * 7
    assert tie1.tolist() == [True, False, False, False, True, True, False]
    assert hit5.tolist() == [True, False, True, False, False, True, False]
    assert tie5.tolist() == [False, True, False, True, True, False, False]
    s = score(logits, labels)
    assert (s["top1"], s["top1_ties"]) == (0.0, 3)
    assert (s["top5"], s["top5_ties"]) == (pytest.approx(3 / 7), 3)


def test_k_at_or_above_the_number_of_classes() -> None:
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 2.0, 2.0]], np.float32)
    labels = np.array([0, 1])
    hit, tie = topk_hits(logits, labels, 5)  # every class is inside the top 5 of 3
    assert hit.all() and not tie.any()
    assert topk_hits(logits, labels, 3)[0].all()
    s = score(logits, labels)
    assert s["top1"] == 0.0 and s["top1_ties"] == 1
    # 1.0 by construction says nothing about the model: reported as not applicable
    assert s["top5"] is None and s["top5_low"] is None and s["top5_high"] is None


def test_a_nan_row_is_a_miss_not_a_tie() -> None:
    logits = np.array([[np.nan, 0.0, 1.0], [1.0, np.nan, 0.0], [2.0, 1.0, 0.0]], np.float32)
    hit, tie = topk_hits(logits, np.array([0, 0, 0]), 1)
    assert hit.tolist() == [False, False, True] and not tie.any()


@pytest.mark.parametrize(("successes", "n"), [(0, 1), (0, 20), (1, 29), (15, 148), (81, 263),
                                              (340, 359), (359, 359), (7, 10), (5000, 10000)])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_wilson_interval_matches_scipy(successes: int, n: int, confidence: float) -> None:
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(successes, n, confidence)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    assert low <= successes / n <= high


@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score)
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_published_values(successes: int, n: int, low: float,
                                                  high: float) -> None:
    got = wilson_interval(successes, n)
    assert got[0] == pytest.approx(low, abs=5e-5) and got[1] == pytest.approx(high, abs=5e-5)


def test_wilson_interval_closed_form_and_edges() -> None:
    z, n, x = 1.959963984540054, 40, 30
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert wilson_interval(x, n) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert wilson_interval(0, 0) == (None, None)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_score_fields_interval_and_reference() -> None:
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((200, 10)).astype(np.float32)
    labels = np.where(rng.random(200) < 0.7, logits.argmax(1), rng.integers(0, 10, 200))
    reference = logits.copy()
    reference[:20] = np.roll(reference[:20], 1, axis=1)  # 20 rows whose top-1 moves
    reference[20, :] = 0.0  # a reference row tied everywhere: no agreement, one tie
    reference[21] += 0.5
    s = score(logits, labels, reference)
    assert s["n"] == 200
    assert s["top1"] == np.mean(logits.argmax(1) == labels)  # no ties in continuous logits
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert s["top5"] == np.mean((top5 == labels[:, None]).any(axis=1))
    assert (s["top1_low"], s["top1_high"]) == wilson_interval(round(s["top1"] * 200), 200)
    assert s["top1_low"] < s["top1"] < s["top1_high"] and s["top1_ties"] == 0
    assert s["ref_top1_agreement"] == pytest.approx(179 / 200)  # rows 0-20 disagree
    assert s["ref_top1_ties"] == 1
    assert s["ref_max_abs_diff"] == pytest.approx(float(np.abs(reference - logits).max()))
    assert score(logits, labels)["ref_top1_agreement"] is None
    assert parity(logits, logits) == {"top1_agreement": 1.0, "top1_ties": 0, "max_abs_diff": 0.0}


def test_inputs_that_do_not_fit_are_refused() -> None:
    logits = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="reference logits have shape"):
        score(logits, np.zeros(4, int), np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"class indices in 0\.\.2, got 0\.\.3"):
        score(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels for logits"):
        score(logits, np.zeros(3, int))
    with pytest.raises(ValueError, match="class indices"):
        score(logits, np.array([0.5, 1, 2, 0]))


SUITE = """
name: same
seed: 0
formats: [onnx, tflite]
datasets:
  digits: {type: digits, image_size: 32}
models:
  digits_cnn:
    arch: digits_cnn
    dataset: digits
    train: {epochs: 1, lr: 0.003, threads: 1}
    recipes: [int8]
recipes:
  int8:
    steps: [{quantize_static: {calibration_size: 32}}]
    formats: [tflite]
"""


def _device_job(artifact: Artifact) -> dict:
    """The job the runner sends for this artifact, with the host's runtime options."""
    ds = artifact.dataset
    assert ds is not None and ds.reference is not None
    return job_for(artifact.path, runtime=ex.HOST_RUNTIME[artifact.format],
                   options=dict(ex.HOST_OPTIONS),
                   dataset={part: {"path": str(path)} for part, path in
                            (("inputs", ds.inputs), ("labels", ds.labels),
                             ("reference", ds.reference))},
                   input={"shape": list(artifact.input_shape)},
                   settings=protocol.QUICK_SETTINGS)


@pytest.mark.slow
def test_host_accuracy_of_a_built_artifact_is_what_the_agent_reports(tmp_path: Path) -> None:
    (tmp_path / "same.yaml").write_text(SUITE)
    report = build_suite(tmp_path / "same.yaml", tmp_path / "build", console=Console(quiet=True))
    assert not report.failures and len(report.artifacts) == 3
    int8 = next(a for a in report.artifacts if a.precision == "int8")
    assert int8.input_dtype == "int8"  # the quantize-the-input path of the runtime is exercised
    for artifact in report.artifacts:
        result, stderr = run_agent(_device_job(artifact))
        assert result["status"] == "ok", (result["error"], stderr)
        host = json.loads(json.dumps(artifact.host_accuracy))  # as the manifest stores it
        assert result["accuracy"] == host, artifact.name
        assert host["n"] == 359 and host["top1_low"] < host["top1"] < host["top1_high"]
        # The agent's reference is the PyTorch fp32 model: the fp32 files agree with it.
        if artifact.precision == "fp32":
            assert host["ref_top1_agreement"] == 1.0
