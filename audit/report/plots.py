"""Vector plots for the report: fixed colours per model role, byte-stable SVG output.

The figure is built on a bare ``matplotlib.figure.Figure`` (no pyplot, no global backend switch),
and saved under an ``rc_context`` that fixes the SVG id salt and drops the date, so the same
results always give the same SVG and hence the same PDF.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies; markers and line
# styles differ too, so a greyscale print still tells the models apart.
ROLE_COLOURS = {"user": "#D55E00", "reference": "#0072B2", "random-init": "#6E6E6E"}
ROLE_LABELS = {"user": "audited model", "reference": "reference", "random-init": "random init"}
ROLE_MARKERS = {"user": "o", "reference": "s", "random-init": "^"}
SET_LABELS = {"ood": "o.o.d.", "iid": "i.i.d.", "clean": "clean"}
GAP_COLOUR = "#444444"
GAP_COLOURS = (GAP_COLOUR, "#8C8C8C")  # labelled gaps: the gated one, a descriptive one
MARGIN_COLOUR = "#B8860B"
_SVG_RC = {"svg.hashsalt": "medaudit-report", "svg.fonttype": "path", "font.size": 7.5}


@dataclass(frozen=True)
class Series:
    """One model's AUC on one test set against level; ``low``/``high`` bound the band, if any."""

    role: str
    test_set: str
    mean: tuple[float | None, ...]
    low: tuple[float | None, ...] | None = None
    high: tuple[float | None, ...] | None = None


@dataclass(frozen=True)
class GapSeries:
    """A per-level gap with its interval, where recorded (None entries: no band there).

    Unlabelled: a schema-0 report's shortcut gap S, drawn alone. Labelled: one of several gaps
    drawn in one panel (schema 1: the gated reliance gap D_p first, solid, with the margin; then
    the descriptive o.o.d. AUC gap S, dashed), each named in the legend.
    """

    levels: tuple[float, ...]
    estimate: tuple[float | None, ...]
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]
    margin: float | None
    label: str | None = None
    dashed: bool = False  # labelled gaps: a descriptive one, drawn dashed in grey


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def _clipped(values: Sequence[float | None]) -> list[float]:
    """An AUC band never leaves [0, 1], even when mean +- s.d. would."""
    return [min(1.0, max(0.0, v)) if math.isfinite(v) else v for v in _nan(values)]


def _tick_labels(levels: Sequence[float], min_gap: float) -> list[str]:
    """Label a level only if it is ``min_gap`` away from the last labelled one (and label 0 and 1)."""
    labels, last = [], None
    for i, level in enumerate(levels):
        is_last = i == len(levels) - 1
        if last is None or level - last >= min_gap or is_last:
            if is_last and labels and last is not None and level - last < min_gap:
                labels[-1] = ""  # keep the end of the axis, drop the crowded one before it
            labels.append(f"{level:g}")
            last = level
        else:
            labels.append("")
    return labels


def _draw_auc_panel(ax, levels: Sequence[float], series: Sequence[Series], title: str) -> None:
    for s in series:
        colour = ROLE_COLOURS.get(s.role, "black")
        style = {"ood": "-", "iid": "-", "clean": ":"}.get(s.test_set, "-")
        ax.plot(
            levels,
            _nan(s.mean),
            style,
            color=colour,
            marker=ROLE_MARKERS.get(s.role, "o"),
            markersize=3.2,
            linewidth=1.3,
        )
        if s.low is not None and s.high is not None:
            ax.fill_between(
                levels, _clipped(s.low), _clipped(s.high), color=colour, alpha=0.15, linewidth=0
            )
    ax.axhline(0.5, color="#999999", linewidth=0.8, linestyle="--")
    ax.set_ylim(0.0, 1.02)
    ax.set_ylabel("AUC")
    _finish_axes(ax, levels, title)


def _draw_gap_panel(ax, gap: GapSeries) -> None:
    levels = list(gap.levels)
    ax.plot(levels, _nan(gap.estimate), "-", color=GAP_COLOUR, marker="D", markersize=3)
    ax.fill_between(levels, _nan(gap.low), _nan(gap.high), color=GAP_COLOUR, alpha=0.15, lw=0)
    ax.axhline(0.0, color="#999999", linewidth=0.8, linestyle="--")
    if gap.margin is not None:
        ax.axhline(gap.margin, color=MARGIN_COLOUR, linewidth=1.1, linestyle="-.")
    values = [v for v in (*gap.low, *gap.high, gap.margin or 0.0) if v is not None]
    top = max([0.1, *values]) + 0.05
    bottom = min([-0.1, *values]) - 0.05
    ax.set_ylim(max(-1.0, bottom), min(1.0, top))
    ax.set_ylabel("reference - audited AUC")
    _finish_axes(ax, levels, "shortcut gap per level (o.o.d.)")


def _gap_style(gap: GapSeries) -> tuple[str, str, str]:
    """Colour, line style and marker of a labelled gap."""
    return (GAP_COLOURS[1], "--", "v") if gap.dashed else (GAP_COLOURS[0], "-", "D")


def _draw_gaps_panel(ax, gaps: Sequence[GapSeries]) -> None:
    """Labelled gaps in one panel: the gated one solid, descriptive ones dashed; the first
    gap's margin is drawn."""
    levels = sorted({float(v) for gap in gaps for v in gap.levels})
    margin = gaps[0].margin
    values: list[float] = [0.0] if margin is None else [margin]
    for gap in gaps:
        colour, style, marker = _gap_style(gap)
        ax.plot(
            list(gap.levels),
            _nan(gap.estimate),
            style,
            color=colour,
            marker=marker,
            markersize=3,
            linewidth=1.0 if gap.dashed else 1.3,
        )
        ax.fill_between(
            list(gap.levels), _nan(gap.low), _nan(gap.high), color=colour, alpha=0.15, lw=0
        )
        values += [v for v in (*gap.estimate, *gap.low, *gap.high) if v is not None]
    ax.axhline(0.0, color="#999999", linewidth=0.8, linestyle="--")
    if margin is not None:
        ax.axhline(margin, color=MARGIN_COLOUR, linewidth=1.1, linestyle="-.")
    top = max([0.1, *values]) + 0.05
    bottom = min([-0.1, *values]) - 0.05
    ax.set_ylim(max(-1.0, bottom), min(1.0, top))
    ax.set_ylabel("gap (AUC scale)")
    _finish_axes(ax, levels, "gaps per counted level")


def _finish_axes(ax, levels: Sequence[float], title: str) -> None:
    ax.set_xlabel("correlation level p")
    span = (max(levels) - min(levels)) or 1.0
    ax.set_xticks(list(levels))
    ax.set_xticklabels(_tick_labels(sorted(levels), 0.15 * span))
    ax.set_xlim(min(levels) - 0.05, max(levels) + 0.05)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.25, linewidth=0.5)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _legend_handles(series: Sequence[Series], gap: GapSeries | None, labelled=()):
    from matplotlib.lines import Line2D

    handles = []
    for role in dict.fromkeys(s.role for s in series):
        handles.append(
            Line2D(
                [],
                [],
                color=ROLE_COLOURS.get(role, "black"),
                marker=ROLE_MARKERS.get(role, "o"),
                markersize=3.5,
                label=ROLE_LABELS.get(role, role),
            )
        )
    if any(s.test_set == "clean" for s in series):
        handles.append(Line2D([], [], color="#555555", linestyle=":", label="clean test set"))
    handles.append(
        Line2D([], [], color="#999999", linestyle="--", label="chance (AUC 0.5) / gap 0")
    )
    for labelled_gap in labelled:
        colour, style, marker = _gap_style(labelled_gap)
        handles.append(
            Line2D(
                [],
                [],
                color=colour,
                linestyle=style,
                marker=marker,
                markersize=3,
                label=labelled_gap.label,
            )  # fmt: skip
        )
    if gap is not None and gap.margin is not None:
        handles.append(
            Line2D([], [], color=MARGIN_COLOUR, linestyle="-.", label=f"margin {gap.margin:g}")
        )
    return handles


def confounder_figure_svg(
    levels: Sequence[float],
    series: Sequence[Series],
    gap: GapSeries | Sequence[GapSeries] | None,
) -> str:
    """o.o.d. AUC, i.i.d. (and clean) AUC, and the per-level gap against level, as one SVG.

    ``gap``: one unlabelled gap (schema 0), or labelled gaps drawn together (schema 1)."""
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    labelled: tuple[GapSeries, ...] = ()
    if gap is not None and not isinstance(gap, GapSeries):
        labelled = tuple(gap)
        gap = labelled[0] if labelled else None
    panels = 3 if gap is not None else 2
    with matplotlib.rc_context(_SVG_RC):
        handles = _legend_handles(series, gap, labelled)
        rows = 2 if labelled and len(handles) > 5 else 1
        fig = Figure(figsize=(7.0, 2.4 + 0.2 * (rows - 1)))
        FigureCanvasSVG(fig)
        axes = fig.subplots(1, panels)
        ood = [s for s in series if s.test_set == "ood"]
        iid = [s for s in series if s.test_set in ("iid", "clean")]
        _draw_auc_panel(axes[0], levels, ood, "o.o.d. AUC (correlation reversed)")
        _draw_auc_panel(axes[1], levels, iid, "i.i.d. AUC (built like training)")
        if labelled:
            _draw_gaps_panel(axes[2], labelled)
        elif gap is not None:
            _draw_gap_panel(axes[2], gap)
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=-(-len(handles) // rows),
            frameon=False,
            fontsize=7,
            handlelength=2.2,
        )
        fig.tight_layout(rect=(0, 0.09 if rows == 1 else 0.15, 1, 1), w_pad=1.6)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()
