"""Quality-against-cost charts for comparing runs, drawn with matplotlib as inline SVG (no file, no network).

Each run is a point (cost, quality). A run is on the frontier when no other run is at least as good on both axes
and better on one; the frontier is drawn as a line through those runs, so a variant below it is dominated: another
run gives as much quality for less cost.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # no display: draw to memory
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams["svg.fonttype"] = "none"  # text stays text (selectable, no embedded glyph paths)
plt.rcParams["svg.hashsalt"] = "harness"  # ids in the SVG do not change from one rendering to the next


def inline_svg(figure) -> str:
    """The drawn figure as an SVG element to put inline in HTML: no XML prolog or DOCTYPE, and no date, so that the
    same data draws the same bytes."""
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]


def frontier(points: list[tuple[float, float]], cost_lower_is_better: bool, quality_higher_is_better: bool
             ) -> list[int]:
    """Indices of the points no other point dominates, in order of cost."""
    def better_or_equal(a, b):  # a at least as good as b on both axes
        cost_ok = a[0] <= b[0] if cost_lower_is_better else a[0] >= b[0]
        quality_ok = a[1] >= b[1] if quality_higher_is_better else a[1] <= b[1]
        return cost_ok and quality_ok

    kept = [i for i, p in enumerate(points)
            if not any(better_or_equal(q, p) and q != p for j, q in enumerate(points) if j != i)]
    return sorted(kept, key=lambda i: points[i][0])


def frontier_svg(labels: list[str], costs: list[float], qualities: list[float], cost_name: str,
                 quality_name: str, cost_lower_is_better: bool, quality_higher_is_better: bool) -> str:
    """An SVG document (a string) of the runs and their frontier; runs without both figures are left out."""
    shown = [(label, c, q) for label, c, q in zip(labels, costs, qualities) if c is not None and q is not None]
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    try:
        points = [(c, q) for _, c, q in shown]
        on_frontier = frontier(points, cost_lower_is_better, quality_higher_is_better)
        axes.plot([points[i][0] for i in on_frontier], [points[i][1] for i in on_frontier], "-", color="#999",
                  zorder=1, label="frontier")
        for i, (label, cost, quality) in enumerate(shown):
            axes.scatter([cost], [quality], zorder=2, color="#1f77b4" if i in on_frontier else "#d62728")
            axes.annotate(label, (cost, quality), textcoords="offset points", xytext=(4, 4), fontsize=7)
        axes.set_xlabel(cost_name + (" (lower is better)" if cost_lower_is_better else " (higher is better)"))
        axes.set_ylabel(quality_name + (" ↑" if quality_higher_is_better else " ↓"))
        axes.grid(alpha=0.3)
        return inline_svg(figure)
    finally:
        plt.close(figure)


def curves_svg(series: dict[str, list[tuple[float, float | None]]], x_name: str, y_name: str,
               log_y: bool = False) -> str:
    """An SVG document of one line per series through its (x, y) points, in order of x; points without a y (no
    request succeeded there) are left out of the line."""
    figure, axes = plt.subplots(figsize=(5.5, 3.6))
    # One colour per run: a run's p50 line (dashed) takes the colour of its p99 line.
    runs = list(dict.fromkeys(label.removesuffix(" p50").removesuffix(" p99") for label in series))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    try:
        for label, points in series.items():
            run = label.removesuffix(" p50").removesuffix(" p99")
            shown = sorted((x, y) for x, y in points if y is not None)
            axes.plot([x for x, _ in shown], [y for _, y in shown], marker="o", markersize=4,
                      color=palette[runs.index(run) % len(palette)],
                      linestyle="--" if label.endswith(" p50") else "-", label=label)
        if log_y:
            axes.set_yscale("log")
        axes.set_xlabel(x_name)
        axes.set_ylabel(y_name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        return inline_svg(figure)
    finally:
        plt.close(figure)


def bars_svg(categories: list[str], series: dict[str, list[tuple[float | None, float | None, float | None]]],
             metric: str, higher_is_better: bool) -> str:
    """An SVG document of horizontal bars, one group per category and one bar per series (a run), each bar its
    (value, interval low, interval high) with the interval as a whisker; a missing value draws no bar."""
    height = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(5.5, 0.9 + 0.32 * len(categories) * max(1, len(series)) ** 0.5))
    try:
        for number, (label, values) in enumerate(series.items()):
            rows = [(i, v, lo, hi) for i, (v, lo, hi) in enumerate(values) if v is not None and not math.isnan(v)]
            positions = [i + (number - (len(series) - 1) / 2) * height for i, *_ in rows]
            whiskers = [[v - lo if lo is not None else 0 for _, v, lo, _ in rows],
                        [hi - v if hi is not None else 0 for _, v, _, hi in rows]]
            axes.barh(positions, [v for _, v, *_ in rows], height=height * 0.9, xerr=whiskers, capsize=2,
                      label=label, error_kw={"elinewidth": 0.8})
        axes.set_yticks(range(len(categories)), categories, fontsize=8)
        axes.invert_yaxis()  # the first category on top, as in the table
        axes.set_xlabel(metric + (" (higher is better)" if higher_is_better else " (lower is better)"))
        axes.grid(axis="x", alpha=0.3)
        if len(series) > 1:  # above the bars, never over them
            axes.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=min(3, len(series)),
                        frameon=False)
        return inline_svg(figure)
    finally:
        plt.close(figure)
