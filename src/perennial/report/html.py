"""A self-contained HTML report: every image embedded (base64 PNG), inline CSS, no scripts,
nothing fetched from the network. The same PNGs are written next to ``report.html``."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perennial import __version__
from perennial.errors import StoreError
from perennial.report.data import Group, group_runs, metric_names
from perennial.report.plots import (
    LOWER_IS_BETTER,
    METRIC_LABELS,
    accuracy_heatmap,
    comparison_chart,
    first_experience_plot,
    online_curve_plot,
    stability_plot,
    timescales_plot,
    to_png,
)
from perennial.store import RunRecord, RunStore

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 1150px; padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.4rem; }
.meta, .note { color: #555; font-size: .9rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .86rem; }
th, td { border: 1px solid #d5d5d5; padding: .25rem .55rem; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
figure { margin: 1rem 0; } figcaption { color: #444; font-size: .85rem; max-width: 900px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 0 .2rem; }
"""

PERCENT_UNITLESS = {"gap_recover_steps"}
#: metrics in nats (shown as they are, three decimals)
NATS = {"online_logloss"}


def _pct(mean: float | None, sem: float | None = None, scale: float = 100.0, digits: int = 1) -> str:
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "–"
    s = f"{scale * mean:.{digits}f}"
    return s if sem is None else f"{s} ± {scale * sem:.{digits}f}"


def _fmt_metric(name: str, mean: float | None, sem: float | None = None) -> str:
    if name in PERCENT_UNITLESS:
        return _pct(mean, sem, scale=1.0, digits=0)
    if name in NATS:
        return _pct(mean, sem, scale=1.0, digits=3)
    return _pct(mean, sem)


class _Images:
    """Writes each PNG next to the report and returns its embedded <img> tag."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.files: list[Path] = []

    def add(self, fig: Any, name: str, alt: str, caption: str) -> str:
        png = to_png(fig)
        path = self.out_dir / f"{name}.png"
        path.write_bytes(png)
        self.files.append(path)
        data = base64.b64encode(png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f"<figcaption>{caption} <span class='note'>({html.escape(path.name)})</span></figcaption></figure>"
        )


def _metric_table(groups: Sequence[Group], names: Sequence[str], labels: Sequence[str]) -> str:
    """Metrics as rows, strategies as columns (mean ± s.e.m. across seeds)."""
    head = "".join(
        f"<th>{html.escape(lab)} ({len(g.runs)} seed{'s' if len(g.runs) > 1 else ''})</th>"
        for g, lab in zip(groups, labels, strict=True)
    )
    rows = []
    for m in names:
        arrow = " ↓" if m in LOWER_IS_BETTER else ""
        unit = "steps" if m in PERCENT_UNITLESS else "nats" if m in NATS else "%"
        cells = "".join(f"<td>{_fmt_metric(m, *g.metric(m))}</td>" for g in groups)
        label = f"{METRIC_LABELS.get(m, m)} ({unit}){arrow}"
        rows.append(f"<tr><td class='l' title='{html.escape(m)}'>{html.escape(label)}</td>{cells}</tr>")
    return (
        f"<table><tr><th class='l'>metric</th>{head}</tr>{''.join(rows)}</table>"
        "<p class='note'>Mean ± standard error of the mean across seeds; ↓ lower is better.</p>"
    )


def _runs_table(runs: Sequence[RunRecord]) -> str:
    with_log = any(r.eval_log for r in runs)
    rows = []
    for r in runs:
        m = {**(r.metrics or {}), **r.continual_metrics()}
        secs = f"{r.seconds:.1f}" if r.seconds is not None else "–"
        err = f" ({html.escape(r.error)})" if r.error else ""
        extra = f"<td>{_pct(m.get('min_acc'))}</td>" if with_log else ""
        rows.append(
            f"<tr><td class='l'><code>{html.escape(r.run_id)}</code></td><td>{r.seed}</td>"
            f"<td class='l'>{html.escape(r.status)}{err}</td><td>{_pct(m.get('acc'))}</td>{extra}<td>{secs}</td></tr>"
        )
    extra_head = "<th>min-ACC %</th>" if with_log else ""
    return (
        "<table><tr><th class='l'>run</th><th>seed</th><th class='l'>status</th><th>acc %</th>"
        f"{extra_head}<th>seconds</th></tr>{''.join(rows)}</table>"
    )


def _gap_table(g: Group) -> str:
    rows = g.gap_rows()
    if not rows:
        return ""
    names = g.experience_names
    body = []
    for r in rows:
        e = r["experience"]
        nxt = names[e + 1] if e + 1 < len(names) else f"exp{e + 1}"
        rec = "–" if r["recover_steps"] is None else f"{r['recover_steps']:.0f}"
        body.append(
            f"<tr><td class='l'>{html.escape(names[e] if e < len(names) else f'exp{e}')}</td>"
            f"<td class='l'>{html.escape(nxt)}</td><td>{_pct(*r['acc_before'])}</td><td>{_pct(*r['acc_min'])}</td>"
            f"<td>{r['min_after_steps']:.0f}</td><td>{_pct(*r['gap'])}</td><td>{_pct(*r['acc_end'])}</td>"
            f"<td>{rec} ({r['recovered']})</td></tr>"
        )
    return (
        "<h3>Stability gap at each switch</h3><table><tr><th class='l'>experience</th><th class='l'>switch to</th>"
        "<th>acc. before %</th><th>minimum after %</th><th>steps to minimum</th><th>gap %</th>"
        "<th>acc. at end of next %</th><th>steps to recover half (runs)</th></tr>" + "".join(body) + "</table>"
    )


def build_report(runs: Sequence[RunRecord], out_dir: str | Path, *, title: str | None = None) -> Path:
    """Write ``report.html`` and its PNG plots for ``runs`` into ``out_dir``; return the HTML path."""
    if not runs:
        raise StoreError("no runs to report on; give run ids (see: perennial runs)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    img = _Images(out)
    names = metric_names(groups)
    benchmarks = sorted({(g.benchmark, g.scenario) for g in groups})
    multi_bench = len(benchmarks) > 1
    labels = [g.long_label if multi_bench else g.label for g in groups]
    title = title or (
        f"perennial report: {', '.join(g.label for g in groups)} on "
        + ", ".join(f"{b} ({s}-incremental)" for b, s in benchmarks)
    )
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{len(runs)} run(s) in {len(groups)} group(s); generated "
        f"{time.strftime('%Y-%m-%d %H:%M')} by perennial {html.escape(__version__)}.</p>",
    ]

    if len(groups) > 1:
        parts.append("<h2>Strategies compared</h2>")
        parts.append(_metric_table(groups, names, labels))
        parts.append(
            img.add(
                comparison_chart(groups, labels),
                "comparison",
                "bar charts of each metric by strategy with standard-error bars",
                "Each panel is one metric; bars are the mean over seeds, whiskers the standard error.",
            )
        )
        if sum(g.has_log() for g in groups) > 1 and not multi_bench:
            parts.append(
                img.add(
                    first_experience_plot(groups),
                    "first-experience",
                    "accuracy on the first experience over training steps, one line per strategy",
                    "Accuracy on the first experience while the later ones are trained: a drop right after each "
                    "switch that partly recovers is the stability gap.",
                )
            )

    if any(g.has_online() for g in groups):
        parts.append(
            img.add(
                online_curve_plot(groups),
                "online-accuracy",
                "online accuracy over the incoming batches, one line per strategy",
                "Online accuracy (Cai et al. 2021): every incoming batch is predicted before the model trains on "
                "it; the curve is the running accuracy of those predictions over the stream.",
            )
        )

    for g, lab in zip(groups, labels, strict=True):
        parts.append(f"<h2>{html.escape(g.long_label)}</h2>")
        parts.append(
            f"<p class='meta'>{len(g.runs)} run(s), seed(s) {', '.join(map(str, g.seeds))}; "
            f"experiences: {html.escape(', '.join(g.experience_names))}.</p>"
        )
        parts.append(_metric_table([g], names, [lab]))
        R = g.mean_matrix()
        n_seeds = f"mean of {len(g.runs)} seeds" if len(g.runs) > 1 else f"seed {g.seeds[0]}"
        if R is not None:
            parts.append(
                img.add(
                    accuracy_heatmap(R, g.experience_names, f"{lab}: accuracy (%) after each experience ({n_seeds})"),
                    f"{g.slug}-matrix",
                    f"accuracy matrix heatmap of {lab}",
                    "Row i, column j: test accuracy on experience j after training on experiences 0..i. "
                    "Cells right of the white line (values in italics) are experiences not trained yet; "
                    "blank cells were not measured (eval.after_experience).",
                )
            )
        else:
            parts.append(
                "<p class='note'>No accuracy matrix recorded (the run stopped before its first experience ended).</p>"
            )
        if g.has_log():
            parts.append(
                img.add(
                    stability_plot(g, f"{lab}: accuracy on each experience during training ({n_seeds})"),
                    f"{g.slug}-stability",
                    f"accuracy of each experience over training steps for {lab}",
                    "Continual evaluation on a fixed subset of each experience's test set; dotted lines mark "
                    "experience switches, the dashed line min-ACC"
                    + (", shaded bands ± one standard error across seeds." if len(g.runs) > 1 else "."),
                )
            )
            parts.append(_gap_table(g))
            if g.has_models():
                parts.append(
                    img.add(
                        timescales_plot(g, f"{lab}: the working model and its slow copies ({n_seeds})"),
                        f"{g.slug}-timescales",
                        f"accuracy of the fast model and of its slow copies over training steps for {lab}",
                        "Learning fast and slow: the working model (red) and each slow copy of it (EMA teachers, "
                        "plastic and stable models), evaluated on the same subsets. Left: old experiences "
                        "(a slow copy dips less after a switch); middle: the experience being trained (a slow "
                        "copy learns it later); right: everything seen so far.",
                    )
                )
        else:
            parts.append(
                "<p class='note'>No per-step log: run with <code>--eval-every N</code> to see accuracy during "
                "training (the stability gap).</p>"
            )
        parts.append("<h3>Runs</h3>" + _runs_table(g.runs))

    parts.append(
        "<h2>Definitions</h2><p class='note'>acc: mean accuracy over all experiences after the last one; "
        "forgetting: max-minus-last (Chaudhry et al. 2018); bwt/fwt: backward/forward transfer (Lopez-Paz &amp; "
        "Ranzato 2017); learning accuracy: mean of R[i,i]. min-ACC: mean over old experiences of the lowest accuracy "
        "after training moved past them; WC-ACC: (1/k)·current + (1−1/k)·min-ACC; WF/WP: largest drop/rise within a "
        "window of evaluation steps; LCA: mean accuracy over the first steps of each experience; stability gap: "
        "accuracy right before a switch minus the minimum after it (De Lange et al. 2023). See "
        "docs/continual-evaluation.md and docs/metrics.md.</p>"
    )
    return write_page(out, title, parts)


def write_page(out: Path, title: str, parts: Sequence[str]) -> Path:
    """``out/report.html``: one self-contained page (inline CSS and images) of ``parts``."""
    doc = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    return path


def write_report(store: RunStore, run_ids: Sequence[str], out_dir: str | Path, *, title: str | None = None) -> Path:
    """Read ``run_ids`` from ``store`` and write their report; unknown ids fail before anything is written."""
    runs = [store.get(rid) for rid in run_ids]
    if runs and all("adapt" in (r.config or {}) for r in runs):  # test-time adaptation runs
        from perennial.report.adapt import build_adapt_report

        return build_adapt_report(runs, out_dir, title=title)
    return build_report(runs, out_dir, title=title)
