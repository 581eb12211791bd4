"""Report plots: matplotlib figures built without pyplot (no global state, Agg rendering).

Colours come from the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); beyond eight series, line styles change too. Heatmaps use ``viridis``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from perennial.report.data import CHART_METRICS, MODEL_PANELS, Group

#: Okabe & Ito (2008), reordered so that the first colours contrast most on white
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
LINESTYLES = ("-", "--", ":", "-.")
DPI = 110

METRIC_LABELS = {
    "acc": "final accuracy",
    "avg_inc_acc": "avg. incremental acc.",
    "forgetting": "forgetting",
    "bwt": "backward transfer",
    "fwt": "forward transfer",
    "learning_acc": "learning accuracy",
    "min_acc": "min-ACC",
    "wc_acc": "WC-ACC",
    "wf": "WF (windowed forgetting)",
    "wp": "WP (windowed plasticity)",
    "lca": "LCA",
    "stability_gap": "stability gap",
    "gap_recover_steps": "steps to recover half the gap",
    "online_acc": "online accuracy",
    "online_logloss": "online log-loss (nats)",
    "anytime_acc": "anytime accuracy",
}
#: metrics where lower is better (said on the chart)
LOWER_IS_BETTER = {"forgetting", "stability_gap", "wf", "gap_recover_steps", "online_logloss"}


def style(i: int) -> dict[str, object]:
    """Colour and line style of series ``i``."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _short(names: Sequence[str], limit: int = 18) -> list[str]:
    return [n if len(n) <= limit else n[: limit - 1] + "…" for n in names]


def accuracy_heatmap(R: np.ndarray, names: Sequence[str], title: str) -> Figure:
    """``R[i, j]`` (in %) with trained-on experiences as rows and evaluated ones as columns."""
    rows, cols = R.shape
    size = max(4.2, 0.75 * cols + 2.6)
    fig = new_figure(size + 1.0, max(3.2, 0.6 * rows + 2.0))
    ax = fig.add_subplot()
    data = 100 * np.ma.masked_invalid(R)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    labels = _short(names)
    ax.set_xticks(range(cols), labels[:cols], rotation=30 if cols > 3 else 0, ha="right" if cols > 3 else "center")
    ax.set_yticks(range(rows), labels[:rows])
    ax.set_xlabel("evaluated on experience")
    ax.set_ylabel("after training on")
    ax.set_title(title, fontsize=10)
    # a white staircase right of the diagonal: trained experiences on its left, not yet trained on its right
    xs, ys = [0.5], [-0.5]
    for i in range(min(rows, cols - 1)):
        xs += [i + 0.5, i + 1.5]
        ys += [i + 0.5, i + 0.5]
    ax.plot(xs[:-1], ys[:-1], color="white", linewidth=2.5, solid_joinstyle="miter")
    if rows * cols <= 400:
        for i in range(rows):
            for j in range(cols):
                v = R[i, j]
                if np.isfinite(v):
                    colour = "black" if v > 0.6 else "white"
                    style = "italic" if j > i else "normal"
                    ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8, color=colour, style=style)
    cb = fig.colorbar(im, ax=ax, shrink=0.9)
    cb.set_label("accuracy (%)")
    return fig


def stability_plot(group: Group, title: str) -> Figure:
    """Accuracy on each experience over training steps, with experience boundaries marked."""
    curves = group.curves()
    names = group.experience_names
    fig = new_figure(10.0, 4.8)
    ax = fig.add_subplot()
    starts = group.boundaries()
    end = group.last_step()
    for k, s in enumerate(starts):
        stop = starts[k + 1] if k + 1 < len(starts) else end
        if k % 2 == 1:
            ax.axvspan(s, stop, color="#000000", alpha=0.05, linewidth=0)
        if k > 0:
            ax.axvline(s, color="#555555", linestyle=":", linewidth=1)
        if len(starts) <= 12:
            label = names[k] if k < len(names) else f"exp{k}"
            ax.text(
                (s + stop) / 2,
                1.01,
                f"training\n{_short([label], 14)[0]}",
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#333333",
            )
    for c in curves:
        label = names[c.exp] if c.exp < len(names) else f"exp{c.exp}"
        st = style(c.exp)
        ax.plot(c.steps, 100 * c.mean, label=label, linewidth=1.6, **st)
        if np.isfinite(c.sem).any():
            lo = 100 * (c.mean - np.nan_to_num(c.sem))
            hi = 100 * (c.mean + np.nan_to_num(c.sem))
            ax.fill_between(c.steps, lo, hi, color=st["color"], alpha=0.18, linewidth=0)
    m, _ = group.metric("min_acc")
    if m is not None:
        ax.axhline(100 * m, color="#000000", linestyle="--", linewidth=1, label=f"min-ACC ({100 * m:.1f}%)")
    ax.set_xlim(0, max(end, 1))
    ax.set_ylim(-2, 102)
    ax.set_xlabel("training step (all experiences)")
    ax.set_ylabel("accuracy on experience (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10, pad=26)
    ax.legend(title="evaluated on", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=8)
    return fig


def timescales_plot(group: Group, title: str) -> Figure:
    """The working model against its slow copies over training steps: mean accuracy on the
    earlier experiences (stability), the current one (plasticity) and all seen so far."""
    curves = group.model_curves()
    fig = new_figure(13.0, 4.2)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    titles = {
        "earlier": "earlier experiences (stability)",
        "current": "the current experience (plasticity)",
        "seen": "all experiences seen so far",
    }
    starts = group.boundaries() or sorted({int(s) for c in curves.values() for s in c.get("current", ([], []))[0]})
    for i, (net, panels) in enumerate(curves.items()):
        fast = net == "model"
        st = {"color": "#d62728", "linewidth": 1.2, "alpha": 0.9} if fast else {**style(i), "linewidth": 2.0}
        for ax, panel in zip(axes, MODEL_PANELS, strict=True):
            if panel in panels:
                steps, mean = panels[panel]
                ax.plot(steps, 100 * mean, label="model (fast)" if fast else net, **st)
    for ax, panel in zip(axes, MODEL_PANELS, strict=True):
        for s in starts[1:]:
            ax.axvline(s, color="#555555", linestyle=":", linewidth=1)
        ax.set_title(f"mean accuracy on {titles[panel]}", fontsize=9.5)
        ax.set_xlabel("training step (dotted: a new experience)")
        ax.set_ylim(-2, 102)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return fig


def first_experience_plot(groups: Sequence[Group], exp: int = 0) -> Figure:
    """Accuracy on one experience over training, one line per strategy (the stability gap side by side)."""
    fig = new_figure(10.0, 4.4)
    ax = fig.add_subplot()
    drawn = [g for g in groups if g.has_log()]
    for i, g in enumerate(drawn):
        for c in g.curves():
            if c.exp == exp:
                ax.plot(c.steps, 100 * c.mean, label=g.label, linewidth=1.6, **style(i))
    if drawn:
        starts = drawn[0].boundaries()
        for s in starts[1:]:
            ax.axvline(s, color="#555555", linestyle=":", linewidth=1)
        ax.set_xlim(0, max(max(g.last_step() for g in drawn), 1))
        name = drawn[0].experience_names[exp] if exp < len(drawn[0].experience_names) else f"exp{exp}"
    else:
        name = f"exp{exp}"
    ax.set_ylim(-2, 102)
    ax.set_xlabel("training step (dotted lines: experience switches)")
    ax.set_ylabel(f"accuracy on {name} (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"accuracy on the first experience ({name}) during training, by strategy", fontsize=10)
    ax.legend(title="strategy", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=8)
    return fig


def comparison_chart(groups: Sequence[Group], labels: Sequence[str]) -> Figure:
    """One panel per metric: mean ± standard error across seeds, one bar per strategy."""
    metrics = [m for m in CHART_METRICS if any(g.metric(m)[0] is not None for g in groups)]
    n = len(metrics)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    height = max(2.2, 0.38 * len(groups) + 1.3)
    fig = new_figure(11.0, height * nrows + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    y = np.arange(len(groups))
    for idx, m in enumerate(metrics):
        ax = axes[idx // ncols][idx % ncols]
        means, sems = zip(*(g.metric(m) for g in groups), strict=True)
        vals = [100 * v if v is not None else np.nan for v in means]
        errs = [100 * s if s is not None else 0.0 for s in sems]
        colours = [PALETTE[i % len(PALETTE)] for i in range(len(groups))]
        ax.barh(y, vals, xerr=errs, color=colours, capsize=3, error_kw={"elinewidth": 1})
        for yi, v, e in zip(y, vals, errs, strict=True):
            if np.isfinite(v) and v >= 0:
                ax.text(v + e, yi, f"  {v:.1f}", va="center", ha="left", fontsize=7)
            elif np.isfinite(v):
                ax.text(v - e, yi, f"{v:.1f}  ", va="center", ha="right", fontsize=7)
        ax.set_yticks(y, labels if idx % ncols == 0 else [""] * len(groups))
        ax.invert_yaxis()
        better = "lower is better" if m in LOWER_IS_BETTER else "higher is better"
        ax.set_title(f"{METRIC_LABELS.get(m, m)} ({better})", fontsize=9)
        ax.set_xlabel("%", fontsize=8)
        lo = min([0.0, *[v - e for v, e in zip(vals, errs, strict=True) if np.isfinite(v)]])
        hi = max([0.0, *[v + e for v, e in zip(vals, errs, strict=True) if np.isfinite(v)]])
        pad = 0.22 * max(hi - lo, 1.0)
        ax.set_xlim(lo - pad if lo < 0 else 0, hi + pad if hi > 0 else 0)
        ax.grid(True, axis="x", alpha=0.3)
    for idx in range(n, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    seeds = sorted({len(g.runs) for g in groups})
    fig.suptitle(f"strategies compared: mean ± s.e.m. over {'/'.join(map(str, seeds))} seed(s)", fontsize=10)
    return fig


def online_curve_plot(groups: Sequence[Group]) -> Figure:
    """Online accuracy (running accuracy of predict-before-train) over the stream, one line per
    group (the mean over its seeds where the runs share the stream's length)."""
    fig = new_figure(10.0, 4.4)
    ax = fig.add_subplot()
    for i, g in enumerate(g for g in groups if g.has_online()):
        curves = [
            np.asarray(r.metrics["online_curve"], dtype=float) for r in g.runs if (r.metrics or {}).get("online_curve")
        ]
        same = all(c.shape == curves[0].shape and np.array_equal(c[:, 0], curves[0][:, 0]) for c in curves)
        if same:
            ax.plot(
                curves[0][:, 0], 100 * np.mean([c[:, 1] for c in curves], 0), label=g.label, linewidth=1.6, **style(i)
            )
        else:
            for j, c in enumerate(curves):
                ax.plot(c[:, 0], 100 * c[:, 1], label=g.label if j == 0 else None, linewidth=1.2, **style(i))
    ax.set_ylim(-2, 102)
    ax.set_xlabel("incoming batches")
    ax.set_ylabel("online accuracy so far (%)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("online accuracy: each batch predicted before training on it (running mean)", fontsize=10)
    ax.legend(title="strategy", loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, title_fontsize=8)
    return fig
