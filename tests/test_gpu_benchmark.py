"""`benchmarks/gpu.py`'s bare loop runs in an agent session's process setup, and its verdict
says `undecided` rather than `NO` where pairs fall on both sides of the band. Its GPU half runs
only on a GPU (scripts/gpu-check.sh); the bare loop and the agent also run on the CPU, so that
the setups they record are compared here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import gpu

torch = pytest.importorskip("torch")


def test_pairs_on_both_sides_of_the_band_are_undecided_not_a_miss() -> None:
    assert gpu.verdict([0.995, 1.03, 0.97]) == "yes"  # the median is what is judged
    assert gpu.verdict([0.77, 0.80, 1.16]) == "undecided"  # last GPU run's ResNet18 eager
    assert gpu.verdict([0.9446, 0.9494]) == "NO"  # faster in every pair: systematic
    assert gpu.verdict([1.05, 1.03, 1.04]) == "NO"


def test_differing_setups_are_named_side_by_side() -> None:
    agent = {"threads": 16, "cpus": [2, 3], "device": "cuda:0"}
    bare = {"threads": 8, "cpus": [2, 3], "device": "cuda:0"}
    assert gpu.setup_differences(agent, bare) == ["threads: edgebench 16, bare 8"]
    assert gpu.setup_differences(agent, dict(agent)) == []


@pytest.mark.slow
def test_the_bare_loop_runs_in_the_agents_setup(tmp_path: Path) -> None:
    """On the CPU, pinned to one CPU: both sides record one thread, that CPU, the same input
    shape and torch settings; a pair compares them and finds nothing to tell apart."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    path = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 3, 16, 16),)), str(path))
    args = argparse.Namespace(pairs=1, duration=0.1, cpus=[0], budget=0.0, reserve=0.0)
    failures: list[str] = []
    rows = gpu.run_pairs({"tiny": path}, "cpu", ("eager",), args, gpu.Out(tmp_path / "out"),
                         failures)
    assert failures == []
    (row,) = rows
    assert row["setup_differs"] == []
    assert row["bare"]["setup"]["threads"] == row["edgebench"]["setup"]["threads"] == 1
    assert row["bare"]["setup"]["cpus"] == [0]
    assert row["bare"]["setup"]["input_shape"] == [1, 3, 16, 16]
    assert row["bare"]["n"] >= gpu.SETTINGS["min_iterations"]
    assert (tmp_path / "out" / "pairs.jsonl").is_file()
