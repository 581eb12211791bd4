"""The report of test-time adaptation runs: error over time per method, per domain and per round.

Reads stored runs only (``metrics.curve`` holds the per-batch online errors of the adapted
model and of the source model on the same batches).
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from perennial import __version__
from perennial.report.html import _Images, write_page
from perennial.report.plots import _short, new_figure, style
from perennial.store import RunRecord


def is_adapt_run(r: RunRecord) -> bool:
    return isinstance(r.config, dict) and "adapt" in r.config


def _groups(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in runs:
        out.setdefault(r.strategy, []).append(r)
    return out


def _curve(r: RunRecord, key: str) -> np.ndarray:
    c = (r.metrics or {}).get("curve") or {}
    return np.asarray(c.get(key) or [], dtype=np.float64)


def _smooth(e: np.ndarray, k: int) -> np.ndarray:
    if len(e) < k or k < 2:
        return e
    return np.convolve(e, np.ones(k) / k, mode="valid")


def error_plot(groups: dict[str, list[RunRecord]]) -> Figure:
    """Online error (moving average over batches) against samples seen, one line per method;
    the source model dashed, domain switches dotted."""
    fig = new_figure(10, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    first = next(iter(groups.values()))[0]
    sizes = _curve(first, "batch_size")
    doms = _curve(first, "batch_domain")
    n = len(sizes)
    k = max(1, min(10, n // 20))
    x = np.cumsum(sizes)
    for i, (name, rs) in enumerate(groups.items()):
        curves = [_curve(r, "batch_error") for r in rs if len(_curve(r, "batch_error")) == n]
        if not curves:
            continue
        e = _smooth(np.mean(curves, 0), k) * 100
        ax.plot(
            x[k - 1 :] if k > 1 else x,
            e,
            label=f"{name} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
            **style(i),
        )
    src = [_curve(r, "source_batch_error") for rs in groups.values() for r in rs]
    src = [s for s in src if len(s) == n]
    if src:
        e = _smooth(np.mean(src, 0), k) * 100
        ax.plot(
            x[k - 1 :] if k > 1 else x, e, color="#777777", linestyle="--", linewidth=1, label="source (same batches)"
        )
    for j in range(1, n):
        if doms[j] != doms[j - 1]:
            ax.axvline(x[j - 1], color="#cccccc", linestyle=":", linewidth=0.8)
    ax.set_xlabel("test samples seen")
    ax.set_ylabel(f"online error (%), moving average of {k} batches")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title("error over the test stream (dotted: domain switches)")
    return fig


def round_plot(groups: dict[str, list[RunRecord]]) -> Figure:
    fig = new_figure(7, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, rs) in enumerate(groups.items()):
        per = [(r.metrics or {}).get("error_per_round") or [] for r in rs]
        m = min(len(p) for p in per)
        if m:
            ax.plot(range(1, m + 1), np.mean([p[:m] for p in per], 0) * 100, marker="o", label=name, **style(i))
    src = [(r.metrics or {}).get("source_error_per_round") or [] for rs in groups.values() for r in rs]
    if src and all(src):
        ax.axhline(np.mean([s[0] for s in src]) * 100, color="#777777", linestyle="--", linewidth=1, label="source")
    ax.set_xlabel("round")
    ax.set_ylabel("error (%)")
    ax.legend(fontsize=8)
    ax.set_title("error per round of the repeated sequence (rising = error accumulation)")
    return fig


def _pm(vals: Sequence[float | None]) -> str:
    xs = [v for v in vals if v is not None]
    if not xs:
        return "–"
    m = float(np.mean(xs)) * 100
    if len(xs) < 2:
        return f"{m:.1f}"
    return f"{m:.1f} ± {float(np.std(xs, ddof=1) / np.sqrt(len(xs))) * 100:.1f}"


def build_adapt_report(runs: Sequence[RunRecord], out_dir: str | Path, *, title: str | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _groups(runs)
    img = _Images(out)
    first = runs[0]
    title = title or f"perennial test-time adaptation: {', '.join(groups)} on {first.benchmark} ({first.scenario})"
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{len(runs)} run(s); generated {time.strftime('%Y-%m-%d %H:%M')} by perennial "
        f"{html.escape(__version__)}. Errors in %, mean ± standard error over seeds; every batch is predicted "
        "before the method adapts on it (online error).</p>",
        "<table><tr><th class='l'>method</th><th>seeds</th><th>error</th><th>source error</th>"
        "<th>first round</th><th>last round</th><th>s/run</th></tr>",
    ]
    for name, rs in groups.items():
        ms = [r.metrics or {} for r in rs]
        parts.append(
            f"<tr><td class='l'>{html.escape(name)}</td><td>{len(rs)}</td><td>{_pm([m.get('error') for m in ms])}</td>"
            f"<td>{_pm([m.get('source_error') for m in ms])}</td>"
            f"<td>{_pm([(m.get('error_per_round') or [None])[0] for m in ms])}</td>"
            f"<td>{_pm([(m.get('error_per_round') or [None])[-1] for m in ms])}</td>"
            f"<td>{np.mean([r.seconds or 0 for r in rs]):.1f}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        img.add(
            error_plot(groups),
            "tta-error",
            "online error over the test stream, one line per method",
            "Online error against test samples seen, averaged over seeds and smoothed; the dashed grey line is the "
            "unadapted source model on the same batches.",
        )
    )
    if any(len((r.metrics or {}).get("error_per_round") or []) > 1 for r in runs):
        parts.append(
            img.add(
                round_plot(groups),
                "tta-rounds",
                "error per round of the repeated sequence",
                "Error of each full pass over the corruption sequence; a rising line is error accumulation "
                "(collapse), a flat one stability.",
            )
        )
    domains = list((first.metrics or {}).get("domains") or ((first.metrics or {}).get("error_per_domain") or {}))
    if domains and len(domains) <= 60:
        head = "".join(f"<th>{html.escape(d)}</th>" for d in _short(domains, 14))
        parts.append(f"<h2>Error per domain (%)</h2><table><tr><th class='l'>method</th>{head}</tr>")
        rows = [("source", "source_error_per_domain", [r for rs in groups.values() for r in rs])]
        rows += [(name, "error_per_domain", rs) for name, rs in groups.items()]
        for name, key, rs in rows:
            cells = "".join(f"<td>{_pm([((r.metrics or {}).get(key) or {}).get(d) for r in rs])}</td>" for d in domains)
            parts.append(f"<tr><td class='l'>{html.escape(name)}</td>{cells}</tr>")
        parts.append("</table>")
    parts.append(
        "<h2>Runs</h2><table><tr><th class='l'>run</th><th class='l'>method</th><th>seed</th><th>error</th></tr>"
        + "".join(
            f"<tr><td class='l'>{html.escape(r.run_id)}</td><td class='l'>{html.escape(r.strategy)}</td>"
            f"<td>{r.seed}</td><td>{_pm([(r.metrics or {}).get('error')])}</td></tr>"
            for r in runs
        )
        + "</table><p class='note'>See docs/test-time-adaptation.md.</p>"
    )
    return write_page(out, title, parts)
