"""Power during the timed loop, where the board can measure it (Jetson: `tegrastats`).

A monitor samples in the background while the model runs back to back; the job then reports the
mean input power and the energy per inference (mean power x mean latency: W x ms = mJ). The
figure is the whole module's input power, idle share included, which is what a battery sees;
the rail it came from is recorded with it. Which board has which sensor is the board's business
(`boards.<kind>.power_monitor`); boards without one report nothing rather than a guess.
"""

from __future__ import annotations

from typing import Any, Sequence

from . import boards


class PowerMonitor:
    """Samples power in the background between `start()` and `stop()`."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> dict[str, Any] | None:
        """Stop sampling; the `summarize` of what was sampled, None if nothing was."""
        raise NotImplementedError


def total_rail(rails: dict[str, Any], names: Sequence[str]) -> str | None:
    """The first of `names` (total input rails, most specific first) that was measured."""
    for name in names:
        if name in rails:
            return name
    return None


def summarize(samples: list[dict[str, Any]], source: str,
              total_rails: Sequence[str] = ()) -> dict[str, Any] | None:
    """Mean watts of the total input rail (else the sum of all rails) and of every rail.

    Each sample is `{"t": seconds, "rails": {name: {"mw": milliwatts}}}`.
    """
    if not samples:
        return None
    names = sorted({name for s in samples for name in s["rails"]})
    rails_mean_w = {
        name: sum(s["rails"][name]["mw"] for s in samples if name in s["rails"])
        / 1000.0 / sum(1 for s in samples if name in s["rails"])
        for name in names
    }
    rail = total_rail(rails_mean_w, total_rails)
    mean_w = rails_mean_w[rail] if rail else sum(rails_mean_w.values())
    return {
        "source": source,
        "rail": rail or "sum of all rails",
        "samples": len(samples),
        "mean_w": mean_w,
        "rails_mean_w": rails_mean_w,
    }


def monitor_for(kind: str) -> PowerMonitor | None:
    monitor: PowerMonitor | None = boards.power_monitor(kind)
    return monitor
