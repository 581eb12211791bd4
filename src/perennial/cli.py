"""The ``perennial`` command line: parse -> validate config -> call the API -> print / exit code.

Every expected failure (bad config, unknown names, bad data, missing runs) ends with a short
message on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from perennial.errors import ConfigError, PerennialError, RunInterrupted

app = typer.Typer(
    name="perennial",
    help="Continual learning you can measure: train on shifting streams, compare strategies, keep every result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
list_app = typer.Typer(help="List registered names (one per line).", no_args_is_help=True)
app.add_typer(list_app, name="list")

# Piped output gets a wide console so tables are not truncated to 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, highlight=False)

DEFAULT_STORE = "perennial-runs"

StoreOpt = Annotated[Path, typer.Option("--store", help="Run store directory (created if missing).", show_default=True)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config value, e.g. --set strategy.buffer_size=200 --set train.epochs=3 (repeatable)."
    ),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (TOML or JSON) with seed/benchmark/model/strategy/train/timescales tables."
    ),
]
ScenarioOpt = Annotated[
    str | None, typer.Option("--scenario", help="class, task or domain (default: the benchmark's own).")
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write a JSON summary to this file ('-' for stdout).")]
EvalEveryOpt = Annotated[
    int | None,
    typer.Option(
        "--eval-every",
        min=1,
        help="Continual evaluation: evaluate every seen experience every N training steps (stability gap, min-ACC).",
    ),
]
EvalBudgetOpt = Annotated[
    int | None,
    typer.Option("--eval-budget", min=1, help="Continual evaluation: test samples per experience (default 300)."),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar and no tables; errors still go to stderr.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name (perennial list models), e.g. tiny-gpt. Default: the benchmark's."),
]
TextDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--text-dir", help="Your text domains: a folder with one sub-folder per domain (implies -b text-domains)."
    ),
]


@contextlib.contextmanager
def errors_to_exit(run_hint: str | None = None, resume_hint: str | None = None) -> Iterator[None]:
    try:
        yield
    except RunInterrupted as e:
        msg = f"interrupted: {e}; a checkpoint was saved"
        if resume_hint:
            msg += f"; continue with: {resume_hint}"
        err.print(msg, style="yellow", markup=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except PerennialError as e:
        err.print(f"[bold red]error:[/] {e}", markup=True, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        msg = "interrupted"
        if run_hint:
            msg += f"; results measured so far are in the store ({run_hint})"
        if resume_hint:
            msg += f"; continue with: {resume_hint}"
        err.print(msg, style="yellow", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except OSError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    except Exception as e:  # a bug, not bad input: say so briefly; PERENNIAL_DEBUG=1 shows the traceback
        if os.environ.get("PERENNIAL_DEBUG"):
            raise
        msg = f"internal error: {type(e).__name__}: {e}"
        if run_hint:
            msg += f"; results measured so far are in the store ({run_hint})"
        if resume_hint:
            msg += f"; after a fix, continue with: {resume_hint}"
        err.print(msg, style="bold red", markup=False, soft_wrap=True)
        err.print(
            "this is a bug in perennial; rerun with PERENNIAL_DEBUG=1 for the traceback and report it", style="dim"
        )
        raise typer.Exit(1) from None


def _store(path: Path) -> Any:
    from perennial.store import RunStore

    return RunStore(path)


def _progress(quiet: bool) -> Any:
    from perennial.train import NoProgress, RichProgress

    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(NoProgress())
    return RichProgress(console=err)


def _write_json(path: Path, data: Any) -> None:
    from perennial.store import dumps

    text = json.dumps(json.loads(dumps(data)), indent=2)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _pct(x: float | None, sem: float | None = None) -> str:
    """A fraction as a percentage with one decimal (``_num`` of ``100 * x``)."""
    return _num(None if x is None else 100 * x, None if sem is None else 100 * sem, digits=1)


def _matrix_table(rec: Any) -> Table:
    return _per_experience_table(
        rec, rec.random_init_acc, rec.accuracy_matrix, _pct, f"accuracy (%) after each experience — {rec.run_id}"
    )


def _per_experience_table(
    rec: Any, initial: list[Any], matrix: list[list[Any]], fmt: Callable[[Any], str], title: str
) -> Table:
    """Row i: a value per experience j after training on experiences 0..i (j > i dimmed: not
    trained yet); first row: the initial model."""
    n = len(initial) or (len(matrix[0]) if matrix else 0)
    names = rec.experience_names or rec.config.get("benchmark", {}).get("domains") or []
    names = list(names) + [f"exp{j}" for j in range(len(names), n)]
    t = Table(title=title, title_justify="left")
    t.add_column("trained on", style="bold")
    for name in names:
        t.add_column(name, justify="right")
    if initial:
        t.add_row("(initial)", *[fmt(v) for v in initial], style="dim")
    for i, row in enumerate(matrix):
        t.add_row(
            names[i] if i < len(names) else str(i),
            *[fmt(v) if j <= i else f"[dim]{fmt(v)}[/]" for j, v in enumerate(row)],
        )
    return t


#: continual-evaluation metrics shown by run/show (those in %; gap_recover_steps is in steps)
CONTINUAL_SHOWN = ("min_acc", "wc_acc", "wf", "wp", "lca", "stability_gap")


def _is_lm(rec: Any) -> bool:
    if "perplexity" in (rec.metrics or {}):
        return True
    from perennial.streams import BENCHMARKS

    return rec.benchmark in BENCHMARKS and BENCHMARKS.get(rec.benchmark).kind == "lm"


def _num(x: float | None, sem: float | None = None, digits: int = 3) -> str:
    if x is None:
        return "–"
    s = f"{x:.{digits}f}"
    return s if sem is None else f"{s}±{sem:.{digits}f}"


def _loss_table(rec: Any) -> Table:
    """The validation-loss matrix L[i, j] of a language-model run (nats per token)."""
    return _per_experience_table(
        rec,
        rec.random_init_loss,
        rec.loss_matrix,
        _num,
        f"validation loss (nats/token) after each phase — {rec.run_id}",
    )


def _lm_metrics_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="metrics", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in LM_TABLE_METRICS:
        if k in metrics:
            t.add_row(k, _pct(metrics[k]) if k == "acc" else _num(metrics[k]))
    return t


#: language-model runs: losses in nats; forgetting is the rise of validation loss (loss-based)
LM_TABLE_METRICS = ("loss", "perplexity", "forgetting", "forgetting_first", "adaptation", "acc")
LM_METRIC_HELP = (
    "loss: mean validation loss (nats/token) over the domains seen; perplexity: exp(loss); forgetting: rise of an "
    "earlier domain's loss above its best (mean; _first: domain 0); adaptation: loss drop on each new domain in its "
    "phase; acc: next-token accuracy (%)."
)


def _metrics_table(metrics: dict[str, Any]) -> Table:
    t = Table(title="metrics", title_justify="left")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("acc", "avg_inc_acc", "forgetting", "bwt", "fwt", "learning_acc", *CONTINUAL_SHOWN):
        if k in metrics:
            t.add_row(k, _pct(metrics[k]) if metrics[k] is not None else "–")
    if "gap_recover_steps" in metrics:
        v = metrics["gap_recover_steps"]
        t.add_row("gap_recover_steps", f"{v:.0f}" if v is not None and v == v else "–")
    return t


#: columns of the compare table (the JSON has every metric, avg_inc_acc included)
TABLE_METRICS = ("acc", "forgetting", "bwt", "fwt", "learning_acc")

METRIC_HELP = (
    "acc: final average accuracy; forgetting: max-minus-last (Chaudhry); bwt/fwt: backward/forward "
    "transfer; learning_acc: mean of R[i,i]. All in %."
)
CONTINUAL_HELP = (
    "min_acc: mean worst accuracy on old experiences; wc_acc: worst-case accuracy; wf/wp: windowed "
    "forgetting/plasticity; lca: learning curve area; stability_gap: mean drop right after a switch "
    "(docs/continual-evaluation.md)."
)


@app.command()
def run(
    benchmark: Annotated[
        str | None,
        typer.Option("--benchmark", "-b", help="Benchmark name (perennial list benchmarks). Default: split-mnist."),
    ] = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", "-s", help="Strategy name, or several joined by '+' (e.g. replay+ewc). Default: naive."
        ),
    ] = None,
    scenario: ScenarioOpt = None,
    model: ModelOpt = None,
    text_dir: TextDirOpt = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (model init, data order, buffers). Default: 0.")
    ] = None,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Name of the run in the store (default: generated).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run with the same --run-id.")
    ] = False,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            "--checkpoint-every",
            min=1,
            help="Also checkpoint every N steps (always at experience boundaries and on Ctrl-C/SIGTERM).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Validate the config, build stream, model and strategy, print the config; train nothing."
        ),
    ] = False,
    eval_every: EvalEveryOpt = None,
    eval_budget: EvalBudgetOpt = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train one strategy on one benchmark, print the accuracy matrix and metrics, record the run.

    Example: perennial run -b split-mnist -s replay --set strategy.buffer_size=200 --json out.json

    A killed or interrupted run continues exactly with: perennial resume RUN_ID
    """
    from perennial import api
    from perennial.config import build_config

    with errors_to_exit(f"--store {store}"):
        cfg = build_config(
            config,
            set_ or (),
            benchmark=benchmark,
            strategy=strategy,
            scenario=scenario,
            seed=seed,
            checkpoint_every=checkpoint_every,
            eval_every=eval_every,
            eval_budget=eval_budget,
            model=model,
            text_dir=text_dir,
        )
        if dry_run:
            stream, strat, net = api.build(cfg)
            out.print_json(json.dumps(cfg.to_dict()))
            n_params = sum(p.numel() for p in net.parameters())
            out.print(
                f"ok: {stream.name} ({stream.scenario}-incremental, {len(stream)} experiences, input "
                f"{stream.input_shape}, {stream.n_classes} outputs); {strat.describe()}; {n_params:,} parameters",
                markup=False,
                soft_wrap=True,
            )
            return
        run_id = run_id or api.new_run_id(cfg)
    with errors_to_exit(f"--store {store}", f"perennial resume {run_id} --store {store}"):
        st = _store(store)
        with _progress(quiet) as progress:
            rec = api.run(cfg, store=st, run_id=run_id, progress=progress, overwrite=overwrite)
        _report_run(rec, store, quiet, json_out)


def _report_run(rec: Any, store: Path, quiet: bool, json_out: Path | None) -> None:
    if not quiet and _is_lm(rec):
        out.print(_loss_table(rec))
        out.print(_lm_metrics_table(rec.metrics or {}))
        out.print(LM_METRIC_HELP, style="dim", markup=False)
        out.print(f"run [bold]{rec.run_id}[/] recorded in {store} ({rec.seconds:.1f} s)")
        out.print(f"sample from it: perennial generate {rec.run_id} --store {store} --prompt 'def '", markup=False)
    elif not quiet:
        out.print(_matrix_table(rec))
        out.print(_metrics_table(rec.metrics or {}))
        out.print(METRIC_HELP, style="dim", markup=False)
        if rec.eval_log:
            out.print(CONTINUAL_HELP, style="dim", markup=False)
        out.print(f"run [bold]{rec.run_id}[/] recorded in {store} ({rec.seconds:.1f} s)")
    for note in rec.notes:
        err.print(note, style="yellow", markup=False, soft_wrap=True)
    if json_out is not None:
        _write_json(json_out, rec.summary())


@app.command()
def resume(
    run_id: Annotated[
        str, typer.Argument(help="Run id of an interrupted, failed or killed run (see: perennial runs).")
    ],
    store: StoreOpt = Path(DEFAULT_STORE),
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Continue a run from its newest valid checkpoint; it ends with exactly the results of an uninterrupted run.

    Corrupted or truncated checkpoints are detected (checksums) and skipped with a warning.
    """
    from perennial import api

    with errors_to_exit(f"--store {store}", f"perennial resume {run_id} --store {store}"):
        st = _store(store)
        with _progress(quiet) as progress:
            rec = api.resume(st, run_id, progress=progress)
        _report_run(rec, store, quiet, json_out)


@app.command()
def compare(
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated strategies; each may be a composition like replay+ewc.")
    ] = "naive,ewc,lwf,replay,joint",
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", "-b", help="Benchmark name. Default: split-mnist.")
    ] = None,
    scenario: ScenarioOpt = None,
    model: ModelOpt = None,
    text_dir: TextDirOpt = None,
    sweep: Annotated[
        list[str] | None,
        typer.Option(
            "--sweep",
            help="Also vary a config value: KEY=V1,V2,... (e.g. strategy.ratio=0,0.05,0.25); repeatable "
            "(every combination is run).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="Number of seeds per strategy.")] = 3,
    seed: Annotated[int, typer.Option("--seed", min=0, help="First seed (seeds are SEED..SEED+N-1).")] = 0,
    set_: SetOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = Path(DEFAULT_STORE),
    eval_every: EvalEveryOpt = None,
    eval_budget: EvalBudgetOpt = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Also write an HTML report of the grid (plots, tables) into this directory."),
    ] = None,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run several strategies (and --sweep values) over several seeds; print mean ± standard error per metric.

    Example: perennial compare -b split-mnist --strategies naive,ewc,lwf,replay,joint --seeds 3 --report out

    Example: perennial compare -b text-domains --strategies replay --sweep strategy.ratio=0,0.05,0.25 --seeds 3
    """
    from perennial import api
    from perennial.config import build_config

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    with errors_to_exit(f"--store {store}"):
        if not names:
            raise ConfigError([("--strategies", "give at least one strategy, e.g. --strategies naive,replay")])
        variants = _variants(names, sweep or [])
        # Validate every variant's config before running anything.
        problems: list[tuple[str, str]] = []
        cfgs: dict[str, Any] = {}
        for label, name, extra in variants:
            try:
                cfgs[label] = build_config(
                    config,
                    [*(set_ or ()), *extra],
                    benchmark=benchmark,
                    strategy=name,
                    scenario=scenario,
                    seed=seed,
                    eval_every=eval_every,
                    eval_budget=eval_budget,
                    model=model,
                    text_dir=text_dir,
                )
            except ConfigError as e:
                problems += [(f"[{label}] {f}", m) for f, m in e.problems]
        if problems:
            raise ConfigError(problems)
        names = [label for label, _, _ in variants]
        st = _store(store)
        seed_list = list(range(seed, seed + seeds))
        t0 = time.perf_counter()
        total = len(names) * len(seed_list)
        done = [0]

        def on_run(rec: Any) -> None:
            done[0] += 1
            if not quiet:
                m = rec.metrics or {}
                label = names[(done[0] - 1) // len(seed_list)]
                score = (
                    f"loss {_num(m.get('loss'))}, forgetting {_num(m.get('forgetting'))}"
                    if _is_lm(rec)
                    else f"acc {_pct(m.get('acc')).strip()}%"
                )
                err.print(
                    f"[{done[0]}/{total}] {label} seed {rec.seed}: {score} ({rec.seconds:.1f} s)",
                    soft_wrap=True,
                    markup=False,
                )

        with _progress(quiet) as progress:
            res = api.compare(
                lambda name, s: cfgs[name].model_copy(update={"seed": s}),
                names,
                seed_list,
                store=st,
                progress=progress,
                on_run=on_run,
            )
        if not quiet:
            first = res.runs[0]
            lm = _is_lm(first)
            cols = LM_TABLE_METRICS if lm else TABLE_METRICS
            cols += tuple(m for m in ("min_acc",) if any(r.get(f"{m}_mean") is not None for r in res.rows))
            unit = "losses in nats, acc in %" if lm else "%"
            t = Table(
                title=f"{first.benchmark} ({first.scenario}-incremental), {len(seed_list)} seed(s): "
                f"mean ± s.e.m. ({unit})",
                title_justify="left",
            )
            t.add_column("strategy", style="bold", no_wrap=True)
            for m in cols:
                t.add_column(m.replace("learning_acc", "learn_acc"), justify="right", no_wrap=True)
            t.add_column("s/run", justify="right", no_wrap=True)
            for row in res.rows:
                fmt = [
                    _pct(row[f"{m}_mean"], row[f"{m}_sem"])
                    if m == "acc" or not lm
                    else _num(row[f"{m}_mean"], row[f"{m}_sem"])
                    for m in cols
                ]
                t.add_row(row["strategy"], *fmt, f"{row['seconds_mean']:.1f}")
            out.print(t)
            out.print(LM_METRIC_HELP if lm else METRIC_HELP, style="dim", markup=False)
            out.print(f"{len(res.runs)} runs recorded in {store} in {time.perf_counter() - t0:.0f} s")
        if json_out is not None:
            _write_json(json_out, res.to_dict())
        if report is not None:
            from perennial.report import write_report

            path = write_report(st, [r.run_id for r in res.runs], report)
            if not quiet:
                out.print(f"report: {path}")


def _variants(names: list[str], sweeps: list[str]) -> list[tuple[str, str, list[str]]]:
    """(label, strategy, extra --set items) for every strategy x every combination of sweep values."""
    import itertools

    axes: list[list[str]] = []
    for item in sweeps:
        key, eq, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key.strip() or not vals:
            raise ConfigError([("--sweep", f"{item!r} is not KEY=V1,V2,... (e.g. strategy.ratio=0,0.05,0.25)")])
        axes.append([f"{key.strip()}={v}" for v in vals])
    out = []
    for name in names:
        for combo in itertools.product(*axes):
            out.append((" ".join([name, *combo]), name, list(combo)))
    return out


@app.command()
def generate(
    run_id: Annotated[str, typer.Argument(help="Run id of a finished language-model run (see: perennial runs).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text to continue.")] = "def ",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", min=1, help="Tokens to sample.")] = 200,
    temperature: Annotated[
        float, typer.Option("--temperature", "-t", min=0.0, help="Sampling temperature (0: greedy).")
    ] = 0.8,
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Sample among the k most likely tokens only.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sampling seed (same seed, same text).")] = 0,
    store: StoreOpt = Path(DEFAULT_STORE),
) -> None:
    """Print PROMPT and a sampled continuation from a language-model run's final model.

    Example: perennial generate RUN_ID --prompt "def " --max-tokens 200 --temperature 0.8
    """
    from perennial import api

    with errors_to_exit():
        text = api.generate(
            _store(store), run_id, prompt, max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, seed=seed
        )
        out.print(prompt + text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def runs(
    store: StoreOpt = Path(DEFAULT_STORE),
    benchmark: Annotated[str | None, typer.Option("--benchmark", "-b", help="Only runs on this benchmark.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="Only runs of this strategy.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only runs with this status (running, finished, failed, interrupted)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many (newest first).")] = 50,
    json_out: JsonOpt = None,
) -> None:
    """List stored runs, newest first."""
    with errors_to_exit():
        recs = _store(store).list(benchmark=benchmark, strategy=strategy, status=status, limit=limit)
        if json_out is not None:
            _write_json(
                json_out,
                {"runs": [{k: v for k, v in r.summary().items() if k not in ("config", "versions")} for r in recs]},
            )
            return
        if not recs:
            out.print(f"no runs in {store}; start one with: perennial run --benchmark split-mnist --strategy replay")
            return
        t = Table(title=f"runs in {store}", title_justify="left")
        for c in ("run id", "status", "benchmark", "scenario", "strategy", "seed", "acc %", "seconds", "created"):
            t.add_column(c, justify="right" if c in ("seed", "acc %", "seconds") else "left")
        for r in recs:
            t.add_row(
                r.run_id,
                r.status,
                r.benchmark,
                r.scenario,
                r.strategy,
                str(r.seed),
                _pct((r.metrics or {}).get("acc")),
                f"{r.seconds:.1f}" if r.seconds is not None else "–",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            )
        out.print(t)


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (see: perennial runs).")],
    store: StoreOpt = Path(DEFAULT_STORE),
    json_out: JsonOpt = None,
) -> None:
    """Show one stored run: config, accuracy matrix, metrics."""
    with errors_to_exit():
        rec = _store(store).get(run_id)
        if json_out is not None:
            _write_json(json_out, rec.summary())
            return
        out.print(
            f"[bold]{rec.run_id}[/]  status={rec.status}  {rec.benchmark}/{rec.scenario}  strategy={rec.strategy}  seed={rec.seed}"
        )
        if rec.error:
            out.print(f"[red]{rec.error}[/]")
        if _is_lm(rec):
            out.print(_loss_table(rec))
            if rec.metrics:
                out.print(_lm_metrics_table(rec.metrics))
        else:
            out.print(_matrix_table(rec))
            metrics = {**(rec.metrics or {}), **rec.continual_metrics()}
            if metrics:
                out.print(_metrics_table(metrics))
        if rec.eval_log:
            out.print(CONTINUAL_HELP, style="dim", markup=False)
        out.print("config: " + json.dumps(rec.config, sort_keys=True))


@app.command("report")
def report_cmd(
    run_ids: Annotated[
        list[str] | None, typer.Argument(help="Run ids (see: perennial runs); several seeds/strategies are compared.")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for report.html and the PNG plots.")] = Path(
        "perennial-report"
    ),
    from_json: Annotated[
        Path | None,
        typer.Option("--from", help="Take the run ids from a JSON file written by compare --json or run --json."),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Title of the report.")] = None,
    store: StoreOpt = Path(DEFAULT_STORE),
) -> None:
    """Write a self-contained HTML report (plots embedded, PNGs beside it) of stored runs.

    Example: perennial report RUN_ID [RUN_ID ...] --out report  (then open report/report.html)
    """
    with errors_to_exit():
        ids = list(run_ids or [])
        if from_json is not None:
            ids += _ids_from_json(from_json)
        if not ids:
            raise ConfigError([("RUN_ID", "give at least one run id (see: perennial runs) or --from FILE")])
        from perennial.report import write_report

        path = write_report(_store(store), list(dict.fromkeys(ids)), out_dir, title=title)
        out.print(f"report: {path}")


def _ids_from_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError([("--from", f"cannot read run ids from {path}: {e}")]) from None
    if isinstance(data, dict) and isinstance(data.get("run_ids"), list):
        return [str(x) for x in data["run_ids"]]
    if isinstance(data, dict) and isinstance(data.get("run_id"), str):
        return [data["run_id"]]
    raise ConfigError([("--from", f"{path} has no run_ids (compare --json) or run_id (run --json)")])


@list_app.command("strategies")
def list_strategies(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Add scenarios, language-model support (+lm) and a description.")
    ] = False,
) -> None:
    """Registered strategies."""
    from perennial.strategies import STRATEGIES

    for name, cls in STRATEGIES.items():
        if verbose:
            lm = "+lm" if "lm" in cls.kinds else ""
            scen = f"[{','.join(sorted(cls.scenarios))}]{lm}"
            out.print(f"{name:<14} {scen:<23} {cls.summary}", markup=False, soft_wrap=True)
        else:
            out.print(name)


@list_app.command("benchmarks")
def list_benchmarks(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add scenarios and a description.")] = False,
) -> None:
    """Built-in benchmarks."""
    from perennial.streams import BENCHMARKS

    for name, b in BENCHMARKS.items():
        local = " (needs local data)" if b.needs_data else ""
        out.print(
            f"{name:<16} [{','.join(b.scenarios)}]{local} {b.description}" if verbose else name,
            markup=False,
            soft_wrap=True,
        )


@list_app.command("models")
def list_models(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Add a description.")] = False) -> None:
    """Model builders."""
    from perennial.models import MODELS

    for name, m in MODELS.items():
        out.print(f"{name:<16} {m.description}" if verbose else name)


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
