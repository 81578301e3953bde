"""Plotly figure builders for the app and the evaluation: small functions, plain lists in, figures out.

Every builder takes python lists/dicts (never tensors or numpy arrays, so the JSON that reaches
the browser is plain and readable by any plotly.js) and returns a `go.Figure`.

Example:
    >>> r = engine.route("What is 47 + 38?", k=3)
    >>> fig = signal_bars(r.scores, r.selected, r.weights, {n: engine.pool.description(n) for n in r.scores})
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

SELECTED = "#e4572e"  # chosen adapters
OTHER = "#9aa5b1"  # the rest of the pool
CUTOFF = "#2d3142"
FONT = dict(family="ui-sans-serif, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13)
SELECTED_TRACE = "selected (top-k)"  # trace names: the browser test reads them
OTHER_TRACE = "not selected"
# Family colours (Okabe-Ito, colour-blind safe, then plotly's G10); SELECTED/OTHER serve a pool without families.
FAMILY_PALETTE = [
    "#E69F00",
    "#56B4E9",
    "#009E73",
    "#D55E00",
    "#0072B2",
    "#CC79A7",
    "#F0E442",
    "#000000",
    "#3366CC",
    "#DC3912",
    "#FF9900",
    "#109618",
    "#990099",
    "#0099C6",
    "#DD4477",
    "#66AA00",
]


def _layout(fig: go.Figure, title: str, height: int, **overrides) -> go.Figure:
    """The house style: title top-left, compact margins, white template; `overrides` win."""
    layout = dict(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=15)),
        height=height,
        margin=dict(l=10, r=20, t=50, b=40),
        font=FONT,
        template="plotly_white",
        hoverlabel=dict(align="left"),
    )
    fig.update_layout(**{**layout, **overrides})
    return fig


def _wrap(text: str, width: int = 60) -> str:
    """Break a long hover text into lines (plotly hover boxes do not wrap)."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + len(w) + 1 > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    return "<br>".join([*lines, line]) if line else "<br>".join(lines)


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure that shows `message` in its middle (placeholder before the first prompt)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


def family_colors(families: Sequence[str]) -> dict[str, str]:
    """One colour per family, in order of first appearance (stable for a given pool)."""
    names = list(dict.fromkeys(families))
    return {f: FAMILY_PALETTE[i % len(FAMILY_PALETTE)] for i, f in enumerate(names)}


def probe_subtitle(options: Mapping, width: int = 48) -> str:
    """What was probed, from a routing's options: `blocks 15-29 (mean) · v_proj · residual input`
    (broken before the probe input when longer than `width` characters, so a phone shows it whole)."""
    modules = options.get("module") or []
    modules = [modules] if isinstance(modules, str) else list(modules)
    where = f"{blocks_label(options['blocks'])} · {', '.join(modules)}"
    sep = " · " if len(where) + len(options["probe_input"]) + 9 <= width else "<br>"
    text = f"{where}{sep}{options['probe_input']} input"
    if options.get("token_weight"):  # the token evidence reads other blocks, at every token
        pooling = ", by recency" if options.get("token_pooling") == "recency" else ""
        blocks = blocks_label(options["token_blocks"]).removesuffix(" (mean)")
        text += f"<br>+ token evidence {options['token_weight']:g} × {blocks}{pooling}"
    return text


def signal_title(options: Mapping) -> str:
    """`Adapter signal · calibrated norm` (the chart title; `probe_subtitle` says where it was probed)."""
    return f"Adapter signal · {'calibrated' if options['calibrated'] else 'raw'} {options['signal']}"


def score_range(values: Sequence[float]) -> list[float]:
    """The x range of a bar chart of scores: 0 always in view, a negative bar (a calibrated score below the
    background's mean) drawn to its end, and 20% head room on the right for the top-k cut-off's label."""
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    span = (hi - lo) or 1.0
    return [lo - (0.05 * span if lo < 0 else 0.0), hi + 0.2 * span]


def signal_bars(
    scores: Mapping[str, float],
    selected: Sequence[str],
    weights: Mapping[str, float] | None = None,
    descriptions: Mapping[str, str] | None = None,
    title: str = "Adapter signal for this prompt",
    value_label: str = "signal",
    subtitle: str = "",
    families: Mapping[str, str] | None = None,
    ties: Sequence[str] = (),
    top: int | None = None,
) -> go.Figure:
    """Every adapter's score as a horizontal bar, best on top; the selected ones highlighted.

    A dashed line marks the top-k cut-off; hover shows the adapter's description, family, score,
    rank and merge weight. Readable with a pool of 60: only the `top` best are drawn (the selected
    ones always), the rest summed up in one line; families are colours.

    Args:
        scores: adapter -> score (any order; sorted here, ties kept in the given order).
        selected: the chosen adapters (drawn highlighted).
        weights: selected adapter -> merge weight, shown as bar labels and on hover.
        descriptions: adapter -> task description for the hover text.
        title, subtitle: figure title and the line under it (what was probed: `probe_subtitle`).
        value_label: what the score is called on the axis and in the hover text.
        families: adapter -> family; with any non-empty family, one colour (and legend entry) per family.
        ties: adapters tied at the top-k cut (hatched).
        top: draw at most this many bars (None: all).

    Returns:
        Without families, two bar traces `SELECTED_TRACE` and `OTHER_TRACE`; with families, one per
        family (selected bars opaque and outlined). `layout.meta` = {"order": drawn adapters best
        first, "selected": [...], "hidden": how many were left out}.
    """
    weights, descriptions, families = weights or {}, descriptions or {}, families or {}
    order = sorted(scores, key=lambda n: -scores[n])  # stable: ties keep pool order
    rank = {n: i + 1 for i, n in enumerate(order)}
    chosen, tied = set(selected), set(ties)
    shown = order if top is None else order[: max(top, len(chosen))]
    hidden = len(order) - len(shown)
    family = {n: families.get(n) or "other" for n in order}
    if any(families.get(n) for n in shown):
        colors = family_colors([family[n] for n in order])
        groups = [(f, [n for n in shown if family[n] == f], colors[f]) for f in dict.fromkeys(family[n] for n in shown)]
    else:
        groups = [
            (SELECTED_TRACE, [n for n in shown if n in chosen], SELECTED),
            (OTHER_TRACE, [n for n in shown if n not in chosen], OTHER),
        ]
    fig = go.Figure()
    for name, members, color in groups:
        fig.add_bar(
            name=name,
            y=members,
            x=[scores[n] for n in members],
            orientation="h",
            marker=dict(
                color=color,
                opacity=[1.0 if n in chosen else 0.45 for n in members],
                line=dict(color=CUTOFF, width=[1.5 if n in chosen else 0 for n in members]),
                pattern=dict(shape=["/" if n in tied else "" for n in members]),
            ),
            text=[f"w = {weights[n]:.2f}" if n in weights else "" for n in members],
            textposition="inside",
            insidetextanchor="start",
            customdata=[
                [
                    _wrap(descriptions.get(n, "")),
                    rank[n],
                    f"{weights[n]:.3f}" if n in weights else "-",
                    f" · {family[n]}" if families else "",
                ]
                for n in members
            ],
            hovertemplate=(
                "<b>%{y}</b>%{customdata[3]}<br>%{customdata[0]}<br>"
                f"{value_label}: %{{x:.4g}} · rank %{{customdata[1]}} · weight %{{customdata[2]}}<extra></extra>"
            ),
        )
    k = len(chosen)
    if 0 < k < len(order):  # the cut-off sits between rank k and rank k+1
        fig.add_hline(y=k - 0.5, line=dict(color=CUTOFF, dash="dash", width=1.5))
        fig.add_annotation(
            text=f"top-{k} cut-off",
            x=1,
            xref="paper",
            y=k - 0.5,
            yref="y",
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            font=dict(size=12, color=CUTOFF),
        )
    if hidden:
        fig.add_annotation(
            text=f"+ {hidden} more adapters with lower scores (not drawn)",
            x=0,
            xref="paper",
            y=len(shown) - 0.4,
            yref="y",
            xanchor="left",
            yanchor="top",
            showarrow=False,
            font=dict(size=12, color=OTHER),
        )
    fig.update_yaxes(
        categoryorder="array", categoryarray=shown, range=[len(shown) - 0.5 + (0.8 if hidden else 0), -0.5], title=None
    )
    fig.update_xaxes(title=value_label, range=score_range([scores[n] for n in shown]), zeroline=True)
    legend = len(groups) > 1 and any(members for _, members, _ in groups)
    height = 150 + 24 * (len(shown) + (1 if hidden else 0)) + (30 if legend else 0)
    fig = _layout(
        fig,
        title,
        min(height, 1700),
        barmode="overlay",
        showlegend=legend,
        # the legend sits under the chart, where a narrow (phone) screen cannot make it overlap the title
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        margin=dict(l=10, r=20, t=50 + 26 * (subtitle.count("<br>") + 1 if subtitle else 0), b=95 if legend else 50),
        meta={"order": shown, "selected": list(selected), "hidden": hidden},
        # one small button (save as PNG) instead of plotly's toolbar, which a phone shows over the title
        modebar=dict(remove=["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale", "resetscale"]),
    )
    if subtitle:
        fig.update_layout(title_subtitle=dict(text=subtitle, font=dict(size=12, color="#4a5568")))
    return fig


def weight_bars(
    weights: Mapping[str, float],
    descriptions: Mapping[str, str] | None = None,
    title: str = "Merge weights",
) -> go.Figure:
    """The merge weights of the chosen adapters (they sum to 1), largest first, as percentages."""
    descriptions = descriptions or {}
    names = sorted(weights, key=lambda n: -weights[n])
    fig = go.Figure(
        go.Bar(
            x=[weights[n] for n in names],
            y=names,
            orientation="h",
            marker_color=SELECTED,
            text=[f"{weights[n]:.0%}" for n in names],
            textposition="auto",
            customdata=[_wrap(descriptions.get(n, "")) for n in names],
            hovertemplate="<b>%{y}</b><br>%{customdata}<br>weight %{x:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title=None)
    return _layout(fig, title, min(400, 90 + 32 * len(names)), margin=dict(l=10, r=20, t=45, b=30))


def heatmap(
    z: Sequence[Sequence[float]],
    columns: Sequence[str],
    rows: Sequence[int | str],
    descriptions: Mapping[str, str] | None = None,
    title: str = "",
    row_label: str = "block",
    value_label: str = "signal",
    normalize_rows: bool = False,
    mark_row: int | str | Sequence[int | str] | None = None,
    mark_max: bool = True,
) -> go.Figure:
    """A rows x columns heatmap (e.g. probe block x adapter), optionally scaled row by row.

    Args:
        z: values, one list per row.
        columns: column names (adapters); their descriptions go in the hover text.
        rows: row labels (block indices).
        normalize_rows: divide each row by its largest value, so rows with different scales compare.
        mark_row: outline this row, or these rows (the probe blocks in use).
        mark_max: put a marker on each row's largest value (the top-1 adapter there).
    """
    descriptions = descriptions or {}
    raw = [[float(v) for v in row] for row in z]
    shown = (
        [[v / m for v in row] if (m := max(row, default=0.0)) > 0 else row for row in raw] if normalize_rows else raw
    )
    hover = [[_wrap(descriptions.get(c, ""), 50) for c in columns] for _ in rows]
    pos = list(range(len(rows)))  # rows drawn at 0..R-1, labelled with `rows`, first row on top
    fig = go.Figure(
        go.Heatmap(
            z=shown,
            x=list(columns),
            y=pos,
            text=[[str(r)] * len(columns) for r in rows],
            customdata=[
                [[h, v] for h, v in zip(hrow, vrow, strict=True)] for hrow, vrow in zip(hover, raw, strict=True)
            ],
            colorscale="Viridis",
            colorbar=dict(title=dict(text="÷ row max" if normalize_rows else value_label, side="right")),
            hovertemplate=(
                f"<b>%{{x}}</b> · {row_label} %{{text}}<br>%{{customdata[0]}}<br>"
                f"{value_label}: %{{customdata[1]:.4g}}<extra></extra>"
            ),
        )
    )
    if mark_max and raw:
        best = [max(range(len(row)), key=row.__getitem__) for row in raw]
        fig.add_scatter(
            x=[columns[j] for j in best],
            y=pos,
            mode="markers",
            name="top-1 at this block",
            marker=dict(symbol="circle-open", size=9, color="white", line=dict(width=2)),
            hoverinfo="skip",
        )
    marks = [] if mark_row is None else list(mark_row) if isinstance(mark_row, list | tuple) else [mark_row]
    idx = sorted(list(rows).index(r) for r in marks if r in rows)
    runs = [[i] for i in idx[:1]]
    for i in idx[1:]:  # one outline per run of consecutive rows (a block range is one box)
        if i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    for run in runs:
        fig.add_shape(
            type="rect", xref="paper", x0=0, x1=1, y0=run[0] - 0.5, y1=run[-1] + 0.5, line=dict(color=SELECTED, width=3)
        )
    step = max(1, len(rows) // 40)
    fig.update_yaxes(
        title=row_label, range=[len(rows) - 0.5, -0.5], tickvals=pos[::step], ticktext=[str(r) for r in rows][::step]
    )
    fig.update_xaxes(title=None, tickangle=-30)
    return _layout(fig, title, max(320, 120 + 18 * len(rows)), showlegend=False)


def latency_panels(stats: Mapping[str, Mapping[str, float]], title: str = "") -> go.Figure:
    """Per method (base, LoGo, top-1, uniform): time to the first token (what a reader waits for) and
    tokens per second while decoding, side by side.

    Args:
        stats: method -> {"first_token_s": seconds, "tokens_per_s": rate}; missing methods are still running.
    """
    from plotly.subplots import make_subplots

    names = list(stats)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("time to first token (s, lower is better)", "tokens / s (higher is better)")
    )
    for col, key, fmt in ((1, "first_token_s", "{:.2f} s"), (2, "tokens_per_s", "{:.1f}")):
        values = [stats[n].get(key, 0.0) for n in names]
        fig.add_bar(
            x=values,
            y=names,
            orientation="h",
            marker_color=SELECTED if col == 1 else OTHER,
            text=[fmt.format(v) for v in values],
            textposition="auto",
            hovertemplate="<b>%{y}</b><br>%{x:.3f}<extra></extra>",
            row=1,
            col=col,
        )
        fig.update_xaxes(rangemode="tozero", row=1, col=col)
        fig.update_yaxes(autorange="reversed", showticklabels=col == 1, row=1, col=col)
    fig.update_annotations(font=dict(size=12))
    return _layout(fig, title, 130 + 36 * max(len(names), 1), showlegend=False, margin=dict(l=10, r=20, t=60, b=30))


def blocks_label(layers: Sequence[int]) -> str:
    """`block 29`, `blocks 15-29` or `blocks 3, 7` for chart titles."""
    layers = list(layers)
    if len(layers) == 1:
        return f"block {layers[0]}"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"blocks {layers[0]}-{layers[-1]} (mean)"
    return f"blocks {', '.join(map(str, layers))} (mean)"


# ------------------------------------------------------------------------------------- evaluation


def loss_curves(curves: Mapping[str, Sequence[float]], families: Mapping[str, str], title: str = "") -> go.Figure:
    """Training loss per step, one line per adapter (a 10-step running mean), coloured by its family."""
    colors = family_colors(sorted(set(families.values())))
    fig, shown = go.Figure(), set()
    for name, ys in curves.items():
        smooth = [sum(ys[max(0, i - 9) : i + 1]) / len(ys[max(0, i - 9) : i + 1]) for i in range(len(ys))]
        fam = families[name]
        line = {"color": colors[fam], "width": 1}
        steps = list(range(1, len(ys) + 1))
        fig.add_scatter(x=steps, y=smooth, mode="lines", name=fam, legendgroup=fam, line=line, hovertext=name)
        fig.data[-1].showlegend = fam not in shown
        shown.add(fam)
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss", type="log")
    return _layout(fig, title, 520)


def accuracy_by_block(curves: Mapping[str, Sequence[float]], title: str = "") -> go.Figure:
    """Routing accuracy when probing each block alone: one line per signal / probe input."""
    fig = go.Figure()
    for name, ys in curves.items():
        fig.add_scatter(x=list(range(len(ys))), y=list(ys), mode="lines+markers", name=name)
    fig.update_xaxes(title="probe block")
    fig.update_yaxes(title="own adapter top-1 (%)", range=[0, 101])
    return _layout(fig, title, 480)


def cost_accuracy(rows: Sequence[Mapping], chosen: str = "", title: str = "") -> go.Figure:
    """Routing accuracy (dev and test top-1) against the probe's cost in ms, one marker per probe
    setting; the Pareto front joined, the chosen setting highlighted."""
    rows = sorted(rows, key=lambda r: r["route_ms"])
    front, best = [], -1.0
    for r in rows:  # cheapest first: a setting is on the front if nothing cheaper is as accurate
        if r["dev_top1"] > best:
            front.append(r)
            best = r["dev_top1"]
    fig = go.Figure()
    fig.add_scatter(
        x=[r["route_ms"] for r in front],
        y=[r["dev_top1"] for r in front],
        mode="lines",
        name="front (dev)",
        line=dict(color=CUTOFF, dash="dot"),
        hoverinfo="skip",
    )
    for split, symbol in (("dev", "circle"), ("test", "diamond-open")):
        fig.add_scatter(
            x=[r["route_ms"] for r in rows],
            y=[r[f"{split}_top1"] for r in rows],
            mode="markers",
            name=f"{split} top-1",
            text=[r["setting"] for r in rows],
            marker=dict(symbol=symbol, size=10, color=[SELECTED if r["setting"] == chosen else OTHER for r in rows]),
            hovertemplate="%{text}<br>%{x:.0f} ms · top-1 %{y:.1f}%<extra></extra>",
        )
    fig.update_xaxes(title="route ms (one prompt, warm)", rangemode="tozero")
    fig.update_yaxes(title="own adapter top-1 (%)", range=[0, 101])
    return _layout(fig, title, 480)


# ------------------------------------------------------------------------------------- benchmark
# (owned by the benchmark, logo_core/bench: figures of docs/bench)

BENCH_COLOURS = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]


def amortisation(curves: Mapping[str, Sequence[float]], keep: Sequence[str]) -> go.Figure:
    """The paper's amortisation figure: ms per generated token, setup included, against tokens
    generated (left, log scale) and the same as a multiple of the base model's (right).

    Args:
        curves: contender -> ms per token after 1, 2, ... tokens; must hold "base".
        keep: the contenders to draw (reference-style ones dotted).
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("ms per generated token (log scale)", "x the base model's time per token")
    )
    base = curves["base"]
    for name, colour in zip([n for n in keep if n in curves], BENCH_COLOURS):
        ys = list(curves[name])
        xs = list(range(1, len(ys) + 1))
        line = {"color": colour, "dash": "dot" if name.startswith("reference") else "solid"}
        fig.add_scatter(x=xs, y=ys, name=name, line=line, legendgroup=name, row=1, col=1)
        ratio = [y / b for y, b in zip(ys, base)]
        fig.add_scatter(x=xs, y=ratio, name=name, line=line, legendgroup=name, showlegend=False, row=1, col=2)
    fig.update_xaxes(title_text="generated tokens")
    fig.update_yaxes(type="log", tickvals=[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return _layout(fig, "Amortisation: (routing + mixing + prefill + decode time) / generated tokens", 520, width=1200)
