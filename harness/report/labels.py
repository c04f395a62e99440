"""Point labels that never print over each other, over a marker, or outside their axes.

A scatter of compressed variants crowds: the digits models of the demo sit within a factor of
three in latency and a point of accuracy. Libraries that repel labels (adjustText) move them
until overlaps are small, with no promise that none is left; a figure for a paper needs that
promise. So labels are placed greedily, most important first: each tries positions around its
point on rings of growing radius (a leader line joins it to the point beyond the first ring),
and takes the first whose text box meets no label already placed, no marker, and stays inside
the axes, and whose leader line passes through no other label or marker. Among those, the
nearest that crosses no line the caller names (error bars, a Pareto front), however far out:
a label across a whisker reads as struck through, which a long leader line does not; a leader
line along a whisker counts as crossing it (it reads as part of the bar). Where every free
position crosses one, the label takes the one that crosses fewest, nearest first, rather than
be left out. A label with no free position at all is not drawn, and the caller is told which.
The figure's layout must be final when this runs (positions are in display units): callers lay
the figure out, place labels, and then freeze the layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import ConnectionPatch
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox, offset_copy

# Offsets from the point, in points: rings of growing radius, ten directions each, the
# directions that read most naturally (right, then above, below, left) first. The outer two
# find a place clear of the error bars in a crowd of a dozen points in a single column.
RINGS = (5.0, 12.0, 20.0, 30.0, 42.0, 56.0, 72.0)
DIRECTIONS = ((1, 0.3), (1, -0.3), (0, 1), (0, -1), (-1, 0.3), (-1, -0.3), (1, 1), (1, -1),
              (-1, 1), (-1, -1))
MARKER_RADIUS_PT = 3.5
PAD_PT = 1.0


def _alignment(dx: float, dy: float) -> tuple[Any, Any]:
    ha = "left" if dx > 0 else "right" if dx < 0 else "center"
    va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
    return ha, va


def _along(start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Points along a leader line, its ends (at the marker and at the text) left out."""
    return start + np.linspace(0.15, 0.9, 12)[:, None] * (end - start)


def _inside(points: np.ndarray, box: Bbox) -> bool:
    return bool(len(points)) and bool(
        ((points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0)
         & (points[:, 1] < box.y1)).any())


def place_labels(
    ax: Axes,
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    texts: Sequence[str],
    *,
    avoid_x: Sequence[float] | np.ndarray = (),
    avoid_y: Sequence[float] | np.ndarray = (),
    avoid_lines: Sequence[tuple[float, float, float, float]] = (),
    fontsize: float = 8,
) -> list[str]:
    """Label the points (`x`, `y`, data coordinates) with `texts`, in the order given (the most
    important first); `avoid_x/avoid_y` are further markers to keep clear of. `avoid_lines`,
    segments (x0, y0, x1, y1) in data coordinates such as error bars or the steps of a front,
    are kept clear of where a free position does so, and crossed as little as can be rather
    than a label left out.
    Returns the texts that found no free position and were left out."""
    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    pt = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer).padded(-PAD_PT * pt)
    points = ax.transData.transform(np.column_stack([x, y])) if len(x) else np.empty((0, 2))
    others = (
        ax.transData.transform(np.column_stack([avoid_x, avoid_y]))
        if len(avoid_x)
        else np.empty((0, 2))
    )
    r = MARKER_RADIUS_PT * pt
    taken = [Bbox.from_bounds(px - r, py - r, 2 * r, 2 * r) for px, py in [*points, *others]]
    # the lines to keep clear of, each as points every 2 pt along it (display units)
    lines = [dots for x0, y0, x1, y1 in avoid_lines
             if len(dots := _dotted(ax.transData.transform([(x0, y0), (x1, y1)]), frame, 2 * pt))]
    leaders: list[np.ndarray] = []
    left_out = []
    positions = [(ring, ux, uy) for ring in RINGS for ux, uy in DIRECTIONS]
    for own, ((dx0, dy0), text) in enumerate(zip(np.column_stack([x, y]), texts, strict=True)):
        label = Annotation(text, (dx0, dy0), xytext=(0, 0), textcoords="offset points",
                           fontsize=fontsize, zorder=6, annotation_clip=False)
        ax.add_artist(label)
        anchor = ax.transData.transform((dx0, dy0))
        # the nearest position that crosses no line; failing one, the one that crosses fewest
        # error bars, then fewest leader lines
        best: tuple[tuple[int, int], float, tuple[float, float], tuple[float, float], Bbox,
                    np.ndarray] | None = None
        for ring, ux, uy in positions:
            norm = float(np.hypot(ux, uy))
            offset = (ring * ux / norm, ring * uy / norm)
            _put(label, offset, ux, uy)
            box = label.get_window_extent(renderer)
            if not (frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)):
                continue
            padded = box.padded(PAD_PT * pt)
            if any(padded.overlaps(t) for t in taken):
                continue
            end = anchor + np.array(offset) * pt
            leader = _along(anchor, end) if ring > RINGS[0] else np.empty((0, 2))
            # a leader line through another label or point, or a label over another's leader
            # line, reads as a wrong pairing
            if any(_inside(leader, t) for k, t in enumerate(taken) if k != own) or any(
                    _inside(line, padded) for line in leaders):
                continue
            # a leader along an error bar reads as part of it, as bad as a label across one;
            # two leader lines that cross read as swapped, which a label beside its point
            # across a whisker does not
            crossings = (sum(_inside(line, padded) or _on(leader, line, 1.5 * pt)
                             for line in lines), sum(_cross(leader, line) for line in leaders))
            if best is None or crossings < best[0]:
                best = (crossings, ring, offset, (ux, uy), box, leader)
            if crossings == (0, 0):
                break
        if best is None:
            label.remove()
            left_out.append(text)
            continue
        _, ring, offset, direction, box, leader = best
        _put(label, offset, *direction)
        taken.append(box)
        leaders.append(leader)
        if ring > RINGS[0]:
            ax.add_artist(ConnectionPatch(
                (dx0, dy0), (dx0, dy0), coordsA=ax.transData,
                coordsB=offset_copy(ax.transData, fig, x=offset[0], y=offset[1],
                                    units="points"),
                color="#444444", linewidth=0.5, shrinkA=MARKER_RADIUS_PT, shrinkB=0.5,
                zorder=5,
            ))
    return left_out


def _put(label: Annotation, offset: tuple[float, float], ux: float, uy: float) -> None:
    label.xyann = offset
    ha, va = _alignment(ux, uy)
    label.set_horizontalalignment(ha)
    label.set_verticalalignment(va)


def _cross(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two leader lines (`_along`) cross: the ends of each lie on either side of the
    other."""
    if not (len(a) and len(b)):
        return False

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> float:
        return float(np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])))

    return (side(a[0], a[-1], b[0]) * side(a[0], a[-1], b[-1]) < 0
            and side(b[0], b[-1], a[0]) * side(b[0], b[-1], a[-1]) < 0)


def _on(leader: np.ndarray, line: np.ndarray, within: float) -> bool:
    """Whether a leader line runs along `line` (its dots, `_dotted`) for more than a few points
    of its length: crossing one, it meets it for about 2 * `within`."""
    if not len(leader):
        return False
    gaps = np.hypot(*(leader[:, None, :] - line[None, :, :]).transpose(2, 0, 1)).min(axis=1)
    step = float(np.hypot(*(leader[1] - leader[0])))
    return bool((gaps <= within).sum() * step > 4 * within)


def _dotted(ends: np.ndarray, frame: Bbox, step: float) -> np.ndarray:
    """Points every `step` (display units) along the part inside `frame` of the segment between
    the two rows of `ends`: an interval reaching far past the axes costs no more points."""
    start, along = ends[0], ends[1] - ends[0]
    enter, leave = 0.0, 1.0
    for axis, (low, high) in enumerate(((frame.x0, frame.x1), (frame.y0, frame.y1))):
        if along[axis] == 0:
            if not low <= start[axis] <= high:
                return np.empty((0, 2))
            continue
        t0, t1 = sorted(((low - start[axis]) / along[axis], (high - start[axis]) / along[axis]))
        enter, leave = max(enter, t0), min(leave, t1)
    if not (np.isfinite(enter) and np.isfinite(leave)) or enter > leave:
        return np.empty((0, 2))
    count = max(2, int(np.hypot(*along) * (leave - enter) / step) + 1)
    return start + np.linspace(enter, leave, count)[:, None] * along
